"""The gateway's one SQLite database (WAL) and its single writer.

Synced site state is kept in *generations*: an import writes a whole new
generation beside the current one in small transactions, and one commit that
moves `meta.gen` makes it current. A crash in the middle leaves a partial
generation that the next start deletes; the old one is never touched until
the new one is current.

All writes go through one queue and one connection (`edge.site.sqlite`), committed
in groups with `synchronous=FULL`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import chain
from typing import Any

from edge.site.sqlite import Many, SqliteStore, SqlOp
from edge.site.syncdoc import (
    Access,
    CredentialDoc,
    GuestDoc,
    MemberDoc,
    _Doc,
    object_id,
)

log = logging.getLogger("edge.store")

# Each entry migrates the schema from version i to i + 1; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    INSERT INTO meta (key, value) VALUES ('gen', '0');

    CREATE TABLE objects (
        gen INTEGER NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (gen, kind, id)) WITHOUT ROWID;
    CREATE TABLE holders (
        gen INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT,
        company TEXT, plan TEXT, contract_start TEXT, contract_end TEXT,
        billing TEXT NOT NULL, grace_until TEXT, host TEXT, valid_from TEXT, valid_to TEXT,
        day_pass_balance INTEGER NOT NULL, credits INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (gen, id)) WITHOUT ROWID;
    CREATE TABLE credentials (
        gen INTEGER NOT NULL, holder TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
        active INTEGER NOT NULL,
        PRIMARY KEY (gen, holder, id)) WITHOUT ROWID;
    CREATE INDEX credentials_key ON credentials (gen, key);
    CREATE TABLE grants (
        gen INTEGER NOT NULL, holder TEXT NOT NULL, seq INTEGER NOT NULL,
        grp TEXT NOT NULL, schedule TEXT NOT NULL, valid_from TEXT, valid_to TEXT,
        PRIMARY KEY (gen, holder, seq)) WITHOUT ROWID;
    CREATE TABLE day_passes (
        gen INTEGER NOT NULL, holder TEXT NOT NULL, id TEXT NOT NULL,
        valid_from TEXT, valid_to TEXT,
        PRIMARY KEY (gen, holder, id)) WITHOUT ROWID;

    CREATE TABLE day_pass_uses (
        holder TEXT NOT NULL, day TEXT NOT NULL, source TEXT NOT NULL,
        pass TEXT, company TEXT, event_id TEXT NOT NULL, at REAL NOT NULL,
        reflected INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (holder, day));
    CREATE TABLE guest_entries (
        holder TEXT NOT NULL, day TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (holder, day));
    CREATE TABLE booking_checkins (
        booking TEXT PRIMARY KEY, holder TEXT NOT NULL, at REAL NOT NULL);
    CREATE TABLE door_state (
        door TEXT PRIMARY KEY, lockdown INTEGER NOT NULL DEFAULT 0,
        first_in_day TEXT, first_in_window INTEGER);

    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', error TEXT,
        created REAL NOT NULL, delivered REAL);
    CREATE INDEX outbox_state ON outbox (state, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, uid INTEGER, pid INTEGER,
        method TEXT NOT NULL, params TEXT NOT NULL, outcome TEXT NOT NULL);
    """,
    # Cloud sync: push nonces already accepted (a replay is refused across
    # restarts), and changes refused with the path of their problem.
    """
    CREATE TABLE push_nonces (nonce TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE TABLE refused_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, source TEXT NOT NULL,
        path TEXT NOT NULL, error TEXT NOT NULL, change TEXT NOT NULL);
    """,
    # Rooms: what happened on site to bookings (released, ended early, extended,
    # presence after the end, overtime billed), bookings made at a panel, and
    # credits spent here that the cloud's balances do not count yet.
    """
    CREATE TABLE booking_facts (
        booking TEXT PRIMARY KEY, room TEXT NOT NULL, released_at REAL, ended_at REAL,
        extended_to REAL, presence_at REAL, overtime_billed INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE room_bookings (
        id TEXT PRIMARY KEY, room TEXT NOT NULL, member TEXT NOT NULL,
        start REAL NOT NULL, end REAL NOT NULL, created REAL NOT NULL);
    CREATE TABLE credit_uses (
        event_id TEXT PRIMARY KEY, holder TEXT NOT NULL, company TEXT,
        credits INTEGER NOT NULL, at REAL NOT NULL, reflected INTEGER NOT NULL DEFAULT 0);
    """,
    # The web server: console accounts (argon2id hashes; failures and lockout
    # survive a restart), paired panels (only hashes of their codes and
    # tokens), and who did an audited action when it was not a socket peer.
    """
    CREATE TABLE web_users (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0);
    CREATE TABLE panel_pairings (
        id TEXT PRIMARY KEY, room TEXT NOT NULL, code_hash TEXT, code_expires REAL,
        token_hash TEXT UNIQUE, created TEXT NOT NULL, paired_at TEXT, revoked TEXT);
    ALTER TABLE audit ADD COLUMN actor TEXT;
    """,
    # Reports (edge/site/reports/journal.py): what they need that the outbox
    # (pruned after delivery) and the index (which forgets past bookings and
    # past memberships) do not keep: who came on which site-local day with the
    # membership of that moment, at which doors, bookings as last seen, overtime.
    """
    CREATE TABLE visits (
        day TEXT NOT NULL, holder TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL,
        kind TEXT NOT NULL, company TEXT, plan TEXT,
        PRIMARY KEY (day, holder)) WITHOUT ROWID;
    CREATE TABLE presence (
        day TEXT NOT NULL, holder TEXT NOT NULL, door TEXT NOT NULL,
        first_at REAL NOT NULL, last_at REAL NOT NULL,
        PRIMARY KEY (day, holder, door)) WITHOUT ROWID;
    CREATE TABLE report_bookings (
        booking TEXT PRIMARY KEY, room TEXT NOT NULL, member TEXT NOT NULL,
        start_at REAL NOT NULL, end_at REAL NOT NULL, status TEXT NOT NULL);
    CREATE INDEX report_bookings_start ON report_bookings (start_at);
    CREATE TABLE report_overtime (
        event_id TEXT PRIMARY KEY, booking TEXT NOT NULL, room TEXT NOT NULL,
        minutes INTEGER NOT NULL, at REAL NOT NULL);
    CREATE INDEX day_pass_uses_day ON day_pass_uses (day);
    CREATE INDEX guest_entries_day ON guest_entries (day);
    """,
    # Sync (edge/site/pushed.py): the rows a pushed change replaced, until a pull
    # shows whether the push was newer than the cursor or older.
    """
    CREATE TABLE push_undo (
        gen INTEGER NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, rows TEXT NOT NULL,
        PRIMARY KEY (gen, kind, id)) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# Tables that hold one generation of synced state each, with the key of a row
# within its generation.
GENERATION_KEYS = {
    "objects": "kind, id",
    "holders": "id",
    "credentials": "holder, id",
    "grants": "holder, seq",
    "day_passes": "holder, id",
    "push_undo": "kind, id",
}
GENERATION_TABLES = tuple(GENERATION_KEYS)


def drop_batch_sql(table: str) -> str:
    """Delete at most `limit` rows of one generation; parameters (gen, gen, limit)."""
    key = GENERATION_KEYS[table]
    return (
        f"DELETE FROM {table} WHERE gen = ? AND ({key}) IN "  # noqa: S608 - fixed names
        f"(SELECT {key} FROM {table} WHERE gen = ? LIMIT ?)"
    )


class Store(SqliteStore):
    """The gateway's database: synced state in generations, and everything it records."""

    migrations = MIGRATIONS
    program = "gateway"

    async def opened(self) -> None:
        await self._drop_partial_generations()

    async def meta(self) -> dict[str, str]:
        return {k: v for k, v in await self.fetchall("SELECT key, value FROM meta")}

    async def generation(self) -> int:
        return int((await self.meta())["gen"])

    async def _drop_partial_generations(self) -> None:
        gen = await self.generation()
        stale = [
            row[0]
            for table in GENERATION_TABLES
            for row in await self.fetchall(
                f"SELECT DISTINCT gen FROM {table} WHERE gen != ?",  # noqa: S608 - fixed names
                (gen,),
            )
        ]
        for old in sorted(set(stale)):
            log.info("store: removing generation %d left by an interrupted import", old)
            await self.drop_generation(old)

    async def drop_generation(self, gen: int, batch: int = 5000) -> None:
        """Delete one generation in small transactions, so other writers are not held up."""
        for table in GENERATION_TABLES:
            # Never touch the connection from the loop (db.total_changes and the
            # like take its mutex and wait for the writer's fsync): count via the write.
            while True:
                deleted = await self.write([(drop_batch_sql(table), (gen, gen, batch))])
                if deleted < batch:
                    break


# --- documents to rows ------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _grant_rows(gen: int, holder: str, grants: list[Access]) -> list[tuple[Any, ...]]:
    return [
        (gen, holder, i, g.group, g.schedule, _text(g.valid_from), _text(g.valid_to))
        for i, g in enumerate(grants)
    ]


def _credential_rows(gen: int, holder: str, creds: list[CredentialDoc]) -> list[tuple[Any, ...]]:
    return [(gen, holder, c.id, c.key(), int(c.status == "active")) for c in creds]


@dataclass
class Rows:
    """Rows of one generation, accumulated per table for `executemany`."""

    gen: int
    objects: list[tuple[Any, ...]]
    holders: list[tuple[Any, ...]]
    credentials: list[tuple[Any, ...]]
    grants: list[tuple[Any, ...]]
    day_passes: list[tuple[Any, ...]]

    @classmethod
    def new(cls, gen: int) -> Rows:
        return cls(gen, [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.objects) + len(self.holders) + len(self.credentials)

    def add(self, kind: str, obj: _Doc) -> None:
        gen = self.gen
        if isinstance(obj, MemberDoc | GuestDoc):
            data = obj.model_dump_json(by_alias=True, exclude={"credentials"})
            if isinstance(obj, MemberDoc):
                self.holders.append(
                    (
                        gen,
                        obj.id,
                        obj.kind,
                        obj.name,
                        obj.company,
                        obj.plan,
                        _text(obj.contract.start),
                        _text(obj.contract.end),
                        obj.billing.status,
                        _text(obj.billing.grace_until),
                        None,
                        None,
                        None,
                        obj.day_pass_balance,
                        obj.credits,
                        data,
                    )
                )
            else:
                self.holders.append(
                    (
                        gen,
                        obj.id,
                        "guest",
                        obj.name,
                        None,
                        None,
                        None,
                        None,
                        "ok",
                        None,
                        obj.host,
                        _text(obj.valid_from),
                        _text(obj.valid_to),
                        0,
                        0,
                        data,
                    )
                )
            self.credentials.extend(_credential_rows(gen, obj.id, obj.credentials))
            self.grants.extend(_grant_rows(gen, obj.id, obj.access))
            self.day_passes.extend(
                (gen, obj.id, dp.id, _text(dp.valid_from), _text(dp.valid_to))
                for dp in obj.day_passes
            )
        else:
            oid = object_id(kind, obj)
            self.objects.append((gen, kind, oid, obj.model_dump_json(by_alias=True)))

    def ops(self) -> list[SqlOp]:
        ops: list[SqlOp] = []
        for table, width in TABLE_WIDTHS.items():
            ops += insert_ops(table, width, getattr(self, table))
        return ops


# Columns of each generation table, in the order of the rows above.
TABLE_WIDTHS = {"objects": 4, "holders": 16, "credentials": 5, "grants": 7, "day_passes": 5}

# SQLite and sqlite3 do much of their work per statement (prepare the step,
# bind, reset, the Python call): one statement of 50 rows costs a fifth less
# than 50 statements of one. Rows within a statement still go in order, so a
# later row replaces an earlier one with its key as it would one by one.
ROWS_PER_INSERT = 50


def insert_ops(table: str, width: int, rows: list[tuple[Any, ...]]) -> list[SqlOp]:
    """INSERT OR REPLACE `rows` into `table`, ROWS_PER_INSERT rows to a statement."""
    one = f"({','.join('?' * width)})"
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    ops: list[SqlOp] = []
    if whole:
        values = ",".join([one] * ROWS_PER_INSERT)
        sql = f"INSERT OR REPLACE INTO {table} VALUES {values}"  # noqa: S608 - fixed names
        ops.append(
            (
                sql,
                Many(
                    tuple(chain.from_iterable(rows[i : i + ROWS_PER_INSERT]))
                    for i in range(0, whole, ROWS_PER_INSERT)
                ),
            )
        )
    if whole < len(rows):
        sql = f"INSERT OR REPLACE INTO {table} VALUES {one}"  # noqa: S608 - fixed names
        ops.append((sql, Many(rows[whole:])))
    return ops
