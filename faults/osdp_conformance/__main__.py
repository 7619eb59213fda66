"""`python -m faults.osdp_conformance [--rounds N]`: every case, a table, one RESULT line.

A case passes when it passes in every round (the long form repeats them to
catch a CP that conforms only when the timing is kind). Exit status 0 when all
pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback

from faults.osdp_conformance.cases import CASES, Case


def _run(case: Case) -> str | None:
    """None when the case passes, else the reason."""
    try:
        asyncio.run(case.run())
    except AssertionError as exc:
        return f"FAIL: {exc}"
    except Exception as exc:  # a crash is a failure of the case, not of the campaign
        traceback.print_exc()
        return f"ERROR: {exc!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.osdp_conformance")
    parser.add_argument("--rounds", type=int, default=1, help="run every case this many times")
    parser.add_argument("-k", dest="select", default="", help="only cases whose name has this")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The cases provoke protocol errors on purpose; their warnings are noise here.
    logging.basicConfig(level=logging.CRITICAL)
    cases = [c for c in CASES if args.select in c.name]
    width = max(len(c.name) for c in cases)
    print(f"{'case':<{width}}  {'runs':>4}  {'failed':>6}  {'s/run':>6}  requirement")
    passed = 0
    for case in cases:
        failures: list[str] = []
        t0 = time.monotonic()
        for _ in range(args.rounds):
            problem = _run(case)
            if problem is not None:
                failures.append(problem)
        per_run = (time.monotonic() - t0) / args.rounds
        passed += not failures
        print(
            f"{case.name:<{width}}  {args.rounds:>4}  {len(failures):>6}  {per_run:>6.2f}  "
            f"{case.requirement}",
            flush=True,
        )
        for problem in sorted(set(failures)):
            print(f"  {problem}", flush=True)
    print(f"RESULT campaign=osdp_conformance cases={len(cases)} passed={passed}")
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
