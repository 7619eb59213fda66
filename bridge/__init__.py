"""`edge-bridge`: the server side of edge-sync/1 over a member-management
platform's public API (Nexudus, OfficeRnD), for one site or many.

It reads the platform (whole, then by "updated since", swept for deletions,
re-read on webhooks), maps each record to edge-sync/1 objects, derives the
changes by diffing what it mapped against what it published, serves them to
the site's gateways (and pushes them, signed), and writes the gateways' usage
back to the platform exactly once. `docs/bridge.md` has the whole story.
"""
