"""`python -m faults.soak --minutes N`: the soak, then one RESULT line.

Progress goes to stderr; stdout gets a DETAIL line and, last, the RESULT line.
Exit status 0 when nothing was lost or duplicated and RSS and fds stayed flat
(within 5 % and 5 fds of the steady state after warm-up, see `Soak._growth`),
1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from faults.soak.harness import Plan, Soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.soak")
    parser.add_argument("--minutes", type=float, default=10, help="length of the loaded run")
    parser.add_argument(
        "--outage-events", type=int, default=72_000, help="events queued while the cloud is down"
    )
    parser.add_argument("--kill-every", type=float, default=180, help="seconds between SIGKILLs")
    parser.add_argument(
        "--calm-tail",
        type=float,
        help="minutes at the end without kills (default: a quarter of the run, at most 30)",
    )
    parser.add_argument(
        "--osdp-groups", type=int, default=0, help="of the 4 reader groups, how many are OSDP"
    )
    parser.add_argument("--mqtt-rate", type=float, default=1000, help="MQTT messages per second")
    parser.add_argument("--work", type=Path, help="keep the run's files here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    if not 0 <= args.osdp_groups <= 4:
        parser.error("--osdp-groups must be 0 to 4")
    seconds = args.minutes * 60
    plan = Plan(
        seconds=seconds,
        groups=tuple(["osdp"] * args.osdp_groups + ["wiegand"] * (4 - args.osdp_groups)),
        mqtt_rate=args.mqtt_rate,
        outage_at_s=min(120.0, seconds * 0.2),
        outage_events=args.outage_events,
        outage_max_s=seconds * 0.5,
        kill_every_s=args.kill_every,
        calm_tail_s=60
        * (min(30.0, args.minutes / 4) if args.calm_tail is None else args.calm_tail),
        warmup_s=min(60.0, seconds * 0.1),
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = args.work or Path(tmp)
        figures = Soak(work, plan).run()
    for note in figures.notes:
        print(f"note: {note}", file=sys.stderr)
    print(figures.detail_line())
    print(figures.result_line(), flush=True)
    flat = abs(figures.rss_growth_pct) <= 5 and abs(figures.fd_growth) <= 5
    return 0 if figures.lost == 0 and figures.duplicated == 0 and flat else 1


if __name__ == "__main__":
    sys.exit(main())
