"""`edge-gateway run`: one event loop, named tasks, a clean stop on SIGTERM.

Start order: store (migrations) -> site index (worker thread) -> admin socket
-> READY=1. Stop order is the reverse, after STOPPING=1.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import IO

from edge.config import Config
from edge.gateway import Gateway
from edge.ops import systemd
from edge.ops.admin import AdminServer
from edge.site.reports import ReportError, catch_up
from edge.web.accounts import Accounts
from edge.web.reports import WeeklyReport
from edge.web.server import WebServer

log = logging.getLogger("edge.daemon")

LOCK_FILE = "gateway.lock"


class StateDirBusy(Exception):
    """Another gateway runs on the state directory."""


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Hold `<state_dir>/gateway.lock` for as long as the returned file is open.

    Two daemons on one state directory would both drive the doors and both
    upload the outbox; the second one refuses to start instead. The lock is an
    flock, released by the kernel when the holder dies (a SIGKILL included), so
    a stale file never blocks a restart; the file holds the holder's pid for
    the message.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise StateDirBusy(
            f"another gateway (pid {holder}) is running on the state directory {state_dir}"
        ) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


async def _watchdog(interval: float) -> None:
    # Pinged from the loop itself: a stuck loop stops the pings and systemd restarts us.
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def _maintenance(gateway: Gateway, weekly: WeeklyReport, interval: float = 3600) -> None:
    while True:
        # The reports' tables first: bookings leave the index a day after they end,
        # and delivered events leave the outbox after the retention.
        try:
            await catch_up(gateway.site.store, gateway.site.index)
            await weekly.due()
        except (OSError, sqlite3.Error, ReportError) as exc:
            log.error("daemon: reports not brought up to date: %s", exc)
        try:
            await gateway.recorder.prune()
            if gateway.sync is not None:
                await gateway.sync.prune(time.time())
        except sqlite3.Error as exc:
            # A failing disk (the store logs it once) must not end this task: in
            # the daemon's task group that would stop the whole gateway. Next hour.
            log.warning("daemon: pruning skipped: %s", exc)
        await asyncio.sleep(interval)


async def run(config: Config, state_dir: Path) -> int:
    # Worker threads (index loads) hand the interpreter back to the loop every
    # half millisecond instead of every 5: a decision round trip takes the lock
    # a few times, and at 1 ms its p99 during an import reached 2-2.5 ms.
    sys.setswitchinterval(0.0005)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    gateway = Gateway(config, state_dir)
    rooms = gateway.rooms
    accounts = Accounts(gateway.recorder, config.web, lambda: rooms.rooms if rooms else {})
    admin = AdminServer(gateway, config.admin_socket(state_dir), int(config.admin.socket_mode, 8))
    admin.accounts = accounts
    weekly = WeeklyReport(gateway)
    web = WebServer(gateway, config, state_dir, accounts, weekly) if config.web.enabled else None
    await gateway.start()
    try:
        await accounts.start()
        await admin.start()
        if web is not None:
            await web.start()
        systemd.notify(f"READY=1\nSTATUS=serving site {gateway.site.index.site_id or '(none)'}")
        async with asyncio.TaskGroup() as tasks:
            interval = systemd.watchdog_interval()
            watchdog = (
                tasks.create_task(_watchdog(interval), name="systemd.watchdog")
                if interval
                else None
            )
            maintenance = tasks.create_task(
                _maintenance(gateway, weekly), name="gateway.maintenance"
            )
            await stop.wait()
            log.info("daemon: stopping")
            systemd.notify("STOPPING=1")
            maintenance.cancel()
            if watchdog is not None:
                watchdog.cancel()
    finally:
        if web is not None:
            await web.stop()
        await admin.stop()
        await gateway.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("daemon: stopped")
    return 0
