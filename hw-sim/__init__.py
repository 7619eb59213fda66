"""The simulated site: generated sites, and later readers, boards and devices on the wire."""
