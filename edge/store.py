"""The gateway's one SQLite database (WAL) and its single writer.

Synced site state is kept in *generations*: an import writes a whole new
generation beside the current one in small transactions, and one commit that
moves `meta.gen` makes it current. A crash in the middle leaves a partial
generation that the next start deletes; the old one is never touched until
the new one is current.

All writes go through one queue and one connection (`submit`). The writer
commits whatever is queued in one transaction (group commit), with
`synchronous=FULL`: when a submitted future resolves, its rows are in the
fsynced WAL and survive `kill -9` and power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from edge.syncdoc import (
    Access,
    CredentialDoc,
    GuestDoc,
    MemberDoc,
    _Doc,
    object_id,
)

log = logging.getLogger("edge.store")

SqlOp = tuple[str, Sequence[Any]]


class Many(list[Sequence[Any]]):
    """Parameters of an `executemany`: one row per element."""


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
)

SCHEMA_VERSION = len(MIGRATIONS)

# Tables that hold one generation of synced state each.
GENERATION_TABLES = ("objects", "holders", "credentials", "grants", "day_passes")


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection for worker threads (index loading, tools)."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; each step in its own transaction."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {version}, newer than this gateway "
            f"({SCHEMA_VERSION}); refusing to run an older gateway on it"
        )
    while version < SCHEMA_VERSION:
        script = MIGRATIONS[version]
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
        version += 1
        log.info("store: migrated schema to version %d", version)
    return version


@dataclass
class _Batch:
    ops: list[SqlOp]
    future: asyncio.Future[int]  # resolves to the number of rows changed


class Store:
    """Owner of the database connection; every write goes through `submit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._queue: list[_Batch] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Migrations run on a plain connection before the async one exists.
        conn = connect_sync(self.path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            migrate(conn)
        finally:
            conn.close()
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA synchronous = FULL")
        await self._db.execute("PRAGMA busy_timeout = 30000")
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="store.writer")
        await self._drop_partial_generations()

    async def stop(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    # --- writing -----------------------------------------------------------

    def submit(self, ops: Iterable[SqlOp]) -> asyncio.Future[int]:
        """Queue statements to commit together; the future resolves once durable,
        to the number of rows they changed.

        A caller that does not need to wait may drop the future: failures are
        logged here either way.
        """
        if self._closing or self._wake is None:
            raise RuntimeError("store is closing")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.append(_Batch(list(ops), future))
        self._wake.set()
        return future

    async def write(self, ops: Iterable[SqlOp]) -> int:
        return await asyncio.shield(self.submit(ops))

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batches, self._queue = self._queue, []
                await self._commit(batches)
            if self._closing and not self._queue:
                return

    async def _commit(self, batches: list[_Batch]) -> None:
        db = self.db
        failed: dict[int, BaseException] = {}
        changed = [0] * len(batches)
        try:
            await db.execute("BEGIN IMMEDIATE")
            for i, batch in enumerate(batches):
                # A savepoint per batch: one bad statement fails its own caller only.
                await db.execute("SAVEPOINT batch")
                try:
                    for sql, params in batch.ops:
                        if isinstance(params, Many):
                            cursor = await db.executemany(sql, params)
                        else:
                            cursor = await db.execute(sql, params)
                        # rowcount is the cursor's own field: reading it takes no lock.
                        changed[i] += max(cursor.rowcount, 0)
                except sqlite3.Error as exc:
                    failed[i] = exc
                    await db.execute("ROLLBACK TO batch")
                await db.execute("RELEASE batch")
            await db.execute("COMMIT")
            self.commits += 1
        except (sqlite3.Error, ValueError) as exc:
            log.error("store: commit failed: %s", exc)
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            for batch in batches:
                if not batch.future.done():
                    batch.future.set_exception(exc)
            return
        for i, batch in enumerate(batches):
            if batch.future.done():
                continue
            if i in failed:
                batch.future.set_exception(failed[i])
            else:
                batch.future.set_result(changed[i])

    # --- reading -----------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

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
            key = {
                "objects": "kind, id",
                "holders": "id",
                "credentials": "holder, id",
                "grants": "holder, seq",
                "day_passes": "holder, id",
            }[table]
            # Never touch the connection from the loop (db.total_changes and the
            # like take its mutex and wait for the writer's fsync): count via the write.
            while True:
                deleted = await self.write(
                    [
                        (
                            f"DELETE FROM {table} WHERE gen = ? AND ({key}) IN "  # noqa: S608
                            f"(SELECT {key} FROM {table} WHERE gen = ? LIMIT ?)",
                            (gen, gen, batch),
                        )
                    ]
                )
                if deleted < batch:
                    break


def _log_failure(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("store: write failed: %s", future.exception())


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
        if self.objects:
            ops.append(("INSERT OR REPLACE INTO objects VALUES (?,?,?,?)", Many(self.objects)))
        if self.holders:
            ops.append(
                (
                    "INSERT OR REPLACE INTO holders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    Many(self.holders),
                )
            )
        if self.credentials:
            ops.append(
                ("INSERT OR REPLACE INTO credentials VALUES (?,?,?,?,?)", Many(self.credentials))
            )
        if self.grants:
            ops.append(("INSERT OR REPLACE INTO grants VALUES (?,?,?,?,?,?,?)", Many(self.grants)))
        if self.day_passes:
            ops.append(
                ("INSERT OR REPLACE INTO day_passes VALUES (?,?,?,?,?)", Many(self.day_passes))
            )
        return ops
