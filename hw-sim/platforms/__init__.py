"""Simulated member-management platforms (Nexudus, OfficeRnD), each faithful to
the vendor's public API documentation, for the platform bridge's tests, demo
and benchmarks."""
