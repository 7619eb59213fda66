"""Cloud sync: the `edge-sync/1` client, pull, push verification and event
upload.
"""
