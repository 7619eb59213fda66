"""The platform bridge end to end: the simulated Nexudus over HTTP on loopback,
`edge-bridge` and the gateway daemon as processes, signed pushes through a
real Mosquitto. Decisions are asked of the gateway, usage is counted at the
platform."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from edge.ops.edgectl import Client
from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.platforms.nexudus import NexudusSim
from hwsim.platforms.officernd import OfficeRndSim
from hwsim.platforms.rig import GATEWAY_TOKEN, PUSH_KEY_ID, BridgeProcess, bridge_config, provision
from tests.conftest import Daemon, raw_replies

T = TypeVar("T")
TZ = ZoneInfo("Europe/Berlin")

GRACE = "H10306:1000:50001"  # Grace Brewster, resident
ADA = "H10301:12:3456"  # past due, in grace; ACME
LINUS = "H10301:12:4000"  # resident, invoice 40 days overdue
KEN = "H10301:12:4001"  # contract ended yesterday
DENNIS = "H10301:12:4002"  # contract starts next week
ALAN = "raw:0A0B0C0D"  # two day passes on balance
FRANCES = "H10301:12:4003"  # ACME, no plan
BJARNE = "H10301:12:4006"  # Initech, whose paying member is overdue


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        daemon_factory: Any,
        broker: Mosquitto | None,
        platform: str = "nexudus",
    ) -> None:
        self.tmp_path = tmp_path
        self.daemon_factory = daemon_factory
        self.broker = broker
        self.platform = platform
        self.sim: Any = (NexudusSim() if platform == "nexudus" else OfficeRndSim()).start()
        self.ids = self.sim.load_example(datetime.now(TZ).date())
        self.bridges: list[BridgeProcess] = []
        self.public_key = ""

    def bridge(self, state: str = "bridge", **kw: Any) -> BridgeProcess:
        state_dir = self.tmp_path / state
        self.public_key = provision(state_dir)
        broker = (self.broker.host, self.broker.port) if self.broker else None
        if self.platform == "officernd":
            kw["platform_extra"] = kw.get("platform_extra", "") + (
                f'fee_plan = "{self.ids["services"]}"\n'
            )
        text = bridge_config(
            self.platform,
            self.sim.base_url,
            str(self.ids["mitte"]),
            port=0,
            broker=broker,
            hot_desk_schedule="always",
            **kw,
        )
        b = BridgeProcess(state_dir, text).start()
        self.bridges.append(b)
        b.wait_ready()
        return b

    def webhooks(self, b: BridgeProcess, actions: list[str]) -> None:
        base = b.url.removesuffix("/api/edge/v1")
        for action in actions:
            self.sim.add_webhook(f"{base}/webhooks/nexudus/{action}", [action])

    def gateway(
        self, b: BridgeProcess, pull_interval_s: float = 3600, extra_cloud: str = ""
    ) -> Daemon:
        text = (
            '[site]\nid = "mitte"\n[log]\nlevel = "debug"\n'
            f'[cloud]\nurl = "{b.url}"\nallow_insecure_http_for_lab = true\n'
            f"pull_interval_s = {pull_interval_s}\n"
            f"backoff_min_s = 0.2\nbackoff_max_s = 1\ntimeout_s = 5\n{extra_cloud}"
            f"push = {'true' if self.broker else 'false'}\n"
            f'[cloud.keys]\n{PUSH_KEY_ID} = "{self.public_key}"\n'
        )
        if self.broker is not None:
            text += f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
        d: Daemon = self.daemon_factory(text)
        write_secret(d.state_dir, "cloud_token", GATEWAY_TOKEN.encode())
        d.start()
        wait_for("the gateway's first sync", lambda: d.ctl_json("sync", "status")["cursor"], 30)
        return d

    def stop(self) -> None:
        for b in self.bridges:
            b.stop(9)
        self.sim.stop()


@pytest.fixture
def rig(tmp_path: Path, daemon_factory: Any, mosquitto: Mosquitto) -> Iterator[Rig]:
    r = Rig(tmp_path, daemon_factory, mosquitto)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def ornd(tmp_path: Path, daemon_factory: Any, mosquitto: Mosquitto) -> Iterator[Rig]:
    r = Rig(tmp_path, daemon_factory, mosquitto, platform="officernd")
    try:
        yield r
    finally:
        r.stop()


def decide(
    d: Daemon,
    card: str | None = None,
    door: str = "front",
    pin: str | None = None,
    at: str | None = None,
) -> tuple[bool, str]:
    args = ["decide", "--door", door]
    if card:
        args += ["--card", card]
    if pin:
        args += ["--pin", pin]
    if at:
        args += ["--at", at]
    r = d.ctl_json(*args, check=False)
    return r["granted"], r["reason"]


def present(d: Daemon, door: str = "front", card: str | None = None, pin: str | None = None) -> Any:
    c = Client(d.state_dir / "admin.sock")
    try:
        params = {"door": door, **({"card": card} if card else {}), **({"pin": pin} if pin else {})}
        return c.call("present", params)
    finally:
        c.close()


# --- the doors follow the platform -------------------------------------------------------


def test_the_gateway_decides_from_nexudus_through_the_bridge(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    assert decide(d, GRACE) == (True, "plan")
    assert decide(d, ADA) == (True, "plan")  # past due, still in grace
    assert decide(d, LINUS) == (False, "billing_suspended")
    assert decide(d, KEN) == (False, "contract_ended")
    assert decide(d, DENNIS) == (False, "contract_not_started")
    assert decide(d, ALAN) == (True, "day_pass")
    assert decide(d, FRANCES, door="office-12") == (True, "company")
    assert decide(d, BJARNE, door="office-12") == (False, "billing_suspended")
    assert decide(d, "H10301:12:4005", door="server-room", pin="9753") == (True, "grant")
    # The site the gateway has is the bridge's, cursor for cursor.
    status = b.status()
    assert status is not None
    assert d.ctl_json("sync", "status")["cursor"] == status["sites"]["mitte"]["cursor"]


def test_an_unpaid_invoice_past_grace_closes_the_door_on_the_webhook(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    rig.webhooks(b, ["CoworkerInvoiceCreate", "CoworkerInvoiceUpdate"])
    d = rig.gateway(b)
    assert decide(d, GRACE) == (True, "plan")
    due = datetime.now(UTC) - timedelta(days=4)
    invoice = rig.sim.add_invoice(rig.ids["grace"], due)
    wait_for("the push to deny", lambda: decide(d, GRACE) == (False, "billing_suspended"), 10)
    rig.sim.pay_invoice(invoice)
    wait_for("the payment to open it again", lambda: decide(d, GRACE) == (True, "plan"), 10)


def test_a_webhook_re_read_that_fails_is_tried_again(rig: Rig) -> None:
    # Polls are an hour apart: only the re-read's own retry can close the door.
    b = rig.bridge(poll_interval_s=3600)
    rig.webhooks(b, ["CoworkerInvoiceCreate"])
    d = rig.gateway(b)
    assert decide(d, GRACE) == (True, "plan")
    # Every attempt of the HTTP client's first read (5), and one more.
    rig.sim.faults.next("fail", 6, path="/api/billing/coworkerinvoices/", method="GET")
    rig.sim.add_invoice(rig.ids["grace"], datetime.now(UTC) - timedelta(days=4))
    wait_for("the retried re-read to deny", lambda: decide(d, GRACE)[1] == "billing_suspended", 30)
    assert "failed: " in b.output()
    assert "; again in " in b.output()


def test_a_forged_webhook_is_refused_and_changes_nothing(rig: Rig) -> None:
    import requests

    b = rig.bridge(poll_interval_s=3600)
    base = b.url.removesuffix("/api/edge/v1")
    body = b'[{"Id": 1, "CoworkerId": 1, "DueDate": "2026-01-01T00:00:00Z"}]'
    r = requests.post(
        f"{base}/webhooks/nexudus/CoworkerInvoiceUpdate",
        data=body,
        headers={"X-Nexudus-Hook-Signature": "00" * 32},
        timeout=5,
    )
    assert r.status_code == 401
    assert "does not match" in r.json()["error"]
    status = b.status()
    assert status is not None
    assert status["platforms"]["nexudus"]["webhooks"]["refused"] == 1


def test_bad_admin_requests_are_answered_and_the_bridge_keeps_serving(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    replies = raw_replies(
        b.state_dir / "admin.sock",
        b'not json\n{"id": 7, "method": "nope"}\n{"id": 8' + b" " * (1 << 20) + b"}\n",
    )
    assert [(r["id"], r["error"]["code"]) for r in replies] == [
        (None, "bad_request"),
        (7, "unknown_method"),
        (None, "bad_request"),
    ]
    assert replies[2]["error"]["message"] == "request line too long"
    assert b.status() is not None


def test_by_polling_alone_a_cancelled_plan_ends_at_its_end_date(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=1)
    d = rig.gateway(b, pull_interval_s=1)
    today = datetime.now(TZ).date()
    rig.sim.cancel_contract(rig.ids["grace_contract"], today)
    end_of_today = datetime.combine(today + timedelta(days=1), datetime.min.time(), TZ)
    before = (end_of_today - timedelta(minutes=1)).isoformat()
    after = (end_of_today + timedelta(minutes=1)).isoformat()
    wait_for(
        "the cancellation to reach the door",
        lambda: decide(d, GRACE, at=after) == (False, "contract_ended"),
        10,
    )
    assert decide(d, GRACE, at=before) == (True, "plan")


def test_a_card_removed_on_the_platform_stops_opening(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=1)
    d = rig.gateway(b, pull_interval_s=1)
    rig.sim.update("coworkers", rig.ids["grace"], AccessCardId=None)
    wait_for("the card to go", lambda: decide(d, GRACE) == (False, "unknown_credential"), 10)


# --- bad input and failed reads ------------------------------------------------------------


def test_a_malformed_record_is_skipped_with_its_field_and_the_rest_syncs(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=1)
    d = rig.gateway(b, pull_interval_s=1)
    rig.sim.corrupt("coworkers", rig.ids["grace"], "Active", "yes")
    rig.sim.update("coworkers", rig.ids["linus"], AccessCardId="12:4100")
    wait_for("the good change", lambda: decide(d, "H10301:12:4100") == (False, "billing_suspended"))
    status = b.status()
    assert status is not None
    bad = status["platforms"]["nexudus"]["bad_records"]
    assert [(x["entity"], x["id"], x["field"]) for x in bad] == [
        ("coworkers", str(rig.ids["grace"]), "Active")
    ]
    assert "expected true or false" in bad[0]["reason"]
    # The last good version stays: Grace still gets in.
    assert decide(d, GRACE) == (True, "plan")
    assert "malformed records skipped (1)" in b.ctl("status").stdout
    # An unreadable card is left off with its reason; the member stays.
    rig.sim.update("coworkers", rig.ids["frances"], AccessCardId="12-4003")
    wait_for(
        "the refusal",
        lambda: any(
            "AccessCardId" in t
            for t in (b.status() or {"sites": {"mitte": {"refused": []}}})["sites"]["mitte"][
                "refused"
            ]
        ),
    )


def test_a_failed_or_partial_read_deletes_nothing(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600, platform_extra="page_size = 5\n")
    d = rig.gateway(b, pull_interval_s=1)
    # The second page of coworkers fails for good: the sweep stops part way.
    rig.sim.faults.next("fail", 50, path="/api/spaces/coworkers", status=500)
    r = b.ctl("sync", "now", "--full", check=False)
    assert r.returncode == 1
    assert "coworkers" in r.stderr
    rig.sim.faults.clear()
    assert decide(d, GRACE) == (True, "plan")
    status = b.status()
    assert status is not None
    assert status["sites"]["mitte"]["objects"]["member"] == 13
    assert "error" in status["platforms"]["nexudus"]["entities"]["coworkers"]


def test_a_sweep_that_would_delete_most_members_is_held(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    d = rig.gateway(b, pull_interval_s=1)
    for key in ("grace", "linus", "ken", "dennis", "barbara", "edsger", "radia"):
        rig.sim.delete("coworkers", rig.ids[key])
    b.ctl("sync", "now", "--full")
    status = b.status()
    assert status is not None
    held = status["platforms"]["nexudus"]["entities"]["coworkers"]["held"]
    assert "would delete 7 of 13 coworkers" in held
    assert decide(d, GRACE) == (True, "plan")
    b.ctl("sync", "now", "--full", "--allow-deletes")
    wait_for("the deletion", lambda: decide(d, GRACE) == (False, "unknown_credential"), 10)


def test_a_deleted_coworker_goes_after_a_complete_sweep(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    d = rig.gateway(b, pull_interval_s=1)
    rig.sim.delete("coworkers", rig.ids["grace"])
    b.ctl("sync", "now")  # updated-since cannot see a deletion
    assert decide(d, GRACE) == (True, "plan")
    b.ctl("sync", "now", "--full")
    wait_for("the deletion", lambda: decide(d, GRACE) == (False, "unknown_credential"), 10)


# --- usage goes back -----------------------------------------------------------------------


def checkins_of(rig: Rig, key: str) -> list[dict[str, Any]]:
    return [c for c in rig.sim.records("checkins") if c.get("CoworkerId") == rig.ids[key]]


def test_a_day_pass_entry_is_a_checkin_using_the_pass(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    assert present(d, card=ALAN)["granted"]
    [checkin] = wait_for("the check-in at Nexudus", lambda: checkins_of(rig, "alan"))
    assert checkin["SystemId"].startswith("edge:")
    passes = [
        p for p in rig.sim.records("coworkertimepasses") if p["CoworkerId"] == rig.ids["alan"]
    ]
    assert sum(1 for p in passes if p.get("Used")) == 1
    # A member's first entry of the day is a check-in; the second is not.
    assert present(d, card=GRACE)["granted"]
    assert present(d, card=GRACE)["granted"]
    wait_for("Grace's check-in", lambda: checkins_of(rig, "grace"))
    time.sleep(1)
    assert len(checkins_of(rig, "grace")) == 1


def test_a_guest_entry_is_charged_to_the_host_once(rig: Rig) -> None:
    b = rig.bridge()
    now = datetime.now(UTC)
    rig.sim.create(
        "visitors",
        {
            "BusinessId": rig.ids["mitte"],
            "FullName": "Alan Turing",
            "Email": "alan.t@example.com",
            "CoworkerId": rig.ids["grace"],
            "ExpectedArrival": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "VisitorCode": "4242",
        },
    )
    b.ctl("sync", "now")
    d = rig.gateway(b)
    assert present(d, pin="4242")["granted"]
    assert present(d, pin="4242")["granted"]
    charges = wait_for(
        "the charge",
        lambda: [c for c in rig.sim.records("charges") if c.get("CoworkerId") == rig.ids["grace"]],
    )
    time.sleep(1)
    assert len(charges) == 1
    assert charges[0]["TotalAmount"] == 10.0
    assert "Guest entry: Alan Turing" in charges[0]["Description"]


def test_a_write_lost_on_the_way_back_is_found_not_written_twice(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    rig.sim.faults.next("after_write", 1, path="/api/spaces/checkins", method="POST")
    assert present(d, card=ALAN)["granted"]
    wait_for("the check-in", lambda: checkins_of(rig, "alan"))
    db = sqlite3.connect(b.state_dir / "bridge.db")
    try:
        state = wait_for(
            "the event done",
            lambda: (
                db.execute("SELECT state FROM events WHERE type = 'usage.day_pass'").fetchone()
                == ("done",)
            ),
        )
    finally:
        db.close()
    assert state
    time.sleep(1)
    assert len(checkins_of(rig, "alan")) == 1


def test_a_refused_write_is_kept_with_the_platforms_reason(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    rig.sim.faults.next("fail", 1, path="/api/spaces/checkins", method="POST", status=400)
    assert present(d, card=ALAN)["granted"]
    text = wait_for(
        "the rejection", lambda: "REJECTED usage.day_pass" in (t := b.ctl("status").stdout) and t
    )
    assert "nexudus refused it" in text


def test_an_expired_token_is_renewed_and_throttling_is_waited_out(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    rig.sim.tokens.expire_all()
    rig.sim.faults.next("rate_limit", 2, path="/api/spaces/coworkers", seconds=1)
    rig.sim.update("coworkers", rig.ids["grace"], AccessCardId="12:4242")
    b.ctl("sync", "now")
    status = b.status()
    assert status is not None
    api = status["platforms"]["nexudus"]["api"]
    assert api["throttled"] == 2
    assert api["last_retry_after_s"] == 1.0  # the platform's Retry-After, not a guess
    assert rig.sim.calls[("POST", "/api/token")] >= 2  # signed in again after the 401
    member = json.loads(
        sqlite3.connect(b.state_dir / "bridge.db")
        .execute("SELECT data FROM site_objects WHERE id = ?", (f"m-{rig.ids['grace']}",))
        .fetchone()[0]
    )
    assert member["credentials"][0]["card_number"] == 4242


# --- OfficeRnD -----------------------------------------------------------------------------


def test_the_gateway_decides_from_officernd_through_the_bridge(ornd: Rig) -> None:
    b = ornd.bridge()
    d = ornd.gateway(b)
    assert decide(d, GRACE) == (True, "plan")
    assert decide(d, ADA) == (True, "plan")
    assert decide(d, LINUS) == (False, "billing_suspended")
    assert decide(d, KEN) == (False, "contract_ended")
    assert decide(d, DENNIS) == (False, "contract_not_started")
    assert decide(d, ALAN) == (True, "day_pass")
    assert decide(d, "H10304:500:12345") == (True, "day_pass")  # Margaret's pass used today
    assert decide(d, FRANCES, door="office-12") == (True, "company")
    assert decide(d, BJARNE, door="office-12") == (False, "billing_suspended")
    assert decide(d, "H10301:12:4005", door="server-room", pin="9753") == (True, "grant")


@pytest.mark.parametrize("style", ["signature", "v1"])
def test_officernd_webhooks_in_either_documented_shape_close_the_door(
    ornd: Rig, style: str
) -> None:
    b = ornd.bridge(poll_interval_s=3600)
    base = b.url.removesuffix("/api/edge/v1")
    secret = ornd.sim.add_webhook(f"{base}/webhooks/officernd", ["invoice.created"], style)
    write_secret(b.state_dir, "officernd_webhook_secret", secret.encode())
    d = ornd.gateway(b)
    assert decide(d, GRACE) == (True, "plan")
    ornd.sim.add_invoice(member=ornd.ids["grace"], due=datetime.now(TZ).date() - timedelta(days=5))
    wait_for("the push to deny", lambda: decide(d, GRACE) == (False, "billing_suspended"), 10)


def test_officernd_usage_becomes_checkins_and_fees(ornd: Rig) -> None:
    now = datetime.now(UTC)
    ornd.sim.create(
        "visits",
        {
            "visitor": ornd.ids["grace_hopper"],
            "member": ornd.ids["ada"],
            "location": ornd.ids["mitte"],
            "start": now.isoformat(),
            "end": (now + timedelta(hours=2)).isoformat(),
        },
    )
    b = ornd.bridge()
    d = ornd.gateway(b)
    assert present(d, card=ALAN)["granted"]
    checkins = wait_for(
        "the check-in",
        lambda: [c for c in ornd.sim.records("checkins") if c.get("member") == ornd.ids["alan"]],
    )
    assert len(checkins) == 1
    assert present(d, pin="1111")["granted"]  # Grace Hopper, Ada's visitor
    fees = wait_for(
        "the guest fee",
        lambda: [f for f in ornd.sim.records("fees") if f.get("member") == ornd.ids["ada"]],
    )
    assert fees[0]["price"] == 10.0
    assert "Guest entry: Grace Hopper" in fees[0]["name"]
    assert f"[edge {fees[0]['name'].split('[edge ')[1]}" in fees[0]["name"]


def test_a_write_answered_with_nonsense_is_looked_up_not_written_again(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    rig.sim.faults.next("malformed", 1, path="/api/spaces/checkins", method="POST")
    assert present(d, card=ALAN)["granted"]
    wait_for("the check-in", lambda: checkins_of(rig, "alan"))
    db = sqlite3.connect(b.state_dir / "bridge.db")
    try:
        wait_for(
            "the event done",
            lambda: (
                db.execute("SELECT state FROM events WHERE type = 'usage.day_pass'").fetchone()
                == ("done",)
            ),
        )
    finally:
        db.close()
    assert len(checkins_of(rig, "alan")) == 1


def test_a_refused_sign_in_keeps_usage_waiting_and_the_bridge_running(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    # Every sign-in refused (the refresh grant and the password grant alike).
    rig.sim.faults.next("fail", 1000, path="/api/token", status=401)
    rig.sim.tokens.expire_all()
    assert present(d, card=ALAN)["granted"]
    wait_for(
        "the error in status",
        lambda: "refused the sign-in" in str((b.status() or {}).get("platforms")),
    )
    assert not checkins_of(rig, "alan")
    rig.sim.faults.clear()
    wait_for("the check-in once sign-in works", lambda: checkins_of(rig, "alan"), 30)
    assert b.proc is not None
    assert b.proc.poll() is None


def test_rejected_usage_can_be_sent_again(rig: Rig) -> None:
    b = rig.bridge()
    d = rig.gateway(b)
    rig.sim.faults.next("fail", 1, path="/api/spaces/checkins", method="POST", status=400)
    assert present(d, card=ALAN)["granted"]
    wait_for("the rejection", lambda: "REJECTED" in b.ctl("status").stdout)
    assert "1 event(s) will be sent again" in b.ctl("outbox", "retry", "--all").stdout
    wait_for("the check-in", lambda: checkins_of(rig, "alan"))
    assert "REJECTED" not in b.ctl("status").stdout


def test_the_demos_platform_act_happens(tmp_path: Path) -> None:
    from hwsim.demo_bridge import run_platform_act

    assert run_platform_act(tmp_path) == []


def test_each_kind_of_malformed_record_is_skipped_with_its_reason(rig: Rig) -> None:
    b = rig.bridge(poll_interval_s=3600)
    d = rig.gateway(b, pull_interval_s=1)
    ids = rig.ids
    rig.sim.corrupt("coworkers", ids["grace"], "Active", "yes")  # mistyped
    rig.sim.corrupt("coworkercontracts", ids["ken_contract"], "StartDate")  # missing
    rig.sim.corrupt("coworkerinvoices", ids["ada_invoice"], "DueDate", "soon")  # not a date
    rig.sim.corrupt("bookings", ids["alan_booking"], "ResourceId", "Ada room")  # mistyped
    rig.sim.corrupt("visitors", ids["grace_hopper"], "ExpectedArrival")  # missing
    rig.sim.update("coworkers", ids["frances"], AccessCardId="12-4003")  # unreadable card
    rig.sim.update("coworkers", ids["radia"], AccessPincode="97a3")  # not a PIN
    rig.sim.update("coworkers", ids["linus"], AccessCardId="12:4100")  # a good change
    b.ctl("sync", "now")
    status = b.status()
    assert status is not None
    bad = {(x["entity"], x["id"]): x for x in status["platforms"]["nexudus"]["bad_records"]}
    expected = {
        ("coworkers", ids["grace"]): ("Active", "expected true or false"),
        ("coworkercontracts", ids["ken_contract"]): ("StartDate", "not an ISO 8601"),
        ("coworkerinvoices", ids["ada_invoice"]): ("DueDate", "'soon' is not an ISO 8601"),
        ("bookings", ids["alan_booking"]): ("ResourceId", "expected a number"),
        ("visitors", ids["grace_hopper"]): ("ExpectedArrival", "not an ISO 8601"),
    }
    for (entity, rid), (field, words) in expected.items():
        entry = bad[(entity, str(rid))]
        assert entry["field"] == field
        assert words in entry["reason"], entry
    refused = status["sites"]["mitte"]["refused"]
    assert any("AccessCardId" in t and "12-4003" in t for t in refused), refused
    assert any("AccessPincode" in t and "1 to 16 digits" in t for t in refused), refused
    # The rest syncs, and nothing malformed took anything away.
    wait_for("the good change", lambda: decide(d, "H10301:12:4100") == (False, "billing_suspended"))
    assert decide(d, GRACE) == (True, "plan")
    assert decide(d, KEN) == (False, "contract_ended")
    assert status["sites"]["mitte"]["objects"]["booking"] == 1
    assert status["sites"]["mitte"]["objects"]["guest"] == 1
    assert "malformed records skipped (5)" in b.ctl("status").stdout


def test_usage_is_written_once_while_the_bridge_is_killed(rig: Rig) -> None:
    import json as json_
    import signal
    import urllib.request
    import uuid

    b = rig.bridge(timeout_s=1)
    url = b.url
    members = [f"m-{rig.ids[k]}" for k in ("grace", "ada", "linus", "radia", "alan", "frances")]
    day = datetime.now(TZ).replace(hour=9, minute=0, second=0, microsecond=0)
    events = []
    for i in range(60):
        at = (day - timedelta(minutes=i)).isoformat()
        events.append(
            {"id": str(uuid.uuid4()), "type": "usage.credits", "at": at, "site": "mitte",
             "holder": members[i % len(members)],
             "details": {"room": "ada", "booking": f"b-{i}", "credits": 1}}
        )  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 - the bridge on loopback
        f"{url}/sites/mitte/events",
        data=json_.dumps({"events": events}).encode(),
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert len(json_.loads(answer.read())["accepted"]) == 60
    rig.sim.faults.error_rate = 0.1
    rig.sim.faults.late_rate = 0.1
    rig.sim.faults.timeout_s = 1.5
    for _ in range(3):
        time.sleep(0.7)
        b.stop(signal.SIGKILL)
        b.start()
        b.wait_ready()
    rig.sim.faults.clear()

    def written() -> Any:
        tags = [
            c["Description"].rsplit("[edge ", 1)[1].rstrip("]") for c in rig.sim.records("charges")
        ]
        return tags if len(set(tags)) == 60 else None

    tags = wait_for("every charge", written, 60)
    assert sorted(tags) == sorted(e["id"] for e in events)  # each exactly once


def test_invoices_past_the_first_page_count(rig: Rig) -> None:
    # One record a page: every unpaid invoice is on a page of its own.
    b = rig.bridge(platform_extra="page_size = 1\n")
    d = rig.gateway(b)
    assert decide(d, LINUS) == (False, "billing_suspended")
    assert decide(d, "C1000:100:70001") == (False, "billing_suspended")  # Barbara
    assert decide(d, BJARNE, door="office-12") == (False, "billing_suspended")
    assert decide(d, GRACE) == (True, "plan")
    pages = rig.sim.calls[("GET", "/api/billing/coworkerinvoices")]
    assert pages >= 4


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, as an operator's server would have one (its own CA)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "bridge.pem", directory / "bridge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_on_an_operators_server_the_bridge_speaks_https(rig: Rig) -> None:
    import requests

    cert, key = _self_signed(rig.tmp_path)
    b = rig.bridge(bridge_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    assert b.url.startswith("https://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(b.url.replace("https://", "http://") + "/sites/mitte/snapshot", timeout=5)
    d = rig.gateway(b, extra_cloud=f'ca_bundle = "{cert}"\n')
    assert decide(d, GRACE) == (True, "plan")
    assert decide(d, LINUS) == (False, "billing_suspended")
