"""The event recorder: every event of this gateway, made, followed, written to the
outbox with the state changes it goes with, in one transaction, and logged once
that transaction has committed (or logged as NOT RECORDED when it failed).

Parts of the gateway that record something hold this, not the gateway:
`event` makes one, `record` queues events and state changes and returns a
future that resolves once both are durable. `on_recorded` is told after each
durable batch (the uploader wakes up on it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.site.events import log_line, make_event
from edge.site.reports.journal import journal_ops
from edge.site.sqlite import SqlOp
from edge.site.state import Actor, SiteState
from edge.timeutil import iso_instant

log = logging.getLogger("edge.gateway")
events_log = logging.getLogger("edge.events")

FOLLOW_QUEUE_LIMIT = 10_000


def outbox_op(ev: dict[str, Any], now: float) -> SqlOp:
    """The outbox row of one event (also run by the power-cut campaign, faults/powercut)."""
    # OR IGNORE: a once-a-day use has an id derived from what it is
    # (events.usage_id); recorded twice, it is still one use.
    return (
        "INSERT OR IGNORE INTO outbox (id, type, at, body, created) VALUES (?,?,?,?,?)",
        (ev["id"], ev["type"], ev["at"], json.dumps(ev), now),
    )


def _log_events(events: list[dict[str, Any]], done: asyncio.Future[int]) -> None:
    if done.cancelled():
        reason = "the write was cancelled"
    else:
        exc = done.exception()
        reason = "" if exc is None else str(exc) or type(exc).__name__
    for ev in events:
        if reason:
            events_log.error("%s NOT RECORDED (%s)", log_line(ev), reason)
        else:
            events_log.info("%s", log_line(ev))


class Recorder:
    def __init__(self, site: SiteState) -> None:
        self.site = site
        self.store = site.store
        self.config: Config = site.config
        self.on_recorded: Callable[[], None] | None = None
        self._followers: set[asyncio.Queue[dict[str, Any]]] = set()

    def event(self, type_: str, at: float, **fields: Any) -> dict[str, Any]:
        """An event of this gateway, not yet recorded (see `record`)."""
        ix = self.site.index
        return make_event(
            type_,
            at,
            ix.tz,
            ix.site_id or self.config.site.id,
            self.config.gateway.id,
            **fields,
        )

    def record(self, events: list[dict[str, Any]], ops: list[SqlOp]) -> asyncio.Future[int]:
        """Queue events and state changes for one transaction; the future resolves
        once both are durable."""
        now = time.time()
        # The reports' own rows (who came, as what company and plan, that day):
        # in the same transaction, with the membership of the index that decided.
        ops.extend(journal_ops(self.site.index, events))
        for ev in events:
            ops.append(outbox_op(ev, now))
            for q in self._followers:
                if q.qsize() < FOLLOW_QUEUE_LIMIT:
                    q.put_nowait(ev)
        done = self.store.submit(ops)
        if events:
            # The log says what is recorded: a line only once the transaction has
            # committed, and a loud one when it did not.
            done.add_done_callback(lambda f: _log_events(events, f))
        if self.on_recorded is not None and events:
            done.add_done_callback(self._recorded)
        return done

    def _recorded(self, _done: asyncio.Future[int]) -> None:
        if self.on_recorded is not None:
            self.on_recorded()

    def emit(self, type_: str, at: float, **fields: Any) -> asyncio.Future[int]:
        """Make and record one event."""
        return self.record([self.event(type_, at, **fields)], [])

    def alarm(self, alarm: str, message: str, **details: Any) -> None:
        """A `gateway.alarm` event: something an operator must look at."""
        details = {"alarm": alarm, "message": message, **details}
        self.emit("gateway.alarm", time.time(), details=details)

    # --- followers (`edgectl events --follow`) ------------------------------------

    def follow(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.add(q)
        return q

    def unfollow(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._followers.discard(q)

    def end_follows(self) -> None:
        for q in list(self._followers):
            q.put_nowait({})  # wakes followers; an empty event means "stream ends"

    # --- reading and keeping -------------------------------------------------------

    async def recent_events(self, limit: int, type_prefix: str | None = None) -> list[Any]:
        if type_prefix:
            rows = await self.store.fetchall(
                "SELECT body FROM outbox WHERE type LIKE ? ORDER BY seq DESC LIMIT ?",
                (type_prefix.replace("%", "") + "%", limit),
            )
        else:
            rows = await self.store.fetchall(
                "SELECT body FROM outbox ORDER BY seq DESC LIMIT ?", (limit,)
            )
        return [json.loads(r[0]) for r in reversed(rows)]

    async def audit(self, actor: Actor, method: str, params: dict[str, Any], outcome: str) -> None:
        await self.store.write(
            [
                (
                    "INSERT INTO audit (at, actor, uid, pid, method, params, outcome) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (
                        iso_instant(time.time()),
                        actor.name,
                        actor.uid,
                        actor.pid,
                        method,
                        json.dumps(params, sort_keys=True),
                        outcome,
                    ),
                )
            ]
        )

    async def prune(self, now: float | None = None) -> int:
        """Forget delivered events older than the retention; undelivered ones stay."""
        days = self.config.events.retention_days
        cutoff = (time.time() if now is None else now) - 86400 * days
        row = await self.store.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND delivered < ?", (cutoff,)
        )
        pruned = int(row[0]) if row else 0
        if pruned:
            await self.store.write(
                [("DELETE FROM outbox WHERE state = 'delivered' AND delivered < ?", (cutoff,))]
            )
            log.info("gateway: pruned %d delivered events older than %d days", pruned, days)
        return pruned
