"""The soak run: real parts under load, measured from outside the daemon.

Parts, all real and all on loopback: the daemon (`edge-gateway run`) as a
process, a Mosquitto broker, the cloud simulator over HTTP, and `hwsim`
sites: each reader group is a `SimSite` with its own Modbus TCP relay board,
either 16 libosdp peripherals on one simulated RS-485 cable (secure channel,
115200 Bd) or 16 Wiegand readers sending D0/D1 edges to the daemon's socket
edge sources.

What is measured, and where:
- badge to strike: from the last Wiegand edge leaving the simulated reader
  (or the card handed to libosdp) to the simulated board applying the coil
  write, both CLOCK_MONOTONIC; only badges of cards the site grants.
- RSS and open fds of the daemon, from /proc, once a second.
- lost and duplicated events at the cloud simulator: every event the
  gateway committed to its outbox (read from its database after the run)
  must be among the simulator's accepted ids; an act recorded twice under
  two ids (the same body) counts as duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.cloud import CloudSim
from hwsim.site import SimDoor, SimSite, SiteThread
from hwsim.sitegen import EXAMPLE_PIN_KEY, reference_monday, write_large_site

DEVICES = 8  # JSON devices of the room "ada" whose states the load publishes


@dataclass
class Plan:
    """What a run does; the CLI and the CI test fill it in."""

    seconds: float
    groups: tuple[str, ...] = ("osdp", "wiegand", "wiegand", "wiegand")
    readers_per_group: int = 16
    badge_rate: float = 10.0  # per second, sustained
    burst_rate: float = 100.0  # per second during a burst
    burst_every_s: float = 60.0
    burst_s: float = 3.0
    mqtt_rate: float = 1000.0  # messages per second
    outage_at_s: float = 120.0  # from the start of the run
    outage_events: int = 72_000  # events queued in the outbox before the cloud comes back
    outage_max_s: float = 600.0  # the cloud comes back after this long whatever was queued
    kill_every_s: float = 180.0
    # The run's last seconds without kills: one process lives that long under the
    # same load, so a leak a restart every few minutes would hide shows.
    calm_tail_s: float = 0.0
    warmup_s: float = 60.0  # of the run, and of each process's life
    drain_timeout_s: float = 600.0
    members: int = 5_000
    seed: int = 15
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)


@dataclass
class Badge:
    group: int
    door: str
    kind: str
    granted: bool  # the site grants this card at this door (by construction)
    sent_ns: int = 0  # the last edge (Wiegand) or the hand-over to libosdp (OSDP)
    failed: str = ""  # the reader could not reach the daemon (it was down)


@dataclass
class Figures:
    minutes: float
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    decide_p99_ms: float = 0.0
    rss_growth_pct: float = 0.0
    fd_growth: int = 0
    # More detail, printed beside the RESULT line.
    badges: int = 0
    badges_failed: int = 0
    badges_near_kill: int = 0  # granted badges from 2 s before a kill to 1 s after ready
    grants_expected: int = 0
    grants_seen: int = 0
    osdp_p99_ms: float = 0.0
    wiegand_p50_ms: float = 0.0
    mqtt_sent: int = 0
    outage_queued: int = 0
    outage_s: float = 0.0
    drain_s: float = 0.0
    kills: int = 0
    resent: int = 0  # ids the cloud had already (a lost answer): acknowledged, not counted
    rejected: int = 0
    extra_at_cloud: int = 0
    grants_unrecorded: int = 0  # strikes the board saw energised beyond access.granted events
    frames_split: int = 0  # Wiegand frames the daemon refused as cut (an overloaded simulator)
    rss_mb: tuple[float, float] = (0.0, 0.0)
    fds: tuple[int, int] = (0, 0)
    rss_lives_pct: float = 0.0  # the first life after warm-up against the last, at equal age
    rss_calm_pct: float = 0.0  # the calm tail's process, from its warm-up to its end
    worst_life_rss_pct: float = 0.0
    notes: list[str] = field(default_factory=list)

    def result_line(self) -> str:
        return (
            f"RESULT campaign=soak minutes={self.minutes:.1f} events={self.events} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"decide_p99_ms={self.decide_p99_ms:.1f} rss_growth_pct={self.rss_growth_pct:.1f} "
            f"fd_growth={self.fd_growth}"
        )

    def detail_line(self) -> str:
        return (
            f"DETAIL badges={self.badges} failed_while_down={self.badges_failed} "
            f"near_kill={self.badges_near_kill} "
            f"grants_expected={self.grants_expected} grants_seen={self.grants_seen} "
            f"wiegand_p50_ms={self.wiegand_p50_ms:.1f} osdp_p99_ms={self.osdp_p99_ms:.1f} "
            f"mqtt_sent={self.mqtt_sent} outage_queued={self.outage_queued} "
            f"outage_s={self.outage_s:.0f} drain_s={self.drain_s:.0f} kills={self.kills} "
            f"resent={self.resent} rejected={self.rejected} extra_at_cloud={self.extra_at_cloud} "
            f"grants_unrecorded={self.grants_unrecorded} frames_split={self.frames_split} "
            f"rss_mb={self.rss_mb[0]:.1f}->{self.rss_mb[1]:.1f} "
            f"fds={self.fds[0]}->{self.fds[1]} rss_lives_pct={self.rss_lives_pct:.1f} "
            f"rss_calm_pct={self.rss_calm_pct:.1f} worst_life_rss_pct={self.worst_life_rss_pct:.1f}"
        )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def site_document(members: int, doors: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A large site with the soak's doors open to every plan's members always;
    returns (document, cards it grants at those doors, cards it refuses)."""
    out = __import__("io").StringIO()
    write_large_site(out, members, 1, day=reference_monday(date.today()))
    doc: dict[str, Any] = json.loads(out.getvalue())
    doc["doors"] += [{"id": d, "name": f"Soak door {d}", "mode": "card"} for d in doors]
    for group in doc["access_groups"]:
        if group["id"] == "members":
            group["doors"] = [*group["doors"], *doors]
    granted, refused = [], []
    for m in doc["members"]:
        card = m["credentials"][0]
        spec = f"H10306:{card['facility_code']}:{card['card_number']}"
        # A resident (always) with billing ok and no contract end is let in at any hour;
        # a suspended member never is. The others depend on the day: not used.
        if m["plan"] == "resident" and m["billing"]["status"] == "ok" and not m["contract"]["end"]:
            granted.append(spec)
        elif m["billing"]["status"] == "suspended":
            refused.append(spec)
    return doc, granted, refused


PR_SET_PDEATHSIG = 1


class Daemon:
    """`edge-gateway run` as a process; SIGKILL and start again on the same state."""

    def __init__(self, state: Path, config: Path, log: Path) -> None:
        self.state, self.config, self.log_path = state, config, log
        self.proc: subprocess.Popen[bytes] | None = None
        # Looked up here, not in the child: after fork only the call itself runs.
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def _die_with_parent(self) -> None:
        """In the child before exec: SIGKILL when the harness dies (a crash of the
        harness must not leave a daemon running on its own)."""
        self._prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def start(self, timeout_s: float = 120) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "edge.ops.cli", "run"),
                    *("--config", str(self.config), "--state-dir", str(self.state)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                if self.rpc("status")["result"]["ready"]:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready in {timeout_s:.0f} s")

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.state / "admin.sock"))
            request = {"id": 1, "method": method, "params": params or {}}
            s.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(s.makefile().readline())

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code


def _proc_sample(pid: int) -> tuple[float, int] | None:
    """(RSS in MB, open fds) of a process, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, fds
    return None


class MqttLoad:
    """Publishes device states and panel requests at a rate, from a thread."""

    def __init__(self, host: str, port: int, site: str, rate: float) -> None:
        self.rate = rate
        self.site = site
        self.sent = 0
        self._done = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"soak-load-{os.getpid()}"
        )
        self._client.max_queued_messages_set(20_000)
        self._host, self._port = host, port
        self._thread = threading.Thread(target=self._run, name="soak.mqtt")

    def start(self) -> None:
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(10)
        self._client.loop_stop()
        self._client.disconnect()

    def _run(self) -> None:
        rng = random.Random(7)
        t0 = time.monotonic()
        while not self._done.is_set():
            # Catch up to the rate every 10 ms: 10 messages a tick at 1,000/s.
            due = int((time.monotonic() - t0) * self.rate) - self.sent
            for _ in range(max(0, min(due, int(self.rate)))):
                if rng.random() < 0.8:
                    # The devices are off while the room is free: a state the gateway
                    # parses and compares, no command follows.
                    topic = f"soak/dev-{rng.randrange(DEVICES)}/state"
                    payload = json.dumps({"state": "OFF"})
                else:
                    topic = f"edge/{self.site}/rooms/ada/request/activity"
                    payload = json.dumps({"transaction": f"t{self.sent}"})
                self._client.publish(topic, payload, qos=0)
                self.sent += 1
            self._done.wait(0.01)


class Soak:
    def __init__(self, work: Path, plan: Plan) -> None:
        self.work = work
        self.plan = plan
        self.log = plan.log
        self.rng = random.Random(plan.seed)
        self.badges: list[Badge] = []
        self.samples: list[tuple[float, int, float, int]] = []  # (t, pid, rss MB, fds)
        self.kills = 0
        # (from, to) in monotonic ns: a SIGKILL until one second after the restart was
        # ready; badges then meet no daemon, so they are not timed.
        self.down: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._pending: list[Future[None]] = []
        self._t0 = 0.0
        self.drained_at: float | None = None  # seconds into the run the backlog was up

    # --- setup ------------------------------------------------------------------------

    def _sites(self) -> list[SimSite]:
        sites = []
        for g, kind in enumerate(self.plan.groups):
            doors = [
                SimDoor(
                    f"g{g}d{i}",
                    kind,
                    None,
                    contact=False,
                    exit_button=False,
                    unlock_seconds=0.05,
                )
                for i in range(self.plan.readers_per_group)
            ]
            work = self.work / f"group{g}"
            work.mkdir(parents=True, exist_ok=True)
            sites.append(SimSite(work, doors, wiegand_formats=("H10306",)))
        return sites

    def _config(self, cloud: CloudSim, broker: Mosquitto, sites: list[SimSite]) -> str:
        text = (
            '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n'
            f'[cloud]\nurl = "{cloud.url}"\nallow_insecure_http_for_lab = true\n'
            "pull_interval_s = 30\n"
            "backoff_min_s = 0.2\nbackoff_max_s = 2\ntimeout_s = 5\n"
            f'[cloud.keys]\n{cloud.key_id} = "{cloud.public_key_b64}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            "[rooms.ada]\nfree_use = false\n"
        )
        for i in range(DEVICES):
            text += (
                f'[devices.soak-{i}]\ntype = "json"\nroom = "ada"\nbase = "soak/dev-{i}"\n'
                'state_key = "state"\npayload_on = "ON"\npayload_off = "OFF"\nrole = "plug"\n'
            )
        for g, site in enumerate(sites):
            section = site.config()
            if self.plan.groups[g] != "osdp":  # no OSDP reader: no OSDP bus
                section = section[section.index("[buses.sim-io]") :]
            text += "\n" + section.replace("sim-osdp", f"osdp{g}").replace("sim-io", f"io{g}")
        return text

    # --- load -------------------------------------------------------------------------

    def _badge(self, hw: SiteThread, g: int, door: str, card: str, granted: bool) -> None:
        kind = self.plan.groups[g]
        b = Badge(g, door, kind, granted)
        site = hw.site

        async def present() -> None:
            try:
                b.sent_ns = await site.badge(f"{door}-in", card)
            except OSError as exc:  # the daemon's socket is gone while it restarts
                b.failed = type(exc).__name__
            with self._lock:
                self.badges.append(b)

        fut = asyncio.run_coroutine_threadsafe(present(), hw.loop)
        self._pending.append(fut)

    def _sample(self, daemon: Daemon, t0: float) -> None:
        pid = daemon.pid
        if pid is None:
            return
        s = _proc_sample(pid)
        if s is not None:
            self.samples.append((time.monotonic() - t0, pid, s[0], s[1]))

    def _outbox(self, state: Path) -> list[tuple[str, str]]:
        """(id, state) of the outbox rows, read-only (the daemon may be running)."""
        db = sqlite3.connect(f"file:{state / 'gateway.db'}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute("SELECT id, state FROM outbox").fetchall()
        finally:
            db.close()

    def _pending_count(self, state: Path) -> int:
        db = sqlite3.connect(f"file:{state / 'gateway.db'}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
            return int(row[0])
        finally:
            db.close()

    # --- the run ------------------------------------------------------------------------

    def run(self) -> Figures:
        plan = self.plan
        self.work.mkdir(parents=True, exist_ok=True)
        sites = self._sites()
        door_ids = [d for s in sites for d in s.doors]
        doc, granted, refused = site_document(plan.members, door_ids)
        broker = Mosquitto(self.work)
        broker.start()
        cloud = CloudSim(doc, mqtt=(broker.host, broker.port)).start()
        threads = [SiteThread(s) for s in sites]
        state = self.work / "state"
        state.mkdir(exist_ok=True)
        load: MqttLoad | None = None
        daemon: Daemon | None = None
        figures = Figures(minutes=plan.seconds / 60)
        try:
            for t in threads:
                t.__enter__()
            for s in sites:
                s.provision(state)
            write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
            write_secret(state, "cloud_token", cloud.token.encode())
            config = self.work / "soak.toml"
            config.write_text(self._config(cloud, broker, sites))
            daemon = Daemon(state, config, self.work / "daemon.log")
            daemon.start()
            self._wait(lambda: self._synced(daemon), 120, "the first snapshot from the cloud")
            self.log(f"soak: daemon ready (pid {daemon.pid}), {len(door_ids)} readers")
            load = MqttLoad(broker.host, broker.port, cloud.site, plan.mqtt_rate)
            load.start()
            self._loop(daemon, cloud, threads, granted, refused, state, figures)
            load.stop()
            figures.mqtt_sent = load.sent
            load = None
            for fut in self._pending:
                with contextlib.suppress(Exception):
                    fut.result(10)
            # Drain: whatever is still queued goes up before the count.
            t_drain = time.monotonic()
            self._wait(
                lambda: self._pending_count(state) == 0,
                plan.drain_timeout_s,
                "the outbox to drain",
            )
            figures.drain_s = max(figures.drain_s, time.monotonic() - t_drain)
            daemon.stop()
            self._count(state, cloud, figures)
            self._latency(sites, figures)
            self._unrecorded(sites, cloud, figures)
            log_text = (self.work / "daemon.log").read_text(errors="replace")
            figures.frames_split = log_text.count("frame refused: wrong_length")
            self._growth(figures)
        finally:
            if load is not None:
                load.stop()
            if daemon is not None:
                daemon.kill()
            for t in threads:
                with contextlib.suppress(Exception):
                    t.__exit__()
            cloud.stop()
            broker.stop()
        figures.kills = self.kills
        return figures

    def _synced(self, daemon: Daemon) -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return bool(daemon.rpc("status")["result"]["cursor"])
        return False

    def _wait(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.2)

    def _loop(
        self,
        daemon: Daemon,
        cloud: CloudSim,
        threads: list[SiteThread],
        granted: list[str],
        refused: list[str],
        state: Path,
        figures: Figures,
    ) -> None:
        plan = self.plan
        t0 = self._t0 = time.monotonic()
        busy_until: dict[tuple[int, str], float] = {}
        doors = [(g, d) for g, t in enumerate(threads) for d in t.site.doors]
        next_kill = plan.kill_every_s
        next_sample = 0.0
        started = 0.0  # badges started, fractional (the rate's running sum)
        outage_started: float | None = None
        outage_done = False
        last_tick = 0.0
        next_count = 0.0
        while (now := time.monotonic() - t0) < plan.seconds:
            dt, last_tick = now - last_tick, now
            in_outage = outage_started is not None and not outage_done
            burst = (now % plan.burst_every_s) < plan.burst_s
            # During the outage the badges come as fast as the doors take them: the
            # two hours of events compressed into minutes.
            rate = 10_000.0 if in_outage else plan.burst_rate if burst else plan.badge_rate
            started += rate * dt
            while started >= 1:
                free = [(g, d) for g, d in doors if busy_until.get((g, d), 0.0) <= now]
                if not free:
                    started = min(started, 1.0)
                    break
                g, d = self.rng.choice(free)
                ok = self.rng.random() < 0.9
                card = self.rng.choice(granted if ok else refused)
                self._badge(threads[g], g, d, card, ok)
                # A person at a time: the door has opened and closed before the next.
                busy_until[(g, d)] = now + 0.4
                started -= 1
            self._pending = [f for f in self._pending if not f.done()]
            if now >= next_sample:
                self._sample(daemon, t0)
                next_sample = now + 1.0
            if outage_started is None and now >= plan.outage_at_s:
                cloud.stop()
                outage_started = now
                self.log(f"soak: {now:.0f} s: cloud down")
            if in_outage and outage_started is not None:
                queued = 0
                if now >= next_count:  # the outbox is counted once a second
                    queued = self._pending_count(state)
                    next_count = now + 1.0
                if queued >= plan.outage_events or now - outage_started >= plan.outage_max_s:
                    queued = self._pending_count(state)
                    figures.outage_queued = queued
                    figures.outage_s = now - outage_started
                    cloud.start()
                    outage_done = True
                    self.log(f"soak: {now:.0f} s: cloud back, {queued} events queued")
                    drain_from = time.monotonic()
                    threading.Thread(
                        target=self._time_drain,
                        args=(state, drain_from, figures),
                        name="soak.drain",
                        daemon=True,
                    ).start()
            last_kill_s = plan.seconds - max(min(15.0, plan.seconds / 5), plan.calm_tail_s)
            if now >= next_kill and now < last_kill_s:
                killed_ns = time.monotonic_ns()
                daemon.kill()
                self.kills += 1
                daemon.start()
                self.down.append((killed_ns - 2_000_000_000, time.monotonic_ns() + 1_000_000_000))
                self.log(f"soak: {now:.0f} s: SIGKILL #{self.kills}, restarted (pid {daemon.pid})")
                next_kill = now + plan.kill_every_s
            time.sleep(0.005)
        if outage_started is not None and not outage_done:
            figures.outage_queued = self._pending_count(state)
            figures.outage_s = time.monotonic() - t0 - outage_started
            cloud.start()
            self.log("soak: cloud back at the end of the run")

    def _time_drain(self, state: Path, since: float, figures: Figures) -> None:
        """How long the backlog takes to go up (the load goes on meanwhile)."""
        while time.monotonic() - since < self.plan.drain_timeout_s:
            with contextlib.suppress(sqlite3.Error):
                if self._pending_count(state) < 100:
                    figures.drain_s = time.monotonic() - since
                    self.drained_at = time.monotonic() - self._t0
                    return
            time.sleep(1)

    # --- figures ---------------------------------------------------------------------------

    def _count(self, state: Path, cloud: CloudSim, figures: Figures) -> None:
        rows = self._outbox(state)
        ids = {i for i, _ in rows}
        figures.events = len(ids)
        figures.rejected = sum(1 for _, s in rows if s == "rejected")
        at_cloud = dict(cloud.events)
        figures.lost = len(ids - at_cloud.keys())
        figures.extra_at_cloud = len(at_cloud.keys() - ids)
        bodies = Counter(
            json.dumps({k: v for k, v in e.items() if k != "id"}, sort_keys=True)
            for e in at_cloud.values()
        )
        figures.duplicated = sum(n - 1 for n in bodies.values() if n > 1)
        figures.resent = cloud.duplicates

    def _latency(self, sites: list[SimSite], figures: Figures) -> None:
        ons: dict[tuple[int, str], list[int]] = {}
        for g, site in enumerate(sites):
            assert site.board is not None
            coil_door = {c: d for d, c in site.coils.items()}
            for change in list(site.board.history):
                if change.on and change.coil in coil_door:
                    ons.setdefault((g, coil_door[change.coil]), []).append(change.ns)
        wiegand: list[float] = []
        osdp: list[float] = []
        figures.badges = len(self.badges)
        # A strike energised after the next badge at the same door reached the daemon
        # may be that badge's: a badge is matched only to a coil write before it.
        sent = [b for b in self.badges if not b.failed]
        sent.sort(key=lambda b: b.sent_ns)
        next_ns: dict[int, int] = {}
        last: dict[tuple[int, str], Badge] = {}
        for b in sent:
            prev = last.get((b.group, b.door))
            if prev is not None:
                next_ns[id(prev)] = b.sent_ns
            last[(b.group, b.door)] = b
        for b in self.badges:
            if b.failed:
                figures.badges_failed += 1
                continue
            if not b.granted:
                continue
            if any(a <= b.sent_ns <= z for a, z in self.down):
                figures.badges_near_kill += 1
                continue
            figures.grants_expected += 1
            limit = min(next_ns.get(id(b), 1 << 62), b.sent_ns + 2_000_000_000)
            after = [ns for ns in ons.get((b.group, b.door), []) if b.sent_ns <= ns < limit]
            if not after:
                continue  # no strike for this badge: its frame was cut, or no daemon
            figures.grants_seen += 1
            (wiegand if b.kind == "wiegand" else osdp).append((after[0] - b.sent_ns) / 1e6)
        figures.decide_p99_ms = percentile(wiegand or osdp, 0.99)
        figures.wiegand_p50_ms = statistics.median(wiegand) if wiegand else float("nan")
        figures.osdp_p99_ms = percentile(osdp, 0.99)

    def _unrecorded(self, sites: list[SimSite], cloud: CloudSim, figures: Figures) -> None:
        """Each time a strike was energised, a grant was acted on: it must be at the cloud.
        (A record queued in the last milliseconds before a SIGKILL may be lost, a limit
        docs/durability.md states; so this is reported, not counted as lost.)"""
        granted = Counter(
            e.get("door") for e in cloud.events.values() if e.get("type") == "access.granted"
        )
        for site in sites:
            assert site.board is not None
            ons = Counter(c.coil for c in list(site.board.history) if c.on)
            for door, coil in site.coils.items():
                figures.grants_unrecorded += max(0, ons[coil] - granted[door])

    def _growth(self, figures: Figures) -> None:
        """RSS and open fds flat after warm-up, measured two ways.

        Warm-up ends `warmup_s` into the run or when the outage's backlog has
        drained, whichever is later: until the database has reached its working
        size, SQLite's page caches (2 MB a connection) are still filling. Each
        process's own life also starts with a warm-up (imports done, the site
        index and caches built).

        - Across lives: the first process started after warm-up against the last,
          each at the same age (the 30 s after its own warm-up).
        - The last process (the one that runs through the calm tail), from its
          warm-up to its last 30 s (a leak the kills would otherwise hide).

        The figure is the larger change of the two; within each life the worst
        change from its warm-up to its end is reported beside it.
        """
        warm = self.plan.warmup_s
        lives: dict[int, list[tuple[float, int, float, int]]] = {}
        for sample in self.samples:
            lives.setdefault(sample[1], []).append(sample)
        settled = max(warm, self.drained_at or 0.0)
        span = min(30.0, warm)  # the windows compared (30 s; shorter in a short run)

        def window(
            life: list[tuple[float, int, float, int]], start: float
        ) -> tuple[float, int] | None:
            got = [s for s in life if start <= s[0] < start + span]
            if not got:
                return None
            return statistics.median(s[2] for s in got), int(statistics.median(s[3] for s in got))

        def tail(life: list[tuple[float, int, float, int]]) -> tuple[float, int]:
            got = [s for s in life if s[0] >= life[-1][0] - span]
            return statistics.median(s[2] for s in got), int(statistics.median(s[3] for s in got))

        at_age = [
            (w, life)
            for life in lives.values()
            if life[0][0] >= settled - warm and (w := window(life, life[0][0] + warm)) is not None
        ]
        changes: list[tuple[float, tuple[float, float], tuple[int, int]]] = []
        if len(at_age) >= 2:
            (r0, f0), (r1, f1) = at_age[0][0], at_age[-1][0]
            figures.rss_lives_pct = (r1 - r0) / r0 * 100
            changes.append((figures.rss_lives_pct, (r0, r1), (f0, f1)))
        last = list(lives.values())[-1] if lives else []
        calm_from = max(settled, last[0][0] + warm) if last else 0.0
        if last and last[-1][0] - calm_from >= 2 * span:
            (r0, f0), (r1, f1) = window(last, calm_from) or tail(last), tail(last)
            figures.rss_calm_pct = (r1 - r0) / r0 * 100
            changes.append((figures.rss_calm_pct, (r0, r1), (f0, f1)))
        if not changes:
            figures.notes.append("too few samples after warm-up for RSS and fds")
            return
        pct, figures.rss_mb, figures.fds = max(changes, key=lambda c: abs(c[0]))
        figures.rss_growth_pct = pct
        figures.fd_growth = max((c[2][1] - c[2][0] for c in changes), key=abs)
        worst = 0.0
        for life in lives.values():
            start = life[0][0] + warm
            a = window(life, start)
            if a is not None and life[-1][0] - start > 2 * span:
                worst = max(worst, (tail(life)[0] - a[0]) / a[0] * 100, key=abs)
        figures.worst_life_rss_pct = worst
