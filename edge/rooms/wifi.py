"""The guest Wi-Fi passphrase: rotated on a schedule, published for the access point.

The passphrase is published retained on `edge/<site>/wifi/guest`, where an
access-point adapter (a script on the controller, a UniFi/OpenWrt bridge)
applies it, so the old one stops working at the rotation; the room panels
show the current one. It is kept in the store, so a restart neither rotates
early nor forgets it. Rotation happens at `rotate_at` site-local time every
`rotate_days` days, or at once with `edgectl wifi rotate`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.config import WifiConfig
from edge.mqtt.topics import topic
from edge.timeutil import iso_instant

if TYPE_CHECKING:
    from edge.mqtt.link import MqttLink
    from edge.site.state import SiteState

log = logging.getLogger("edge.wifi")

# No 0/o, 1/l/i: read off a panel and typed on a phone.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_passphrase(groups: int) -> str:
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(4)) for _ in range(groups))


def next_rotation(cfg: WifiConfig, since: float, tz: Any) -> float:
    """The first `rotate_at` after `since`, then `rotate_days - 1` days more."""
    hour, minute = (int(x) for x in cfg.rotate_at.split(":"))
    local = datetime.fromtimestamp(since, tz)
    day = local.date()
    at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    if at <= local:
        day += timedelta(days=1)
    day += timedelta(days=cfg.rotate_days - 1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()


class GuestWifi:
    def __init__(
        self,
        site: SiteState,
        cfg: WifiConfig,
        link: MqttLink,
        on_change: Callable[[dict[str, str] | None], None],
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.link = link
        self.on_change = on_change
        self.passphrase: str | None = None
        self.since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._rotated = asyncio.Event()

    async def start(self) -> None:
        meta = await self.site.store.meta()
        if meta.get("wifi_passphrase") and meta.get("wifi_since"):
            self.passphrase = meta["wifi_passphrase"]
            self.since = float(meta["wifi_since"])
        until = self.until
        if self.passphrase is None or until is None or time.time() >= until:
            await self.rotate("start")
        else:
            self._announce()
        self.link.on_connect(self._publish)
        self._task = asyncio.create_task(self._schedule(), name="wifi.rotate")

    @property
    def until(self) -> float | None:
        """The next rotation, in the site's time zone as it is now (UTC before the
        first import, the site's after it)."""
        if self.since is None:
            return None
        return next_rotation(self.cfg, self.since, self.site.index.tz)

    def site_changed(self) -> None:
        """A new site document (perhaps a new time zone): reschedule."""
        self._rotated.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def rotate(self, why: str) -> dict[str, Any]:
        now = time.time()
        passphrase = new_passphrase(self.cfg.groups)
        await self.site.store.write(
            [
                ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
                for k, v in (("wifi_passphrase", passphrase), ("wifi_since", repr(now)))
            ]
        )
        self.passphrase, self.since = passphrase, now
        until = self.until
        assert until is not None
        log.info("wifi: guest passphrase rotated (%s); next rotation %s", why, iso_instant(until))
        self._announce()
        self._rotated.set()
        return self.view()

    def _announce(self) -> None:
        self._publish()
        if self.cfg.on_panels and self.passphrase is not None:
            self.on_change({"ssid": self.cfg.ssid, "passphrase": self.passphrase})

    def _publish(self) -> None:
        until = self.until
        if self.passphrase is None or self.since is None or until is None:
            return
        tz = self.site.index.tz
        body = {
            "ssid": self.cfg.ssid,
            "passphrase": self.passphrase,
            "since": iso_instant(self.since, tz),
            "until": iso_instant(until, tz),
        }
        self.link.publish(
            topic("wifi_guest", site=self.site.config.site.id),
            json.dumps(body, separators=(",", ":")).encode(),
            retain=True,
        )

    async def _schedule(self) -> None:
        while True:
            self._rotated.clear()
            delay = max(0.0, (self.until or time.time()) - time.time())
            try:
                # Capped: a clock set forward while asleep still rotates within the hour.
                await asyncio.wait_for(self._rotated.wait(), min(delay, 3600.0))
                self._publish()  # rotated by hand, or a new site: a new schedule
                continue
            except TimeoutError:
                pass
            until = self.until
            if until is not None and time.time() >= until:
                await self.rotate("schedule")

    def view(self) -> dict[str, Any]:
        tz = self.site.index.tz
        until = self.until
        return {
            "ssid": self.cfg.ssid,
            "passphrase": self.passphrase,
            "since": iso_instant(self.since, tz) if self.since else None,
            "until": iso_instant(until, tz) if until else None,
        }
