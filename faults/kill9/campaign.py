"""The kill -9 campaign: the real daemon under load, killed at random moments
and at named fault points, restarted, and checked after every kill.

The parts are real: a Mosquitto broker, the cloud simulator over HTTP with
signed pushes, two simulated Wiegand readers and a Modbus relay board for the
strikes (`hwsim.site`), the daemon as a process (forked from a zygote, so a
restart does not pay Python's imports). Each life of the daemon either has a
fault point armed (`EDGE_FAULTPOINT=name:N`, the daemon kills itself there)
or is killed by the campaign at a random moment, ready or not. The process
group is killed, as systemd kills a unit's cgroup.

After each kill, with the daemon dead, `Checker.inspect` reads the database:
`PRAGMA integrity_check` is ok; the stored cursor matches the stored data
(every member the campaign changed holds a value the cloud had at or after
that cursor: pushes may run ahead of the cursor, nothing may lag behind it;
where a push replaced a member's rows, the rows it kept for the next pull to
put back, edge/site/pushed.py, are what must match);
every event the gateway acknowledged is still there. After each restart the
strikes are read off the Modbus board: none energised unless the door's
configured schedule says so. At the end the daemon runs until its outbox is
drained, and every acknowledged event must have reached the simulator, no
more often than the daemon lives that could have sent it (counted at the
simulator, `CloudSim.received`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.faultpoints import POINTS
from edge.ops.edgectl import Client, RemoteError, Unreachable
from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.cloud import CloudSim
from hwsim.site import SimDoor, SimSite, SiteThread, card_frame
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, reference_monday

REPO = Path(__file__).resolve().parents[2]

# Members whose billing the campaign's operator changes back and forth.
TRACKED = ("m-1004", "m-1005", "m-1009", "m-1012")
BILLING = ("ok", "past_due", "suspended")
DOORS = (
    SimDoor("front", "wiegand", unlock_seconds=1, held_open_seconds=30),
    SimDoor("office-12", "wiegand", exit_button=False, unlock_seconds=1, held_open_seconds=30),
)
# How many passes a point is armed for, at most: points passed often get a wider range.
MAX_PASSES = {
    "store.before_commit": 12,
    "store.after_commit": 12,
    "sync.upload_answered": 4,
    "sync.change_page": 4,
    "updates.before_flip": 1,
    "updates.after_flip": 1,
}
# Bookings the campaign keeps in the cloud; it cancels the oldest beyond these.
BOOKINGS_KEPT = 40
# The last life fails when neither its outbox backlog nor its cursor moved for this long.
DRAIN_STALL_S = 60
# Members with day passes in the example site (a pass of their own, a balance).
DAY_PASS_CARDS = (("m-1007", "H10304:500:12345"), ("m-1008", "raw:0A0B0C0D"))
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def campaign_site() -> dict[str, Any]:
    """The example site, with what makes its doors' state checkable by a clock.

    The front door opens by schedule at lunch (no first-person-in rule), office 12
    is always open by schedule, and day passes work at any hour (so a badge at
    night bills one).
    """
    doc: dict[str, Any]
    doc, _ = example_site(reference_monday(datetime.now(ZoneInfo("Europe/Berlin")).date()))
    doc["site"]["day_pass_access"] = [{"group": "members", "schedule": "always"}]
    for door in doc["doors"]:
        door.pop("first_person_in", None)
        if door["id"] == "office-12":
            door["unlock_schedule"] = "always"
    return doc


def scheduled_open(doc: dict[str, Any], door_id: str, now: float) -> bool:
    """Whether the door's configured schedule holds it open at `now` (read from the
    cloud's document here, not from the gateway: the check must not share its code)."""
    door = next(d for d in doc["doors"] if d["id"] == door_id)
    schedule_id = door.get("unlock_schedule")
    if schedule_id is None:
        return False
    schedule = next(s for s in doc["schedules"] if s["id"] == schedule_id)
    local = datetime.fromtimestamp(now, ZoneInfo(doc["site"]["timezone"]))
    holidays = {h["date"] for h in doc.get("holidays") or []}
    if schedule.get("closed_on_holidays") and local.date().isoformat() in holidays:
        return False
    minute = local.hour * 60 + local.minute
    for window in schedule["windows"]:
        first, _, last = window["days"].partition("-")
        lo, hi = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        day_ok = lo <= local.weekday() <= hi if lo <= hi else not hi < local.weekday() < lo
        start = _minutes(window["from"])
        end = _minutes(window["to"])
        if start < end and day_ok and start <= minute < end:
            return True
        if start >= end and day_ok and (minute >= start or minute < end):
            return True  # a window over midnight (an approximation: either side counts)
    return False


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


# --- the checker ------------------------------------------------------------------


@dataclass
class Violation:
    life: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"life {self.life}: {self.kind}: {self.detail}"


@dataclass
class Checker:
    """What the campaign knows and checks, kept apart from how it drives the daemon
    (the tests plant violations here to show each is caught)."""

    db_path: Path
    initial_billing: dict[str, str]
    # (cursor number, member, billing) for every change the operator made.
    billing_changes: list[tuple[int, str, str]] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # event id: life that acknowledged it
    # (holder, day): life whose admin `present` answered that a day pass was consumed.
    usage_acked: dict[tuple[str, str], int] = field(default_factory=dict)
    delivered_at: dict[str, int] = field(default_factory=dict)  # id: inspection that saw it
    senders: Counter[str] = field(default_factory=Counter)  # id: lives that could send it
    violations: list[Violation] = field(default_factory=list)
    inspections: int = 0
    on_violation: Callable[[Violation], None] | None = None
    _reported: set[tuple[str, str]] = field(default_factory=set)

    def fail(self, life: int, kind: str, detail: str) -> None:
        if (kind, detail) in self._reported:
            return  # still true at a later inspection: one violation, not one per life
        self._reported.add((kind, detail))
        self.violations.append(Violation(life, kind, detail))
        if self.on_violation is not None:
            self.on_violation(self.violations[-1])

    def ack(self, life: int, ids: list[str]) -> None:
        for event_id in ids:
            self.acked.setdefault(event_id, life)

    def billing_at(self, member: str, seq: int) -> str:
        value = self.initial_billing[member]
        for at, who, billing in self.billing_changes:
            if who == member and at <= seq:
                value = billing
        return value

    def allowed_billing(self, member: str, seq: int) -> set[str]:
        """The values the member had at cursor `seq` or any later one."""
        allowed = {self.billing_at(member, seq)}
        allowed |= {b for at, who, b in self.billing_changes if who == member and at > seq}
        return allowed

    def inspect(self, life: int) -> None:
        """With the daemon dead: the database as the next life will find it."""
        self.inspections += 1
        if not self.db_path.exists():
            return
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            ok = db.execute("PRAGMA integrity_check").fetchall()
            if ok != [("ok",)]:
                self.fail(life, "integrity", repr(ok[:5]))
                return
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                return  # killed before the first migration committed
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            cursor, gen = meta.get("cursor"), int(meta.get("gen") or 0)
            if cursor is not None and gen:
                seq = int(str(cursor).removeprefix("c-"))
                for member in self.initial_billing:
                    stored = _billing(db, gen, member)
                    allowed = self.allowed_billing(member, seq)
                    if stored not in allowed:
                        self.fail(
                            life,
                            "cursor",
                            f"cursor {cursor} but {member} has billing {stored!r} "
                            f"(the cloud had {sorted(allowed)} at or after it)",
                        )
            outbox = dict(db.execute("SELECT id, state FROM outbox").fetchall())
            uses = {
                (holder, day): event_id
                for holder, day, event_id in db.execute(
                    "SELECT holder, day, event_id FROM day_pass_uses"
                )
            }
        finally:
            db.close()
        for (holder, day), acked_by in self.usage_acked.items():
            used = uses.get((holder, day))
            if used is None or used not in outbox:
                detail = f"day pass of {holder} on {day} (answered in life {acked_by})"
                self.fail(life, "lost", detail)
            else:
                self.ack(acked_by, [used])
        for event_id, acked_by in self.acked.items():
            if event_id not in outbox:
                self.fail(life, "lost", f"event {event_id} (acknowledged in life {acked_by})")
        self.ack(life, list(outbox))
        for event_id, state in outbox.items():
            if state != "pending":
                self.delivered_at.setdefault(event_id, self.inspections)

    def life_starts(self) -> None:
        """A new life may send every event not yet known as delivered."""
        for event_id in self.acked:
            if event_id not in self.delivered_at:
                self.senders[event_id] += 1
        self.senders["*"] += 1  # events recorded during the life itself

    def strikes(self, life: int, energised: dict[str, bool], expected: dict[str, bool]) -> None:
        for door, on in energised.items():
            if on and not expected[door]:
                self.fail(life, "strike", f"{door}: energised after the restart, schedule shut")

    def final(self, life: int, received: Counter[str], stored: set[str]) -> None:
        """After the drain: every acknowledged event at the cloud, and no more often
        than the lives that could have sent it."""
        for event_id, acked_by in self.acked.items():
            if event_id not in stored:
                self.fail(life, "undelivered", f"event {event_id} (acked in life {acked_by})")
        for event_id, n in received.items():
            if event_id not in self.acked:
                continue  # an event recorded and lost before any acknowledgement
            could = self.senders.get(event_id, 0) + self._lives_since(event_id)
            if n > could:
                self.fail(life, "duplicate", f"event {event_id} arrived {n} times ({could} lives)")

    def _lives_since(self, event_id: str) -> int:
        # The life that recorded an event can send it before any inspection saw it.
        return 1


# --- the zygote ---------------------------------------------------------------------


class Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faults.kill9.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        pid: int = json.loads(self.proc.stdout.readline())["pid"]
        return pid

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Life:
    """One run of the daemon, from fork to SIGKILL."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self.fd = None  # already gone (and reaped)

    def wait(self, timeout: float) -> bool:
        """True once the process is gone."""
        if self.fd is None:
            return True
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return bool(ready)

    def kill(self) -> None:
        """SIGKILL the whole group (the daemon and any child it started).

        The process itself is killed too: one killed right after the fork may not
        lead its group yet, and a daemon that survived its kill would share the
        state directory with the next one (seen: two daemons, a snapshot file
        deleted under the other's import)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if not self.wait(30):
            raise RuntimeError(f"kill9: the daemon {self.pid} survived SIGKILL for 30 s")
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- the campaign -------------------------------------------------------------------


@dataclass
class Result:
    kills: int
    # The last life's catch-up: seconds, (backlog, cursor) when it was ready, the cloud's cursor.
    drained: tuple[float, Any, str] | None
    at_points: Counter[str]
    violations: list[Violation]
    seconds: float
    events_acked: int
    redelivered: int

    def line(self) -> str:
        return f"RESULT campaign=kill9 kills={self.kills} violations={len(self.violations)}"


class Campaign:
    def __init__(self, work: Path, seed: int = 1, log: Any = None) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.log = log
        self.doc = campaign_site()
        self.state_dir = work / "state"
        initial = {m["id"]: m["billing"]["status"] for m in self.doc["members"]}
        self.checker = Checker(self.state_dir / "gateway.db", {m: initial[m] for m in TRACKED})
        self.checker.on_violation = lambda v: self.say(f"violation: {v}")
        self.cards = [
            _card_spec(c)
            for m in self.doc["members"]
            for c in m.get("credentials") or []
            if c.get("type") == "card" and c.get("format") in ("H10301", "H10306")
        ]
        self.life = 0
        self.broker: Mosquitto | None = None
        self.cloud: CloudSim | None = None
        self.site: SimSite | None = None
        self.thread: SiteThread | None = None
        self.zygote: Zygote | None = None
        self.env: dict[str, str] = {}
        self.argv: list[str] = []
        self.at_points: Counter[str] = Counter()
        self.badging: dict[str, concurrent.futures.Future[Any]] = {}
        # What the strikes are checked against: the cloud's document unless a test
        # plants a disagreement. `before_inspect` lets a test spoil the database.
        self.expect_doc = self.doc
        self.drained: tuple[float, Any, str] | None = None
        self.bookings: collections.deque[str] = collections.deque()
        self.before_inspect: Callable[[Path], None] | None = None

    # --- setting up and tearing down --------------------------------------------------

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        self.broker = Mosquitto(self.work)
        self.broker.start()
        self.cloud = CloudSim(self.doc, mqtt=(self.broker.host, self.broker.port)).start()
        (self.work / "site").mkdir(exist_ok=True)
        self.site = SimSite(self.work / "site", DOORS)
        self.thread = SiteThread(self.site)
        self.thread.__enter__()
        write_secret(self.state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        write_secret(self.state_dir, "cloud_token", b"sim-token")
        config = self.work / "gateway.toml"
        config.write_text(
            '[site]\nid = "mitte"\n[log]\nlevel = "info"\ntimestamps = true\n'
            f'[cloud]\nurl = "{self.cloud.url}"\nallow_insecure_http_for_lab = true\n'
            "pull_interval_s = 1\n"
            "backoff_min_s = 0.1\nbackoff_max_s = 0.5\ntimeout_s = 30\npush = true\n"
            "changes_limit = 3\nupload_batch = 7\n"
            f'[cloud.keys]\n{self.cloud.key_id} = "{self.cloud.public_key_b64}"\n'
            f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n' + self.site.config()
        )
        self.argv = ["run", "--config", str(config), "--state-dir", str(self.state_dir)]
        pythonpath = os.pathsep.join(
            [str(REPO / ".pp"), str(REPO), os.environ.get("PYTHONPATH", "")]
        )
        self.env = {**os.environ, "PYTHONPATH": pythonpath}
        self.env.pop("EDGE_FAULTPOINT", None)
        self.zygote = Zygote(self.env)

    def stop(self) -> None:
        if self.zygote is not None:
            self.zygote.stop()
        if self.thread is not None:
            self.thread.__exit__()
        if self.cloud is not None:
            self.cloud.stop()
        if self.broker is not None:
            self.broker.stop()

    def say(self, text: str) -> None:
        if self.log is not None:
            print(text, file=self.log, flush=True)

    # --- one life ----------------------------------------------------------------------

    def spawn(self, point: str | None) -> Life:
        assert self.zygote is not None
        self.life += 1
        self.checker.life_starts()
        env = dict(self.env)
        if point is not None:
            env["EDGE_FAULTPOINT"] = point
        log = self.work / "daemon.log"
        with log.open("a") as f:
            f.write(f"=== kill9: life {self.life}, armed {point or 'nothing'} ===\n")
        return Life(self.zygote.spawn(self.argv, env, log))

    def admin(self, method: str, params: dict[str, Any] | None = None) -> Any:
        client = Client(self.state_dir / "admin.sock", timeout=5)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def wait_ready(self, life: Life, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if life.wait(0):
                return False
            try:
                if self.admin("status").get("ready"):
                    return True
            except (Unreachable, RemoteError, OSError, ValueError):
                pass
            time.sleep(0.01)
        return False

    def check_strikes(self, settle_s: float = 1.0) -> None:
        """Right after a restart: a strike is energised only if its schedule says so.
        The daemon gets `settle_s` to write its first state to the board."""
        assert self.site is not None
        assert self.thread is not None
        site = self.site
        deadline = time.monotonic() + settle_s
        while True:
            now = time.time()
            expected = {d.id: scheduled_open(self.expect_doc, d.id, now) for d in DOORS}
            energised = {d.id: bool(self.thread.do(site.strike, d.id)) for d in DOORS}
            if all(not on or expected[d] for d, on in energised.items()):
                return
            if time.monotonic() > deadline:
                self.checker.strikes(self.life, energised, expected)
                return
            time.sleep(0.02)

    def load_step(self) -> None:
        """One random act of the site's world."""
        assert self.cloud is not None
        assert self.site is not None
        assert self.thread is not None
        roll = self.rng.random()
        if roll < 0.55:
            reader = self.rng.choice([f"{d.id}-in" for d in DOORS])
            busy = self.badging.get(reader)
            if busy is None or busy.done():  # one card at a time: frames must not interleave
                card = self.rng.choice(self.cards)
                self.badging[reader] = asyncio_fire(self.thread, self.site.badge(reader, card))
        elif roll < 0.7:
            member = self.rng.choice(TRACKED)
            billing = self.rng.choice(BILLING)
            cursor = self.cloud.set_billing(member, billing)
            self.checker.billing_changes.append((int(cursor[2:]), member, billing))
        elif roll < 0.78:
            self._book()
        elif roll < 0.8:
            self._push(lambda c: c.push_sync())
        elif roll < 0.81:
            self._push(lambda c: c.push_resync())  # a snapshot and its flip
        elif roll < 0.84:
            self._present_day_pass()
        else:
            try:
                events = self.admin("events", {"limit": 50})
            except (Unreachable, RemoteError, OSError, ValueError):
                return
            self.checker.ack(self.life, [e["id"] for e in events])

    def _present_day_pass(self) -> None:
        """A day-pass holder at the front door through the admin socket: an answer
        that says a pass was consumed promises the use is durable."""
        holder, card = self.rng.choice(DAY_PASS_CARDS)
        try:
            answer = self.admin("present", {"door": "front", "card": card})
        except (Unreachable, RemoteError, OSError, ValueError):
            return
        if answer["reason"] == "day_pass" and answer["details"].get("consumed"):
            self.checker.usage_acked.setdefault((holder, answer["at"][:10]), self.life)

    def _book(self) -> None:
        assert self.cloud is not None
        start = datetime.now(ZoneInfo("Europe/Berlin")).replace(second=0, microsecond=0)
        start = start.replace(minute=(start.minute // 15) * 15)
        offset = self.rng.randrange(1, 40) * 15 * 60
        begin = datetime.fromtimestamp(start.timestamp() + offset, start.tzinfo)
        end = datetime.fromtimestamp(begin.timestamp() + 30 * 60, start.tzinfo)
        booking = {
            "id": f"k9-{self.rng.randrange(10**9)}",
            "room": "ada",
            "member": "m-1002",
            "attendees": [],
            "start": begin.isoformat(),
            "end": end.isoformat(),
            "status": "confirmed",
            "invoiced": False,
            "recurrence_id": None,
        }
        try:
            self.cloud.add_booking(booking)
        except Exception as exc:
            self.say(f"booking refused: {exc}")
            return
        # The operator cancels the oldest: thousands of bookings piled into the
        # campaign's day would make every start load and every rooms tick walk them.
        self.bookings.append(str(booking["id"]))
        if len(self.bookings) > BOOKINGS_KEPT:
            try:
                self.cloud.delete("booking", self.bookings.popleft())
            except Exception as exc:
                self.say(f"booking delete refused: {exc}")

    def _push(self, send: Any) -> None:
        try:
            send(self.cloud)
        except Exception as exc:
            self.say(f"push lost: {exc}")

    def one_life(self) -> str:
        """Spawn, load, kill; returns how it died ("random" or the point's name)."""
        if self.life == 0:
            self.first_sync()  # the first life, killed once its first snapshot is in
            return "random"
        named = self.rng.random() < 0.5
        point = spec = None
        if named:
            point = self.rng.choice(sorted(POINTS))
            spec = f"{point}:{self.rng.randint(1, MAX_PASSES[point])}"
        life = self.spawn(spec)
        died = "random"
        if point is not None and point.startswith("updates."):
            self._push(lambda c: c.push_resync())  # a snapshot to flip (the broker keeps it)
        try:
            check = self.rng.random() < 0.4
            if check and self.wait_ready(life, 30):
                self.check_strikes()
            # A point not reached in its time is killed at random instead.
            budget = 1.0 if named else self.rng.uniform(0.0, 0.5)
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline:
                if life.wait(0):
                    died = point or "random"
                    break
                self.load_step()
                time.sleep(self.rng.uniform(0.0, 0.02))
        finally:
            life.kill()
        self.at_points[died] += 1
        time.sleep(0.02)  # a request the dead daemon had sent is handled before we count
        if self.before_inspect is not None:
            self.before_inspect(self.checker.db_path)
        self.checker.inspect(self.life)
        return died

    def first_sync(self) -> None:
        """Before the first kill: a daemon that took its first snapshot, so that a
        slow machine's kills do not all land before the first import ends."""
        assert self.cloud is not None
        life = self.spawn(None)
        try:
            if self.wait_ready(life, 60):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if self.admin("sync.status")["cursor"] is not None:
                            break
                    except (Unreachable, RemoteError, OSError, ValueError):
                        pass
                    time.sleep(0.05)
                self.check_strikes()
        finally:
            life.kill()
        self.at_points["random"] += 1
        self.checker.inspect(self.life)

    def drain(self) -> None:
        """The last life: no fault, until the outbox is empty and the cloud's cursor is in.

        The daemon must keep moving: it fails when neither its backlog nor its cursor
        moved for DRAIN_STALL_S. A long campaign leaves a long change backlog (pages
        of `changes_limit = 3`), and catching up on it is progress, not a hang.
        """
        assert self.cloud is not None
        life = self.spawn(None)
        try:
            if not self.wait_ready(life, 60):
                self.checker.fail(self.life, "start", "the daemon did not become ready")
                return
            self.check_strikes()
            started = moved = time.monotonic()
            first = last = None
            while True:
                try:
                    status = self.admin("sync.status")
                except (Unreachable, RemoteError, OSError, ValueError):
                    status = None
                if status:
                    now = (status["backlog_total"], status["cursor"])
                    first = first or now
                    if now != last:
                        last, moved = now, time.monotonic()
                    if now == (0, self.cloud.cursor):
                        break
                if time.monotonic() - moved > DRAIN_STALL_S:
                    self.checker.fail(
                        self.life,
                        "drain",
                        f"stuck for {DRAIN_STALL_S} s at backlog and cursor {last} "
                        f"(the cloud at {self.cloud.cursor})",
                    )
                    break
                time.sleep(0.1)
            self.drained = (time.monotonic() - started, first, self.cloud.cursor)
            events = self.admin("events", {"limit": 10000})
            self.checker.ack(self.life, [e["id"] for e in events])
        finally:
            life.kill()
        self.checker.inspect(self.life)
        with self.cloud._lock:
            received = Counter(self.cloud.received)
            stored = set(self.cloud.events)
        self.checker.final(self.life, received, stored)

    def run(self, kills: int) -> Result:
        started = time.monotonic()
        self.start()
        try:
            for i in range(kills):
                died = self.one_life()
                if (i + 1) % 100 == 0:
                    self.say(
                        f"{i + 1} kills in {time.monotonic() - started:.0f} s, "
                        f"{len(self.checker.violations)} violations ({died})"
                    )
            self.drain()
        finally:
            self.stop()
        assert self.cloud is not None
        return Result(
            kills=sum(self.at_points.values()),
            at_points=self.at_points,
            violations=self.checker.violations,
            seconds=time.monotonic() - started,
            drained=self.drained,
            events_acked=len(self.checker.acked),
            redelivered=sum(n - 1 for n in self.cloud.received.values() if n > 1),
        )


def _billing(db: sqlite3.Connection, gen: int, member: str) -> str | None:
    """The member's billing as the cursor has it: the rows a push replaced, when one
    did (a pull puts them back unless it brings the member), else the stored one."""
    kept = db.execute(
        "SELECT rows FROM push_undo WHERE gen = ? AND kind = 'holder' AND id = ?", (gen, member)
    ).fetchone()
    if kept is None:
        row = db.execute(
            "SELECT billing FROM holders WHERE gen = ? AND id = ?", (gen, member)
        ).fetchone()
        return row[0] if row else None
    columns = [c[1] for c in db.execute("PRAGMA table_info(holders)")]
    rows = json.loads(kept[0])["holders"]
    return str(rows[0][columns.index("billing")]) if rows else None


def _card_spec(credential: dict[str, Any]) -> str:
    return f"{credential['format']}:{credential['facility_code']}:{credential['card_number']}"


def asyncio_fire(thread: SiteThread, coro: Any) -> concurrent.futures.Future[Any]:
    """Start a coroutine on the site's loop without waiting (a badge takes real time);
    a badge at a daemon that is not there fails, and that is no matter."""
    future = asyncio.run_coroutine_threadsafe(coro, thread.loop)
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


assert card_frame  # the card specs above are what hwsim.site.card_frame reads
