"""`python -m faults.exposure`: score and verify every unit in systemd/ and print
`RESULT campaign=exposure score=X`, X being the worst (highest) unit's score.
Exit status 1 when a unit is above 1.5 or verify complains."""

from __future__ import annotations

import sys

from faults.exposure import MAX_SCORE, AnalyzeError, report, units


def main() -> int:
    try:
        reports = [report(u) for u in units()]
    except AnalyzeError as exc:
        print(f"exposure: {exc}", file=sys.stderr)
        return 2
    failed = False
    for r in reports:
        verdict = "ok" if r.score <= MAX_SCORE and not r.verify else "FAIL"
        failed |= verdict != "ok"
        print(f"{r.unit}: exposure {r.score} (bar {MAX_SCORE}), verify: {r.verify or 'clean'}")
        print(f"  -> {verdict}")
    worst = max(r.score for r in reports)
    print(f"RESULT campaign=exposure score={worst}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
