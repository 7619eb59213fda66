"""Disk and I/O faults injected into the real daemon with libfiu (issue 15, item 3).

The daemon runs under `fiu-run -x`, which preloads libfiu's POSIX wrappers;
`fiu-ctrl` then makes `pwrite` fail with ENOSPC or EIO, `fsync`/`fdatasync`
with EIO, or `open` with EIO, for a window while cards are presented at the
admin socket and badged at simulated OSDP readers, and clears it again.

libfiu cannot aim at one file: a fault hits every call of that function in
the process. The points are chosen so that the window hits the database and
not the daemon's own log: SQLite writes with `pwrite` and syncs with
`fdatasync`/`fsync`, the log goes out with `write`, sockets with `send`.

Checked for every window (each miss is a violation):
- every presentation is decided as a dry run decides it at that moment
  (memory only), and a badge at a reader is answered: the strike energised
  for a member who may enter, a red LED and no strike for one who may not;
- an answer that says `recorded` names events that reach the cloud
  simulator; one that says NOT RECORDED names events that never reach it and
  are not in the database afterwards (nothing is invented on recovery);
- while a write fails, `edgectl status` shows `STORAGE: failing since ...`;
- once the fault is cleared the gateway records again by itself and status
  says the storage is ok.
Every other window starts with an upload in flight (the cloud simulator
answers 0.3 s late): the cloud takes the event while the disk fails, the
gateway cannot mark it delivered and sends it again after the recovery; the
cloud keeps it once (`resent` counts these).
And over the whole run: the fault is logged once per window in which it
struck (`store: storage failing`), with one recovery line each, no other
store error line per write, no task dying with an exception, and the
database passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from edge.ops.edgectl import Client, RemoteError, Unreachable
from edge.secrets import write_secret
from hwsim.cloud import CloudSim
from hwsim.site import SimDoor, SimSite, SiteThread
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, reference_monday

FIU_RUN = "/usr/bin/fiu-run"
FIU_CTRL = "/usr/bin/fiu-ctrl"

RESIDENT = "H10306:1000:50001"  # m-1002: granted at the front door at any hour
SUSPENDED = "H10301:12:4000"  # m-1003: billing suspended, denied
DAY_PASS = "H10304:500:12345"  # noqa: S105 - a card, not a password; a day pass for today: its first entry is billable
CARDS = (RESIDENT, SUSPENDED, DAY_PASS)

DOORS = (SimDoor("front", "osdp", unlock_seconds=1, held_open_seconds=30),)
RED = 1  # OSDP's LED colour code
LINK_ERROR = " ERROR drivers.osdp: "  # the daemon lost the reader's session
ANSWER_S = 3.0  # a badge's answer (strike or LED), generous for a loaded machine


@dataclass(frozen=True)
class Fault:
    """One way the disk fails: libfiu points, the errno they return, and
    whether the database's commits are expected to fail under it."""

    name: str
    points: tuple[str, ...]
    errno: int
    hits_commits: bool


FAULTS = (
    Fault("pwrite ENOSPC", ("posix/io/rw/pwrite",), errno.ENOSPC, True),
    Fault("pwrite EIO", ("posix/io/rw/pwrite",), errno.EIO, True),
    Fault("fsync EIO", ("posix/io/sync/fsync", "posix/io/sync/fdatasync"), errno.EIO, True),
    # SQLite keeps its files open in WAL mode: an open() fault must change nothing.
    Fault("open EIO", ("posix/io/oc/open",), errno.EIO, False),
)


@dataclass
class Result:
    faults: int = 0
    presentations: int = 0
    recorded: int = 0
    not_recorded: int = 0
    badges: int = 0
    link_retries: int = 0  # badges again after the simulated OSDP link dropped during one
    failing_lines: int = 0
    recovered_lines: int = 0
    resent: int = 0  # events sent again after a failed delivered-mark (the cloud keeps one)
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"RESULT campaign=iofault faults={self.faults} violations={len(self.violations)}"


def _wait(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class FaultyDaemon:
    """`edge-gateway run` under `fiu-run -x`, its failure points driven by `fiu-ctrl`."""

    def __init__(self, work: Path, config: str) -> None:
        self.work = work
        self.state = work / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.config = work / "config.toml"
        self.config.write_text(config)
        self.log_path = work / "daemon.log"
        self.fifo = str(work / "fiu")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # fiu-run execs the program: the pid is the daemon's, as fiu-ctrl wants it.
            self.proc = subprocess.Popen(
                [
                    FIU_RUN,
                    "-x",
                    "-f",
                    self.fifo,
                    sys.executable,
                    "-m",
                    "edge.ops.cli",
                    "run",
                    "--config",
                    str(self.config),
                    "--state-dir",
                    str(self.state),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ready = _wait(lambda: self._ready(), 60)
        if not ready:
            raise RuntimeError(f"daemon not ready in 60 s:\n{self.output()[-3000:]}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return bool(self.call("status").get("ready"))
        except (OSError, Unreachable, RemoteError, ValueError):
            return False

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        client = Client(self.state / "admin.sock", timeout=30)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def ctl(self, *args: str) -> str:
        """The real `edgectl`, without libfiu (it is not the daemon)."""
        r = subprocess.run(
            [sys.executable, "-m", "edge.ops.edgectl", "--state-dir", str(self.state), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return r.stdout + r.stderr

    def fiu(self, *commands: str) -> None:
        assert self.proc is not None
        args = [FIU_CTRL, "-f", self.fifo]
        for c in commands:
            args += ["-c", c]
        subprocess.run([*args, str(self.proc.pid)], check=True, timeout=10)

    def enable(self, fault: Fault) -> None:
        self.fiu(*(f"enable name={p},failinfo={fault.errno}" for p in fault.points))

    def disable(self, fault: Fault) -> None:
        self.fiu(*(f"disable name={p}" for p in fault.points))

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _config(cloud: CloudSim, site: SimSite) -> str:
    text: str = (
        '[site]\nid = "mitte"\n[log]\nlevel = "info"\n'
        f'[cloud]\nurl = "{cloud.url}"\nallow_insecure_http_for_lab = true\n'
        "pull_interval_s = 3600\n"
        "backoff_min_s = 0.2\nbackoff_max_s = 1\ntimeout_s = 5\npush = false\n"
        f'[cloud.keys]\n{cloud.key_id} = "{cloud.public_key_b64}"\n' + site.config()
    )
    return text


class Campaign:
    def __init__(self, work: Path, seed: int, say: Callable[[str], None]) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.say = say
        self.result = Result()
        self.recorded_ids: set[str] = set()
        self.unrecorded_ids: set[str] = set()
        self.struck = 0  # windows whose fault hits the database's commits

    def violation(self, what: str) -> None:
        self.result.violations.append(what)
        self.say(f"VIOLATION: {what}")

    def run(self, faults: int) -> Result:
        t0 = time.monotonic()
        doc, _ = example_site(reference_monday(date.today()))
        # Presentations happen now, whatever the hour: day passes valid at any time.
        doc["site"]["day_pass_access"] = [{"group": "members", "schedule": "always"}]
        cloud = CloudSim(doc).start()
        (self.work / "site").mkdir(parents=True, exist_ok=True)
        site = SimSite(self.work / "site", DOORS)
        try:
            with SiteThread(site) as thread:
                daemon = FaultyDaemon(self.work, _config(cloud, site))
                site.provision(daemon.state)
                write_secret(daemon.state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
                write_secret(daemon.state, "cloud_token", cloud.token.encode())
                try:
                    daemon.start()
                    self._online(daemon, cloud)
                    for n in range(faults):
                        self._window(n, daemon, cloud, site, thread)
                        self.result.faults += 1
                    self._drain(daemon, cloud)
                finally:
                    daemon.stop()
                self._after(daemon, cloud)
        finally:
            cloud.stop()
        self.result.seconds = round(time.monotonic() - t0, 1)
        return self.result

    def _online(self, daemon: FaultyDaemon, cloud: CloudSim) -> None:
        synced = _wait(lambda: daemon.call("sync.status")["cursor"] == cloud.cursor, 30)
        online = _wait(
            lambda: all(
                r["state"] == "online (secure channel)" for r in daemon.call("status")["readers"]
            ),
            30,
        )
        if not (synced and online):
            raise RuntimeError(
                f"the gateway did not sync or its reader is offline:\n{daemon.output()}"
            )

    # --- one fault window ---------------------------------------------------------------

    def _present(self, daemon: FaultyDaemon, card: str, fault: Fault | None) -> dict[str, Any]:
        expected = daemon.call("decide", {"door": "front", "card": card})
        answer: dict[str, Any] = daemon.call("present", {"door": "front", "card": card})
        self.result.presentations += 1
        where = f"{fault.name if fault else 'no fault'}: {card}"
        if (answer["granted"], answer["reason"]) != (expected["granted"], expected["reason"]):
            self.violation(
                f"{where}: decided {answer['granted']}/{answer['reason']}, "
                f"a dry run says {expected['granted']}/{expected['reason']}"
            )
        if answer["recorded"]:
            self.result.recorded += 1
            self.recorded_ids.update(answer["events"])
        else:
            self.result.not_recorded += 1
            self.unrecorded_ids.update(answer["events"])
            if not answer.get("record_error"):
                self.violation(f"{where}: NOT RECORDED without a reason")
        return answer

    def _badge(
        self, daemon: FaultyDaemon, site: SimSite, thread: SiteThread, card: str, fault: Fault
    ) -> None:
        """A badge at the front door's OSDP reader gets its answer from memory: the
        strike for a card a dry run grants, a red LED and no strike for one it denies.

        On a loaded machine the simulated RS-485 link now and then loses the
        secure session (the daemon logs an OSDP error and re-establishes it);
        a badge whose answer went missing while that happened is given once more
        when the reader is back, and counted. Only a second miss is a violation."""
        self.result.badges += 1
        link_errors = daemon.output().count(LINK_ERROR)
        miss = self._badge_once(daemon, site, thread, card)
        if miss is not None and daemon.output().count(LINK_ERROR) > link_errors:
            self.result.link_retries += 1
            online = _wait(
                lambda: all(
                    r["state"] == "online (secure channel)"
                    for r in daemon.call("status")["readers"]
                ),
                15,
            )
            miss = self._badge_once(daemon, site, thread, card) if online else "reader offline"
        if miss is not None:
            self.violation(f"{fault.name}: {card}: {miss}")

    def _badge_once(
        self, daemon: FaultyDaemon, site: SimSite, thread: SiteThread, card: str
    ) -> str | None:
        thread.call(site.wait_unlocked("front", False), timeout=10)
        sim = site.reader("front-in").sim
        assert sim is not None
        leds = len(sim.state.leds)
        granted = daemon.call("decide", {"door": "front", "card": card})["granted"]
        thread.call(site.badge("front-in", card))
        if granted:
            try:
                thread.call(site.wait_unlocked("front"), timeout=ANSWER_S)
            except TimeoutError:
                return f"granted, strike not energised in {ANSWER_S} s"
            return None
        red = _wait(lambda: any(led.color == RED for led in sim.state.leds[leds:]), ANSWER_S)
        if not red or site.strike("front"):
            return "denied: no red LED, or the strike energised"
        return None

    def _window(
        self, n: int, daemon: FaultyDaemon, cloud: CloudSim, site: SimSite, thread: SiteThread
    ) -> None:
        fault = FAULTS[n % len(FAULTS)]  # every kind, in turn
        in_flight = n % 2 == 0
        if in_flight:
            # An upload under way when the disk fails: the cloud takes the event but
            # the gateway cannot mark it delivered, so it sends it again later.
            cloud.faults.latency_s = 0.3
            self._present(daemon, RESIDENT, None)
        daemon.enable(fault)
        if fault.hits_commits:
            self.struck += 1
        try:
            if n == 0:
                # The day pass's first entry at the reader: a billable use the door
                # waits for until durable; refused by the disk, the door opens anyway.
                self._badge(daemon, site, thread, DAY_PASS, fault)
                # What an operator reads from the real edgectl.
                text = daemon.ctl("present", "--door", "front", "--card", SUSPENDED)
                self.result.presentations += 1
                if text.startswith("DENIED") and "\nNOT RECORDED (SQLITE_" in text:
                    self.result.not_recorded += 1
                else:
                    self.violation(f"{fault.name}: edgectl present says:\n{text}")
            answers = [
                self._present(daemon, card, fault)
                for card in self.rng.sample(CARDS, self.rng.randint(1, len(CARDS)))
            ]
            self._badge(daemon, site, thread, self.rng.choice((RESIDENT, SUSPENDED)), fault)
            refused = [a for a in answers if not a["recorded"]]
            if fault.hits_commits and not refused:
                self.violation(f"{fault.name}: every write was acknowledged while the disk failed")
            if refused:
                text = daemon.ctl("status")
                if "STORAGE:     failing since" not in text:
                    self.violation(f"{fault.name}: edgectl status does not show the fault:\n{text}")
            if in_flight:
                time.sleep(0.5)  # the upload's answer comes while the disk still fails
        finally:
            daemon.disable(fault)
            cloud.faults.latency_s = 0.0
        # Recovery by itself: the next write is recorded and status is ok again.
        recovered = _wait(lambda: self._present(daemon, RESIDENT, None)["recorded"], 10)
        if not recovered:
            self.violation(f"{fault.name}: still NOT RECORDED 10 s after the fault cleared")
        storage = daemon.call("status")["storage"]
        if storage["state"] != "ok":
            self.violation(f"{fault.name}: status after recovery: {storage}")
        self.say(
            f"fault {n + 1}: {fault.name}: {len(answers)} presented, "
            f"{sum(not a['recorded'] for a in answers)} NOT RECORDED; recovered"
        )

    # --- the end ----------------------------------------------------------------------

    def _drain(self, daemon: FaultyDaemon, cloud: CloudSim) -> None:
        """Uploads resume by themselves: every recorded event reaches the cloud."""
        if not _wait(lambda: self.recorded_ids <= set(cloud.events), 60):
            missing = sorted(self.recorded_ids - set(cloud.events))
            self.violation(f"{len(missing)} recorded events never reached the cloud: {missing[:5]}")

    def _after(self, daemon: FaultyDaemon, cloud: CloudSim) -> None:
        invented = sorted(self.unrecorded_ids & set(cloud.events))
        if invented:
            self.violation(f"{len(invented)} NOT RECORDED events reached the cloud: {invented[:5]}")
        self.result.resent = cloud.duplicates
        db = sqlite3.connect(f"file:{daemon.state / 'gateway.db'}?mode=ro", uri=True)
        try:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
            stored = {i for (i,) in db.execute("SELECT id FROM outbox")}
        finally:
            db.close()
        if check != "ok":
            self.violation(f"integrity_check: {check}")
        if self.unrecorded_ids & stored:
            self.violation("NOT RECORDED events are in the database after recovery")
        log = daemon.output()
        self.result.failing_lines = log.count("store: storage failing")
        self.result.recovered_lines = log.count("store: storage recovered")
        if self.result.failing_lines != self.result.recovered_lines:
            self.violation(
                f"{self.result.failing_lines} 'storage failing' lines but "
                f"{self.result.recovered_lines} recoveries"
            )
        if self.result.failing_lines != self.struck:
            self.violation(
                f"{self.result.failing_lines} 'storage failing' lines "
                f"for {self.struck} faults that struck the database (once each expected)"
            )
        for noise in (
            "store: write failed",
            "store: commit failed",
            "exception was never retrieved",
        ):
            if noise in log:
                self.violation(f"the log has '{noise}' (a line per write, or a task died)")


def run_campaign(
    faults: int, work: Path, seed: int = 0, say: Callable[[str], None] | None = None
) -> Result:
    return Campaign(work, seed, say or (lambda _: None)).run(faults)


def available() -> bool:
    return os.path.exists(FIU_RUN) and os.path.exists(FIU_CTRL)


def dump(result: Result) -> str:
    return json.dumps(result.__dict__, indent=2)
