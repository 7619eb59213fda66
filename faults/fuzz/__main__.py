"""`python -m faults.fuzz --harness NAME|all --execs N [--seconds S]`: the fuzz campaign.

Each harness runs in a child process (`faults.fuzz.child`) under libFuzzer
with `-runs=N -max_total_time=S`, a hang being an input that takes over a
second (`-timeout=1`) and memory growth over 100 MB a finding
(`-rss_limit_mb`). Per harness it prints
`RESULT campaign=fuzz harness=NAME execs=N findings_open=N`, where a finding
is a crash, timeout or out-of-memory input libFuzzer wrote; those are kept
under --artifacts for turning into regression tests (README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from faults.fuzz.harness import CORPUS, HARNESSES, HERE, SCRATCH_ENV

ROOT = HERE.parents[1]

EXECS_RE = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
SETUP_RE = re.compile(r"fuzz: \S+: set up in ([\d.]+) s")
DONE_RE = re.compile(r"Done (\d+) runs")
PROGRESS_RE = re.compile(r"^#(\d+)\s", re.M)
FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass
class Outcome:
    name: str
    execs: int
    findings: list[Path]
    seconds: float
    cpu_seconds: float  # the child's CPU time: what the run costs on an idle core
    returncode: int
    log: str

    @property
    def setup_seconds(self) -> float:
        """The child's start: imports under instrumentation, the harness's prepare."""
        found = SETUP_RE.findall(self.log)
        return float(found[-1]) if found else 0.0

    @property
    def rate(self) -> float:
        """Executions a second while fuzzing (without the start-up)."""
        fuzzing = self.seconds - self.setup_seconds
        return self.execs / fuzzing if fuzzing > 0 else 0.0

    @property
    def result_line(self) -> str:
        return (
            f"RESULT campaign=fuzz harness={self.name} execs={self.execs} "
            f"findings_open={len(self.findings)}"
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _execs(log: str) -> int:
    for pattern in (EXECS_RE, DONE_RE):
        found = pattern.findall(log)
        if found:
            return int(found[-1])
    found = PROGRESS_RE.findall(log)
    return int(found[-1]) if found else 0


def run_harness(
    name: str,
    execs: int,
    seconds: int,
    artifacts: Path,
    corpus: Path | None = None,
    workers: int = 1,
) -> Outcome:
    """One harness in child processes; `corpus` keeps the inputs it found (else a temp dir).

    With `workers` > 1, that many children fuzz at once, as libFuzzer's own
    `-workers` would: each with a seed of its own and its share of `execs`,
    all writing to and re-reading (`-reload`) the same corpus folder, so an
    input one finds the others build on. Their executions add up.
    """
    if workers < 1:
        raise ValueError(f"workers: {workers} (at least 1)")
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    seeds = CORPUS / name
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        work = corpus if corpus is not None else Path(tmp) / "corpus"
        work.mkdir(parents=True, exist_ok=True)
        # The child imports the same checkout as this process, wherever it is started.
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        started = time.monotonic()
        cpu_before = _children_cpu()
        children: list[tuple[subprocess.Popen[bytes], Path]] = []
        for i in range(workers):
            share = execs // workers + (1 if i < execs % workers else 0)
            cmd = [
                sys.executable,
                "-m",
                "faults.fuzz.child",
                name,
                f"-runs={share}",
                f"-max_total_time={seconds}",
                "-timeout=1",
                "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/",
                *([f"-seed={i + 1}"] if workers > 1 else []),
                str(work),  # libFuzzer adds what it finds to the first folder
                str(seeds),
            ]
            log_path = Path(tmp) / f"child-{i}.log"  # a file: pipes of idle readers fill up
            env = {**os.environ, "PYTHONPATH": path, SCRATCH_ENV: str(Path(tmp) / f"scratch-{i}")}
            with log_path.open("wb") as log_file:
                child = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            children.append((child, log_path))
        logs: list[str] = []
        failed: list[tuple[int, str]] = []
        for child, log_path in children:
            code = child.wait()
            text = log_path.read_text(errors="replace")
            logs.append(text)
            if code != 0:
                failed.append((code, text))
        took = time.monotonic() - started
        cpu = _children_cpu() - cpu_before
    found = sorted(
        p for p in set(artifacts.iterdir()) - before if p.name.startswith(FINDING_PREFIXES)
    )
    if failed and not found:
        # A child failed without a finding (it could not start, say): never read that as clean.
        code, text = failed[0]
        raise RuntimeError(f"fuzz: {name}: a child exited {code}:\n{text[-4000:]}")
    log = "\n".join(logs)
    returncode = failed[0][0] if failed else 0
    return Outcome(name, sum(_execs(t) for t in logs), found, took, cpu, returncode, log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faults.fuzz", description=__doc__)
    ap.add_argument("--harness", default="all", help=f"all, or one of: {', '.join(HARNESSES)}")
    ap.add_argument("--execs", type=int, default=100_000, help="executions per harness")
    ap.add_argument("--seconds", type=int, default=0, help="time limit per harness (0: none)")
    ap.add_argument(
        "--artifacts",
        type=Path,
        default=Path("fuzz-findings"),
        help="where findings are written (default ./fuzz-findings)",
    )
    ap.add_argument("--corpus", type=Path, help="keep each harness's new inputs under DIR/NAME")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="children fuzzing each harness at once, sharing its corpus (default 1)",
    )
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers {args.workers}: at least 1")
    names = list(HARNESSES) if args.harness == "all" else [args.harness]
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        ap.error(f"no harness {unknown[0]!r} (one of: {', '.join(HARNESSES)})")
    if shutil.which(sys.executable) is None:
        ap.error(f"cannot run {sys.executable}")
    open_findings = 0
    for name in names:
        corpus = args.corpus / name if args.corpus is not None else None
        out = run_harness(
            name, args.execs, args.seconds, args.artifacts / name, corpus, args.workers
        )
        print(
            f"fuzz: {name}: {out.execs} execs in {out.seconds:.1f} s "
            f"(start-up {out.setup_seconds:.1f} s, then {out.rate:.0f}/s; "
            f"CPU {out.cpu_seconds:.1f} s)"
        )
        for path in out.findings:
            print(f"fuzz: {name}: finding {path}")
        print(out.result_line, flush=True)
        open_findings += len(out.findings)
    return 1 if open_findings else 0


if __name__ == "__main__":
    sys.exit(main())
