"""The occupancy on the site broker: `edge/{site}/occupancy`, retained.

`{"count": N, "by_area": {door: n}}`, as `edge.site.presence` defines it
(people granted entry today, within `[homeassistant] occupancy_hours`, not
seen leaving through an exit reader). It follows the recorder's events
(`occupancy.follow`), so it counts the same grants the outbox holds; at start
it reads back the grants of the window from the outbox, so a restart does not
reset it. Published when it changes, at most once a second, and again at
every reconnect; a timer (not a task) publishes the drop when a stay ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from edge.mqtt.topics import topic
from edge.site.presence import Presence

if TYPE_CHECKING:
    from edge.mqtt.link import MqttLink
    from edge.site.recorder import Recorder
    from edge.site.state import SiteState

log = logging.getLogger("edge.mqtt")

MIN_INTERVAL_S = 1.0
CHUNK = 500  # grants read back at start per query (the loop turns between two)
LONGEST_SLEEP_S = 3600.0  # looked at again at least this often, in case the clock jumped


def _text(path: str) -> str:
    """SQL for a string field of the event `body`, NULL when absent, not text or not JSON."""
    return (
        f"CASE WHEN json_valid(body) THEN CASE WHEN json_type(body, '{path}') = 'text' "
        f"THEN json_extract(body, '{path}') END END"
    )


# Built from the constant paths above, nothing from outside.
GRANTS_SINCE = (
    f"SELECT json_valid(body), {_text('$.holder')}, {_text('$.door')}, {_text('$.at')}, "  # noqa: S608
    f"{_text('$.details.side')}, seq FROM outbox "
    "WHERE type = 'access.granted' AND created >= ? AND seq > ? AND seq <= ? "
    "ORDER BY seq LIMIT ?"
)


class Occupancy:
    def __init__(self, link: MqttLink, site: SiteState, recorder: Recorder) -> None:
        self.link = link
        self.site = site
        self.recorder = recorder
        self.presence = Presence(site.config.homeassistant.occupancy_hours * 3600)
        self._topic = topic("occupancy", site=site.config.site.id)
        self._sent: bytes | None = None
        self._last = float("-inf")  # loop time of the last publication
        self._publish: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        link.on_connect(self._connected)

    async def start(self) -> None:
        self._queue = self.recorder.follow()  # first, so no grant falls between the two
        await self._load(time.time())
        self._task = asyncio.create_task(self._follow(self._queue), name="occupancy.follow")
        self._running = True
        self.changed()

    async def stop(self) -> None:
        self._running = False
        for handle in (self._publish, self._expiry):
            if handle is not None:
                handle.cancel()
        self._publish = self._expiry = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            self.recorder.unfollow(self._queue)
            self._queue = None

    async def _load(self, now: float) -> None:
        # `created` is when the event was queued, within moments of its `at`.
        # SQLite picks the fields out in the store's thread: a busy day holds
        # thousands of grants, and parsing them here would stall the loop. They
        # come CHUNK at a time: all at once, 100,000 grants held 14 MB that the
        # process kept after they were freed. What is recorded from here on
        # comes through the queue `start` opened, so the read stops at the last
        # row stored now.
        since = now - self.presence.window_s - 60
        last = await self.site.store.fetchone("SELECT max(seq) FROM outbox")
        upto = last[0] if last is not None and last[0] is not None else 0
        tz = self.site.index.tz
        after = bad = 0
        while after < upto:
            rows = await self.site.store.fetchall(GRANTS_SINCE, (since, after, upto, CHUNK))
            for valid, holder, door, at, side, _ in rows:
                if not valid:
                    bad += 1
                    continue
                self.presence.granted(holder, door, at, side, tz)
            if len(rows) < CHUNK:
                break
            after = rows[-1][-1]
        if bad:
            log.warning("mqtt: occupancy: %d outbox event(s) are not JSON; skipped", bad)
        self.presence.expire(now)

    async def _follow(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            if not event:
                return  # the recorder ends its followers when the gateway stops
            if self.presence.apply(event, self.site.index.tz):
                self.changed()

    def changed(self) -> None:
        """The occupancy may have changed: publish, at most once a second."""
        if self._publish is not None or not self._running:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + MIN_INTERVAL_S - loop.time())
        self._publish = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._publish = None
        now = time.time()
        self.presence.expire(now)
        self._arm_expiry(now)
        body = json.dumps(self.presence.summary(now), sort_keys=True).encode()
        if body == self._sent:
            return
        self._sent = body
        self._last = asyncio.get_running_loop().time()
        self.link.publish(self._topic, body, retain=True)

    def _arm_expiry(self, now: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        due = self.presence.next_expiry()
        if due is not None:
            delay = min(max(0.0, due - now), LONGEST_SLEEP_S)
            self._expiry = asyncio.get_running_loop().call_later(delay, self.changed)

    def _connected(self) -> None:
        self._sent = None  # a broker that restarted without persistence lost it
        self.changed()
