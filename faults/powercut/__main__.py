"""`python -m faults.powercut --cuts 10000`: the power-cut campaign's long form.

Prints details on stderr and, last, on stdout:
RESULT campaign=powercut cuts=N violations=N ...
Exit status 1 when there is a violation.
"""

from __future__ import annotations

import argparse
import sys
import time

from faults.powercut import database, files


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.powercut", description=__doc__)
    parser.add_argument("--cuts", type=int, default=10_000, help="database cuts (FULL)")
    parser.add_argument(
        "--file-rounds",
        type=int,
        default=10,
        help="rounds over every prefix of every file writer's calls",
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=1000,
        help="cuts each under synchronous=NORMAL and OFF, measured, not judged (0: none)",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    started = time.monotonic()

    say(f"powercut: seed {seed}; {args.cuts} database cuts under synchronous=FULL")
    full = database.campaign(args.cuts, seed)
    say(
        f"  {full.commits} commits acknowledged, {full.acked_events} acknowledged events "
        f"checked, fates {dict(full.fates)}, violations {full.violations}"
    )
    for example in full.examples:
        say(f"  violation: {example}")

    say(f"powercut: the gateway's files, {args.file_rounds} rounds of every prefix")
    ft = files.campaign(seed, args.file_rounds)
    caught = sum(1 for sc in files.CONTROLS if ft.by_scenario.get(sc.name, 0) > 0)
    for name, found in ft.by_scenario.items():
        say(f"  {name}: {found} bad states")
    if ft.violations:
        for example in ft.examples:
            say(f"  {example}")

    extra = ""
    if args.compare:
        for mode in ("NORMAL", "OFF"):
            t = database.campaign(args.compare, seed, mode)
            say(
                f"powercut: synchronous={mode}: {t.violations} of {t.cuts} cuts lost "
                f"or damaged something ({t.lost_events} acknowledged events lost, "
                f"{t.unopenable + t.corrupt} databases unopenable or corrupt)"
            )
            key = mode.lower()
            extra += f" {key}_bad={t.violations}/{t.cuts} {key}_lost_events={t.lost_events}"

    violations = full.violations + ft.violations + (len(files.CONTROLS) - caught)
    cuts = full.cuts + ft.prefixes
    say(f"powercut: {time.monotonic() - started:.0f} s")
    print(
        f"RESULT campaign=powercut cuts={cuts} violations={violations} "
        f"db_cuts={full.cuts} file_prefixes={ft.prefixes} file_states={ft.states} "
        f"controls_caught={caught}/{len(files.CONTROLS)}{extra} seed={seed}",
        flush=True,
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
