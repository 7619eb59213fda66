"""edgectl while the daemon is killed: does any call's exit status lie?

`python -m faults.edgectl_kill --rounds N` starts the real daemon on the example
site and, each round, runs real `edgectl present`, `decide` and `status` calls
back to back while the daemon is killed with SIGKILL at a random moment; then
restarts it. Every call must end either with a correct answer (its exit status
agreeing with it: 0 granted, 1 denied) or with exit 3 and one line on stderr.
Anything else (exit 0 or 1 without the right answer, a traceback, another
status, a hang) is a lie a script would act on, and is counted as bad.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from edge.secrets import write_secret
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, reference_monday

SITE_DAY = date(2026, 11, 16)  # the example site's calendar is laid out around this Monday
TEN = "2026-11-16T10:00:00+01:00"  # a dry run at a fixed instant has one right answer
# Each call and its correct answer: (args, granted, reason); status has no verdict.
CALLS: list[tuple[list[str], bool | None, str | None]] = [
    (["present", "--door", "front", "--card", "raw:0A0B0C0D"], True, "day_pass"),
    (["present", "--door", "front", "--card", "H10301:12:4000"], False, "billing_suspended"),
    (["present", "--door", "front", "--card", "H10301:200:1"], False, "unknown_credential"),
    (["decide", "--door", "front", "--card", "H10301:12:3456", "--at", TEN], True, "plan"),
    (
        ["decide", "--door", "server-room", "--card", "H10301:12:4005", "--at", TEN],
        False,
        "pin_required",
    ),
    (["status"], None, None),
]
CALL_TIMEOUT = 60.0  # seconds; a call still running after this is a hang (bad)


@dataclass
class Tally:
    calls: int = 0
    answered: int = 0
    exit3: int = 0
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)
    causes: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def why(self, stderr: str) -> None:
        """Counts exit 3's causes: which failures the kills hit."""
        cause = stderr.strip().removeprefix("edgectl: ")
        with self.lock:
            self.causes[cause] = self.causes.get(cause, 0) + 1

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.calls += 1
            if kind == "answered":
                self.answered += 1
            elif kind == "exit3":
                self.exit3 += 1
            else:
                self.bad += 1
                if len(self.bad_examples) < 20:
                    self.bad_examples.append(detail)


def judge(
    args: list[str], granted: bool | None, reason: str | None, code: int, out: str, err: str
) -> str:
    """'answered', 'exit3' or 'bad'."""
    if "Traceback" in err:
        return "bad"
    if code == 3:
        lines = err.splitlines()
        return "exit3" if len(lines) == 1 and lines[0].startswith("edgectl: ") else "bad"
    try:
        answer = json.loads(out)
    except ValueError:
        return "bad"
    if granted is None:  # status
        return "answered" if code == 0 and answer.get("site") == "mitte" else "bad"
    right = answer.get("granted") is granted and answer.get("reason") == reason
    return "answered" if right and code == (0 if granted else 1) else "bad"


class Daemon:
    def __init__(self, workdir: Path) -> None:
        self.state = workdir / "state"
        self.state.mkdir()
        write_secret(self.state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        self.config = workdir / "config.toml"
        self.config.write_text('[site]\nid = "mitte"\n[log]\nlevel = "info"\n')
        self.log = (workdir / "daemon.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge.ops.edgectl", "--state-dir", str(self.state), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "edge.ops.cli", "run"),
                *("--config", str(self.config), "--state-dir", str(self.state)),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.name
                raise RuntimeError(
                    f"the daemon exited with {self.proc.returncode} at start; its log ends:\n"
                    + Path(log).read_text(errors="replace")[-2000:]
                )
            r = self.ctl("status", "--json", "--timeout", "5")
            if r.returncode == 0 and json.loads(r.stdout).get("ready"):
                return
            time.sleep(0.05)
        raise RuntimeError("the daemon was not ready in 120 s")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.kill()
        self.log.close()


def caller(daemon: Daemon, rng: random.Random, killed: threading.Event, tally: Tally) -> None:
    """Calls back to back until one has run across the kill."""
    while True:
        args, granted, reason = rng.choice(CALLS)
        started_after_kill = killed.is_set()
        try:
            r = daemon.ctl(*args, "--json", timeout=CALL_TIMEOUT)
            kind = judge(args, granted, reason, r.returncode, r.stdout, r.stderr)
            detail = f"{args} -> {r.returncode}\n{r.stdout[:300]}\n{r.stderr[-600:]}"
            if kind == "exit3":
                tally.why(r.stderr.replace(str(daemon.state / "admin.sock"), "SOCKET"))
        except subprocess.TimeoutExpired:
            kind, detail = "bad", f"{args}: no end in {CALL_TIMEOUT:g} s"
        tally.add(kind, detail)
        if started_after_kill or killed.is_set():
            return


def campaign(rounds: int, seed: int, callers: int = 3, workdir: Path | None = None) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="edgectl-kill-", dir=workdir) as tmp:
        daemon = Daemon(Path(tmp))
        try:
            daemon.start()
            doc, _ = example_site(reference_monday(SITE_DAY))
            # Day passes at any hour: the presentations happen now, whatever the time.
            doc["site"]["day_pass_access"] = [{"group": "members", "schedule": "always"}]
            snapshot = Path(tmp) / "site.json"
            snapshot.write_text(json.dumps(doc))
            r = daemon.ctl("import", str(snapshot))
            if r.returncode != 0:
                raise RuntimeError(f"import failed: {r.stderr}")
            for _ in range(rounds):
                killed = threading.Event()
                threads = [
                    threading.Thread(
                        target=caller,
                        args=(daemon, random.Random(rng.random()), killed, tally),
                        name=f"edgectl-caller-{i}",
                    )
                    for i in range(callers)
                ]
                for t in threads:
                    t.start()
                # edgectl takes 0.2 s (idle machine) to 1 s (loaded) to start: a kill
                # within 3 s falls before, during and after calls, and sometimes between
                # a request and its answer.
                time.sleep(rng.uniform(0, 3))
                daemon.kill()
                killed.set()
                for t in threads:
                    t.join()
                daemon.start()
        finally:
            daemon.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.edgectl_kill", description=__doc__)
    parser.add_argument("--rounds", type=int, default=100, help="daemon kills (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--callers", type=int, default=3, help="concurrent edgectl callers")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}", file=sys.stderr)
    tally = campaign(args.rounds, seed, args.callers)
    for cause, n in sorted(tally.causes.items(), key=lambda c: -c[1]):
        print(f"exit 3: {n} x {cause}", file=sys.stderr)
    for example in tally.bad_examples:
        print(f"BAD: {example}", file=sys.stderr)
    print(
        f"RESULT campaign=edgectl_kill calls={tally.calls} answered={tally.answered} "
        f"exit3={tally.exit3} bad={tally.bad}"
    )
    return 0 if tally.bad == 0 else 1
