"""Reading one platform and keeping its sites current (`PlatformSync`).

One task per platform connection (`sync[NAME]`) does every read, so records,
mappings and sites change from one place only:
- the **initial read** takes every entity whole; the sites are built from it
  once it is complete (and only then served: a half-read platform is never a
  site);
- **polls** read access entities "updated since" their watermark minus an
  overlap (`poll_interval_s`), reference entities on the slow poll, and
  entities the platform cannot filter whole (`full_read_interval_s`);
- **sweeps** read everything whole (`sweep_interval_s`): a record missing from a
  *complete* read of its entity is deleted. A read that fails, stops part way
  or is throttled out deletes nothing; a complete read that would delete more
  than `max_delete_fraction` of an entity is held and shown until an operator
  allows it (`sync now --allow-deletes`);
- **hints** (webhooks) re-read single records at once; a 404 is a deletion;
- **rechecks** rebuild objects that time alone changes (an invoice falls due).

Each batch of records is checked (`Platform.check`: a malformed record is
skipped with its field and reason, keeping the last good version), mapped
(`Mapper.build` for the objects the records touch), staged into each site
(`SiteState.stage`) and committed with the read's watermark in one
transaction. Listeners (signed pushes) hear of each site's changes after
they are durable.

Size: over 600 lines, and `PlatformSync` over 400, on purpose. This is the one
place where reads are scheduled, records committed and sites staged. All
three share the read state, and each page of records is committed in one
database transaction. Split up, that transaction's parts would sit in three
files.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.config import SiteSection, fixed_objects
from bridge.platforms.base import Entity, Hint, Key, Mapper, Platform, ReadError, RecordError
from bridge.site import SiteState, Staged, dumps
from bridge.store import BridgeStore
from bridge.world import Record, World
from edge.secrets import SecretError, read_secret
from edge.site.sqlite import Many, SqlOp

log = logging.getLogger("bridge.engine")

REREAD_ATTEMPTS = 6  # a failed webhook re-read is tried again this often, backing off

ChangeListener = Callable[[str, list[dict[str, Any]]], None]


@dataclass
class ReadState:
    watermark: datetime | None = None
    last_full: float | None = None
    last_incremental: float | None = None
    error: str | None = None
    error_at: float | None = None
    held: str | None = None  # a sweep's deletions waiting for an operator
    failures: int = 0  # reads failed in a row: the next waits longer
    retry_at: float = 0.0


@dataclass
class SiteRuntime:
    site_id: str
    cfg: SiteSection
    state: SiteState
    mapper: Mapper | None = None
    ready_at: float | None = None
    floor: int = 0
    rechecks: list[tuple[float, Key]] = field(default_factory=list)
    problem: str | None = None  # why the site cannot be built (a missing PIN key)


@dataclass
class Batch:
    """Record changes from one read, to map and commit together."""

    puts: dict[tuple[str, str], Record] = field(default_factory=dict)
    removes: set[tuple[str, str]] = field(default_factory=set)
    bad: dict[tuple[str, str], RecordError] = field(default_factory=dict)
    good: set[tuple[str, str]] = field(default_factory=set)  # ids whose bad entry is cleared
    reads: dict[str, ReadState] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.puts or self.removes or self.bad or self.good or self.reads)


class PlatformSync:
    def __init__(
        self,
        name: str,
        cfg: Any,
        platform: Platform,
        sites: dict[str, SiteSection],
        store: BridgeStore,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.platform = platform
        self.store = store
        self.state_dir = state_dir
        self.clock = clock
        self.world = World(platform.indexes)
        self.reads: dict[str, ReadState] = {e.name: ReadState() for e in platform.entities}
        self.bad: dict[tuple[str, str], tuple[str, str, float]] = {}
        self.sites = {sid: SiteRuntime(sid, s, SiteState(sid)) for sid, s in sites.items()}
        self.initial_done: float | None = None
        self.listeners: list[ChangeListener] = []
        self.epoch = ""
        self._hints: dict[Hint, None] = {}
        self._retry: dict[Hint, tuple[int, float]] = {}  # failed re-reads: attempts, when next
        self._requests: list[tuple[bool, bool, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._allow_deletes = False
        self._tick = 0.0  # when the access entities were last polled together
        self.busy: str | None = None  # what the task is doing now, for status

    # --- lifecycle --------------------------------------------------------------------

    async def load(self) -> None:
        """Records, read state and sites from the store (before `run`)."""
        for url in self.cfg.insecure_urls():
            # Every start, so that a lab setting left on in production is seen in the log.
            log.warning(
                "%s: INSECURE: allow_insecure_http_for_lab is on; credentials and member "
                "data go to %s in clear (use https:// outside a lab)",
                self.name,
                url,
            )
        self.epoch = await self.store.epoch()
        for entity, rid, data in await self.store.fetchall(
            "SELECT entity, id, data FROM records WHERE platform = ?", (self.name,)
        ):
            self.world.put(entity, rid, json.loads(data))
        for row in await self.store.fetchall(
            "SELECT entity, watermark, last_full, last_incremental, error, error_at "
            "FROM reads WHERE platform = ?",
            (self.name,),
        ):
            if row[0] in self.reads:
                mark = datetime.fromisoformat(row[1]) if row[1] else None
                self.reads[row[0]] = ReadState(mark, row[2], row[3], row[4], row[5])
        for entity, rid, fld, reason, at in await self.store.fetchall(
            "SELECT entity, id, field, reason, at FROM bad_records WHERE platform = ?",
            (self.name,),
        ):
            self.bad[(entity, rid)] = (fld, reason, at)
        done = await self.store.fetchone(
            "SELECT value FROM meta WHERE key = ?", (f"initial:{self.name}",)
        )
        self.initial_done = float(done[0]) if done else None
        self._tick = max((r.last_incremental or 0.0 for r in self.reads.values()), default=0.0)
        for sid, rt in self.sites.items():
            seq_row = await self.store.fetchone(
                "SELECT seq, floor, ready_at FROM sites WHERE site = ?", (sid,)
            )
            if seq_row is not None:
                rt.state.seq, rt.floor, rt.ready_at = seq_row[0], seq_row[1], seq_row[2]
            rt.state.load(
                (str(k), str(i), str(d))
                for k, i, d in await self.store.fetchall(
                    "SELECT kind, id, data FROM site_objects WHERE site = ?", (sid,)
                )
            )
            for kind, oid, path, reason, source in await self.store.fetchall(
                "SELECT kind, id, path, reason, source FROM site_refusals WHERE site = ?", (sid,)
            ):
                from bridge.site import Refusal

                rt.state.refusals[(kind, oid)] = Refusal((kind, oid), path, reason, source)
            self._make_mapper(rt)

    def _make_mapper(self, rt: SiteRuntime) -> None:
        try:
            raw = read_secret(self.state_dir, rt.cfg.pin_key_secret)
        except SecretError as exc:
            raw, rt.problem = None, str(exc)
        pin_key = None
        if raw is not None:
            try:
                pin_key = bytes.fromhex(raw.decode("ascii", "replace").strip())
            except ValueError:
                pin_key = None
            if pin_key is None or len(pin_key) != 32:
                pin_key = None
                rt.problem = f"{rt.cfg.pin_key_secret}: expected 64 hex characters (a 32-byte key)"
        rt.mapper = self.platform.mapper(self.world, rt.site_id, rt.cfg, pin_key)

    async def run(self) -> None:
        """The platform's one task: initial read, then polls, sweeps, hints, rechecks."""
        if self.initial_done is None:
            await self._until_done(self._initial)
        for rt in self.sites.values():
            if rt.ready_at is None:
                await self._build_site(rt)
            else:
                await self._refresh_site(rt)
        while True:
            now = self.clock()
            await self._due(now)
            wait = self._next_due(self.clock()) - self.clock()
            await asyncio.sleep(0)  # never hold the loop, whatever is due
            if wait > 0 and not self._hints and not self._requests:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _until_done(self, step: Callable[[], Any]) -> None:
        """Retry a step that must complete (the initial read) until it does."""
        attempt = 0
        while True:
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_min_s * 2**attempt)
                log.warning("%s: initial read failed (%s); again in %.0f s", self.name, exc, delay)
                await asyncio.sleep(delay)

    # --- what is due ---------------------------------------------------------------

    def _next_due(self, now: float) -> float:
        times = [now + 3600.0]
        for e in self.platform.entities:
            times.append(self._due_at(e))
        for rt in self.sites.values():
            if rt.rechecks:
                times.append(rt.rechecks[0][0])
        times.extend(at for _, at in self._retry.values())
        return min(times)

    def _due_at(self, e: Entity) -> float:
        r = self.reads[e.name]
        last_full = r.last_full or 0.0
        sweep = last_full + float(self.cfg.sweep_interval_s)
        slow = float(self.cfg.slow_poll_interval_s)
        if not e.incremental:
            interval = float(getattr(self.cfg, "full_read_interval_s", self.cfg.poll_interval_s))
            due = min(sweep, last_full + (interval if e.access else max(interval, slow)))
            return max(due, r.retry_at)
        if e.access:
            # Every access entity on one tick: a poll reads them back to back, in
            # the platform's order, instead of each drifting on its own schedule.
            return max(min(sweep, self._tick + float(self.cfg.poll_interval_s)), r.retry_at)
        last = max(r.last_incremental or 0.0, last_full)
        return max(min(sweep, last + slow), r.retry_at)

    async def _due(self, now: float) -> None:
        for h, (_, at) in self._retry.items():
            if at <= now:
                self._hints[h] = None
        if self._hints:
            hints, self._hints = list(self._hints), {}
            await self._guard("webhook re-read", self._reread(hints))
        requests, self._requests = self._requests, []
        for full, allow_deletes, future in requests:
            try:
                self._allow_deletes = allow_deletes
                await self._poll(self.clock(), force=True, full=full)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)
            finally:
                self._allow_deletes = False
        await self._guard("poll", self._poll(now))
        await self._guard("recheck", self._recheck(self.clock()))

    async def _guard(self, what: str, step: Any) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: %s failed", self.name, what)

    async def _poll(self, now: float, *, force: bool = False, full: bool = False) -> None:
        failures: list[str] = []
        due = {e.name: force or self._due_at(e) <= now for e in self.platform.entities}
        if force or now >= self._tick + float(self.cfg.poll_interval_s):
            self._tick = now
        for e in self.platform.entities:
            r = self.reads[e.name]
            if not due[e.name]:
                continue
            sweep = (
                full or not e.incremental or (r.last_full or 0) + self.cfg.sweep_interval_s <= now
            )
            try:
                last = max(r.last_incremental or 0.0, r.last_full or 0.0)
                if sweep or not last:
                    await self._read_whole(e)
                else:
                    # From when the last good read of it started, less the overlap: a
                    # change after that start carries a later stamp, give or take the
                    # platform's clock. Not from the newest stamp seen: after a bulk
                    # change, every record of it would be read again at every poll.
                    since = datetime.fromtimestamp(last - float(self.cfg.overlap_s), UTC)
                    await self._read_since(e, since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.append(await self._failed(e, exc))
        if force and failures:
            raise ReadError("; ".join(failures))

    async def _failed(self, e: Entity, exc: BaseException) -> str:
        text = f"{e.name}: {exc}"
        r = self.reads[e.name]
        r.error, r.error_at = str(exc) or type(exc).__name__, self.clock()
        # Again after a backoff, never at once: the platform is struggling.
        r.failures += 1
        delay = min(
            float(self.cfg.backoff_max_s),
            float(self.cfg.backoff_min_s) * 2.0 ** min(r.failures, 20),
        )
        r.retry_at = self.clock() + delay
        log.warning("%s: reading %s failed (again in %.0f s): %s", self.name, e.name, delay, exc)
        await self.store.write([_read_op(self.name, e.name, r)])
        return text

    # --- requests from outside -------------------------------------------------------

    def hint(self, hints: Iterable[Hint]) -> None:
        for h in hints:
            self._hints[h] = None
        self._wake.set()

    async def sync_now(self, full: bool = False, allow_deletes: bool = False) -> None:
        """Read now (every entity "updated since", or whole with `full`); raises
        when a read failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._requests.append((full, allow_deletes, future))
        self._wake.set()
        await future

    # --- reads -----------------------------------------------------------------------

    async def _initial(self) -> None:
        started = self.clock()
        for e in self.platform.entities:
            await self._read_whole(e, build=False)
        self.initial_done = started
        self._tick = started
        await self.store.write(
            [
                (
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"initial:{self.name}", repr(started)),
                )
            ]
        )
        log.info("%s: initial read complete in %.1f s", self.name, self.clock() - started)

    async def _read_whole(self, e: Entity, build: bool = True) -> None:
        """Every record of the entity; deletions only once every page is in."""
        self.busy = f"reading all {e.name}"
        started = self.clock()
        seen: set[str] = set()
        newest: datetime | None = None
        try:
            async for page in self.platform.read(e, None, self.world):
                batch = Batch()
                for rec in page:
                    rid, mark = self._take(e, rec, batch)
                    if rid is not None:
                        seen.add(rid)
                    if mark is not None and (newest is None or mark > newest):
                        newest = mark
                await self._commit(batch, build)
        finally:
            self.busy = None
        r = self.reads[e.name]
        batch = Batch()
        now = self.clock()
        gone = set()
        for rid in self.world.ids(e.name) - seen:
            stored_rec = self.world.get(e.name, rid)
            if stored_rec is not None and not self.platform.keep(e.name, stored_rec, now):
                batch.removes.add((e.name, rid))  # out of the read's window by time alone
            else:
                gone.add(rid)
        stored = self.world.count(e.name)
        if (
            gone
            and len(gone) > self.cfg.max_delete_fraction * stored
            and stored >= 10
            and (not self._allow_deletes)
        ):
            r.held = (
                f"a complete read would delete {len(gone)} of {stored} {e.name}; held "
                "(edge-bridge sync now --full --allow-deletes to apply)"
            )
            log.error("%s: %s", self.name, r.held)
        else:
            r.held = None
            # Offset paging can skip a record when another leaves the list between
            # pages: each missing record is read on its own before it is deleted.
            for rid in sorted(gone):
                current = await self.platform.read_one(e.name, rid)
                if current is None:
                    batch.removes.add((e.name, rid))
                else:
                    self._take(e, current, batch)
            for key in [k for k in self.bad if k[0] == e.name and k[1] not in seen]:
                batch.good.add(key)
        r.last_full = started
        r.last_incremental = started
        r.error = r.error_at = None
        r.failures = 0
        if newest is not None:
            r.watermark = newest
        batch.reads[e.name] = r
        await self._commit(batch, build)

    async def _read_since(self, e: Entity, since: datetime) -> None:
        self.busy = f"reading {e.name} updated since {since.isoformat()}"
        started = self.clock()
        r = self.reads[e.name]
        newest = r.watermark
        try:
            async for page in self.platform.read(e, since, self.world):
                batch = Batch()
                for rec in page:
                    _, mark = self._take(e, rec, batch)
                    if mark is not None and (newest is None or mark > newest):
                        newest = mark
                await self._commit(batch)
        finally:
            self.busy = None
        r.last_incremental = started
        r.error = r.error_at = None
        r.failures = 0
        r.watermark = newest
        batch = Batch()
        batch.reads[e.name] = r
        await self._commit(batch)

    async def _reread(self, hints: list[Hint]) -> None:
        batch = Batch()
        for h in hints:
            try:
                e = self.platform.entity(h.entity)
            except KeyError:
                continue
            try:
                rec = await self.platform.read_one(h.entity, h.id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._reread_failed(h, exc)
                continue
            self._retry.pop(h, None)
            if rec is None:
                if self.world.get(h.entity, h.id) is not None:
                    batch.removes.add((h.entity, h.id))
                continue
            self._take(e, rec, batch)
        await self._commit(batch)

    def _reread_failed(self, h: Hint, exc: Exception) -> None:
        """Again after a backoff, a few times: the next poll would read the record,
        but that can be a minute or (for a slow entity) a quarter of an hour away.
        The other hints of the round still count."""
        attempts = self._retry.get(h, (0, 0.0))[0] + 1
        if attempts > REREAD_ATTEMPTS:
            self._retry.pop(h, None)
            log.warning(
                "%s: re-reading %s %s failed %d times (%s); left to the next poll",
                self.name,
                h.entity,
                h.id,
                attempts - 1,
                exc,
            )
            return
        delay = min(float(self.cfg.backoff_max_s), self.cfg.backoff_min_s * 2 ** (attempts - 1))
        self._retry[h] = (attempts, self.clock() + delay)
        log.warning(
            "%s: re-reading %s %s failed: %s; again in %.1f s",
            self.name,
            h.entity,
            h.id,
            exc,
            delay,
        )

    def _take(self, e: Entity, rec: Record, batch: Batch) -> tuple[str | None, datetime | None]:
        """One record from a read into the batch: kept, dropped, or refused as malformed."""
        try:
            rid = self.platform.record_id(e.name, rec)
        except RecordError as exc:
            log.warning("%s: %s record without a usable id skipped: %s", self.name, e.name, exc)
            return None, None
        try:
            self.platform.check(e.name, rec)
            mark = self.platform.modified_at(e.name, rec)
        except RecordError as exc:
            batch.bad[(e.name, rid)] = exc
            return rid, None
        if (e.name, rid) in self.bad:
            batch.good.add((e.name, rid))
        for gone in self.platform.removes(e.name, rec, self.world):
            if self.world.get(*gone) is not None:
                batch.removes.add(gone)
        if not self.platform.keep(e.name, rec, self.clock()):
            if self.world.get(e.name, rid) is not None:
                batch.removes.add((e.name, rid))
            return rid, mark
        if self.world.get(e.name, rid) != rec:
            batch.puts[(e.name, rid)] = rec
        return rid, mark

    # --- commit ---------------------------------------------------------------------

    async def _commit(self, batch: Batch, build: bool = True) -> None:
        """Records into the world, the objects they touch into each site, all durable at once."""
        if not batch:
            return
        now = self.clock()
        touched: list[tuple[str, Record | None, Record | None]] = []
        for (entity, rid), rec in batch.puts.items():
            old = self.world.put(entity, rid, rec)
            touched.append((entity, old, rec))
        for entity, rid in batch.removes:
            old = self.world.remove(entity, rid)
            if old is not None:
                touched.append((entity, old, None))
        ops: list[SqlOp] = []
        if batch.puts:
            ops.append(
                (
                    "INSERT OR REPLACE INTO records (platform, entity, id, data) VALUES (?,?,?,?)",
                    Many((self.name, e, i, dumps(r)) for (e, i), r in batch.puts.items()),
                )
            )
        if batch.removes:
            ops.append(
                (
                    "DELETE FROM records WHERE platform = ? AND entity = ? AND id = ?",
                    Many((self.name, e, i) for e, i in batch.removes),
                )
            )
        for (entity, rid), exc in batch.bad.items():
            self.bad[(entity, rid)] = (exc.field, exc.reason, now)
            log.warning("%s: %s %s skipped: %s", self.name, entity, rid, exc)
            ops.append(
                (
                    "INSERT OR REPLACE INTO bad_records "
                    "(platform, entity, id, field, reason, at) VALUES (?,?,?,?,?,?)",
                    (self.name, entity, rid, exc.field, exc.reason, now),
                )
            )
        for key in batch.good - set(batch.bad):
            if self.bad.pop(key, None) is not None:
                ops.append(
                    (
                        "DELETE FROM bad_records WHERE platform = ? AND entity = ? AND id = ?",
                        (self.name, *key),
                    )
                )
        for entity, r in batch.reads.items():
            ops.append(_read_op(self.name, entity, r))
        staged: list[tuple[SiteRuntime, Staged]] = []
        if build and touched:
            for rt in self.sites.values():
                if rt.ready_at is None or rt.mapper is None:
                    continue
                keys: set[Key] = set()
                for entity, old, new in touched:
                    keys |= rt.mapper.affected(entity, old, new)
                st = self._stage(rt, keys, now)
                ops += self._site_ops(rt, st, now)
                staged.append((rt, st))
        await self.store.write(ops)
        self._publish(staged)

    def _stage(self, rt: SiteRuntime, keys: Iterable[Key], now: float) -> Staged:
        assert rt.mapper is not None
        candidates: dict[Key, dict[str, Any] | None] = {}
        sources: dict[Key, str] = {}
        problems: dict[Key, list[tuple[str, str]]] = {}
        for key in keys:
            built = rt.mapper.build(key, now)
            candidates[key] = built.obj
            sources[key] = built.source
            if built.problems:
                problems[key] = list(built.problems)
            if built.recheck_at is not None and built.recheck_at > now:
                heapq.heappush(rt.rechecks, (built.recheck_at, key))
        return rt.state.stage(candidates, sources, problems)

    def _site_ops(self, rt: SiteRuntime, st: Staged, now: float) -> list[SqlOp]:
        sid = rt.site_id
        ops: list[SqlOp] = []
        seq = rt.state.seq
        rows = []
        for i, change in enumerate(st.changes, start=1):
            rows.append((sid, seq + i, dumps(change)))
        if rows:
            ops.append(("INSERT INTO site_changes (site, seq, change) VALUES (?,?,?)", Many(rows)))
        upserts = [(sid, k[0], k[1], t) for k, t in st.texts.items() if t is not None]
        deletes = [(sid, k[0], k[1]) for k, t in st.texts.items() if t is None]
        if upserts:
            ops.append(
                (
                    "INSERT OR REPLACE INTO site_objects (site, kind, id, data) VALUES (?,?,?,?)",
                    Many(upserts),
                )
            )
        if deletes:
            ops.append(
                ("DELETE FROM site_objects WHERE site = ? AND kind = ? AND id = ?", Many(deletes))
            )
        if st.cleared:
            ops.append(
                (
                    "DELETE FROM site_refusals WHERE site = ? AND kind = ? AND id = ?",
                    Many((sid, k[0], k[1]) for k in st.cleared),
                )
            )
        if st.refusals:
            ops.append(
                (
                    "INSERT OR REPLACE INTO site_refusals "
                    "(site, kind, id, path, reason, source, at) VALUES (?,?,?,?,?,?,?)",
                    Many(
                        (sid, k[0], k[1], r.path, r.reason, r.source, now)
                        for k, r in st.refusals.items()
                    ),
                )
            )
        ops.append(
            (
                "INSERT INTO sites (site, seq, ready_at) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET seq = excluded.seq, "
                "ready_at = COALESCE(sites.ready_at, excluded.ready_at)",
                (sid, seq + len(st.changes), rt.ready_at or now),
            )
        )
        return ops

    def _publish(self, staged: list[tuple[SiteRuntime, Staged]]) -> None:
        for rt, st in staged:
            rt.state.commit(st)
            for r in st.refusals.values():
                log.warning("%s: %s", rt.site_id, r.text())
            if st.changes:
                for listener in self.listeners:
                    listener(rt.site_id, st.changes)

    # --- building whole sites -------------------------------------------------------

    def _all_keys(self, rt: SiteRuntime) -> set[Key]:
        assert rt.mapper is not None
        keys = set(fixed_objects(rt.site_id, rt.cfg)) | rt.mapper.keys()
        return keys | set(rt.state.keys())

    async def _build_site(self, rt: SiteRuntime) -> None:
        """The whole site from the records (first time, or a site new in the config)."""
        now = self.clock()
        # A whole site is seconds of mapping and validation: off the loop, so the
        # listener keeps answering. Only this task changes records and sites.
        st = await asyncio.to_thread(self._stage_all, rt, now)
        rt.ready_at = now
        ops = self._site_ops(rt, st, now)
        await self.store.write(ops)
        self._publish([(rt, st)])
        log.info("%s: site %s built: %s", self.name, rt.site_id, _counts(rt.state.counts()))

    async def _refresh_site(self, rt: SiteRuntime) -> None:
        """At start: the config may have changed the fixed objects or the mapping."""
        now = self.clock()
        # A whole site is seconds of mapping and validation: off the loop, so the
        # listener keeps answering. Only this task changes records and sites.
        st = await asyncio.to_thread(self._stage_all, rt, now)
        if st.changes or st.refusals or st.cleared:
            await self.store.write(self._site_ops(rt, st, now))
            self._publish([(rt, st)])

    def _stage_all(self, rt: SiteRuntime, now: float) -> Staged:
        assert rt.mapper is not None
        fixed = fixed_objects(rt.site_id, rt.cfg)
        keys = self._all_keys(rt)
        candidates: dict[Key, dict[str, Any] | None] = {}
        sources: dict[Key, str] = {}
        problems: dict[Key, list[tuple[str, str]]] = {}
        rt.rechecks.clear()
        for key in keys:
            if key in fixed:
                candidates[key] = fixed[key]
                continue
            if key[0] in ("site", "schedule", "holiday", "door", "access_group", "plan"):
                candidates[key] = None  # no longer in the config
                continue
            built = rt.mapper.build(key, now)
            candidates[key] = built.obj
            sources[key] = built.source
            if built.problems:
                problems[key] = list(built.problems)
            if built.recheck_at is not None and built.recheck_at > now:
                rt.rechecks.append((built.recheck_at, key))
        heapq.heapify(rt.rechecks)
        return rt.state.stage(candidates, sources, problems)

    async def _recheck(self, now: float) -> None:
        for rt in self.sites.values():
            keys: set[Key] = set()
            while rt.rechecks and rt.rechecks[0][0] <= now:
                keys.add(heapq.heappop(rt.rechecks)[1])
            if not keys or rt.mapper is None or rt.ready_at is None:
                continue
            st = self._stage(rt, keys, now)
            if st.changes or st.refusals or st.cleared:
                await self.store.write(self._site_ops(rt, st, now))
                self._publish([(rt, st)])

    # --- status ---------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        now = self.clock()
        http = self.platform.http
        return {
            "platform": self.name,
            "initial_read": _ago(self.initial_done, now) if self.initial_done else "not done yet",
            "doing": self.busy or "waiting",
            "entities": {
                e.name: {
                    "records": self.world.count(e.name),
                    "last_full_read": _ago(r.last_full, now),
                    "last_incremental_read": _ago(r.last_incremental, now),
                    "watermark": r.watermark.isoformat() if r.watermark else None,
                    **({"error": r.error, "error_at": _ago(r.error_at, now)} if r.error else {}),
                    **({"held": r.held} if r.held else {}),
                }
                for e in self.platform.entities
                for r in (self.reads[e.name],)
            },
            "bad_records": [
                {"entity": e, "id": i, "field": f, "reason": reason, "at": _ago(at, now)}
                for (e, i), (f, reason, at) in sorted(self.bad.items())
            ],
            "api": {
                "calls": http.stats.calls,
                "throttled": http.stats.throttled,
                "failures": http.stats.failures,
                "budget_left": round(http.budget.left(), 2),
                "budget_per_s": http.budget.rate,
                "last_retry_after_s": http.stats.last_retry_after,
                "platform_remaining": http.stats.platform_remaining,
            },
            **self.platform.status(),
        }


def _read_op(platform: str, entity: str, r: ReadState) -> SqlOp:
    return (
        "INSERT OR REPLACE INTO reads "
        "(platform, entity, watermark, last_full, last_incremental, error, error_at) "
        "VALUES (?,?,?,?,?,?,?)",
        (
            platform,
            entity,
            r.watermark.isoformat() if r.watermark else None,
            r.last_full,
            r.last_incremental,
            r.error,
            r.error_at,
        ),
    )


def _ago(ts: float | None, now: float) -> str | None:
    if ts is None:
        return None
    s = max(0.0, now - ts)
    when = datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    if s < 120:
        return f"{when} ({s:.0f} s ago)"
    if s < 7200:
        return f"{when} ({s / 60:.0f} min ago)"
    return f"{when} ({s / 3600:.1f} h ago)"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "empty"
