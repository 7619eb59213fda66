"""The simulated OfficeRnD Flex API v2 (hwsim.platforms.officernd), over HTTP as the
bridge sees it: tokens and scopes, cursor paging, filters, single reads, writes and
their errors, throttling, every fault kind, signed webhooks (checked here with hmac,
independently of the simulator), the example story and the large data set."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from hwsim.platforms.officernd import MISSING, OfficeRndSim

DAY = date(2026, 11, 16)  # a Monday; Berlin is UTC+1 then
NOON = datetime(2026, 11, 16, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
ORG = "mitte-coworking"
READ = [
    "flex.community.members.read",
    "flex.community.companies.read",
    "flex.community.memberships.read",
    "flex.billing.plans.read",
    "flex.space.passes.read",
    "flex.space.bookings.read",
    "flex.space.resources.read",
    "flex.billing.payments.read",
    "flex.community.fees.read",
    "flex.community.checkins.read",
    "flex.community.visitors.read",
    "flex.community.visits.read",
    "flex.space.locations.read",
    "flex.settings.webhooks.read",
]
WRITE = [
    "flex.community.checkins.create",
    "flex.community.checkins.update",
    "flex.community.fees.create",
    "flex.community.memberships.update",
    "flex.community.members.update",
    "flex.space.bookings.delete",
    "flex.settings.webhooks.create",
    "flex.settings.webhooks.delete",
]


class Clock:
    """The simulator's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def __call__(self) -> datetime:
        return self.at


class Api:
    """A client as the bridge would be: a token for some scopes, then the API."""

    def __init__(self, sim: OfficeRndSim, scopes: list[str] | None = None) -> None:
        self.sim = sim
        self.http = requests.Session()
        self.base = f"{sim.base_url}/api/v2/organizations/{ORG}"
        self.token = self.fetch_token(scopes or READ + WRITE).json()["access_token"]

    def fetch_token(self, scopes: list[str], **form: str) -> requests.Response:
        data = {"grant_type": "client_credentials", "client_id": "sim-client"}
        data |= {"client_secret": "sim-secret", "scope": " ".join(scopes), **form}
        return self.http.post(f"{self.sim.base_url}/oauth/token", data=data, timeout=5)

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        kw.setdefault("timeout", 5)
        return self.http.request(method, self.base + path, headers=headers, **kw)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.call("GET", path, params=params)

    def all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every page, following cursorNext as the docs say."""
        results, cursor = [], None
        while True:
            page = self.get(path, **params, **({"$cursorNext": cursor} if cursor else {}))
            assert page.status_code == 200, page.text
            results += page.json()["results"]
            cursor = page.json().get("cursorNext")
            if not cursor:
                return results


@pytest.fixture
def sim() -> Iterator[OfficeRndSim]:
    s = OfficeRndSim()
    s.now = Clock(NOON)  # type: ignore[method-assign]
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def story(sim: OfficeRndSim) -> dict[str, Any]:
    return sim.load_example(DAY)


@pytest.fixture
def api(sim: OfficeRndSim, story: dict[str, Any]) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.http.close()


UNAUTHORIZED = {"statusCode": 401, "message": "Unauthorized access", "error": "Unauthorized"}


# --- auth -----------------------------------------------------------------------------


def test_token_is_issued_for_granted_scopes_only(sim: OfficeRndSim, api: Api) -> None:
    r = api.fetch_token(["flex.community.members.read", "flex.space.bookings.read"])
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["scope"] == "flex.community.members.read flex.space.bookings.read"
    assert api.fetch_token(READ, client_secret="wrong").status_code == 401
    assert api.fetch_token(READ, client_secret="wrong").json()["error"] == "invalid_client"
    assert api.fetch_token(READ, grant_type="password").json()["error"] == "unsupported_grant_type"
    assert api.fetch_token([]).json()["error"] == "invalid_scope"
    sim.granted_scopes.discard("flex.community.fees.create")
    r = api.fetch_token(["flex.community.fees.create"])
    assert (r.status_code, r.json()["error"]) == (400, "invalid_scope")
    assert sim.calls[("POST", "/oauth/token")] >= 6  # token requests count like any call


def test_missing_invalid_and_expired_tokens_look_alike(sim: OfficeRndSim, api: Api) -> None:
    assert api.get("/members").status_code == 200
    r = api.http.get(f"{api.base}/members", timeout=5)
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    r = api.call("GET", "/members", headers={"Authorization": "Bearer garbage"})
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    sim.tokens.expire_all()
    r = api.get("/members")
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    api.token = api.fetch_token(READ).json()["access_token"]  # the bridge's refresh
    assert api.get("/members").status_code == 200


def test_a_missing_scope_is_401_and_an_unknown_org_500_as_on_staging(sim: OfficeRndSim) -> None:
    client = Api(sim, ["flex.community.members.read"])
    try:
        assert client.get("/members").status_code == 200
        r = client.get("/fees")
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
        r = client.http.get(
            f"{sim.base_url}/api/v2/organizations/elsewhere/members",
            headers={"Authorization": f"Bearer {client.token}"},
            timeout=5,
        )
        assert (r.status_code, r.json()["message"]) == (500, "Organization not found")
        sim.fixed_bugs = True
        assert client.get("/fees").status_code == 403
    finally:
        client.http.close()


# --- paging and filters ------------------------------------------------------------------


def test_paging_walks_every_record_once_in_id_order(sim: OfficeRndSim, api: Api) -> None:
    first = api.get("/members", **{"$limit": 5}).json()
    assert (first["rangeStart"], first["rangeEnd"], len(first["results"])) == (1, 5, 5)
    assert "cursorPrev" not in first
    assert "cursorNext" in first
    json.loads(base64.b64decode(first["cursorNext"]))  # opaque, but base64 JSON like the docs'
    second = api.get("/members", **{"$limit": 5, "$cursorNext": first["cursorNext"]}).json()
    assert (second["rangeStart"], second["rangeEnd"]) == (6, 10)
    back = api.get("/members", **{"$limit": 5, "$cursorPrev": second["cursorPrev"]}).json()
    assert back["results"] == first["results"]
    assert back["rangeStart"] == 1
    every = api.all("/members", **{"$limit": 5})
    ids = [m["_id"] for m in every]
    assert ids == sorted(ids) == [m["_id"] for m in sim.records("members")]
    assert len(ids) == 12
    assert all(len(i) == 24 and int(i, 16) for i in ids)
    last = api.get("/members", **{"$limit": 5, "$cursorNext": second["cursorNext"]}).json()
    assert (last["rangeStart"], last["rangeEnd"]) == (11, 12)
    assert "cursorNext" not in last
    default = api.get("/members").json()
    assert len(default["results"]) == 12
    assert "cursorNext" not in default
    empty = api.get("/members", email="nobody@example.com").json()
    assert empty == {"results": [], "rangeStart": 0, "rangeEnd": 0}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"$limit": "51"}, "$limit must not be greater than 50"),
        ({"$limit": "abc"}, "$limit must be a number conforming to the specified constraints"),
        ({"$cursorNext": "not-a-cursor"}, "$cursorNext must be a valid cursor"),
        ({"unknownParam": "1"}, "property unknownParam should not exist"),
        ({"createdAt[$gte]": "yesterday"}, "createdAt must be a valid ISO 8601 date string"),
    ],
)
def test_bad_list_parameters_are_400(api: Api, params: dict[str, str], message: str) -> None:
    r = api.get("/members", **params)
    assert r.status_code == 400
    assert r.json() == {"statusCode": 400, "message": [message], "error": "Bad Request"}


def test_both_cursors_at_once_are_refused(api: Api) -> None:
    cursor = api.get("/members", **{"$limit": 2}).json()["cursorNext"]
    r = api.get("/members", **{"$cursorNext": cursor, "$cursorPrev": cursor})
    assert r.status_code == 400


def test_updated_since_works_on_members_but_not_on_memberships(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    later = NOON + timedelta(hours=1)
    sim.now.at = later  # type: ignore[attr-defined]
    sim.update("members", story["grace"], email="grace@brewster.example")
    since = "2026-11-16T12:30:00.000+01:00"  # 11:30Z, with an offset as n8n sends it
    changed = api.all("/members", **{"modifiedAt[$gte]": since})
    assert [m["_id"] for m in changed] == [story["grace"]]
    assert changed[0]["modifiedAt"] == "2026-11-16T12:00:00.000Z"
    for collection in ("companies", "payments", "fees", "bookings", "passes"):
        assert api.get(f"/{collection}", **{"modifiedAt[$gte]": since}).status_code == 200
    r = api.get("/memberships", **{"modifiedAt[$gte]": since})
    assert (r.status_code, r.json()["message"]) == (400, ["property modifiedAt should not exist"])


def test_equality_in_properties_select_and_ranges(api: Api, story: dict[str, Any]) -> None:
    ada = api.get("/members", **{"properties[cardNumber]": "12:3456"}).json()["results"]
    assert [m["_id"] for m in ada] == [story["ada"]]
    acme = api.all("/members", company=story["acme"])
    assert {m["_id"] for m in acme} == {story["ada"], story["frances"]}
    mine = api.all("/memberships", member=story["radia"])
    assert {m["_id"] for m in mine} == {story["radia_membership"], story["radia_server_access"]}
    drop_ins = api.all("/members", **{"status[$in]": "drop-in,former"})
    assert {m["_id"] for m in drop_ins} == {story["margaret"], story["alan"]}
    ordered = api.all("/members", **{"$sort": '{"name": "desc"}', "$limit": 5})
    assert [m["name"] for m in ordered][:2] == ["Radia Ops", "Margaret Visitor"]
    assert len(ordered) == 12
    slim = api.get("/members", **{"$select": "name", "$limit": 1}).json()["results"]
    assert slim == [{"_id": story["ada"], "name": "Ada Lovelace"}]
    today = api.all(
        "/bookings",
        **{"start[$gte]": "2026-11-16T00:00:00+01:00", "start[$lt]": "2026-11-17T00:00:00+01:00"},
    )
    assert [b["_id"] for b in today] == [story["alan_booking"]]
    unpaid = api.all("/payments", status="awaiting_payment", **{"dueDate[$lt]": "2026-11-16"})
    assert len(unpaid) == 4


# --- single reads ---------------------------------------------------------------------------


def test_single_reads_are_bare_and_404_names_the_id(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    ada = api.get(f"/members/{story['ada']}").json()
    assert ada["name"] == "Ada Lovelace"
    assert ada["properties"]["cardNumber"] == "12:3456"
    bare = sim.create("members", {"name": "No Props", "location": story["mitte"]})
    assert "properties" not in api.get(f"/members/{bare}").json()  # omitted when empty
    listed = api.get("/members", name="No Props").json()["results"]
    assert listed[0]["properties"] == {}  # but always there in a list
    missing = "aaaaaaaaaaaaaaaaaaaaaaaa"
    r = api.get(f"/members/{missing}", unknown="ignored")
    assert r.status_code == 404
    assert r.json() == {
        "statusCode": 404,
        "message": f"Item with Id ({missing})",
        "error": "Not Found",
    }
    assert api.get("/members/count").json() == {"total": 13}
    r = api.get("/teams")
    assert (r.status_code, r.json()["message"]) == (
        404,
        f"Cannot GET /api/v2/organizations/{ORG}/teams",
    )


# --- writes ----------------------------------------------------------------------------


def test_a_check_in_uses_one_day_pass_per_day(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    body = {"location": story["mitte"], "start": "2026-11-16T09:55:00+01:00"}
    r = api.call("POST", f"/checkins/{story['alan']}", json=body)
    assert r.status_code == 201, r.text
    checkin = r.json()
    assert checkin["member"] == story["alan"]
    assert checkin["start"] == "2026-11-16T08:55:00.000Z"
    assert checkin["end"] is None
    assert checkin["booking"] == story["alan_booking"]
    assert checkin["pass"] == story["alan_pass"]
    assert sim.get("passes", story["alan_pass"])["usedCount"] == 1
    again = api.call(
        "POST", "/checkins", json={"member": story["alan"], "location": story["mitte"]}
    )
    assert again.status_code == 201
    assert again.json()["pass"] == story["alan_pass"]
    assert sim.get("passes", story["alan_pass"])["usedCount"] == 1  # the day is paid for
    assert api.get(f"/passes/{story['alan_pass']}").json()["status"] == "valid"
    window = {
        "start[$gte]": "2026-11-16T00:00:00+01:00",
        "start[$lte]": "2026-11-16T23:59:59+01:00",
    }
    found = api.all("/checkins", member=story["alan"], **window)
    assert [c["_id"] for c in found] == [checkin["_id"], again.json()["_id"]]
    out = api.call("POST", f"/checkins/checkout/{story['alan']}")
    assert out.status_code == 200
    assert out.json()["end"] == "2026-11-16T11:00:00.000Z"
    assert len(sim.records("checkins")) == 2


def test_check_in_errors(api: Api, story: dict[str, Any]) -> None:
    r = api.call("POST", f"/checkins/{story['ada']}", json={"start": "soon", "extra": 1})
    assert r.status_code == 400
    assert r.json()["message"] == [
        "property extra should not exist",
        "location must be a string",
        "start must be a valid ISO 8601 date string",
    ]
    r = api.call("POST", f"/checkins/{story['ada']}", json={"location": "bbbbbbbbbbbbbbbbbbbbbbbb"})
    assert (r.status_code, r.json()["message"]) == (500, "Specified office was not found")
    r = api.call("POST", "/checkins/cccccccccccccccccccccccc", json={"location": story["mitte"]})
    assert r.status_code == 404


def test_fees_are_created_validated_and_found(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    fee = {"name": "Door usage 2026-11-16", "issueDate": "2026-11-16", "price": 5.5}
    fee |= {"location": story["mitte"], "plan": story["services"], "member": story["alan"]}
    r = api.call("POST", "/fees", json=fee)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["issueDate"] == "2026-11-16T00:00:00.000Z"
    assert (created["quantity"], created["isPersonal"], created["planType"]) == (1, True, "Plan")
    found = api.all("/fees", member=story["alan"], issueDate="2026-11-16T00:00:00.000Z")
    assert [f["_id"] for f in found] == [created["_id"]]
    assert api.all("/fees", name="Door usage 2026-11-16")[0]["price"] == 5.5
    r = api.call("POST", "/fees", json={"name": 3, "price": "5", "location": story["mitte"]})
    assert r.status_code == 400
    assert r.json()["message"] == [
        "name must be a string",
        "issueDate must be a valid ISO 8601 date string",
        "plan must be a string",
        "price must be a number conforming to the specified constraints",
    ]
    r = api.call("POST", "/fees", json={**fee, "plan": "dddddddddddddddddddddddd"})
    assert (r.status_code, r.json()["message"]) == (500, "Specified plan was not found")
    assert len(sim.records("fees")) == 1


def test_updates_are_partial_and_deletes_hard(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    path = f"/memberships/{story['ada_membership']}"
    before = api.get(path).json()
    sim.now.at = NOON + timedelta(minutes=5)  # type: ignore[attr-defined]
    assert api.call("PUT", path, json={}).json()["modifiedAt"] == before["modifiedAt"]
    r = api.call("PUT", path, json={"endDate": "2026-11-30"})
    assert r.status_code == 200
    assert r.json()["endDate"] == "2026-11-30T00:00:00.000Z"
    assert r.json()["plan"] == before["plan"]
    assert r.json()["modifiedAt"] == "2026-11-16T11:05:00.000Z"
    r = api.call("PUT", path, json={"name": "x", "properties": {}})
    assert r.json()["message"] == [
        "property name should not exist",
        "property properties should not exist",
    ]
    r = api.call("PUT", path, json={"endDate": "2020-01-01"})
    assert r.status_code == 500
    assert r.json()["message"] == "Membership startDate should be before the endDate"
    r = api.call("PATCH", f"/members/{story['ada']}", json={"properties": {"cardNumber": "12:9"}})
    assert r.json()["properties"] == {"cardNumber": "12:9", "doorPin": "1234"}
    r = api.call("DELETE", f"/bookings/{story['alan_booking']}")
    assert r.status_code == 200
    assert r.json()["_id"] == story["alan_booking"]
    assert api.get(f"/bookings/{story['alan_booking']}").status_code == 404
    assert api.call("DELETE", f"/bookings/{story['alan_booking']}").status_code == 404


# --- throttling and faults -----------------------------------------------------------------


def test_reads_and_writes_are_throttled_apart(sim: OfficeRndSim, api: Api) -> None:
    sim.rate.read.set(2, 60)
    first = api.get("/locations")
    assert first.headers["x-ratelimit-limit-read-minute"] == "2"
    assert first.headers["x-ratelimit-remaining-read-minute"] == "1"
    assert int(first.headers["x-ratelimit-reset-read-minute"]) > 0
    api.get("/locations")
    r = api.get("/locations")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json() == {
        "statusCode": 429,
        "message": "Too Many Requests",
        "error": "Too Many Requests",
    }
    checkin = api.call("POST", "/checkins", json={})  # a write: the read bucket does not apply
    assert checkin.status_code == 400
    sim.rate.set(1, 60)
    assert api.call("POST", "/checkins", json={}).status_code == 400
    assert api.call("POST", "/checkins", json={}).status_code == 429
    assert api.fetch_token(READ).status_code == 200  # the identity server counts apart
    sim.rate.set(None)
    assert api.get("/locations").status_code == 200


def test_every_fault_kind(sim: OfficeRndSim, api: Api, story: dict[str, Any]) -> None:
    faults = sim.faults
    faults.next("fail", status=503, path="/members")
    r = api.get("/members")
    assert (r.status_code, r.json()["statusCode"]) == (503, 503)
    faults.next("drop", path="/members")
    with pytest.raises(requests.ConnectionError):
        api.get("/members")
    faults.next("timeout", seconds=5, path="/members")
    with pytest.raises(requests.Timeout):
        api.call("GET", "/members", timeout=0.3)
    faults.next("malformed", path="/members")
    r = api.get("/members")
    assert r.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    faults.next("rate_limit", seconds=7, path="/members")
    r = api.get("/members")
    assert (r.status_code, r.headers["Retry-After"]) == (429, "7")
    fee = {"name": "x", "issueDate": "2026-11-16", "price": 1, "location": story["mitte"]}
    faults.next("after_write", path="/fees", method="POST")
    with pytest.raises(requests.ConnectionError):
        api.call("POST", "/fees", json={**fee, "plan": story["services"]})
    assert len(sim.records("fees")) == 1  # stored, though the client never heard
    faults.next("late", seconds=5, path="/checkins")
    with pytest.raises(requests.Timeout):
        api.call(
            "POST", f"/checkins/{story['ada']}", json={"location": story["mitte"]}, timeout=0.3
        )
    assert len(sim.records("checkins")) == 1
    assert api.get("/members").status_code == 200


# --- webhooks -------------------------------------------------------------------------------


class Receiver:
    """A webhook subscriber on loopback that keeps every request's headers and raw body."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def verified(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The payload, after checking `officernd-signature` as a receiver would."""
    parts = dict(part.split("=", 1) for part in headers["officernd-signature"].split(","))
    t = parts["t"]
    if "signature" in parts:
        signed, given = body + b"." + t.encode(), parts["signature"]
    else:
        signed, given = t.encode() + b"." + body, parts["v1"]
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(given, expected)
    assert int(t) == int(NOON.timestamp())
    payload: dict[str, Any] = json.loads(body)
    return payload


def test_webhooks_are_signed_in_both_styles(
    sim: OfficeRndSim, story: dict[str, Any], receiver: Receiver
) -> None:
    events = ["member.updated", "member.removed", "invoice.updated", "checkin.created"]
    plain = sim.add_webhook(receiver.url, events)
    stripe_like = sim.add_webhook(receiver.url, events, signature_style="v1")
    sim.update("members", story["frances"], email="frances@acme.example")
    sim.pay_invoice(story["ada_invoice"])
    sim.delete("members", story["bjarne"])
    assert sim.webhooks.wait_idle()
    assert len(receiver.got) == 6
    secrets = [plain, stripe_like] * 3
    payloads = [verified(s, h, b) for s, (h, b) in zip(secrets, receiver.got, strict=True)]
    assert payloads[0] == payloads[1]  # one event, two subscribers
    update = payloads[0]
    assert update["eventType"] == "member.updated"
    assert len(update["event"]) == 24
    assert update["data"]["object"]["email"] == "frances@acme.example"
    assert update["data"]["previousAttributes"] == {"email": "frances@example.com"}
    assert update["createdAt"] == "2026-11-16T11:00:00.000Z"
    invoice = payloads[2]["data"]
    assert payloads[2]["eventType"] == "invoice.updated"
    assert (invoice["object"]["status"], invoice["previousAttributes"]["status"]) == (
        "paid",
        "awaiting_payment",
    )
    removed = payloads[4]
    assert removed["eventType"] == "member.removed"
    assert removed["data"]["object"]["name"] == "Bjarne Initech"  # the last state
    assert receiver.got[0][0]["officernd-signature"].startswith("t=")
    assert ",signature=" in receiver.got[0][0]["officernd-signature"]
    assert ",v1=" in receiver.got[1][0]["officernd-signature"]


def test_webhooks_over_http(
    sim: OfficeRndSim, api: Api, story: dict[str, Any], receiver: Receiver
) -> None:
    r = api.call("POST", "/webhooks", json={"url": receiver.url, "eventTypes": ["checkin.created"]})
    assert r.status_code == 201
    hook = r.json()
    assert hook["isEnabled"] is True
    assert len(hook["secret"]) == 36
    assert [h["_id"] for h in api.all("/webhooks")] == [hook["_id"]]
    api.call("POST", f"/checkins/{story['margaret']}", json={"location": story["mitte"]})
    assert sim.webhooks.wait_idle()
    ((headers, body),) = receiver.got
    payload = verified(hook["secret"], headers, body)
    assert payload["eventType"] == "checkin.created"
    assert payload["data"]["object"]["pass"] is None  # Margaret's one pass is used up
    assert api.call("DELETE", f"/webhooks/{hook['_id']}").status_code == 200
    assert api.all("/webhooks") == []
    assert api.call("POST", "/webhooks", json={"url": 1}).status_code == 400


# --- the story and the operator ------------------------------------------------------------


def test_the_example_story(sim: OfficeRndSim, api: Api, story: dict[str, Any]) -> None:
    def status(key: str) -> str:
        return str(api.get(f"/memberships/{story[key]}").json()["calculatedStatus"])

    assert status("ada_membership") == "active"
    assert status("ken_membership") == "expired"
    assert status("dennis_membership") == "not_started"
    server = api.get(f"/memberships/{story['radia_server_access']}").json()
    assert server["endDate"] == "2026-12-16T00:00:00.000Z"
    assert server["isPersonal"] is True
    assert server["member"] == story["radia"]
    assert "company" not in server
    assert api.get(f"/locations/{story['mitte']}").json()["timezone"] == "Europe/Berlin"
    for key in ("ada_invoice", "linus_invoice", "barbara_invoice", "initech_invoice"):
        invoice = api.get(f"/payments/{story[key]}").json()
        assert invoice["status"] == "awaiting_payment"
        assert invoice["payableAmount"] > 0
    initech = api.get(f"/payments/{story['initech_invoice']}").json()
    assert initech["company"] == story["initech"]
    assert "member" not in initech
    assert initech["dueDate"] == "2026-10-27T00:00:00.000Z"
    margaret = api.get(f"/passes/{story['margaret_pass']}").json()
    assert (margaret["count"], margaret["usedCount"], margaret["status"]) == (1, 1, "used")
    alan = api.get(f"/passes/{story['alan_pass']}").json()
    assert (alan["count"], alan["usedCount"], alan["status"]) == (2, 0, "valid")
    booking = api.get(f"/bookings/{story['alan_booking']}").json()
    assert (booking["start"], booking["end"]) == (
        "2026-11-16T09:00:00.000Z",
        "2026-11-16T10:00:00.000Z",
    )
    assert booking["timezone"] == "Europe/Berlin"
    assert booking["resource"] == story["ada_room"]
    assert booking["isCancelled"] is False
    visitor = api.get(f"/visitors/{story['grace_hopper']}").json()
    assert visitor["properties"] == {"doorPin": "1111"}
    assert visitor["member"] == story["ada"]
    visit = api.get(f"/visits/{story['grace_hopper_visit']}").json()
    assert (visit["start"], visit["end"]) == (
        "2026-11-16T08:00:00.000Z",
        "2026-11-16T17:00:00.000Z",
    )
    cards = {m["name"]: m["properties"].get("cardNumber") for m in api.all("/members")}
    assert cards["Grace Brewster"] == "H10306:1000:50001"
    assert cards["Edsger Lost"] == ""
    assert {p["name"] for p in api.all("/plans")} >= {"Hot Desk", "Resident", "Server Access"}


def test_operator_shortcuts_and_corruption(
    sim: OfficeRndSim, api: Api, story: dict[str, Any]
) -> None:
    sim.end_membership(story["grace_membership"], DAY - timedelta(days=1))
    assert sim.get("memberships", story["grace_membership"])["calculatedStatus"] == "expired"
    invoice = sim.add_invoice(story["frances"], due=DAY + timedelta(days=14), amount=42.0)
    assert sim.get("payments", invoice)["payableAmount"] == 42.0
    sim.pay_invoice(invoice)
    paid = api.get(f"/payments/{invoice}").json()
    assert (paid["status"], paid["isPaid"], paid["payableAmount"]) == ("paid", True, 0)
    sim.cancel_booking(story["alan_booking"])
    assert api.get(f"/bookings/{story['alan_booking']}").json()["isCancelled"] is True
    day_pass = sim.sell_day_pass(story["margaret"])
    assert api.get(f"/passes/{day_pass}").json()["status"] == "valid"
    sim.now.at = NOON + timedelta(minutes=1)  # type: ignore[attr-defined]
    sim.corrupt("members", story["ada"], "email", 12345)
    sim.corrupt("members", story["ada"], "name")
    sim.corrupt("memberships", story["ada_membership"], "calculatedStatus", "bogus")
    ada = api.get(f"/members/{story['ada']}").json()
    assert ada["email"] == 12345
    assert "name" not in ada
    assert ada["modifiedAt"] == "2026-11-16T11:01:00.000Z"
    assert api.get(f"/memberships/{story['ada_membership']}").json()["calculatedStatus"] == "bogus"
    assert sim.get("members", story["ada"]).get("name", MISSING) is MISSING
    copy_ = sim.get("members", story["linus"])
    copy_["properties"]["cardNumber"] = "changed"
    assert sim.get("members", story["linus"])["properties"]["cardNumber"] == "12:4000"
    sim.delete("members", story["linus"])
    assert api.get(f"/members/{story['linus']}").status_code == 404
    with pytest.raises(ValueError, match="entity"):
        sim.records("coworkers")


def test_load_large_sizes() -> None:
    sim = OfficeRndSim()
    sim.load_large(members=5000, companies=500, bookings=20000, today=DAY, seed=3)
    sim.start()
    client = Api(sim)
    try:
        assert len(sim.records("members")) == 5000
        assert len(sim.records("companies")) == 500
        assert len(sim.records("bookings")) == 20000
        with_plan = {m["member"] for m in sim.records("memberships") if m.get("member")}
        active = [m for m in sim.records("members") if m["status"] == "active"]
        assert all(m["_id"] in with_plan for m in active)
        assert len(sim.records("payments")) > 3000
        page = client.get("/bookings", **{"$limit": 50}).json()
        assert (page["rangeStart"], page["rangeEnd"]) == (1, 50)
        assert "cursorNext" in page
        counts = client.get("/members/count").json()
        assert counts == {"total": 5000}
    finally:
        client.http.close()
        sim.stop()
