"""`edge-bridge run`: the composition root. One event loop, named tasks:

- `sync[NAME]`: reads platform NAME and keeps its sites current (`engine`);
- `outbox[NAME]`: writes the sites' billable usage to platform NAME (`usage`);
- `bridge.maintenance`: trims the change logs and delivered events hourly;
- `systemd.watchdog`: WATCHDOG=1 from the loop when systemd asks for it;
- aiohttp's server (`server`), the admin socket (`admin`), and per pushing
  site paho's network thread (`edge.mqtt.link`).

Start: store (migrations) -> records and sites loaded -> platforms -> HTTP
listener and admin socket -> READY=1 -> tasks. Stop is the reverse.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from bridge.admin import AdminServer
from bridge.config import Config
from bridge.engine import PlatformSync, SiteRuntime
from bridge.http import PlatformHttp
from bridge.platforms import PLATFORMS
from bridge.push import SitePusher
from bridge.server import EdgeServer, format_cursor
from bridge.store import BridgeStore
from bridge.usage import Outbox
from edge.ops import systemd

log = logging.getLogger("bridge.service")


class Bridge:
    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.store = BridgeStore(state_dir / "bridge.db")
        self.syncs: dict[str, PlatformSync] = {}
        self.outboxes: dict[str, Outbox] = {}
        self.pushers: dict[str, SitePusher] = {}
        self.server = EdgeServer(self)
        self.admin = AdminServer(
            self, config.admin_socket(state_dir), int(config.admin.socket_mode, 8)
        )
        self.epoch = ""
        self.started = time.time()

    # --- what the server and admin ask -------------------------------------------------

    def site(self, site_id: str) -> SiteRuntime | None:
        for sync in self.syncs.values():
            rt = sync.sites.get(site_id)
            if rt is not None:
                return rt
        return None

    def not_ready(self, site_id: str) -> str:
        cfg = self.config.sites.get(site_id)
        if cfg is None:
            return "unknown site"
        sync = self.syncs[cfg.platform]
        if sync.initial_done is None:
            return (
                f"the initial read of {cfg.platform} is still running ({sync.busy or 'starting'})"
            )
        return "being built"

    def outbox_of(self, site_id: str) -> Outbox | None:
        cfg = self.config.sites.get(site_id)
        return None if cfg is None else self.outboxes.get(cfg.platform)

    async def status(self) -> dict[str, Any]:
        platforms = {}
        for name, sync in self.syncs.items():
            platforms[name] = {
                **sync.view(),
                "webhooks": {
                    "accepted": self.server.webhooks.get(name, 0),
                    "refused": self.server.webhooks_refused.get(name, 0),
                },
                "outbox": await self.outboxes[name].view(),
            }
        sites = {}
        for sync in self.syncs.values():
            for sid, rt in sync.sites.items():
                sites[sid] = {
                    "platform": sync.name,
                    "ready": rt.ready_at is not None,
                    "cursor": format_cursor(self.epoch, rt.state.seq),
                    "objects": rt.state.counts(),
                    "refused": [r.text() for r in rt.state.refusals.values()][:100],
                    "refused_count": len(rt.state.refusals),
                    **({"problem": rt.problem} if rt.problem else {}),
                    **({"push": self.pushers[sid].view()} if sid in self.pushers else {}),
                }
        return {
            "listening": f"{self.config.bridge.listen_host}:{self.server.port}",
            "platforms": platforms,
            "sites": sites,
        }

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await self.store.start()
        self.epoch = await self.store.epoch()
        for name, pcfg in self.config.platforms.items():
            sites = self.config.sites_of(name)
            if not sites:
                log.warning("platform %s serves no site; not reading it", name)
                continue
            module = PLATFORMS[pcfg.type]
            http = PlatformHttp(
                name,
                requests_per_s=pcfg.requests_per_s,
                timeout_s=pcfg.timeout_s,
                backoff_min_s=pcfg.backoff_min_s,
                backoff_max_s=pcfg.backoff_max_s,
                throttle_statuses=module.throttle_statuses,
            )
            platform = module(name, pcfg, http, self.store, self.state_dir)
            sync = PlatformSync(name, pcfg, platform, sites, self.store, self.state_dir)
            await sync.load()
            self.syncs[name] = sync
            self.outboxes[name] = Outbox(sync, self.store)
        for sid, scfg in self.config.sites.items():
            if scfg.push is not None and scfg.platform in self.syncs:
                pusher = SitePusher(sid, scfg.push, self.state_dir)
                self.pushers[sid] = pusher
                self.syncs[scfg.platform].listeners.append(pusher.changes)
        for sync in self.syncs.values():
            await sync.platform.http.start()
            await sync.platform.start()
        for pusher in self.pushers.values():
            await pusher.start()
        await self.server.start()
        await self.admin.start()

    async def stop(self) -> None:
        await self.admin.stop()
        await self.server.stop()
        for pusher in self.pushers.values():
            await pusher.stop()
        for sync in self.syncs.values():
            await sync.platform.http.stop()
        await self.store.stop()

    async def maintain(self, interval_s: float = 3600) -> None:
        keep = self.config.bridge.keep_changes
        retention = self.config.bridge.event_retention_days * 86400
        while True:
            for sync in self.syncs.values():
                for sid, rt in sync.sites.items():
                    floor = rt.state.seq - keep
                    if floor > rt.floor:
                        await self.store.write(
                            [
                                (
                                    "DELETE FROM site_changes WHERE site = ? AND seq <= ?",
                                    (sid, floor),
                                ),
                                ("UPDATE sites SET floor = ? WHERE site = ?", (floor, sid)),
                            ]
                        )
                        rt.floor = floor
            cutoff = time.time() - retention
            await self.store.write(
                [
                    (
                        "DELETE FROM events WHERE state IN ('done', 'skipped') AND received < ?",
                        (cutoff,),
                    ),
                    (
                        "DELETE FROM checkin_days WHERE day < ?",
                        (time.strftime("%Y-%m-%d", time.gmtime(cutoff)),),
                    ),
                ]
            )
            await asyncio.sleep(interval_s)


async def _watchdog(interval: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def run(config: Config, state_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(config, state_dir)
    await bridge.start()
    try:
        systemd.notify(f"READY=1\nSTATUS=serving {len(config.sites)} site(s)")
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(sync.run(), name=f"sync[{name}]")
                for name, sync in bridge.syncs.items()
            ]
            running += [
                tasks.create_task(outbox.run(), name=f"outbox[{name}]")
                for name, outbox in bridge.outboxes.items()
            ]
            running.append(tasks.create_task(bridge.maintain(), name="bridge.maintenance"))
            interval = systemd.watchdog_interval()
            if interval:
                running.append(tasks.create_task(_watchdog(interval), name="systemd.watchdog"))
            await stop.wait()
            log.info("bridge: stopping")
            systemd.notify("STOPPING=1")
            for task in running:
                task.cancel()
    finally:
        await bridge.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("bridge: stopped")
    return 0
