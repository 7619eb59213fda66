"""The bridge's own SQLite database: platform records, read state, the sites it
publishes with their change logs, the outbox of usage, platform tokens.

One writer with group commit and `synchronous=FULL` (`edge.site.sqlite`): a batch
whose future resolved survives `kill -9` and power loss. A read of the platform
commits its records, the site changes they make, the new cursor and the read's
watermark in one transaction, so after a crash the bridge resumes from a state
that was true at some instant.
"""

from __future__ import annotations

import secrets

from edge.site.sqlite import SqliteStore

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    -- Platform records as last read, by platform connection and entity.
    CREATE TABLE records (
        platform TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (platform, entity, id)) WITHOUT ROWID;
    -- Per entity: the newest modification time seen (for "updated since"), the
    -- last complete full read and incremental read, the last failure in words.
    CREATE TABLE reads (
        platform TEXT NOT NULL, entity TEXT NOT NULL, watermark TEXT,
        last_full REAL, last_incremental REAL, error TEXT, error_at REAL,
        PRIMARY KEY (platform, entity)) WITHOUT ROWID;
    -- Platform records skipped as malformed, with the field and the reason.
    CREATE TABLE bad_records (
        platform TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
        field TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (platform, entity, id)) WITHOUT ROWID;

    -- Each site as published over edge-sync/1.
    CREATE TABLE sites (
        site TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0, floor INTEGER NOT NULL DEFAULT 0,
        ready_at REAL);
    CREATE TABLE site_objects (
        site TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (site, kind, id)) WITHOUT ROWID;
    CREATE TABLE site_changes (
        site TEXT NOT NULL, seq INTEGER NOT NULL, change TEXT NOT NULL,
        PRIMARY KEY (site, seq)) WITHOUT ROWID;
    CREATE TABLE site_refusals (
        site TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, path TEXT NOT NULL,
        reason TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (site, kind, id)) WITHOUT ROWID;

    -- Events uploaded by gateways (idempotent by id), and what became of the
    -- billable ones on the platform: pending -> sending -> done | rejected |
    -- unknown (looked up before any retry) | skipped (not billable, or nothing to write).
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, id TEXT NOT NULL,
        type TEXT NOT NULL, body TEXT NOT NULL, received REAL NOT NULL,
        state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0, ref TEXT, error TEXT, done_at REAL,
        UNIQUE (site, id));
    CREATE INDEX events_due ON events (state, next_at);
    -- Check-ins written once per holder and site-local day.
    CREATE TABLE checkin_days (
        site TEXT NOT NULL, holder TEXT NOT NULL, day TEXT NOT NULL, event_id TEXT NOT NULL,
        PRIMARY KEY (site, holder, day)) WITHOUT ROWID;

    -- A platform's access token and when it expires (the secret it came from is a file).
    CREATE TABLE tokens (platform TEXT PRIMARY KEY, data TEXT NOT NULL, expires REAL NOT NULL);
    """,
)


class BridgeStore(SqliteStore):
    migrations = MIGRATIONS
    program = "bridge"

    async def opened(self) -> None:
        row = await self.fetchone("SELECT value FROM meta WHERE key = 'epoch'")
        if row is None:
            # Cursors carry the database's epoch: a new database never serves
            # a cursor a gateway got from an old one as if it were its own.
            await self.write(
                [("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (secrets.token_hex(4),))]
            )

    async def epoch(self) -> str:
        row = await self.fetchone("SELECT value FROM meta WHERE key = 'epoch'")
        assert row is not None
        return str(row[0])
