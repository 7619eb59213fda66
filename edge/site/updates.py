"""Updates to the site: a whole snapshot imported, a batch of changes applied,
and the day passes used here that the cloud's balances now count.

Imports and changes are serialised: a change never lands in a generation
that is about to be replaced. Whoever keeps counts against the cloud's
documents (the room controller's credits) registers with `on_fetched` and
is awaited after each update that came from the cloud.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge import faultpoints
from edge.site import pushed
from edge.site.changes import Refused, batch_ops, check_batch, patch_index, refused_ops
from edge.site.importer import ImportRefused, commit_ops, stage_snapshot
from edge.site.index import load_index
from edge.site.recorder import Recorder
from edge.site.sqlite import Many, SqlOp
from edge.site.state import GatewayError, SiteChange, SiteState, meta_op
from edge.site.syncdoc import DocError

log = logging.getLogger("edge.gateway")

# Pushed refusals remembered for the pull that follows; a bound so that a cloud
# pushing broken changes without ever serving them to pulls cannot grow memory.
PUSHED_REFUSALS_KEPT = 1000

# (fetched_at, holders, companies): the documents that arrived, None for a whole snapshot.
FetchedHook = Callable[[float, set[str] | None, set[str] | None], Awaitable[None]]


class SiteUpdates:
    def __init__(self, site: SiteState, recorder: Recorder) -> None:
        self.site = site
        self.recorder = recorder
        self._lock = asyncio.Lock()
        self._cleanup: set[asyncio.Task[None]] = set()
        self._fetched: list[FetchedHook] = []
        # Identities of changes a push refused, until the pull refuses them again
        # (insertion-ordered: the oldest is forgotten first).
        self._pushed_refusals: dict[str, None] = {}
        # Pushes applied in this life, counted; the objects whose kept rows
        # (edge/site/pushed.py) wait for a pull that started after the count shown.
        self._pushes = 0
        self._pushed_at: dict[pushed.Key, int] = {}

    def on_fetched(self, hook: FetchedHook) -> None:
        self._fetched.append(hook)

    async def stop(self) -> None:
        for task in list(self._cleanup):
            task.cancel()
        await asyncio.gather(*self._cleanup, return_exceptions=True)

    # --- a whole snapshot ----------------------------------------------------------

    async def import_snapshot(
        self, path: Path, source: str = "admin", fetched_at: float | None = None
    ) -> dict[str, Any]:
        site = self.site
        async with self._lock:
            old = site.index.generation
            try:
                staged = await stage_snapshot(site.store, path, site.config.site.id)
            except ImportRefused as exc:
                log.error("import: refused, nothing changed: %s", exc)
                raise GatewayError("refused", str(exc)) from None
            log.debug("import: staged in %.2f s; loading the index", staged.seconds)
            index = await asyncio.to_thread(load_index, site.db_path, staged.gen)
            # The index was built before meta moved: give it the new snapshot's marks.
            index.cursor = staged.cursor
            index.generated_at = staged.generated_at.timestamp() if staged.generated_at else None
            faultpoints.hit("updates.before_flip")
            await site.store.write(commit_ops(staged))
            faultpoints.hit("updates.after_flip")
            site.synced_at = time.time()
            if staged.generated_at is not None:
                site.note_cloud_time(staged.generated_at.timestamp())
            await site.swap_index(index)
            del index
            self._pushed_at.clear()  # what pushes kept belongs to the old generation
            if fetched_at is not None:
                await self._reconcile_day_passes(fetched_at)
                for hook in self._fetched:
                    await hook(fetched_at, None, None)
            log.info(
                "import (%s): generation %d is current (cursor %s): %d members, %d guests, "
                "%d credentials in %.1f s",
                source,
                staged.gen,
                staged.cursor,
                staged.members,
                staged.guests,
                staged.credentials,
                staged.seconds,
            )
            if old:
                task = asyncio.create_task(
                    site.store.drop_generation(old), name=f"store.drop_generation[{old}]"
                )
                self._cleanup.add(task)
                task.add_done_callback(self._cleanup.discard)
            return {
                "generation": staged.gen,
                "cursor": staged.cursor,
                "members": staged.members,
                "guests": staged.guests,
                "credentials": staged.credentials,
                "seconds": round(staged.seconds, 3),
            }

    # --- changes from the cloud -----------------------------------------------------

    async def apply_changes(
        self,
        changes: object,
        cursor: str | None,
        source: str,
        prefix: str = "changes",
        fetched_at: float | None = None,
    ) -> dict[str, Any]:
        """Check a batch of changes, commit what passes (with `cursor`), update the index.

        Refused changes are logged, recorded and raised as alarms (once: see
        `_report_refusals`); they do not stop the others.
        """
        site = self.site
        async with self._lock:
            ix = site.index
            if not ix.loaded:
                raise GatewayError("no_site", "no snapshot imported yet: changes cannot apply")
            started = time.monotonic()
            try:
                batch = check_batch(ix, changes, prefix)
            except DocError as exc:
                raise GatewayError("refused", str(exc)) from None
            now = time.time()
            fresh = self._report_refusals(batch.refused, source)
            holders = sorted(batch.holders())
            old = await self._credentials_of(holders) if not batch.reload else {}
            ops = batch_ops(batch, ix.generation) + refused_ops(fresh, now, source)
            keys = pushed.touched(batch)
            if source == "push":
                kept = {k: await pushed.rows_of(site.store, ix.generation, k) for k in keys}
                ops += pushed.kept_ops(ix.generation, kept)
            else:
                ops += pushed.superseded_ops(ix.generation, keys)
            if cursor is not None:
                ops.append(meta_op("cursor", cursor))
            await site.store.write(ops)
            if source == "push":
                self._pushes += 1
                self._pushed_at.update(dict.fromkeys(keys, self._pushes))
            else:
                for k in keys:
                    self._pushed_at.pop(k, None)
            if batch.reload:
                await site.swap_index(
                    await asyncio.to_thread(load_index, site.db_path, ix.generation)
                )
            else:
                patch_index(ix, batch, old)
                if cursor is not None:
                    ix.cursor = cursor
                bookings = any(k == "booking" for k, _ in batch.final)
                site.changed(SiteChange(entitlements=True, bookings=bookings))
            if fetched_at is not None:
                companies = {oid for (kind, oid) in batch.final if kind == "company"}
                await self._reconcile_day_passes(fetched_at, set(holders), companies)
                for hook in self._fetched:
                    await hook(fetched_at, set(holders), companies)
            seconds = time.monotonic() - started
            if batch.final or batch.refused:
                log.info(
                    "sync: %d change(s) from %s applied, %d refused, in %.3f s%s",
                    batch.applied,
                    source,
                    len(batch.refused),
                    seconds,
                    " (index rebuilt)" if batch.reload else "",
                )
            return {
                "applied": batch.applied,
                "refused": [str(r) for r in batch.refused],
                "cursor": site.index.cursor,
                "reloaded": batch.reload,
                "seconds": round(seconds, 4),
            }

    def pushes_applied(self) -> int:
        """A mark for `settle_pushes`: take it before a pull's first request."""
        return self._pushes

    async def settle_pushes(self, mark: int) -> int:
        """A pull that started at `mark` read the changes to the end: each object a
        push changed before the mark and no page carried since gets its rows back
        (the push was older than the cursor). Returns how many objects did."""
        site = self.site
        async with self._lock:
            gen = site.index.generation
            rows = await site.store.fetchall(
                "SELECT kind, id, rows FROM push_undo WHERE gen = ?", (gen,)
            )
            ops: list[SqlOp] = []
            restored: list[pushed.Key] = []
            for kind, oid, kept in rows:
                key = (kind, oid)
                if self._pushed_at.get(key, 0) > mark:
                    continue  # pushed after the pull started: the next pull decides
                self._pushed_at.pop(key, None)
                if await pushed.rows_of(site.store, gen, key) == kept:
                    ops += pushed.superseded_ops(gen, [key])  # the push changed nothing
                else:
                    ops += await pushed.restore_ops(site.store, gen, key, kept)
                    restored.append(key)
            if not ops:
                return 0
            await site.store.write(ops)
            if restored:
                await site.swap_index(await asyncio.to_thread(load_index, site.db_path, gen))
                log.warning(
                    "sync: %d object(s) put back as the pull has them; a push had brought "
                    "older versions: %s",
                    len(restored),
                    ", ".join(f"{kind} {oid}" for kind, oid in restored[:10]),
                )
            return len(restored)

    def _report_refusals(self, refused: list[Refused], source: str) -> list[Refused]:
        """Log, alarm and return the refusals to record, leaving out what a push already
        reported.

        A pushed change is applied at once and then fetched again by the pull that
        follows (it moves the cursor): an invalid one is refused by both. The pull's
        refusal of the same change for the same reason is logged at INFO only, with no
        second alarm or `refused_changes` row.
        """
        fresh: list[Refused] = []
        for r in refused:
            identity = r.identity()
            if source == "push":
                self._pushed_refusals[identity] = None
                while len(self._pushed_refusals) > PUSHED_REFUSALS_KEPT:
                    del self._pushed_refusals[next(iter(self._pushed_refusals))]
            elif identity in self._pushed_refusals:
                del self._pushed_refusals[identity]
                log.info("sync: change refused again (%s), as when pushed: %s", source, r)
                continue
            log.error("sync: change refused (%s): %s", source, r)
            if len(fresh) < 20:
                self.recorder.alarm("change_refused", str(r), source=source, path=r.path)
            fresh.append(r)
        return fresh

    async def _reconcile_day_passes(
        self,
        fetched_at: float,
        holders: set[str] | None = None,
        companies: set[str] | None = None,
    ) -> None:
        """Day passes used here from a balance, once the cloud's counts include them.

        A use from a member's or a company's balance is subtracted locally until
        its `usage.day_pass` event was accepted by the cloud *and* a document
        fetched after that arrived: that document's balance already counts it.
        `holders`/`companies`: the documents that arrived (None: a whole snapshot).
        """
        if holders is not None and not holders and not companies:
            return
        store = self.site.store
        rows = await store.fetchall(
            "SELECT u.holder, u.day, u.source, u.company FROM day_pass_uses u "
            "LEFT JOIN outbox o ON o.id = u.event_id "
            "WHERE u.reflected = 0 AND u.source IN ('balance', 'company') "
            "AND (o.id IS NULL OR (o.state = 'delivered' AND o.delivered < ?))",
            (fetched_at,),
        )
        st = self.site.state
        done: list[tuple[str, str]] = []
        for holder, day, source, company in rows:
            if holders is not None and not (
                (source == "balance" and holder in holders)
                or (source == "company" and company in (companies or ()))
            ):
                continue
            done.append((holder, day))
            if source == "balance":
                left = st.balance_used.get(holder, 0) - 1
                if left > 0:
                    st.balance_used[holder] = left
                else:
                    st.balance_used.pop(holder, None)
            elif company is not None:
                left = st.company_used.get(company, 0) - 1
                if left > 0:
                    st.company_used[company] = left
                else:
                    st.company_used.pop(company, None)
        if done:
            await store.write(
                [
                    (
                        "UPDATE day_pass_uses SET reflected = 1 WHERE holder = ? AND day = ?",
                        Many(done),
                    )
                ]
            )
            log.info("sync: %d day pass use(s) now counted in the cloud's balances", len(done))

    async def _credentials_of(self, holders: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        gen = self.site.index.generation
        for i in range(0, len(holders), 500):
            chunk = holders[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for holder, cid, key in await self.site.store.fetchall(
                f"SELECT holder, id, key FROM credentials WHERE gen = ? AND holder IN ({marks})",  # noqa: S608
                (gen, *chunk),
            ):
                out.setdefault(holder, []).append((cid, key))
        return out
