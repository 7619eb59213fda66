"""The occupancy's start: reading a day's grants back from the outbox.

At start (`edge.mqtt.occupancy.Occupancy._load`) the gateway reads every
access grant of the occupancy window back from the outbox, so a restart does
not reset the count. The figure that matters is how long the event loop,
which decides every badge, is held meanwhile: a ticker task on the same loop
records its longest gap. N grants by 3,000 members at the front door over
the last 8 hours (since the site's midnight if that is later), in a real
store (`edge.site.sqlite`) of a gateway that is
built but not started (its broker link never connects). Median of 7 loads;
`peak_mb` is the most Python memory one more load held at once (tracemalloc).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import tracemalloc
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

from common import result

from edge.config import parse_config
from edge.gateway import Gateway
from edge.secrets import write_secret
from edge.site.events import make_event
from edge.site.recorder import outbox_op
from hwsim.sitegen import EXAMPLE_PIN_KEY

CONFIG = (
    '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n[homeassistant]\ndiscovery = true\n'
    '[mqtt]\nhost = "127.0.0.1"\nport = 9\n'
)
HOLDERS = 3000
LOADS = 7


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _bench(grants: int, state: Path) -> tuple[float, float, float]:
    write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    gw = Gateway(parse_config(CONFIG), state)
    await gw.site.start()
    try:
        occupancy = gw.occupancy
        assert occupancy is not None
        tz = gw.site.index.tz
        now = time.time()
        # Today's, so that none has ended at the site's midnight.
        midnight = datetime.combine(datetime.fromtimestamp(now, tz).date(), dtime(0), tzinfo=tz)
        first = max(now - 8 * 3600, midnight.timestamp()) + 1
        ops = []
        for i in range(grants):
            at = first + i * (now - first) / grants
            ev = make_event(
                "access.granted",
                at,
                tz,
                "mitte",
                "gw-1",
                door="front",
                holder=f"m-{i % HOLDERS}",
                reason="plan",
                details={"reader": "front-in", "card": "H10301:12:4005"},
            )
            ops.append(outbox_op(ev, at))
        await gw.site.store.write(ops)
        walls, stalls = [], []
        for _ in range(LOADS):
            occupancy.presence.stays.clear()
            gaps: list[float] = []
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(gaps, stop))
            await asyncio.sleep(0)
            started = time.perf_counter()
            await occupancy._load(time.time())
            walls.append(time.perf_counter() - started)
            stop.set()
            await ticker
            stalls.append(max(gaps))
            assert len(occupancy.presence.stays) == min(grants, HOLDERS)
        # Once more under tracemalloc, apart from the timed loads: the most the
        # read-back held at once (the process keeps much of it after it is freed).
        occupancy.presence.stays.clear()
        tracemalloc.start()
        await occupancy._load(time.time())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return statistics.median(walls), statistics.median(stalls), peak
    finally:
        await gw.site.store.stop()


def bench_occupancy_load() -> None:
    for grants in (2_000, 20_000):
        with tempfile.TemporaryDirectory(prefix="bench-occupancy-") as tmp:
            wall, stall, peak = asyncio.run(_bench(grants, Path(tmp)))
        result(
            bench="occupancy_load",
            grants=grants,
            median_ms=round(wall * 1e3, 1),
            loop_stall_ms=round(stall * 1e3, 1),
            peak_mb=round(peak / 2**20, 1),
        )
