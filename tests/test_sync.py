"""Cloud sync end to end: the daemon as a process against the cloud simulator
over HTTP on loopback, pushes through a real Mosquitto."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.ops.edgectl import Client, Unreachable
from edge.secrets import write_secret
from hwsim.cloud import CloudSim
from hwsim.sitegen import example_site
from tests.conftest import DAY, Daemon

T = TypeVar("T")
TEN = f"{DAY}T10:00:00+01:00"
RESIDENT_CARD = "H10306:1000:50001"  # m-1002, resident, any hour
DAY_PASS_CARD = "raw:0A0B0C0D"  # m-1008, nonmember with day passes on balance


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cloud() -> Iterator[CloudSim]:
    doc, _ = example_site(DAY)
    # Real presentations happen now, whatever the day: day passes valid at any hour.
    doc["site"]["day_pass_access"] = [{"group": "members", "schedule": "always"}]
    sim = CloudSim(doc).start()
    try:
        yield sim
    finally:
        sim.stop()


def config(
    cloud: CloudSim,
    broker: Any = None,
    pull_interval_s: float = 3600,
    extra: str = "",
    cloud_extra: str = "",
) -> str:
    text = (
        '[site]\nid = "mitte"\n[log]\nlevel = "debug"\n'
        f'[cloud]\nurl = "{cloud.url}"\nallow_insecure_http_for_lab = true\n'
        f"pull_interval_s = {pull_interval_s}\n"
        "backoff_min_s = 0.2\nbackoff_max_s = 1\ntimeout_s = 5\n"
        f"push = {'true' if broker else 'false'}\n{cloud_extra}"
        f'[cloud.keys]\n{cloud.key_id} = "{cloud.public_key_b64}"\n'
    )
    if broker is not None:
        text += f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    return text + extra


def start(daemon_factory: Any, text: str, token: str = "sim-token", **kw: Any) -> Daemon:
    d: Daemon = daemon_factory(text, **kw)
    write_secret(d.state_dir, "cloud_token", token.encode())
    d.start()
    return d


def synced(d: Daemon, cloud: CloudSim) -> dict[str, Any]:
    return wait_for(
        f"the gateway at the cloud's cursor {cloud.cursor}",
        lambda: (s := d.ctl_json("sync", "status")) and s["cursor"] == cloud.cursor and s,
    )


def push_connected(d: Daemon) -> None:
    wait_for("push connected", lambda: d.ctl_json("sync", "status")["push"]["connected"])


def start_pushed(daemon_factory: Any, cloud: CloudSim, broker: Any) -> Daemon:
    """A gateway at the cloud's cursor whose push subscription is up."""
    cloud.connect_mqtt(broker.host, broker.port)
    d = start(daemon_factory, config(cloud, broker))
    synced(d, cloud)
    push_connected(d)
    return d


def decide(d: Daemon, card: str, door: str = "front", at: str = TEN) -> tuple[bool, str]:
    r = d.ctl_json("decide", "--door", door, "--card", card, "--at", at, check=False)
    return r["granted"], r["reason"]


def present(d: Daemon, cards: list[str], door: str = "front") -> None:
    """Real presentations over one admin connection (as readers would, but faster)."""
    c = Client(d.state_dir / "admin.sock")
    try:
        for card in cards:
            c.call("present", {"door": door, "card": card})
    finally:
        c.close()


def local_counts(d: Daemon) -> Counter[str]:
    db = sqlite3.connect(d.state_dir / "gateway.db")
    try:
        return Counter(t for (t,) in db.execute("SELECT type FROM outbox"))
    finally:
        db.close()


def events_of(d: Daemon, type_: str) -> list[dict[str, Any]]:
    return list(d.ctl_json("events", "--type", type_, "--limit", "1000"))


# --- pull ---------------------------------------------------------------------------


def test_snapshot_then_changes_by_pull(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud))
    status = synced(d, cloud)
    assert status["last_success"]
    assert not status["stopped"]
    assert decide(d, RESIDENT_CARD) == (True, "plan")
    cloud.suspend_member("m-1002")
    assert d.ctl("sync", "now").returncode == 0
    assert decide(d, RESIDENT_CARD) == (False, "billing_suspended")
    assert d.ctl_json("status")["cursor"] == cloud.cursor
    human = d.ctl("sync", "status").stdout
    assert "last sync:" in human
    assert "backlog:" in human


def test_pushes_lost_the_next_pull_denies(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud, pull_interval_s=1))
    synced(d, cloud)
    cloud.push_enabled = False
    cloud.suspend_member("m-1002")
    wait_for("the pull to deny", lambda: decide(d, RESIDENT_CARD)[1] == "billing_suspended", 5)


def test_an_old_cursor_takes_a_fresh_snapshot(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    generation = d.ctl_json("status")["generation"]
    cloud.suspend_member("m-1002")
    cloud.compact()  # the gateway's cursor is now too old: 410
    d.ctl("sync", "now")
    assert d.ctl_json("status")["generation"] == generation + 1
    assert decide(d, RESIDENT_CARD) == (False, "billing_suspended")
    assert any(r[1].endswith("/snapshot") and r[2] == 200 for r in cloud.requests[-5:])


def test_a_contract_end_passes_while_the_cloud_is_unreachable(
    daemon_factory: Any, cloud: CloudSim
) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    cloud.end_contract("m-1002", f"{DAY}T15:00:00+01:00")
    d.ctl("sync", "now")
    cloud.stop()
    assert d.ctl("sync", "now", check=False).returncode == 1
    status = d.ctl_json("sync", "status")
    assert "cannot connect" in status["pull"]["last_error"]
    # Enforced by the clock alone, to the minute.
    assert decide(d, RESIDENT_CARD, at=f"{DAY}T14:59:00+01:00") == (True, "plan")
    assert decide(d, RESIDENT_CARD, at=f"{DAY}T15:00:00+01:00") == (False, "contract_ended")


# --- push ---------------------------------------------------------------------------


def test_a_suspension_by_push_denies_at_once(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any
) -> None:
    d = start_pushed(daemon_factory, cloud, mosquitto)
    cloud.suspend_member("m-1002")
    started = time.monotonic()
    wait_for("the push to deny", lambda: decide(d, RESIDENT_CARD)[1] == "billing_suspended", 5)
    assert time.monotonic() - started < 2
    assert d.ctl_json("sync", "status")["push"]["accepted"] >= 1


def test_a_push_missed_while_the_broker_was_away_is_pulled_on_reconnect(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any
) -> None:
    # The broker keeps no sessions across a restart (persistence false), so
    # whatever was pushed while it was away is gone; the hour-long pull
    # interval cannot be what brings the change.
    d = start_pushed(daemon_factory, cloud, mosquitto)
    mosquitto.stop()
    wait_for("push lost", lambda: not d.ctl_json("sync", "status")["push"]["connected"])
    cloud.push_enabled = False  # the push is lost for sure, not queued by the cloud's client
    cloud.suspend_member("m-1002")
    assert decide(d, RESIDENT_CARD) == (True, "plan")
    mosquitto.start()
    wait_for(
        "the pull on reconnect to deny",
        lambda: decide(d, RESIDENT_CARD)[1] == "billing_suspended",
        40,
    )
    assert d.ctl_json("sync", "status")["cursor"] == cloud.cursor


def push_undo_rows(d: Daemon) -> int:
    db = sqlite3.connect(d.state_dir / "gateway.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM push_undo").fetchone()[0])
    finally:
        db.close()


def test_a_late_push_does_not_undo_what_a_pull_brought_since(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any
) -> None:
    """A push that arrives after the pull already applied a newer change to the same
    member is applied at once, then put back by the pull that follows, which reads
    nothing newer than the cursor; also when the gateway was killed in between."""
    d = start_pushed(daemon_factory, cloud, mosquitto)
    before = cloud.member("m-1002")
    cloud.push_enabled = False
    cloud.suspend_member("m-1002")
    assert d.ctl("sync", "now").returncode == 0
    assert decide(d, RESIDENT_CARD) == (False, "billing_suspended")
    late = {"type": "changes", "changes": [{"op": "upsert", "kind": "member", "data": before}]}

    cloud.push(late)
    wait_for("the late push put back", lambda: "object(s) put back" in d.output())
    assert decide(d, RESIDENT_CARD) == (False, "billing_suspended")
    assert push_undo_rows(d) == 0

    # Again, with the cloud refusing pulls and the gateway killed before one works:
    # the push counts until then, and what it replaced is kept across the restart.
    cloud.faults.fail_next(10_000, status=503, path="changes")
    cloud.push(late)
    wait_for("the late push applied", lambda: decide(d, RESIDENT_CARD) == (True, "plan"))
    assert push_undo_rows(d) == 1
    d.stop(sig=signal.SIGKILL)
    cloud.faults.clear()
    d.start()
    synced(d, cloud)
    wait_for("put back", lambda: decide(d, RESIDENT_CARD) == (False, "billing_suspended"))
    assert push_undo_rows(d) == 0

    # A push newer than the cursor stays: the pull it starts brings the same change.
    cloud.push_enabled = True
    cloud.set_billing("m-1002", "ok")
    status = synced(d, cloud)
    wait_for("the push applied", lambda: decide(d, RESIDENT_CARD) == (True, "plan"))
    assert status["cursor"] == cloud.cursor
    assert push_undo_rows(d) == 0
    assert d.output().count("object(s) put back") == 2


def test_forged_and_replayed_pushes_are_refused(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any, tmp_path: Path
) -> None:
    d = start_pushed(daemon_factory, cloud, mosquitto)
    member = cloud.member("m-1002")
    suspend = {
        "type": "changes",
        "changes": [
            {
                "op": "upsert",
                "kind": "member",
                "data": {**member, "billing": {"status": "suspended"}},
            }
        ],
    }
    now = time.time()
    from edge.timeutil import iso_instant

    forged = [
        ("bad_signature", {"bad_signature": True}, suspend),
        ("unknown_key", {"key_id": "stolen", "signing_key": Ed25519PrivateKey.generate()}, suspend),
        ("bad_signature", {"signing_key": Ed25519PrivateKey.generate()}, suspend),
        ("wrong_site", {}, {**suspend, "site": "elsewhere"}),
        ("stale", {}, {**suspend, "issued_at": iso_instant(now - 600)}),
        ("future", {}, {**suspend, "issued_at": iso_instant(now + 600)}),
    ]
    for _, kw, payload in forged:
        cloud.push(payload, **kw)
    alarms = wait_for(
        "every forged push refused",
        lambda: (
            (
                a := [
                    e["details"]["reason"]
                    for e in events_of(d, "gateway.alarm")
                    if e["details"]["alarm"] == "push_rejected"
                ]
            )
            and len(a) == len(forged)
            and a
        ),
    )
    assert sorted(alarms) == sorted(reason for reason, _, _ in forged)
    # A good push of an innocent sync, then the same bytes again, also after a restart.
    cloud.push_sync()
    wait_for("the good push", lambda: d.ctl_json("sync", "status")["push"]["accepted"] == 1)
    cloud.replay_last_push()
    d.stop()
    d.start()
    push_connected(d)
    cloud.replay_last_push()
    wait_for(
        "two replays refused",
        lambda: (
            sum(
                1 for e in events_of(d, "gateway.alarm") if e["details"].get("reason") == "replayed"
            )
            == 2
        ),
    )
    assert decide(d, RESIDENT_CARD) == (True, "plan")  # nothing forged took effect


def test_a_pushed_command_unlocks_and_is_audited(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any
) -> None:
    d = start_pushed(daemon_factory, cloud, mosquitto)
    cloud.push_command({"name": "unlock", "door": "office-12", "seconds": 7})
    action = wait_for(
        "admin.action",
        lambda: [e for e in events_of(d, "admin.action") if e.get("door") == "office-12"],
    )[0]
    assert action["details"]["action"] == "unlock"
    assert action["details"]["seconds"] == 7
    assert action["details"]["by"].startswith("cloud:")
    cloud.push_command({"name": "lockdown", "doors": ["front"], "on": True})
    wait_for("lockdown", lambda: decide(d, RESIDENT_CARD)[1] == "lockdown")
    audit = d.ctl_json("audit")
    assert [a["method"] for a in audit][-2:] == ["push.unlock", "push.lockdown"]


# --- upload ---------------------------------------------------------------------------


def test_events_of_an_outage_are_delivered_exactly_once(
    daemon_factory: Any, cloud: CloudSim
) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    cloud.stop()
    present(d, [RESIDENT_CARD] * 300 + [DAY_PASS_CARD, "H10301:12:4000"] * 5)
    status = d.ctl_json("sync", "status")
    assert status["backlog_total"] >= 310
    assert status["backlog"]["usage.day_pass"] == 1
    cloud.faults.fail_after_store_next(1)  # the first answer after the outage is lost
    cloud.start()
    d.ctl("sync", "now", check=False)
    wait_for("the backlog delivered", lambda: d.ctl_json("sync", "status")["backlog_total"] == 0)
    assert cloud.counts() == dict(local_counts(d))
    assert cloud.duplicates > 0  # the batch whose answer was lost came twice, counted once


def test_rejected_events_are_kept_with_their_error(daemon_factory: Any, cloud: CloudSim) -> None:
    cloud.reject_types = {"access.denied"}
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    present(d, ["H10301:12:4000", RESIDENT_CARD])
    d.ctl("sync", "now")
    outbox = wait_for(
        "the rejection", lambda: (o := d.ctl_json("outbox")) and o["rejected"] == 1 and o
    )
    assert outbox["pending"] == 0
    rejected = outbox["events"][0]
    assert rejected["state"] == "rejected"
    assert rejected["error"]
    assert rejected["event"]["type"] == "access.denied"
    assert "REJECTED" in d.ctl("outbox").stdout
    posts = sum(1 for r in cloud.requests if r[0] == "POST")
    d.ctl("sync", "now")
    time.sleep(0.5)
    assert sum(1 for r in cloud.requests if r[0] == "POST") == posts  # never retried


# --- faults ---------------------------------------------------------------------------


FAULTS: list[tuple[str, Callable[[Any], None], bool]] = [
    ("500", lambda f: f.fail_next(2, status=500), False),
    ("503", lambda f: f.fail_next(1, status=503), False),
    ("429", lambda f: f.rate_limit_next(1, retry_after=1), False),
    ("drop", lambda f: f.drop_next(2), False),
    ("latency", lambda f: setattr(f, "latency_s", 0.3), False),
    ("truncated", lambda f: f.truncate_next(1, path="changes"), False),
    ("malformed", lambda f: f.malformed_next(1, path="changes"), False),
    ("cut-snapshot", lambda f: f.truncate_next(1, path="snapshot"), True),
    ("bad-snapshot", lambda f: f.malformed_next(1, path="snapshot"), True),
]


@pytest.mark.parametrize(
    ("inject", "snapshot"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_every_fault_leaves_the_gateway_deciding(
    daemon_factory: Any, cloud: CloudSim, inject: Callable[[Any], None], snapshot: bool
) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    cloud.suspend_member("m-1002")
    inject(cloud.faults)
    d.ctl("sync", "now", *(["--snapshot"] if snapshot else []), check=False)
    assert decide(d, DAY_PASS_CARD)[0]  # deciding throughout
    if inject is not FAULTS[4][1]:  # all but the slow cloud fail a request
        assert d.ctl_json("sync", "status")["pull"]["last_error"]
    wait_for("recovery", lambda: decide(d, RESIDENT_CARD)[1] == "billing_suspended", 15)
    assert d.ctl_json("sync", "status")["pull"]["failures"] == 0


def test_retry_after_is_honoured(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    cloud.faults.rate_limit_next(1, retry_after=2, path="changes")
    cloud.suspend_member("m-1002")
    d.ctl("sync", "now", check=False)
    refused_at = time.monotonic()
    wait_for("the retry", lambda: decide(d, RESIDENT_CARD)[1] == "billing_suspended", 10)
    assert time.monotonic() - refused_at >= 1.8


def test_a_refused_token_stops_sync_with_an_alarm(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    cloud.token = "rotated"
    assert d.ctl("sync", "now", check=False).returncode == 1
    status = d.ctl_json("sync", "status")
    assert "401" in status["stopped"]
    assert any(e["details"]["alarm"] == "cloud_auth" for e in events_of(d, "gateway.alarm"))
    assert "STOPPED" in d.ctl("status").stdout
    # The operator installs the new token; `sync now` resumes.
    write_secret(d.state_dir, "cloud_token", b"rotated")
    assert d.ctl("sync", "now").returncode == 0
    assert d.ctl_json("sync", "status")["stopped"] is None


# --- crashes ------------------------------------------------------------------------------


def _generations(d: Daemon) -> set[int]:
    db = sqlite3.connect(d.state_dir / "gateway.db")
    try:
        return {g for (g,) in db.execute("SELECT DISTINCT gen FROM holders")}
    finally:
        db.close()


def test_killed_in_the_middle_of_a_snapshot(daemon_factory: Any) -> None:
    sim = CloudSim.large(2000).start()
    try:
        sim.faults.stall_snapshot_s = 3
        d = start(daemon_factory, config(sim))
        # The download is staged under a temporary name (edge.atomicfile) and
        # takes its own name only whole.
        staged = ".snapshot.download.json.tmp-*"
        wait_for("the download", lambda: any(d.state_dir.glob(staged)))
        time.sleep(0.5)
        d.stop(sig=signal.SIGKILL)
        assert not (d.state_dir / "snapshot.download.json").exists()
        sim.faults.stall_snapshot_s = 0
        d.start()
        synced(d, sim)
        assert d.ctl_json("status")["members"] == 2000
        assert not (d.state_dir / "snapshot.download.json").exists()
        assert not any(d.state_dir.glob(staged))  # removed at start
        assert _generations(d) == {d.ctl_json("status")["generation"]}
    finally:
        sim.stop()


def test_killed_in_the_middle_of_a_change_batch(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud, cloud_extra="changes_limit = 100\n"))
    synced(d, cloud)
    base = cloud.member("m-1002")
    for round_ in range(3):
        for i in range(300):
            cloud.upsert(
                "member",
                {
                    **base,
                    "id": f"m-x{round_}-{i}",
                    "credentials": [
                        {
                            "id": "c",
                            "type": "card",
                            "format": "H10306",
                            "facility_code": 7,
                            "card_number": round_ * 1000 + i,
                            "status": "active",
                        }
                    ],
                },
            )
        client = Client(d.state_dir / "admin.sock")
        client.sock.settimeout(0.05 + 0.1 * round_)
        try:
            client.call("sync.now")
        except Unreachable:  # the point: killed before the answer, while the pull runs
            pass
        finally:
            client.close()
        d.stop(sig=signal.SIGKILL)
        d.start()
    status = synced(d, cloud)
    assert status["cursor"] == cloud.cursor
    assert d.ctl_json("status")["members"] == 12 + 900
    for round_ in range(3):
        assert decide(d, f"H10306:7:{round_ * 1000 + 299}") == (True, "plan")


def test_killed_in_the_middle_of_an_upload(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud, cloud_extra="upload_batch = 50\n"))
    synced(d, cloud)
    cloud.stop()
    present(d, [RESIDENT_CARD] * 200)
    # The cloud stores the first batch, but its answer never arrives.
    cloud.faults.fail_after_store_next(1, drop=True)
    cloud.faults.latency_s = 0.2
    cloud.start()
    d.ctl("sync", "now", check=False)
    wait_for("a batch stored", lambda: sum(cloud.counts().values()) >= 50)
    d.stop(sig=signal.SIGKILL)
    cloud.faults.latency_s = 0
    d.start()
    wait_for("the backlog delivered", lambda: d.ctl_json("sync", "status")["backlog_total"] == 0)
    assert cloud.counts() == dict(local_counts(d))


# --- offline policy -------------------------------------------------------------------------


def test_a_stale_cache_denies_at_deny_stale_doors(daemon_factory: Any, cloud: CloudSim) -> None:
    text = config(
        cloud,
        cloud_extra="cache_stale_hours = 0.0005\n",  # 1.8 s
        extra='[access]\noffline_exempt = ["m-1011"]\n'
        '[doors.front]\noffline_policy = "deny_stale"\n',
    )
    d = start(daemon_factory, text)
    synced(d, cloud)
    cloud.stop()
    wait_for("stale", lambda: d.ctl_json("status")["offline"])
    assert decide(d, RESIDENT_CARD) == (False, "cache_stale")
    assert decide(d, "H10301:12:4005") == (True, "plan")  # exempt
    assert decide(d, RESIDENT_CARD, door="office-12")[1] != "cache_stale"  # policy "cache"
    assert "OFFLINE" in d.ctl("status").stdout
    assert any(e["details"]["alarm"] == "cache_stale" for e in events_of(d, "gateway.alarm"))
    cloud.start()
    d.ctl("sync", "now")
    assert d.ctl_json("status")["offline"] is None
    assert decide(d, RESIDENT_CARD) == (True, "plan")


def test_a_day_pass_from_a_balance_is_counted_once(daemon_factory: Any, cloud: CloudSim) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    assert cloud.member("m-1008")["day_pass_balance"] == 2
    present(d, [DAY_PASS_CARD])
    shown = d.ctl_json("member", "show", "m-1008")
    assert (shown["day_pass_balance"], shown["day_pass_balance_used_here"]) == (2, 1)
    wait_for("the usage delivered", lambda: d.ctl_json("sync", "status")["backlog_total"] == 0)
    assert cloud.member("m-1008")["day_pass_balance"] == 1  # the cloud billed it
    d.ctl("sync", "now")
    # The cloud's balance now counts the use: subtracted once, not twice.
    shown = d.ctl_json("member", "show", "m-1008")
    assert (shown["day_pass_balance"], shown["day_pass_balance_used_here"]) == (1, 0)
    d.stop()
    d.start()
    shown = d.ctl_json("member", "show", "m-1008")
    assert (shown["day_pass_balance"], shown["day_pass_balance_used_here"]) == (1, 0)


def test_a_request_the_cloud_refuses_is_narrowed_to_the_event(
    daemon_factory: Any, cloud: CloudSim
) -> None:
    d = start(daemon_factory, config(cloud))
    synced(d, cloud)
    wait_for("startup events delivered", lambda: d.ctl_json("sync", "status")["backlog_total"] == 0)
    cloud.stop()
    present(d, [RESIDENT_CARD] * 4)
    # The cloud refuses the first four requests whole (400): the batch is halved
    # down to one event, which is kept as rejected; the others go through.
    cloud.faults.fail_next(4, status=400, path="events")
    cloud.start()
    d.ctl("sync", "now")
    outbox = wait_for(
        "the narrowing", lambda: (o := d.ctl_json("outbox")) and o["pending"] == 0 and o
    )
    assert outbox["rejected"] == 1
    assert "HTTP 400" in outbox["events"][0]["error"]
    assert sum(cloud.counts().values()) == sum(local_counts(d).values()) - 1


def test_a_pushed_invalid_change_is_reported_once(
    daemon_factory: Any, cloud: CloudSim, mosquitto: Any
) -> None:
    """Refused by the push and again by the pull that follows (which moves the cursor past
    it): one alarm, one `refused_changes` row; the pull's refusal is logged at INFO."""
    d = start_pushed(daemon_factory, cloud, mosquitto)
    broken = {**cloud.member("m-1002"), "plan": "no-such-plan"}
    cloud.upsert("member", broken)  # pushed at once, then fetched by the pull it starts
    status = synced(d, cloud)
    wait_for("the pull's refusal", lambda: "change refused again (pull)" in d.output())
    refusals = [
        e for e in events_of(d, "gateway.alarm") if e["details"]["alarm"] == "change_refused"
    ]
    assert len(refusals) == 1, refusals
    assert refusals[0]["details"]["source"] == "push"
    assert refusals[0]["details"]["path"] == "push.changes[0].data.plan"
    assert [(r["source"], r["path"]) for r in status["refused_changes"]] == [
        ("push", "push.changes[0].data.plan")
    ]
    log = d.output()
    assert log.count("sync: change refused (push)") == 1
    assert "sync: change refused (pull)" not in log
    # The same broken change again, pulled without a push this time: a new refusal, reported.
    cloud.push_enabled = False
    cloud.upsert("member", {**broken, "name": "Still Broken"})
    assert d.ctl("sync", "now").returncode == 0
    status = d.ctl_json("sync", "status")
    assert [r["source"] for r in status["refused_changes"]] == ["pull", "push"]
    assert decide(d, RESIDENT_CARD) == (True, "plan")  # m-1002 as before the broken changes
