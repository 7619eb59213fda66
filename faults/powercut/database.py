"""The database under power cuts: the gateway's schema and write paths on the
simulated disk, cut at random writes and syncs, reopened and checked.

One episode starts from an empty disk (so cuts also fall inside the schema
migrations) and goes through cycles: open as the gateway does (journal mode,
migrations, the writer's pragmas), check, run group commits of the gateway's
own statements until the power goes at a random write or sync, let the
unsynced writes meet their fate (`disk.Fate`), and open again. After each cut:

- the database opens and migrates;
- `PRAGMA integrity_check` says ok;
- every event whose commit was acknowledged is in the outbox, with its day's
  pass use where it had one, and every acknowledged delivery is still marked
  delivered (a lost mark would upload the event twice).

An acknowledgement is a COMMIT that returned before the power went, as the
store's future resolving is (`edge.site.sqlite.SqliteStore._commit`).
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import apsw

from edge.access.service import day_pass_use_op
from edge.site.events import make_event
from edge.site.model import SiteIndex
from edge.site.recorder import outbox_op
from edge.site.reports.journal import journal_ops
from edge.site.runtime import DayPassUse
from edge.site.sqlite import JOURNAL_MODE, WRITER_PRAGMAS, Many, SqlOp, migrate
from edge.site.store import MIGRATIONS
from edge.sync.service import upload_result_ops
from faults.powercut.disk import Disk, DiskDead, Fate
from faults.powercut.vfs import SimVFS, quiet_cuts

DB = "/var/lib/edge/site.db"
TZ = ZoneInfo("Europe/Paris")
SITE = "site-powercut"
# Small, so that checkpoints and WAL restarts (the delicate moments) happen
# within a few cycles; the gateway keeps SQLite's default of 1000 pages.
AUTOCHECKPOINT_PAGES = 40
CYCLES_PER_EPISODE = 20
CUT_WINDOW = 120  # the power goes at one of the next this many writes and syncs


class _Migrator:
    """`edge.site.sqlite.MigrateConnection` over APSW (which runs a whole script
    in `execute`)."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, /) -> apsw.Cursor:
        return self.conn.execute(sql)

    def executescript(self, sql_script: str, /) -> None:
        for _ in self.conn.execute(sql_script):
            pass


@dataclass
class Acked:
    """What the gateway was told is durable."""

    events: dict[str, str] = field(default_factory=dict)  # id -> type
    delivered: set[str] = field(default_factory=set)
    day_passes: dict[tuple[str, str], str] = field(default_factory=dict)  # (holder, day) -> id


@dataclass
class Tally:
    synchronous: str
    cuts: int = 0
    violations: int = 0  # cuts after which any check failed
    acked_events: int = 0  # acknowledged events checked after cuts
    lost_events: int = 0
    lost_deliveries: int = 0
    unopenable: int = 0
    corrupt: int = 0
    commits: int = 0
    fates: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def violation(self, what: str) -> None:
        self.violations += 1
        if len(self.examples) < 5:
            self.examples.append(what)


def open_database(disk: Disk, synchronous: str) -> tuple[apsw.Connection, SimVFS]:
    """Open as `SqliteStore.start` does, on the simulated disk."""
    vfs = SimVFS(disk)
    conn = apsw.Connection(DB, vfs=vfs.name)
    # The VFS has no shared memory: WAL needs the exclusive locking mode.
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute(JOURNAL_MODE)
    migrate(_Migrator(conn), MIGRATIONS)
    for pragma in WRITER_PRAGMAS:
        if pragma.startswith("PRAGMA synchronous"):
            pragma = f"PRAGMA synchronous = {synchronous}"
        conn.execute(pragma)
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
    return conn, vfs


def commit(conn: apsw.Connection, batches: list[list[SqlOp]]) -> None:
    """One group commit, statement for statement as the store's writer does it."""
    conn.execute("BEGIN IMMEDIATE")
    for ops in batches:
        conn.execute("SAVEPOINT batch")
        for sql, params in ops:
            if isinstance(params, Many):
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.execute("RELEASE batch")
    conn.execute("COMMIT")


class Workload:
    """The gateway's writes: granted badges, day pass uses, delivery marks."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.index = SiteIndex(SITE, "Power cut", TZ, None, None, 1)
        self.clock = 1_780_000_000.0
        self.day = date(2026, 6, 1)
        self.pending: list[str] = []  # acknowledged, not yet delivered

    def batch(self) -> tuple[list[SqlOp], list[dict[str, Any]], list[str], list[tuple[str, str]]]:
        """One caller's statements: (ops, events, ids marked delivered, day pass keys)."""
        rng = self.rng
        self.clock += rng.uniform(0.1, 30)
        kind = rng.random()
        if kind < 0.2 and self.pending:
            ids = rng.sample(self.pending, min(len(self.pending), rng.randint(1, 20)))
            return upload_result_ops(ids, [], self.clock), [], ids, []
        holder = f"m-{rng.randint(1, 400)}"
        if kind < 0.45:
            self.day += timedelta(days=1)
            use = DayPassUse(holder, self.day, "balance")
            ev = make_event(
                "usage.day_pass",
                self.clock,
                TZ,
                SITE,
                "gw-1",
                door="front",
                holder=holder,
                details={"source": "balance", "date": self.day.isoformat()},
            )
            ops = [day_pass_use_op(use, ev["id"], self.clock), outbox_op(ev, self.clock)]
            return ops, [ev], [], [(holder, self.day.isoformat())]
        events = [
            make_event(
                "access.granted",
                self.clock,
                TZ,
                SITE,
                "gw-1",
                door=rng.choice(("front", "back", "server")),
                holder=holder,
                details={"note": "x" * rng.randint(0, 600)},  # rows of varied sizes
            )
            for _ in range(rng.randint(1, 3))
        ]
        ops = journal_ops(self.index, events) + [outbox_op(ev, self.clock) for ev in events]
        return ops, events, [], []


def check(conn: apsw.Connection, acked: Acked, work: Workload, tally: Tally) -> list[str]:
    """What is wrong with the reopened database, in words. Afterwards `acked`
    holds what survived, so a lossy mode (synchronous=NORMAL, OFF) is measured
    cut after cut rather than once."""
    problems: list[str] = []
    result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        tally.corrupt += 1
        problems.append(f"integrity_check: {'; '.join(map(str, result[:3]))}")
        return problems
    rows = {i: s for i, s in conn.execute("SELECT id, state FROM outbox")}
    lost = [i for i in acked.events if i not in rows]
    tally.acked_events += len(acked.events)
    tally.lost_events += len(lost)
    if lost:
        problems.append(f"{len(lost)} of {len(acked.events)} acknowledged events lost")
    undelivered = [i for i in acked.delivered if rows.get(i) != "delivered"]
    tally.lost_deliveries += len(undelivered)
    if undelivered:
        problems.append(f"{len(undelivered)} acknowledged deliveries lost")
    uses = {
        (h, d): e for h, d, e in conn.execute("SELECT holder, day, event_id FROM day_pass_uses")
    }
    missing = [k for k, e in acked.day_passes.items() if uses.get(k) != e]
    if missing:
        problems.append(f"{len(missing)} acknowledged day pass uses lost")
    if problems:
        acked.events = {i: t for i, t in acked.events.items() if i in rows}
        acked.delivered = {i for i in acked.delivered if rows.get(i) == "delivered"}
        acked.day_passes = {k: e for k, e in acked.day_passes.items() if uses.get(k) == e}
    work.pending = [i for i, s in rows.items() if s == "pending"]
    return problems


def episode(rng: random.Random, synchronous: str, cuts: int, tally: Tally) -> None:
    """Up to `cuts` cuts on one disk, from empty."""
    disk = Disk()
    acked = Acked()
    work = Workload(rng)
    first = True
    for _ in range(cuts):
        # The first cut of an episode may fall inside the migrations.
        disk.cut_at = disk.ops + rng.randint(1, CUT_WINDOW * (3 if first else 1))
        conn: apsw.Connection | None = None
        try:
            conn, _vfs = open_database(disk, synchronous)
            if not first:
                problems = check(conn, acked, work, tally)
                if problems:
                    tally.violation(f"cut {tally.cuts}: " + "; ".join(problems))
                    if tally.corrupt:
                        return  # a damaged file's later story tells nothing new
            while True:
                batches = [work.batch() for _ in range(rng.randint(1, 3))]
                commit(conn, [b[0] for b in batches])
                if disk.dead:
                    break  # the commit "returned" after the power went: never acknowledged
                tally.commits += 1
                for _ops, events, delivered, passes in batches:
                    for ev in events:
                        acked.events[ev["id"]] = ev["type"]
                        work.pending.append(ev["id"])
                    acked.delivered.update(delivered)
                    work.pending = [i for i in work.pending if i not in delivered]
                    for key in passes:  # a day pass batch has its one event
                        acked.day_passes[key] = events[0]["id"]
        except (apsw.Error, DiskDead) as exc:
            if not disk.dead:
                tally.unopenable += 1
                what = "without a cut" if first else "after the cut"
                tally.violation(f"cut {tally.cuts}: the database fails {what}: {exc}")
                return
        finally:
            if conn is not None:
                with contextlib.suppress(apsw.Error):
                    conn.close()  # after the cut its writes go nowhere
        disk, fate = disk.after_cut(rng)
        tally.cuts += 1
        tally.fates[fate.value] += 1
        first = False
    # The last cut is checked too.
    try:
        conn, _vfs = open_database(disk, synchronous)
        try:
            problems = check(conn, acked, work, tally)
        finally:
            with contextlib.suppress(apsw.Error):
                conn.close()
    except apsw.Error as exc:
        tally.unopenable += 1
        problems = [f"does not open: {exc}"]
    if problems:
        tally.violation(f"cut {tally.cuts}: " + "; ".join(problems))


def campaign(cuts: int, seed: int, synchronous: str = "FULL") -> Tally:
    """`cuts` power cuts in episodes of `CYCLES_PER_EPISODE`."""
    rng = random.Random(seed)
    tally = Tally(synchronous)
    with quiet_cuts():
        while tally.cuts < cuts:
            before = tally.cuts
            episode(rng, synchronous, min(CYCLES_PER_EPISODE, cuts - tally.cuts), tally)
            if tally.cuts == before:
                tally.cuts += 1  # an episode that failed before its first cut: count it
    return tally


__all__ = ["Fate", "Tally", "campaign", "open_database"]
