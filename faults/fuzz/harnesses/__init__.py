"""The harnesses, one module per parser (`faults.fuzz.harness.HARNESSES`)."""
