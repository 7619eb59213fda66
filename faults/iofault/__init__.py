"""Disk and I/O faults (ENOSPC, EIO on write, fsync and open) injected into the
real daemon with libfiu; see README.md and `campaign.py`."""
