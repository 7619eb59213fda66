"""One SQLite database (WAL) with a single writer and group commit.

All writes go through one queue and one connection (`submit`). The writer
commits whatever is queued in one transaction (group commit), with
`synchronous=FULL`: when a submitted future resolves, its rows are in the
fsynced WAL and survive `kill -9` and power loss. The schema is brought up to
date by numbered migration scripts before anything else touches it.

The gateway's store (`edge.site.store`) and the platform bridge's (`bridge.store`)
are both this, each with its own migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from edge import faultpoints

log = logging.getLogger("edge.store")

SqlOp = tuple[str, Sequence[Any]]

# How every store opens its database: the journal mode (set before migrating)
# and the writer connection's pragmas. The power-cut campaign (faults/powercut)
# opens its simulated disk with the same ones.
JOURNAL_MODE = "PRAGMA journal_mode = WAL"
WRITER_PRAGMAS = ("PRAGMA synchronous = FULL", "PRAGMA busy_timeout = 30000")


class _Row(Protocol):
    def fetchone(self) -> Any: ...


class MigrateConnection(Protocol):
    """What `migrate` needs of a connection: sqlite3's, or another driver's
    behind a small adapter (the power-cut campaign runs the migrations on APSW)."""

    def execute(self, sql: str, /) -> _Row: ...

    def executescript(self, sql_script: str, /) -> object: ...


class Many(list[Sequence[Any]]):
    """Parameters of an `executemany`: one row per element."""


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection for worker threads (index loading, tools)."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def check_readable(path: Path) -> str | None:
    """What is wrong with the database at `path` (None: nothing SQLite finds).

    `PRAGMA quick_check` reads every page (the integrity check without the
    index-to-table cross-checks, which take several times longer); a file that
    is not a database fails at the first statement.
    """
    if not path.exists():
        return None
    try:
        conn = connect_sync(path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found[:5])


def set_aside(path: Path, now: float) -> Path:
    """Move the database at `path` and its journal files into `corrupt/` beside
    it, under the time they were set aside, for inspection; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    folder = path.parent / "corrupt"
    folder.mkdir(exist_ok=True)
    dest = folder / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"{path.stem}-{stamp}-{n}{path.suffix}"
    for suffix in ("-wal", "-shm", "-journal"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(dest.with_name(dest.name + suffix))
    path.rename(dest)
    return dest


def migrate(conn: MigrateConnection, migrations: Sequence[str], program: str = "gateway") -> int:
    """Bring the schema to the last migration's version; each step in its own transaction.

    Entry i of `migrations` takes the schema from version i to i + 1; a shipped
    entry is never edited.
    """
    target = len(migrations)
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > target:
        raise RuntimeError(
            f"the database has schema version {version}, newer than this {program} "
            f"({target}); refusing to run an older {program} on it"
        )
    while version < target:
        script = migrations[version]
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
        version += 1
        log.info("store: migrated schema to version %d", version)
    return version


# SQLite's primary result codes that mean the disk, not the statement, failed
# (an extended code such as SQLITE_IOERR_FSYNC carries its primary code in the low byte).
SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 10, 13, 14
STORAGE_CODES = frozenset({SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN})


def storage_error(exc: BaseException | None) -> bool:
    """Whether a failed write is the disk's fault (ENOSPC, EIO, ...) rather than the SQL's."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in STORAGE_CODES


def describe(exc: BaseException) -> str:
    """`SQLITE_FULL (database or disk is full)`: the code names the failed operation."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name} ({exc})" if name else str(exc)


@dataclass
class StorageFault:
    """The disk refuses the database's writes: since when, and the last error."""

    since: float
    error: str
    failed_commits: int = 1


@dataclass
class _Batch:
    ops: list[SqlOp]
    future: asyncio.Future[int]  # resolves to the number of rows changed


class SqliteStore:
    """Owner of the database connection; every write goes through `submit`."""

    migrations: Sequence[str] = ()
    program = "program"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._queue: list[_Batch] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        # Held by the writer from BEGIN to COMMIT or ROLLBACK. Reads share the
        # connection, and on it they would see the open transaction's rows: the
        # uploader sent events whose commit then failed (found by faults/iofault).
        self._transaction = asyncio.Lock()
        self.commits = 0
        # Set while commits fail for the disk's reasons; logged once when it starts
        # and once when it ends, shown by `edgectl status`.
        self.fault: StorageFault | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._closing = False  # a store stopped after a failed start can start again
        # Migrations run on a plain connection before the async one exists.
        conn = connect_sync(self.path)
        try:
            conn.execute(JOURNAL_MODE)
            migrate(conn, self.migrations, self.program)
        finally:
            conn.close()
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            await self._db.execute(pragma)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="store.writer")
        await self.opened()

    async def opened(self) -> None:
        """What a store does once open, before anyone else uses it."""

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
        async with self._transaction:
            await self._commit_batches(batches)

    async def _commit_batches(self, batches: list[_Batch]) -> None:
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
                    if storage_error(exc):
                        raise  # the disk failed: the whole transaction is lost
                    failed[i] = exc
                    await db.execute("ROLLBACK TO batch")
                await db.execute("RELEASE batch")
            faultpoints.hit("store.before_commit")
            await db.execute("COMMIT")
            faultpoints.hit("store.after_commit")
            self.commits += 1
        except (sqlite3.Error, ValueError) as exc:
            if storage_error(exc):
                self._storage_failed(exc)
            else:
                log.error("store: commit failed: %s", exc)
            # After a failed COMMIT, SQLite has usually rolled back already.
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            for batch in batches:
                if not batch.future.done():
                    batch.future.set_exception(exc)
            return
        if self.fault is not None:
            fault, self.fault = self.fault, None
            log.info(
                "store: storage recovered: commits work again (failing since %s, "
                "%d commits failed, last error %s)",
                _clock(fault.since),
                fault.failed_commits,
                fault.error,
            )
        for i, batch in enumerate(batches):
            if batch.future.done():
                continue
            if i in failed:
                batch.future.set_exception(failed[i])
            else:
                batch.future.set_result(changed[i])

    def _storage_failed(self, exc: BaseException) -> None:
        """A commit failed for the disk's reasons: logged once per fault, not per write."""
        if self.fault is None:
            self.fault = StorageFault(time.time(), describe(exc))
            log.error(
                "store: storage failing: %s; what is written now is NOT RECORDED "
                "until the disk recovers (each new write tries again)",
                self.fault.error,
            )
        else:
            self.fault.error = describe(exc)
            self.fault.failed_commits += 1
            log.debug("store: storage still failing: %s", self.fault.error)

    def health(self) -> dict[str, Any]:
        """`edgectl status`'s storage line."""
        if self.fault is None:
            return {"state": "ok"}
        return {
            "state": "failing",
            "since": self.fault.since,
            "error": self.fault.error,
            "failed_commits": self.fault.failed_commits,
        }

    # --- reading -----------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Committed rows only: waits while the writer has a transaction open."""
        async with self._transaction, self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._transaction, self.db.execute(sql, params) as cur:
            return await cur.fetchone()


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))


def _log_failure(future: asyncio.Future[int]) -> None:
    if future.cancelled() or future.exception() is None:
        return
    exc = future.exception()
    if storage_error(exc):
        # The writer logged the fault once; a line per write would flood the log.
        log.debug("store: write failed: %s", exc)
    else:
        log.error("store: write failed: %s", exc)
