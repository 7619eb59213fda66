"""OSDP conformance (issue 15, item 5): our control panel against the public
SIA OSDP v2.2 / OSDP Verified requirements, with libosdp as the peripheral
where it can play the part and a hand-written PD (`rawpd`) where the PD must
misbehave. `python -m faults.osdp_conformance` runs every case."""
