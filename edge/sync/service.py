"""Cloud sync (`edge-sync/1`): pull on a schedule, signed push, event upload.

- **Pull.** First a snapshot (streamed to a file, then staged and swapped in
  like `edgectl import`), then changes by cursor every `pull_interval_s`
  (an APScheduler job). `410` takes a fresh snapshot. Each page of changes is
  committed with its cursor in one transaction.
- **Push.** Envelopes on `edge/{site}/push` are verified (`push.py`) and
  handled by `Pushes` (`pushes.py`); a replayed nonce is refused across
  restarts. `changes` apply at once and are followed by a pull, which brings
  them into cursor order.
- **Upload.** The outbox goes up oldest first, at most `upload_batch` events
  per request. An event is marked delivered only when the cloud accepted its
  id; a rejected one is kept with the cloud's error. The cloud dedups by id,
  so a batch sent twice (a crash or a lost answer) is counted once.

Failures back off exponentially with jitter (or as `Retry-After` says);
`401`/`403` stop pull and upload with an alarm until `edgectl sync now`.
HTTP runs in worker threads: the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from edge import faultpoints
from edge.config import CloudConfig
from edge.mqtt.link import MqttLink
from edge.secrets import SecretError, describe_missing, read_secret
from edge.site.sqlite import Many, SqlOp
from edge.sync.cloud import CloudClient, CloudError
from edge.sync.pushes import DoorCommands, Pushes
from edge.timeutil import iso_instant

if TYPE_CHECKING:
    from pathlib import Path

    from edge.site.recorder import Recorder
    from edge.site.state import SiteState
    from edge.site.updates import SiteUpdates

log = logging.getLogger("edge.sync")

SNAPSHOT_FILE = "snapshot.download.json"


def upload_result_ops(
    accepted: list[str], rejected: list[tuple[str, str]], now: float
) -> list[SqlOp]:
    """The outbox updates for the cloud's answer to an upload: accepted events are
    delivered, rejected ones keep their error (`rejected` holds (error, id) pairs).
    Also run by the power-cut campaign (faults/powercut)."""
    ops: list[SqlOp] = []
    if accepted:
        ops.append(
            (
                "UPDATE outbox SET state = 'delivered', delivered = ? "
                "WHERE id = ? AND state = 'pending'",
                Many((now, i) for i in accepted),
            )
        )
    if rejected:
        ops.append(
            (
                "UPDATE outbox SET state = 'rejected', error = ? "
                "WHERE id = ? AND state = 'pending'",
                Many(rejected),
            )
        )
    return ops


@dataclass
class Health:
    """How one side of sync (pull or upload) is doing, for status and backoff."""

    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None
    retry_at: float | None = None

    def ok(self) -> None:
        self.failures = 0
        self.last_ok_at = time.time()
        self.retry_at = None

    def failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self.last_error_at = time.time()


class Sync:
    def __init__(
        self,
        cfg: CloudConfig,
        site: SiteState,
        recorder: Recorder,
        updates: SiteUpdates,
        doors: DoorCommands,
        state_dir: Path,
    ) -> None:
        self.cfg = cfg
        self.state = site
        self.recorder = recorder
        self.updates = updates
        self.doors = doors
        self.state_dir = state_dir
        self.site = site.config.site.id
        self.pull = Health()
        self.upload = Health()
        self.auth_failed: str | None = None
        self.clock_offset: float | None = None  # the cloud's clock less ours, last answer
        self.client: CloudClient | None = None
        self.link: MqttLink | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._pull_lock = asyncio.Lock()
        self._pending_pull: asyncio.Task[None] | None = None
        self._want_snapshot = False
        self._pull_again = False
        self._upload_limit: int | None = None  # narrowed while a refused batch is bisected
        self._upload_wake = asyncio.Event()
        self._upload_task: asyncio.Task[None] | None = None
        # Day passes used from a balance whose upload may have reached the cloud
        # unannounced (an error after sending, or pending at start: maybe sent
        # before a crash). The cloud lowers the balance when it stores the event,
        # so a document fetched before we learn of the delivery may already count
        # the use; once delivered, a snapshot settles which (_reconcile_day_passes).
        self._unconfirmed: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pushes = Pushes(cfg, site, recorder, updates, doors, self.request_pull, self._spawn)

    @property
    def topic(self) -> str:
        return f"edge/{self.site}/push"

    # --- lifecycle ------------------------------------------------------------------------

    def attach(self, link: MqttLink) -> None:
        """Subscribe to pushes on the gateway's broker link, before it connects."""
        if self.cfg.push:
            self.link = link
            link.subscribe(self.topic, self.pushes.on_push)
            link.on_connect(self._push_connected)

    def _push_connected(self) -> None:
        # A push published while the gateway was not subscribed (before its first
        # connection, or after a broker restart that forgot its session) never
        # comes: a pull brings what it carried.
        if self._scheduler is not None and self._may_pull():
            log.debug("sync: push subscribed; pulling what may have been missed")
            self.request_pull()

    async def start(self) -> None:
        if self.cfg.url.startswith("http://"):
            # Every start, so that a lab setting left on in production is seen in the log.
            log.warning(
                "sync: INSECURE: cloud.allow_insecure_http_for_lab is on; the cloud token "
                "and all data go to %s in clear (use https:// outside a lab)",
                self.cfg.url,
            )
        await self.prepare()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._scheduled_pull,
            "interval",
            seconds=self.cfg.pull_interval_s,
            id="pull",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()
        self._upload_task = asyncio.create_task(self._upload_loop(), name="sync.upload")
        self.request_pull()

    async def prepare(self) -> None:
        """What start() does before any pull or upload runs."""
        state_dir = self.state_dir
        (state_dir / SNAPSHOT_FILE).unlink(missing_ok=True)  # left by a crash mid-download
        await self.pushes.load()
        self._open_client()
        rows = await self.state.store.fetchall(
            "SELECT id, body FROM outbox WHERE state = 'pending' AND type = 'usage.day_pass'"
        )
        self._unconfirmed = {i for i, body in rows if _from_balance(json.loads(body))}

    async def stop(self) -> None:
        if self.client is not None:
            self.client.cancelled.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        tasks = [t for t in (self._upload_task, self._pending_pull, *self._tasks) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.client is not None:
            self.client.close()

    def _open_client(self) -> bool:
        """(Re)read the token; without one, sync waits for the operator."""
        name = self.cfg.token_secret
        try:
            raw = read_secret(self.state_dir, name)
        except SecretError as exc:
            raw, problem = None, str(exc)
        else:
            problem = f"no cloud token: put it in {describe_missing(self.state_dir, name)}"
        token = raw.decode(errors="replace").strip() if raw else ""
        if not token:
            self.client = None
            self.auth_failed = problem
            self.pull.failed(problem)
            log.error("sync: %s; sync is stopped", problem)
            return False
        if self.client is not None:
            self.client.close()
        self.client = CloudClient(
            self.cfg.url, self.site, token, self.cfg.timeout_s, self.cfg.ca_bundle
        )
        return True

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- pull ----------------------------------------------------------------------------

    def request_pull(self, snapshot: bool = False) -> None:
        """Pull as soon as possible. A request while a pull runs makes it pull once
        more when done: what it fetched may be older than what was just pushed."""
        self._want_snapshot |= snapshot
        if self._pending_pull is None or self._pending_pull.done():
            self._pending_pull = asyncio.create_task(self._pull(), name="sync.pull")
        else:
            self._pull_again = True

    def _may_pull(self) -> bool:
        """False when stopped or backing off: the retry is already scheduled."""
        return not self.auth_failed and not (
            self.pull.retry_at and time.time() < self.pull.retry_at
        )

    async def _scheduled_pull(self) -> None:
        if self._may_pull():
            self.request_pull()

    async def sync_now(self, snapshot: bool = False) -> dict[str, Any]:
        """`edgectl sync now`: re-read the token, lift an auth stop, pull, upload."""
        if self.auth_failed:
            log.warning("sync: resumed by the operator")
            self.auth_failed = None
            self._open_client()
        self.pull.retry_at = None
        self.upload.retry_at = None
        self.request_pull(snapshot)
        if self._pending_pull is not None:
            await asyncio.shield(self._pending_pull)
        self._upload_wake.set()
        return await self.status()

    async def _pull(self) -> None:
        while True:
            self._pull_again = False
            await self._pull_once()
            if not self._pull_again or self.pull.retry_at is not None:
                return

    async def _pull_once(self) -> None:
        async with self._pull_lock:
            if self.auth_failed or self.client is None:
                return
            snapshot, self._want_snapshot = self._want_snapshot, False
            fetched_at = time.time()
            try:
                await self._pull_changes(snapshot, fetched_at)
            except CloudError as exc:
                self._want_snapshot |= snapshot  # a snapshot asked for is still wanted
                self._pull_failed(exc)
            except Exception as exc:  # a refused snapshot, a store failure: retried too
                log.exception("sync: pull failed")
                self._pull_failed(CloudError("retry", str(exc)))
            else:
                if self.pull.failures:
                    log.info("sync: pull works again")
                self.pull.ok()
                await self.state.mark_synced(time.time())

    async def _pull_changes(self, snapshot: bool, fetched_at: float) -> None:
        assert self.client is not None
        # Pushes applied before this pull asked anything: settled once it has read
        # to the end (edge/site/pushed.py).
        pushes = self.updates.pushes_applied()
        if snapshot or not self.state.index.loaded or not self.state.index.cursor:
            await self._snapshot(fetched_at)
        gone = 0
        while True:
            cursor = self.state.index.cursor
            assert cursor is not None
            try:
                reply = await asyncio.to_thread(self.client.changes, cursor, self.cfg.changes_limit)
            except CloudError as exc:
                if exc.kind != "gone" or gone:
                    raise
                gone += 1
                log.warning("sync: the cloud no longer knows cursor %s; taking a snapshot", cursor)
                await self._snapshot(time.time())
                continue
            self._clock(reply.server_time)
            faultpoints.hit("sync.change_page")
            body = reply.body
            if body["changes"] or body["cursor"] != cursor:
                await self.updates.apply_changes(
                    body["changes"], body["cursor"], "pull", fetched_at=fetched_at
                )
            if not body.get("more"):
                await self.updates.settle_pushes(pushes)
                return

    async def _snapshot(self, fetched_at: float) -> None:
        assert self.client is not None
        dest = self.state_dir / SNAPSHOT_FILE
        started = time.monotonic()
        try:
            reply = await asyncio.to_thread(self.client.snapshot, dest)
            self._clock(reply.server_time)
            log.info(
                "sync: snapshot downloaded (%.1f MB in %.1f s); importing",
                dest.stat().st_size / 1e6,
                time.monotonic() - started,
            )
            await self.updates.import_snapshot(dest, source="cloud", fetched_at=fetched_at)
        finally:
            dest.unlink(missing_ok=True)

    def _clock(self, server_time: float | None) -> None:
        if server_time is not None:
            self.clock_offset = server_time - time.time()
            self.state.note_cloud_time(server_time)
            self.state.clock.vouch(server_time)

    def _pull_failed(self, exc: CloudError) -> None:
        self.pull.failed(str(exc))
        if exc.kind == "auth":
            self._auth_stop(str(exc))
            return
        delay = self._backoff(self.pull.failures, exc.retry_after)
        self.pull.retry_at = time.time() + delay
        log.warning("sync: pull failed (%s); retrying in %.1f s", exc, delay)
        if self._scheduler is not None:
            self._scheduler.add_job(
                self._retry_pull,
                "date",
                run_date=datetime.now(UTC) + timedelta(seconds=delay),
                id="pull-retry",
                replace_existing=True,
                misfire_grace_time=None,
            )

    async def _retry_pull(self) -> None:
        self.pull.retry_at = None
        self.request_pull()

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 3600.0)
        ceiling = min(self.cfg.backoff_max_s, self.cfg.backoff_min_s * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # jitter: sites do not retry in step

    def _auth_stop(self, message: str) -> None:
        if self.auth_failed:
            return
        self.auth_failed = message
        log.error("sync: %s; sync is stopped until `edgectl sync now`", message)
        self.recorder.alarm("cloud_auth", message)

    # --- upload --------------------------------------------------------------------------

    def wake_upload(self) -> None:
        self._upload_wake.set()

    async def _upload_loop(self) -> None:
        store = self.state.store
        while True:
            wait = 30.0
            if self.upload.retry_at is not None:
                wait = max(0.0, self.upload.retry_at - time.time())
            elif not self.auth_failed and self.client is not None:
                rows = await store.fetchall(
                    "SELECT id, body FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                    (self._upload_limit or self.cfg.upload_batch,),
                )
                if rows:
                    await self._upload(rows)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._upload_wake.wait(), wait)
            self._upload_wake.clear()
            if self.upload.retry_at is not None and time.time() >= self.upload.retry_at:
                self.upload.retry_at = None

    async def _upload(self, rows: list[Any]) -> None:
        assert self.client is not None
        events = [json.loads(body) for _, body in rows]
        try:
            reply = await asyncio.to_thread(self.client.post_events, events)
        except CloudError as exc:
            self.upload.failed(str(exc))
            if exc.kind == "retry":  # the cloud may have stored them before failing
                self._unconfirmed.update(e["id"] for e in events if _from_balance(e))
            if exc.kind == "auth":
                self._auth_stop(str(exc))
                return
            if exc.kind == "refused":
                await self._bisect(rows, str(exc))
                return
            delay = self._backoff(self.upload.failures, exc.retry_after)
            self.upload.retry_at = time.time() + delay
            log.warning("sync: upload failed (%s); retrying in %.1f s", exc, delay)
            return
        self._clock(reply.server_time)
        # The cloud has the events; a kill here sends them again after the restart.
        faultpoints.hit("sync.upload_answered")
        if self._upload_limit is not None and len(rows) == self._upload_limit:
            self._upload_limit = None  # past the refused batch: back to full batches
        sent = {i for i, _ in rows}
        accepted = [i for i in reply.body.get("accepted", []) if i in sent]
        rejected = [
            (str(r.get("error") or "rejected without a reason")[:1000], r["id"])
            for r in reply.body.get("rejected", [])
            if r["id"] in sent
        ]
        ops = upload_result_ops(accepted, rejected, time.time())
        for error, event_id in rejected:
            log.error("sync: the cloud rejected event %s: %s", event_id, error)
        if ops:
            try:
                await self.state.store.write(ops)
            except sqlite3.Error as exc:
                # The disk refuses the marks (the store logged the fault once): the
                # events stay pending and go again later, and the cloud, which keeps
                # them by id, counts each once. The uploader lives on.
                self.upload.failed(f"marking {len(ops)} batches delivered: {exc}")
                delay = self._backoff(self.upload.failures, None)
                self.upload.retry_at = time.time() + delay
                log.debug("sync: could not mark events delivered (%s); resending later", exc)
                done = set(accepted)  # at the cloud, still pending here: unclear until resent
                self._unconfirmed.update(
                    e["id"] for e in events if e["id"] in done and _from_balance(e)
                )
                return
        settled = self._unconfirmed & (set(accepted) | {i for _, i in rejected})
        if settled:
            self._unconfirmed -= settled
            if settled & set(accepted):
                # Those uses may be in a balance fetched before this answer, and
                # still be subtracted here: a snapshot fetched from now on settles it.
                log.info(
                    "sync: %d day pass use(s) delivered after an unclear upload; "
                    "taking a snapshot to count the balances once",
                    len(settled & set(accepted)),
                )
                self.request_pull(snapshot=True)
        unanswered = len(sent) - len(accepted) - len(rejected)
        if unanswered:
            answered = set(accepted) | {i for _, i in rejected}
            self._unconfirmed.update(
                e["id"] for e in events if e["id"] not in answered and _from_balance(e)
            )
            message = f"events: the cloud answered for {len(sent) - unanswered} of {len(sent)}"
            self.upload.failed(message)
            delay = self._backoff(self.upload.failures, None)
            self.upload.retry_at = time.time() + delay
            log.warning("sync: %s; retrying the rest in %.1f s", message, delay)
        else:
            self.upload.ok()

    async def _bisect(self, rows: list[Any], error: str) -> None:
        """The cloud refused a whole request (a 4xx): find the event it cannot take
        by halving the batch, and keep that one as rejected with the cloud's words."""
        if len(rows) > 1:
            self._upload_limit = max(1, len(rows) // 2)
            log.warning("sync: upload refused (%s); retrying %d events", error, self._upload_limit)
            return
        event_id = rows[0][0]
        log.error("sync: the cloud refuses event %s: %s", event_id, error)
        await self.state.store.write(
            [
                (
                    "UPDATE outbox SET state = 'rejected', error = ? WHERE id = ?",
                    (error[:1000], event_id),
                )
            ]
        )
        self._upload_limit = None

    # --- views ---------------------------------------------------------------------------

    async def prune(self, now: float) -> None:
        await self.pushes.prune(now)

    async def status(self) -> dict[str, Any]:
        tz = self.state.index.tz
        store = self.state.store
        backlog = {
            t: n
            for t, n in await store.fetchall(
                "SELECT type, COUNT(*) FROM outbox WHERE state = 'pending' "
                "GROUP BY type ORDER BY type"
            )
        }
        rejected = await store.fetchone("SELECT COUNT(*) FROM outbox WHERE state = 'rejected'")
        refused = await store.fetchall(
            "SELECT at, source, path, error FROM refused_changes ORDER BY seq DESC LIMIT 10"
        )
        synced = self.state.synced_at

        def when(t: float | None) -> str | None:
            return None if t is None else iso_instant(t, tz)

        return {
            "url": self.cfg.url,
            "cursor": self.state.index.cursor,
            "last_success": when(synced),
            "age_s": None if synced is None else round(time.time() - synced, 1),
            "stopped": self.auth_failed,
            "pull": {
                "last_ok": when(self.pull.last_ok_at),
                "last_error": self.pull.last_error,
                "last_error_at": when(self.pull.last_error_at),
                "failures": self.pull.failures,
                "retry_at": when(self.pull.retry_at),
                "interval_s": self.cfg.pull_interval_s,
            },
            "upload": {
                "last_ok": when(self.upload.last_ok_at),
                "last_error": self.upload.last_error,
                "last_error_at": when(self.upload.last_error_at),
                "failures": self.upload.failures,
                "retry_at": when(self.upload.retry_at),
            },
            "backlog": backlog,
            "backlog_total": sum(backlog.values()),
            "rejected_events": int(rejected[0]) if rejected else 0,
            "refused_changes": [
                {"at": iso_instant(at, tz), "source": src, "path": path, "error": err}
                for at, src, path, err in refused
            ],
            "push": {
                "enabled": self.cfg.push,
                "topic": self.topic,
                **(self.link.view() if self.link is not None else {}),
                "accepted": self.pushes.accepted,
                "rejected": self.pushes.rejected,
                "last": when(self.pushes.last_at),
            },
            "cloud_clock_offset_s": None
            if self.clock_offset is None
            else round(self.clock_offset, 1),
        }


def _from_balance(event: dict[str, Any]) -> bool:
    """A day pass used from a member's or a company's balance (the cloud lowers it)."""
    details = event.get("details") or {}
    return event.get("type") == "usage.day_pass" and details.get("source") in (
        "balance",
        "company",
    )
