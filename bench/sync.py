"""Cloud sync figures: revocation by push and by pull, a 100,000-member
snapshot, a batch of 1,000 changes, and a backlog of 100,000 events.

The gateway runs as a process against the cloud simulator (HTTP on loopback)
and, for pushes, a real Mosquitto. Latencies are read the way an operator
would see them: from the simulator's change to the gateway's decision.
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common import DecisionSampler, _rpc, percentile, result, start_daemon, stop_daemon

from edge.secrets import write_secret
from edge.site.events import make_event
from hwsim.broker import Mosquitto
from hwsim.cloud import CloudSim
from hwsim.sitegen import EXAMPLE_PIN_KEY

MEMBERS = 100_000


def _config(cloud: CloudSim, broker: Mosquitto | None, pull_s: float, extra: str = "") -> str:
    text = (
        '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n'
        f'[cloud]\nurl = "{cloud.url}"\nallow_insecure_http_for_lab = true\n'
        f"pull_interval_s = {pull_s}\n"
        f"push = {'true' if broker else 'false'}\nchanges_limit = 1000\n{extra}"
        f'[cloud.keys]\n{cloud.key_id} = "{cloud.public_key_b64}"\n'
    )
    if broker is not None:
        text += f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    return text


def _state(root: Path, name: str) -> Path:
    state = root / name
    state.mkdir()
    write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    write_secret(state, "cloud_token", b"sim-token")
    return state


def _synced(cloud: CloudSim) -> Any:
    return lambda status: status["ready"] and status["cursor"] == cloud.cursor


def _card(i: int) -> str:
    return f"H10306:{i >> 16}:{i & 0xFFFF}"


class Decider:
    """Dry-run decisions over one admin connection."""

    def __init__(self, sock: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(str(sock))
        self.reader = self.s.makefile("rb")

    def reason(self, card: str) -> str:
        request = {"id": 1, "method": "decide", "params": {"door": "front", "card": card}}
        self.s.sendall(json.dumps(request).encode() + b"\n")
        return str(json.loads(self.reader.readline())["result"]["reason"])

    def close(self) -> None:
        self.reader.close()
        self.s.close()


@contextmanager
def _site(members: int, broker: bool) -> Iterator[tuple[CloudSim, Mosquitto | None, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        root = Path(tmp)
        mosquitto = Mosquitto(root) if broker else None
        if mosquitto is not None:
            mosquitto.start()
        cloud = CloudSim.large(members)
        if mosquitto is not None:
            cloud.connect_mqtt(mosquitto.host, mosquitto.port)
        cloud.start()
        try:
            yield cloud, mosquitto, root
        finally:
            cloud.stop()
            if mosquitto is not None:
                mosquitto.stop()


def bench_revocation(push: bool, n: int = 100) -> None:
    pull_s = 2.0
    with _site(MEMBERS, push) as (cloud, broker, root):
        state = _state(root, "gw")
        proc, _ = start_daemon(state, _config(cloud, broker, pull_s), _synced(cloud), 300)
        decider = Decider(state / "admin.sock")
        rng = random.Random(11)
        latencies: list[float] = []
        try:
            if push:
                deadline = time.monotonic() + 30
                while not _rpc(state / "admin.sock", "sync.status")["result"]["push"]["connected"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the gateway did not connect to the broker")
                    time.sleep(0.05)
            else:
                cloud.push_enabled = False
            candidates = rng.sample(range(MEMBERS), n * 8)
            for i in candidates:
                if len(latencies) == n:
                    break
                card = _card(i)
                before = decider.reason(card)
                if before != "plan" or cloud.member(f"m-{i}")["company"] is not None:
                    # Already denied (suspended, contract ended), or a company in good
                    # standing would still let them in: not a revocation at this door.
                    continue
                # Revocations fall at any phase of the pull schedule.
                time.sleep(rng.uniform(0, 0.2 if push else pull_s))
                t0 = time.perf_counter()
                cloud.suspend_member(f"m-{i}")
                while decider.reason(card) != "billing_suspended":
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(f"m-{i} was not revoked within 30 s")
                    time.sleep(0.001)
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            decider.close()
            stop_daemon(proc)
    result(
        bench="revocation",
        push="on" if push else "off",
        members=MEMBERS,
        revocations=len(latencies),
        pull_interval_s=f"{pull_s:g}",
        p50_ms=f"{statistics.median(latencies):.1f}",
        p99_ms=f"{percentile(latencies, 0.99):.1f}",
        max_ms=f"{max(latencies):.1f}",
    )


def bench_snapshot_and_changes() -> None:
    with _site(MEMBERS, False) as (cloud, _, root):
        state = _state(root, "gw")
        proc, first_s = start_daemon(state, _config(cloud, None, 3600), _synced(cloud), 300)
        sock = state / "admin.sock"
        try:
            # A fresh snapshot over the one in place, with decisions sampled throughout.
            with DecisionSampler(sock, MEMBERS) as sampler:
                time.sleep(0.5)
                baseline = len(sampler.latencies)
                t0 = time.monotonic()
                status = _rpc(sock, "sync.now", {"snapshot": True})["result"]
                apply_s = time.monotonic() - t0
            if status["pull"]["failures"]:
                raise RuntimeError(f"the snapshot failed: {status['pull']['last_error']}")
            during = sampler.latencies[baseline:]
            result(
                bench="snapshot",
                members=MEMBERS,
                apply_s=f"{apply_s:.1f}",
                first_start_to_synced_s=f"{first_s:.1f}",
                decide_p99_during_ms=f"{percentile(during, 0.99):.2f}",
                decide_p50_during_ms=f"{statistics.median(during):.2f}",
                decide_max_during_ms=f"{max(during):.1f}",
                samples=len(during),
            )

            # 1,000 member changes in one page, fetched and applied.
            rng = random.Random(5)
            runs = []
            for _ in range(5):
                cloud.push_enabled = False
                for i in rng.sample(range(MEMBERS), 1000):
                    cloud.set_billing(f"m-{i}", rng.choice(["ok", "suspended"]))
                t0 = time.monotonic()
                status = _rpc(sock, "sync.now")["result"]
                runs.append(time.monotonic() - t0)
                if status["cursor"] != cloud.cursor:
                    raise RuntimeError("the changes were not applied")
            result(
                bench="changes",
                n=1000,
                members=MEMBERS,
                apply_s=f"{statistics.median(runs):.2f}",
                max_s=f"{max(runs):.2f}",
                runs=len(runs),
            )
        finally:
            stop_daemon(proc)


def bench_backlog(events: int = 100_000) -> None:
    with _site(100, False) as (cloud, _, root):
        state = _state(root, "gw")
        proc, _ = start_daemon(state, _config(cloud, None, 3600), _synced(cloud), 120)
        stop_daemon(proc)
        # The outage's events, as the gateway records them (a mix of types).
        db = sqlite3.connect(state / "gateway.db")
        tz = ZoneInfo("Europe/Berlin")
        kinds = ["access.granted"] * 8 + ["access.denied", "usage.day_pass"]
        now = time.time()
        rows = []
        for i in range(events):
            ev = make_event(
                kinds[i % len(kinds)],
                now - events + i,
                tz,
                "mitte",
                "gw-1",
                door="front",
                holder=f"m-{i % 100}",
                reason="plan",
            )
            rows.append((ev["id"], ev["type"], ev["at"], json.dumps(ev), now))
        with db:
            db.executemany(
                "INSERT INTO outbox (id, type, at, body, created) VALUES (?,?,?,?,?)", rows
            )
        db.close()
        cloud.stop()  # the outage: the gateway starts with the cloud away
        proc, _ = start_daemon(state, _config(cloud, None, 3600))
        try:
            time.sleep(1)
            cloud.start()  # the cloud returns
            t0 = time.monotonic()
            _rpc(state / "admin.sock", "sync.now")
            while True:
                s = _rpc(state / "admin.sock", "sync.status")["result"]
                if s["backlog_total"] == 0:
                    break
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"backlog not delivered: {s['backlog_total']} left")
                time.sleep(0.05)
            upload_s = time.monotonic() - t0
        finally:
            stop_daemon(proc)
        db = sqlite3.connect(state / "gateway.db")
        local_ids = {i for (i,) in db.execute("SELECT id FROM outbox")}
        db.close()
        received = set(cloud.events)
        counted = sum(cloud.counts().values())
    result(
        bench="backlog",
        events=events,
        upload_s=f"{upload_s:.1f}",
        lost=len(local_ids - received),
        # Counted twice by the cloud, or arriving under an id the gateway never made.
        duplicated=(counted - len(received)) + len(received - local_ids),
        resent=cloud.duplicates,
    )
