"""The console's reports on a week of a busy site: 2,000 members, two grants each
a day (28,000 `access.granted` in the outbox), 100 companies, three doors.

Run: `.venv/bin/python bench/reports.py`. Prints RESULT lines, asserts nothing.

- `journal_us_per_event`: `journal_ops` per event (what `Recorder.record` would add).
- `catch_up_s`: the first catch-up, reading the whole week from the outbox.
- `<kind>_s`: one `build` of the week (median of 5, after the catch-up);
  `occupancy_by_area_s` with two of the three doors grouped into one area.
- `idle_loop_lag_max_ms`: the same over a second with nothing to do, for scale.
- `*_loop_lag_max_ms`: the longest the event loop waited for its turn while that
  ran (a task asks for a 1 ms sleep, over and over), with the daemon's 0.5 ms
  switch interval.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common import result

from edge.config import parse_config
from edge.gateway import Gateway
from edge.site import reports
from edge.site.reports.journal import journal_ops

MEMBERS = 2000
COMPANIES = 100
TZ = ZoneInfo("Europe/Berlin")
MONDAY = date(2026, 11, 2)
CONFIG = '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n'


def site(members: int) -> dict[str, Any]:
    always = [{"group": "members", "schedule": "always"}]
    return {
        "schema": "edge-sync/1",
        "cursor": "c-1",
        "generated_at": "2026-10-01T00:00:00Z",
        "site": {"id": "mitte", "name": "Mitte", "timezone": "Europe/Berlin"},
        "schedules": [
            {"id": "always", "windows": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]}
        ],
        "doors": [{"id": d, "name": d} for d in ("front", "office", "lounge")],
        "access_groups": [{"id": "members", "doors": ["front", "office", "lounge"]}],
        "plans": [{"id": "resident", "access": always}],
        "companies": [
            {"id": f"co-{i}", "name": f"Company {i}", "billing": {"status": "ok"}}
            for i in range(COMPANIES)
        ],
        "members": [
            {
                "id": f"m-{i}",
                "kind": "member",
                "company": f"co-{i % COMPANIES}",
                "plan": "resident",
                "billing": {"status": "ok"},
                "credentials": [
                    {
                        "id": f"c-{i}",
                        "type": "card",
                        "format": "raw",
                        "value": f"{i:08X}",
                        "status": "active",
                    }
                ],
            }
            for i in range(members)
        ],
        "rooms": [],
        "bookings": [],
    }


def local(day: date, minute: int) -> float:
    return datetime.combine(day, datetime.min.time(), TZ).timestamp() + 60 * minute


async def lag_while(work: Any) -> tuple[Any, float, float]:
    """Run `work`; its result, its seconds and the loop's longest wait meanwhile (ms)."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t0 - 0.001)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    value = await work
    seconds = time.perf_counter() - t0
    done = True
    await tick
    return value, seconds, worst * 1000


async def main() -> None:
    sys.setswitchinterval(0.0005)  # as the daemon runs (edge/ops/daemon.py)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        doc_path = state / "site.json"
        doc_path.write_text(json.dumps(site(MEMBERS)))
        gw = Gateway(parse_config(CONFIG), state)
        await gw.start()
        try:
            await gw.updates.import_snapshot(doc_path)
            events = []
            for n in range(7):
                day = MONDAY + timedelta(days=n)
                for i in range(MEMBERS):
                    first = rng.randint(7 * 60, 11 * 60)
                    second = rng.randint(12 * 60, 19 * 60)
                    for minute, door in (
                        (first, "front"),
                        (second, rng.choice(["office", "lounge"])),
                    ):
                        events.append(
                            gw.recorder.event(
                                "access.granted",
                                local(day, minute),
                                door=door,
                                holder=f"m-{i}",
                                credential=f"c-{i}",
                                reason="plan",
                            )
                        )
            for i in range(0, len(events), 500):
                await gw.recorder.record(events[i : i + 500], [])

            t0 = time.perf_counter()
            journal_ops(gw.site.index, events)
            per_event = (time.perf_counter() - t0) / len(events) * 1e6

            store, ix = gw.site.store, gw.site.index
            now = local(MONDAY + timedelta(days=8), 12 * 60)
            _, _, idle_lag = await lag_while(asyncio.sleep(1))
            read, catch_s, catch_lag = await lag_while(reports.catch_up(store, ix, now))
            figures: dict[str, str] = {
                "events": str(len(events)),
                "idle_loop_lag_max_ms": f"{idle_lag:.1f}",
                "presence_rows": str(
                    (await store.fetchone("SELECT count(*) FROM presence"))[0]  # type: ignore[index]
                ),
                "journal_us_per_event": f"{per_event:.1f}",
                "catch_up_s": f"{catch_s:.2f}",
                "catch_up_loop_lag_max_ms": f"{catch_lag:.1f}",
            }
            assert read == len(events)
            grouped = {"office": "inside", "lounge": "inside"}
            for kind, areas in [*((k, None) for k in reports.KINDS), ("occupancy", grouped)]:
                name = f"{kind}_by_area" if areas else kind
                times, lags = [], []
                for _ in range(5):
                    work = reports.build(store, ix, kind, now=now, areas=areas)
                    _, seconds, lag = await lag_while(work)
                    times.append(seconds)
                    lags.append(lag)
                figures[f"{name}_s"] = f"{statistics.median(times):.3f}"
                figures[f"{name}_loop_lag_max_ms"] = f"{max(lags):.1f}"
            _, weekly_s, weekly_lag = await lag_while(
                reports.weekly_report(store, ix, now, gateway="gw-1")
            )
            figures["weekly_s"] = f"{weekly_s:.3f}"
            figures["weekly_loop_lag_max_ms"] = f"{weekly_lag:.1f}"
            result(bench="reports", members=MEMBERS, **figures)
        finally:
            await gw.stop()


if __name__ == "__main__":
    asyncio.run(main())
