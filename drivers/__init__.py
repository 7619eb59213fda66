"""Hardware and device-protocol drivers, one module per kind (see docs/architecture.md)."""
