"""The site as this gateway knows it: the `edge-sync/1` documents, the model
and index, the store and its migrations, imports, changes and event records.
"""
