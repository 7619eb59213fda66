"""One harness under libFuzzer in its own process: `python -m faults.fuzz.child NAME [flags]`.

The runner (`python -m faults.fuzz`) starts this; it is a separate process
because libFuzzer ends the process at the first finding, and because the
gateway's modules must be imported here for the first time, under atheris's
instrumentation, for the fuzzer to see their coverage.
"""

from __future__ import annotations

import logging
import resource
import sys
import time

import atheris  # type: ignore[import-not-found,unused-ignore]

from faults.fuzz.harness import HARNESSES, Harness, check, load

# Memory a harness may gain while fuzzing before it counts as a finding (issue 15).
GROWTH_MB = 100


def peak_rss_mb() -> int:
    """The peak resident set libFuzzer's -rss_limit_mb starts from.

    libFuzzer reads getrusage()'s ru_maxrss, which Linux carries over from the
    parent across fork and exec (a child of a 200 MB pytest worker starts at
    200 MB), while /proc's VmHWM is this process's own: the limit is set above
    the larger, so an inherited peak is not taken for growth.
    """
    own = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) // 1024
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return max(own, inherited)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in HARNESSES:
        sys.exit(f"usage: python -m faults.fuzz.child {{{'|'.join(HARNESSES)}}} [libFuzzer flags]")
    name = argv[1]
    started = time.monotonic()
    with atheris.instrument_imports(include=list(HARNESSES[name])):
        harness: Harness = load(name)
    if harness.prepare is not None:
        harness.prepare()
    # Parsers log every refusal; at a hundred thousand inputs a second that is noise.
    logging.disable(logging.CRITICAL)
    limit = peak_rss_mb() + GROWTH_MB
    flags = [f"-rss_limit_mb={limit}", f"-max_len={harness.max_len}", *argv[2:]]
    setup = time.monotonic() - started
    print(f"fuzz: {name}: set up in {setup:.2f} s, rss limit {limit} MB", file=sys.stderr)
    sys.stderr.flush()
    atheris.Setup([argv[0], *flags], lambda data: check(harness, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
