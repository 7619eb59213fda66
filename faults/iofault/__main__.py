"""`python -m faults.iofault --faults N`: the long form; prints the RESULT line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from faults.iofault.campaign import available, run_campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.iofault", description=__doc__)
    parser.add_argument("--faults", type=int, default=200, help="fault windows (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the daemon's state and log here")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per fault")
    args = parser.parse_args(argv)
    if not available():
        print(
            "iofault: fiu-run and fiu-ctrl are missing (apt-get install fiu-utils)", file=sys.stderr
        )
        return 2
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = run_campaign(args.faults, args.work, args.seed, say)
    else:
        with tempfile.TemporaryDirectory(prefix="iofault-") as tmp:
            result = run_campaign(args.faults, Path(tmp), args.seed, say)
    for v in result.violations:
        print(f"violation: {v}", file=sys.stderr)
    print(
        f"iofault: {result.presentations} presentations ({result.recorded} recorded, "
        f"{result.not_recorded} NOT RECORDED), {result.badges} reader badges "
        f"({result.link_retries} again after the simulated OSDP link dropped), "
        f"{result.failing_lines} faults logged and recovered, {result.resent} events resent "
        f"and kept once by the cloud, {result.seconds} s",
        file=sys.stderr,
    )
    print(result.line())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
