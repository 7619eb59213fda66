"""The edge gateway: site cache, access decisions, store, daemon and admin interface."""

__version__ = "0.1.0"
