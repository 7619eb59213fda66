"""Benchmarks: `bench/run [NAME ...]` prints one RESULT line per figure set.

Generated sites and their databases are cached in bench/.data (delete it to
start over). Figures are printed, never asserted; docs/performance.md quotes
them with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path

from common import DecisionSampler, PeakRss, percentile, result, start_daemon, stop_daemon
from doors import bench_badge, bench_osdp_bus, bench_osdp_vs_libosdp
from occupancy import bench_occupancy_load
from panels import bench_panels
from platform_bridge import PLATFORMS, bench_change, bench_full_sync, bench_idle, bench_usage
from rooms import bench_room_evaluate, bench_rooms
from sync import bench_backlog, bench_revocation, bench_snapshot_and_changes

from edge.access.cards import card_key, raw_key
from edge.access.policy import Presentation, decide
from edge.config import parse_config
from edge.gateway import Gateway
from edge.secrets import write_secret
from edge.site.index import load_index
from edge.site.runtime import RuntimeState
from hwsim.sitegen import EXAMPLE_PIN_KEY, TIMEZONE, reference_monday, write_large_site

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / ".data"
CONFIG = '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n'
SIZES = {  # members -> credentials per member
    100_000: 2,
    500_000: 2,  # 1,000,000 credentials
}


# --- data -------------------------------------------------------------------------


def snapshot(members: int) -> Path:
    path = DATA / f"site-{members}.json"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as out:
            write_large_site(
                out, members, SIZES.get(members, 2), day=reference_monday(datetime.now().date())
            )
        tmp.rename(path)
    return path


def state_dir(members: int) -> Path:
    """A gateway state directory with the site imported (built once, then copied)."""
    path = DATA / f"state-{members}"
    if not (path / "gateway.db").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        write_secret(path, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        print(f"# importing {members} members once into {path} ...", file=sys.stderr)

        async def build() -> None:
            gw = Gateway(parse_config(CONFIG), path)
            await gw.start()
            try:
                await gw.updates.import_snapshot(snapshot(members))
            finally:
                await gw.stop()

        asyncio.run(build())
    return path


def fresh_copy(members: int, name: str) -> Path:
    target = DATA / f"run-{name}-{members}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(state_dir(members), target)
    return target


def presentations(members: int, n: int, seed: int = 7) -> list[Presentation]:
    """Badges a busy site sees: members' cards (mostly) and unknown cards, all week."""
    rng = random.Random(seed)
    from zoneinfo import ZoneInfo

    monday = reference_monday(datetime.now().date())
    tz = ZoneInfo(TIMEZONE)
    doors = ["front", "office-12", "front", "front", "server-room"]
    out = []
    for _ in range(n):
        local = datetime.combine(
            monday + timedelta(days=rng.randrange(7)),
            dtime(rng.randrange(24), rng.randrange(60)),
            tzinfo=tz,
        )
        roll = rng.random()
        i = rng.randrange(members)
        if roll < 0.8:
            cards: tuple[str, ...] = (card_key("H10306", i >> 16, i & 0xFFFF),)
        elif roll < 0.95:
            cards = (raw_key(f"{i:08x}01"),)
        else:
            cards = (
                card_key("H10301", rng.randrange(256), rng.randrange(65536)),
                raw_key(f"{rng.getrandbits(26):x}"),
            )
        out.append(Presentation(door=rng.choice(doors), at=local.timestamp(), cards=cards))
    return out


# --- daemon helpers -------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- benchmarks ------------------------------------------------------------------------


def bench_decide() -> None:
    for members, per in SIZES.items():
        ix = load_index(state_dir(members) / "gateway.db", 1)
        st = RuntimeState()
        sample = presentations(members, 200_000)
        for p in sample[:5000]:  # warm up
            decide(ix, st, p)
        timings = []
        clock = time.perf_counter_ns
        for p in sample:
            t0 = clock()
            decide(ix, st, p)
            timings.append((clock() - t0) / 1000)
        result(
            bench="decide",
            credentials=members * per,
            decide_p50_us=f"{statistics.median(timings):.1f}",
            decide_p99_us=f"{percentile(timings, 0.99):.1f}",
        )
        del ix


def bench_start() -> None:
    for members, per in SIZES.items():
        state = fresh_copy(members, "start")
        proc, seconds = start_daemon(state, CONFIG)
        try:
            rss = rss_mb(proc.pid)
        finally:
            stop_daemon(proc)
        result(
            bench="start",
            members=members,
            credentials=members * per,
            start_to_ready_s=f"{seconds:.2f}",
            rss_mb=f"{rss:.0f}",
        )


def bench_import() -> None:
    members = 100_000
    state = fresh_copy(members, "import")
    document = snapshot(members)
    proc, _ = start_daemon(state, CONFIG)
    sampler = DecisionSampler(state / "admin.sock", members)
    peak_rss = PeakRss(proc.pid)
    try:
        with sampler, peak_rss:
            time.sleep(0.5)
            baseline = len(sampler.latencies)
            t0 = time.monotonic()
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edge.ops.edgectl",
                    "--state-dir",
                    str(state),
                    "import",
                    str(document),
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - t0
    finally:
        stop_daemon(proc)
    if r.returncode != 0:
        raise RuntimeError(f"import failed: {r.stderr}")
    during = sampler.latencies[baseline:]
    # The daemon's staging child, `python -m edge.site.importer ...`.
    staging = [mb for cmd, mb in peak_rss.peaks.items() if "edge.site.importer" in cmd]
    result(
        bench="import",
        members=members,
        import_s=f"{seconds:.1f}",
        decide_p99_during_import_ms=f"{percentile(during, 0.99):.2f}",
        decide_p50_during_import_ms=f"{statistics.median(during):.2f}",
        decide_max_during_import_ms=f"{max(during):.1f}",
        samples=len(during),
        import_peak_rss_mb=f"{max(staging):.0f}" if staging else "?",
    )


def bench_revocations() -> None:
    bench_revocation(push=True)
    bench_revocation(push=False)


BENCHES: dict[str, Callable[[], None]] = {
    "decide": bench_decide,
    "start": bench_start,
    "import": bench_import,
    "badge": lambda: bench_badge(100_000, lambda name: fresh_copy(100_000, name), CONFIG),
    "osdp-bus": lambda: bench_osdp_bus(100_000, lambda name: fresh_copy(100_000, name), CONFIG),
    "osdp-vs-libosdp": bench_osdp_vs_libosdp,
    "revocation": bench_revocations,
    "snapshot": bench_snapshot_and_changes,
    "backlog": bench_backlog,
    "rooms": bench_rooms,
    "room-evaluate": bench_room_evaluate,
    "occupancy-load": bench_occupancy_load,
    "panels": bench_panels,
    "bridge-full-sync": lambda: (
        [bench_full_sync(p) for p in PLATFORMS] and bench_full_sync("nexudus", pins=False)
    ),
    "bridge-change": lambda: (
        [bench_change(p, m) for p in PLATFORMS for m in ("webhook", "poll")] and None
    ),
    "bridge-idle": lambda: [bench_idle(p) for p in PLATFORMS] and None,
    "bridge-usage": lambda: [bench_usage(p) for p in PLATFORMS] and None,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[*BENCHES, []],
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHES)})",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    for name in args.names or BENCHES:
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
