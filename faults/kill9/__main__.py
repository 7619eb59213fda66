"""`python -m faults.kill9 --kills 10000`: the long form; prints the RESULT line."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from faults.kill9.campaign import Campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.kill9", description=__doc__)
    parser.add_argument("--kills", type=int, default=10_000, help="how many lives to kill")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="the random plan")
    parser.add_argument("--work", type=Path, help="keep the state and logs here")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills: at least 1")
    # The Modbus board's server logs every dropped client: each kill is one.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="kill9-") as tmp:
        work = args.work or Path(tmp)
        print(f"kill9: seed {args.seed}, work {work}", file=sys.stderr, flush=True)
        result = Campaign(work, seed=args.seed, log=sys.stderr).run(args.kills)
    for v in result.violations[:50]:
        print(f"violation: {v}", file=sys.stderr)
    points = ", ".join(f"{k} {n}" for k, n in sorted(result.at_points.items()))
    print(
        f"kill9: {result.kills} kills in {result.seconds:.0f} s "
        f"({result.kills / result.seconds:.2f}/s): {points}; "
        f"{result.events_acked} events acknowledged, {result.redelivered} redelivered",
        file=sys.stderr,
    )
    if result.drained is not None:
        seconds, ready_at, cloud_cursor = result.drained
        print(
            f"kill9: the last life drained in {seconds:.1f} s from (backlog, cursor) "
            f"{ready_at} to the cloud's cursor {cloud_cursor}",
            file=sys.stderr,
        )
    print(result.line(), flush=True)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
