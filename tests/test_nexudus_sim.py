"""The simulated Nexudus admin REST API, over HTTP on loopback: tokens, paging, filters,
partial list records, writes and their envelopes, throttling, faults, signed webhooks
(verified here with an independent HMAC), the example story and the large data set."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from hwsim.httpserving import HttpSimServer, Request, Response
from hwsim.platforms.nexudus import ACTIONS, MISSING, NexudusSim, WorldError

DAY = date(2026, 11, 16)  # a Monday; 09:00 in Berlin is 08:00 UTC
START = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
LOGIN = {"grant_type": "password", "username": "ops@example.com", "password": "sim-password"}
ENVELOPE = {
    "Records", "CurrentPage", "CurrentPageSize", "CurrentOrderField", "CurrentSortDirection",
    "FirstItem", "LastItem", "TotalItems", "TotalPages", "HasNextPage", "HasPreviousPage",
}  # fmt: skip


class Clock:
    """The simulator's clock, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


class Api:
    """A logged-in client of the simulator."""

    def __init__(self, sim: NexudusSim) -> None:
        self.base = sim.base_url
        self.http = requests.Session()
        token = self.http.post(f"{self.base}/api/token", data=LOGIN, timeout=5).json()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"

    def get(self, path: str, timeout: float = 5, **params: Any) -> requests.Response:
        return self.http.get(self.base + path, params=params, timeout=timeout)

    def json(self, path: str, **params: Any) -> Any:
        answer = self.get(path, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def send(self, method: str, path: str, body: Any, timeout: float = 5) -> requests.Response:
        return self.http.request(method, self.base + path, json=body, timeout=timeout)


class Receiver:
    """A webhook subscriber on loopback: records what it gets, answers `status`."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.server = HttpSimServer(self._handle, name="hook-receiver")
        self.server.start()
        self.url = self.server.base_url + "/hooks/nexudus"

    def _handle(self, request: Request) -> Response:
        self.got.append((dict(request.headers), request.body))
        return Response(self.status, b"")

    def payloads(self) -> list[Any]:
        return [json.loads(body) for _, body in self.got]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock) -> Iterator[NexudusSim]:
    s = NexudusSim()
    s.now = clock  # type: ignore[method-assign]
    s.start()
    yield s
    s.stop()


@pytest.fixture
def story(sim: NexudusSim) -> dict[str, Any]:
    return sim.load_example(DAY)


@pytest.fixture
def api(sim: NexudusSim) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.http.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.stop()


def expected_signature(secret: str, body: bytes) -> str:
    """The vendor's C# sample, independently: ASCIIEncoding turns every non-ASCII character
    into '?', then HMAC-SHA256, then "X2" (upper-case hex) per byte."""
    ascii_body = "".join(c if ord(c) < 128 else "?" for c in body.decode("utf-8"))
    digest = hmac.new(secret.encode("ascii"), ascii_body.encode("ascii"), hashlib.sha256)
    return "".join(f"{b:02X}" for b in digest.digest())


# --- tokens and auth ---------------------------------------------------------------------


def test_password_grant_gives_a_week_long_bearer_token(sim: NexudusSim) -> None:
    answer = requests.post(f"{sim.base_url}/api/token", data=LOGIN, timeout=5)
    assert answer.status_code == 200
    token = answer.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (token["token_type"], token["expires_in"]) == ("bearer", 604799)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(f"{sim.base_url}/api/sys/businesses", headers=headers, timeout=5).ok


def test_token_errors(sim: NexudusSim) -> None:
    url = f"{sim.base_url}/api/token"
    as_json = requests.post(url, json=LOGIN, timeout=5)
    assert (as_json.status_code, as_json.json()) == (400, {"error": "unsupported_grant_type"})
    wrong = requests.post(url, data={**LOGIN, "password": "nope"}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "The user name or password is incorrect.",
    }
    no_grant = requests.post(url, data={"username": "ops@example.com"}, timeout=5)
    assert no_grant.json() == {"error": "unsupported_grant_type"}
    assert requests.get(url, timeout=5).status_code == 405


def test_refresh_grant_needs_the_client_id_and_replaces_the_refresh_token(
    sim: NexudusSim,
) -> None:
    url = f"{sim.base_url}/api/token"
    first = requests.post(url, data=LOGIN, headers={"client_id": "bridge-1"}, timeout=5).json()

    def refresh(token: str, client: str | None) -> requests.Response:
        headers = {"client_id": client} if client else {}
        form = {"grant_type": "refresh_token", "refresh_token": token}
        return requests.post(url, data=form, headers=headers, timeout=5)

    assert refresh(first["refresh_token"], None).status_code == 400  # no client_id header
    assert refresh(first["refresh_token"], "someone-else").status_code == 400
    second = refresh(first["refresh_token"], "bridge-1")
    assert second.status_code == 200
    assert second.json()["access_token"] != first["access_token"]
    again = refresh(first["refresh_token"], "bridge-1")  # the old one was invalidated
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    # The first access token still works: refreshing does not revoke access tokens.
    headers = {"Authorization": f"Bearer {first['access_token']}"}
    assert requests.get(f"{sim.base_url}/api/spaces/teams", headers=headers, timeout=5).ok
    # Without a client_id header at login, the email is the client id.
    plain = requests.post(url, data=LOGIN, timeout=5).json()
    assert refresh(plain["refresh_token"], "ops@example.com").status_code == 200


def test_missing_unknown_and_expired_tokens_get_401_and_basic_auth_works(
    sim: NexudusSim, api: Api
) -> None:
    url = f"{sim.base_url}/api/spaces/coworkers"
    denied = {"Message": "Authorization has been denied for this request."}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        answer = requests.get(url, headers=headers, timeout=5)
        assert (answer.status_code, answer.json()) == (401, denied)
    assert api.get("/api/spaces/coworkers").status_code == 200
    sim.tokens.expire_all()
    expired = api.get("/api/spaces/coworkers")
    assert (expired.status_code, expired.json()) == (401, denied)
    assert requests.get(url, auth=("ops@example.com", "sim-password"), timeout=5).ok
    assert requests.get(url, auth=("ops@example.com", "wrong"), timeout=5).status_code == 401
    short = NexudusSim(token_lifetime_s=2).start()
    try:
        answer = requests.post(f"{short.base_url}/api/token", data=LOGIN, timeout=5)
        assert answer.json()["expires_in"] == 2
    finally:
        short.stop()


# --- searches -----------------------------------------------------------------------------


def test_paging_to_the_end_with_the_admin_envelope(
    sim: NexudusSim, story: dict[str, Any], api: Api
) -> None:
    seen: list[int] = []
    page = 1
    while True:
        body = api.json("/api/spaces/coworkers", page=page, size=5)
        assert set(body) == ENVELOPE
        assert (body["CurrentPage"], body["CurrentPageSize"], body["TotalItems"]) == (page, 5, 13)
        assert body["FirstItem"] == (page - 1) * 5 + 1
        assert body["LastItem"] == body["FirstItem"] + len(body["Records"]) - 1
        assert body["HasPreviousPage"] == (page > 1)
        seen += [r["Id"] for r in body["Records"]]
        if not body["HasNextPage"]:
            break
        page += 1
    assert (page, body["TotalPages"]) == (3, 3)
    assert seen == sorted(r["Id"] for r in sim.records("coworkers"))
    past = api.json("/api/spaces/coworkers", page=9, size=5)
    assert (past["Records"], past["FirstItem"], past["LastItem"]) == ([], 0, 0)
    assert (past["HasNextPage"], past["HasPreviousPage"]) == (False, True)
    sim.max_page_size = 4
    assert api.json("/api/spaces/coworkers", size=1000)["CurrentPageSize"] == 4
    assert api.get("/api/spaces/coworkers", page="x").status_code == 400


def test_order_and_direction(story: dict[str, Any], api: Api) -> None:
    down = api.json("/api/spaces/coworkers", orderBy="FullName", dir=-1, size=100)
    names = [r["FullName"] for r in down["Records"]]
    assert names == sorted(names, key=str.lower, reverse=True)
    assert (down["CurrentOrderField"], down["CurrentSortDirection"]) == ("FullName", -1)
    up = api.json("/api/spaces/coworkers", orderby="fullname", dir=1, size=100)
    assert [r["FullName"] for r in up["Records"]] == names[::-1]
    assert api.json("/api/spaces/teams")["CurrentOrderField"] == "Id"


def test_equality_filters(story: dict[str, Any], api: Api) -> None:
    def ids(path: str, **params: Any) -> set[int]:
        return {r["Id"] for r in api.json(path, size=100, **params)["Records"]}

    contracts = ids("/api/billing/coworkercontracts", CoworkerContract_Coworker=story["radia"])
    assert contracts == {story["radia_contract"], story["radia_server_access"]}
    assert ids("/api/spaces/coworkers", Coworker_FullName="LOVELACE") == {story["ada"]}
    assert ids("/api/spaces/coworkers", Coworker_AccessCardId="12:3456") == {story["ada"]}
    unpaid = ids("/api/billing/coworkerinvoices", CoworkerInvoice_Paid="false")
    keys = ("ada_invoice", "linus_invoice", "barbara_invoice", "initech_invoice")
    assert unpaid == {story[k] for k in keys}
    passes = ids("/api/billing/coworkertimepasses", CoworkerTimePass_Coworker=story["alan"])
    assert passes == {story["alan_pass_1"], story["alan_pass_2"]}
    assert ids("/api/spaces/teams", Team_PayingMember=story["initech_accounts"]) == {
        story["initech"]
    }
    by_name = ids("/api/billing/coworkercontracts", CoworkerContract_Coworker_FullName="ken")
    assert by_name == {story["ken_contract"]}
    assert len(ids("/api/spaces/coworkers", Coworker_Nonsense="x")) == 13  # ignored
    assert ids("/api/spaces/coworkers", Id=story["ada"]) == {story["ada"]}


def test_range_filters_for_updated_since(
    sim: NexudusSim, story: dict[str, Any], api: Api, clock: Clock
) -> None:
    clock.advance(minutes=30, seconds=15)  # 08:30:15Z
    sim.update("coworkers", story["grace"], MobilePhone="+49 30 1234")

    def names(**params: Any) -> set[str]:
        records = api.json("/api/spaces/coworkers", size=100, **params)["Records"]
        return {r["FullName"] for r in records}

    assert names(from_Coworker_UpdatedOn="2026-11-16T08:30") == {"Grace Brewster"}
    assert names(from_Coworker_UpdatedOn="2026-11-16T08:30:15Z") == {"Grace Brewster"}
    assert names(from_Coworker_UpdatedOn="2026-11-16T08:30:16") == set()
    before = names(to_Coworker_UpdatedOn="2026-11-16T08:00")  # inclusive
    assert len(before) == 12
    assert "Grace Brewster" not in before
    visitors = api.json(
        "/api/spaces/visitors",
        from_Visitor_ExpectedArrival="2026-11-16T08:00",
        to_Visitor_ExpectedArrival="2026-11-16T08:00",
    )
    assert [v["FullName"] for v in visitors["Records"]] == ["Grace Hopper"]
    assert api.get("/api/spaces/coworkers", from_Coworker_UpdatedOn="yesterday").status_code == 400


def test_list_and_batch_records_are_partial_get_by_id_is_whole(
    story: dict[str, Any], api: Api
) -> None:
    listed = api.json("/api/spaces/coworkers", Coworker_FullName="Ada")["Records"][0]
    for field in ("AccessPincode", "KeyFobNumber", "Teams", "Businesses"):
        assert listed[field] is None, field
    assert listed["AccessCardId"] == "12:3456"  # the card is in list records
    whole = api.json(f"/api/spaces/coworkers/{story['ada']}")
    assert "Records" not in whole
    assert (whole["AccessPincode"], whole["Teams"]) == ("1234", [story["acme"]])
    assert whole["Businesses"] == [story["mitte"]]
    team = api.json("/api/spaces/teams", Team_Name="ACME")["Records"][0]
    assert (team["TeamMembers"], team["TeamAdministrators"]) == (None, None)
    team = api.json(f"/api/spaces/teams/{story['acme']}")
    assert team["TeamMembers"] == [story["ada"], story["frances"]]
    batch = api.json("/api/spaces/coworkers/", id=f"[{story['grace']},{story['ada']},999999]")
    assert [r["Id"] for r in batch] == [story["grace"], story["ada"]]
    assert all(r["AccessPincode"] is None for r in batch)
    assert api.get("/api/spaces/coworkers", id="[1,x]").status_code == 400


def test_single_reads_and_404(story: dict[str, Any], api: Api) -> None:
    assert api.json(f"/api/sys/coworkers/{story['ada']}")["FullName"] == "Ada Lovelace"
    assert api.json(f"/API/Spaces/Coworkers/{story['ada']}")["Id"] == story["ada"]
    assert api.get("/api/spaces/coworkers/999999").status_code == 404
    assert api.get("/api/spaces/nothing").status_code == 404
    mitte = api.json(f"/api/sys/businesses/{story['mitte']}")
    assert (mitte["Name"], mitte["SimpleTimeZoneName"]) == ("Mitte", "Europe/Berlin")


# --- writes ---------------------------------------------------------------------------------


def test_checkin_consumes_the_oldest_day_pass_and_checkout_is_a_full_put(
    sim: NexudusSim, story: dict[str, Any], api: Api
) -> None:
    body = {
        "BusinessId": story["mitte"], "CoworkerId": story["alan"], "Source": 2,
        "FromTime": "2026-11-16T09:05:00Z", "SystemId": "bridge:evt-1",
    }  # fmt: skip
    answer = api.send("POST", "/api/spaces/checkins", body)
    assert answer.status_code == 200
    envelope = answer.json()
    checkin_id = envelope["Value"]["Id"]
    assert envelope == {
        "Status": 200, "Message": "Checkin was successfully created.",
        "Value": {"Id": checkin_id}, "OpenInDialog": False, "OpenInWindow": False,
        "RedirectURL": None, "JavaScript": None, "UpdatedOn": "2026-11-16T08:00:00Z",
        "UpdatedBy": "ops@example.com", "Errors": None, "WasSuccessful": True,
    }  # fmt: skip
    checkin = api.json(f"/api/spaces/checkins/{checkin_id}")
    assert (checkin["Source"], checkin["SystemId"], checkin["ToTime"]) == (1, "bridge:evt-1", None)
    assert checkin["FromTimeLocal"] == "2026-11-16T10:05:00"
    first = api.json(f"/api/billing/coworkertimepasses/{story['alan_pass_1']}")
    assert (first["Used"], first["CheckedIn"], first["RemainingUses"]) == (True, True, 0)
    assert first["UsedDate"] == "2026-11-16T09:05:00Z"
    assert checkin["CoworkerTimePassGuid"] == first["UniqueId"]
    assert api.json(f"/api/billing/coworkertimepasses/{story['alan_pass_2']}")["Used"] is False
    # A second check-in the same day rides on the same pass.
    again = api.send("POST", "/api/spaces/checkins", {**body, "FromTime": "2026-11-16T13:00Z"})
    second = api.json(f"/api/spaces/checkins/{again.json()['Value']['Id']}")
    assert second["CoworkerTimePassGuid"] == first["UniqueId"]
    assert api.json(f"/api/billing/coworkertimepasses/{story['alan_pass_2']}")["Used"] is False
    # Lookups the bridge relies on.
    found = api.json("/api/spaces/checkins", Checkin_SystemId="bridge:evt-1")["Records"]
    assert {c["Id"] for c in found} == {checkin_id, second["Id"]}
    mine = api.json(
        "/api/spaces/checkins",
        Checkin_Coworker=story["alan"],
        from_Checkin_FromTime="2026-11-16T09:05",
        to_Checkin_FromTime="2026-11-16T12:59",
    )["Records"]
    assert [c["Id"] for c in mine] == [checkin_id]
    # Check-out: PUT the whole record to the collection URL; left-out fields are cleared.
    out = api.send("PUT", "/api/spaces/checkins", {**checkin, "ToTime": "2026-11-16T11:00:00Z"})
    assert out.json()["Message"] == "Checkin was successfully updated."
    closed = api.json(f"/api/spaces/checkins/{checkin_id}")
    assert (closed["ToTimeLocal"], closed["FromTime"]) == ("2026-11-16T12:00:00", body["FromTime"])
    assert api.json(f"/api/billing/coworkertimepasses/{story['alan_pass_1']}")["CheckedIn"] is False
    open_ones = api.json("/api/spaces/checkins", Checkin_ToTime="null")["Records"]
    assert [c["Id"] for c in open_ones] == [second["Id"]]
    slim = {"Id": checkin_id, "BusinessId": story["mitte"], "FromTime": body["FromTime"]}
    assert api.send("PUT", "/api/spaces/checkins", slim).status_code == 200
    assert api.json(f"/api/spaces/checkins/{checkin_id}")["SystemId"] is None  # cleared by PUT
    assert len(sim.records("checkins")) == 2


def test_checkin_with_a_named_pass_a_member_a_same_day_pass_and_nobody(
    sim: NexudusSim, story: dict[str, Any], api: Api
) -> None:
    mitte, at = story["mitte"], "2026-11-16T09:10Z"
    guid = sim.get("coworkertimepasses", story["alan_pass_2"])["UniqueId"]
    named = {"BusinessId": mitte, "CoworkerId": story["alan"], "FromTime": at}
    api.send("POST", "/api/spaces/checkins", {**named, "CoworkerTimePassGuid": guid})
    assert sim.get("coworkertimepasses", story["alan_pass_2"])["Used"] is True
    assert sim.get("coworkertimepasses", story["alan_pass_1"])["Used"] is False
    sim.checkin_source = 2
    for who in ("grace", "margaret", "frances"):  # a member; today's pass; no plan, no pass
        body = {"BusinessId": mitte, "CoworkerId": story[who], "FromTime": at}
        assert api.send("POST", "/api/spaces/checkins", body).json()["WasSuccessful"]
    anonymous = api.send("POST", "/api/spaces/checkins", {"BusinessId": mitte, "FromTime": at})
    assert anonymous.status_code == 200
    by_coworker = {c["CoworkerId"]: c for c in sim.records("checkins")}
    assert by_coworker[story["grace"]]["CoworkerTimePassGuid"] is None
    assert by_coworker[story["frances"]]["CoworkerTimePassGuid"] is None
    margaret_pass = sim.get("coworkertimepasses", story["margaret_pass"])
    assert by_coworker[story["margaret"]]["CoworkerTimePassGuid"] == margaret_pass["UniqueId"]
    assert (margaret_pass["RemainingUses"], margaret_pass["UsedDate"]) == (
        0,
        "2026-11-16T07:30:00Z",
    )
    assert by_coworker[None]["Source"] == 2


def test_write_validation_errors_name_the_property(story: dict[str, Any], api: Api) -> None:
    missing = api.send("POST", "/api/spaces/checkins", {"CoworkerId": story["ada"]})
    assert missing.status_code == 400
    assert missing.json() == {
        "Status": 400,
        "Message": "BusinessId: is a required field, FromTime: is a required field",
        "Value": None,
        "WasSuccessful": False,
        "Errors": [
            {
                "AttemptedValue": None,
                "Message": "is a required field",
                "PropertyName": "BusinessId",
            },
            {"AttemptedValue": None, "Message": "is a required field", "PropertyName": "FromTime"},
        ],
    }
    for bad in (
        {"FromTime": "half past nine"},
        {"CoworkerId": 999999},
        {"CoworkerTimePassGuid": "00000000-0000-0000-0000-000000000000"},
    ):
        body = {"BusinessId": story["mitte"], "FromTime": "2026-11-16T09:00Z", **bad}
        answer = api.send("POST", "/api/spaces/checkins", body)
        assert answer.status_code == 400
        assert [e["PropertyName"] for e in answer.json()["Errors"]] == list(bad)
    assert api.send("POST", "/api/spaces/checkins", [1, 2]).status_code == 400


def test_charges_are_created_validated_and_found(
    sim: NexudusSim, story: dict[str, Any], api: Api
) -> None:
    charge = {
        "CoworkerId": story["alan"], "BusinessId": story["mitte"], "Quantity": 1,
        "DiscountAmount": 0, "TotalAmount": 12.5, "Description": "Room overtime [edge:b-55]",
        "SaleDate": "2026-11-16T10:00:00Z", "InvoiceLineDisplayAs": "Overtime",
    }  # fmt: skip
    missing = api.send("POST", "/api/billing/charges", charge)
    assert missing.status_code == 400
    assert missing.json()["Message"] == "CreditAmount: is a required field"
    assert missing.json()["Errors"][0]["PropertyName"] == "CreditAmount"
    created = api.send("POST", "/api/billing/charges", {**charge, "CreditAmount": 0})
    assert created.json()["Message"] == "Charge was successfully created."
    charge_id = created.json()["Value"]["Id"]
    found = api.json(
        "/api/billing/charges",
        Charge_Coworker=story["alan"],
        Charge_Description="EDGE:B-55",
        from_Charge_SaleDate="2026-11-16T10:00",
    )["Records"]
    assert [c["Id"] for c in found] == [charge_id]
    assert (found[0]["TotalAmount"], found[0]["DiscountAmount"]) == (12.5, None)  # list: partial
    assert api.json(f"/api/billing/charges/{charge_id}")["DiscountAmount"] == 0
    later = api.json("/api/billing/charges", from_Charge_SaleDate="2026-11-16T10:01")
    assert later["TotalItems"] == 0
    assert [c["Id"] for c in sim.records("charges")] == [charge_id]


def test_put_is_a_full_replace_and_verbs_follow_the_docs(
    sim: NexudusSim, story: dict[str, Any], api: Api
) -> None:
    ada = api.json(f"/api/spaces/coworkers/{story['ada']}")
    slim = {k: ada[k] for k in ("Id", "FullName", "Email", "CountryId", "SimpleTimeZoneId")}
    assert api.send("PUT", "/api/spaces/coworkers", slim).status_code == 200
    after = api.json(f"/api/spaces/coworkers/{story['ada']}")
    assert (after["AccessCardId"], after["Teams"], after["CreatedOn"]) == (
        None,
        [],
        ada["CreatedOn"],
    )
    assert api.json(f"/api/spaces/teams/{story['acme']}")["TeamMembers"] == [story["frances"]]
    assert api.send("PUT", "/api/spaces/coworkers", {**slim, "Id": 999999}).status_code == 404
    assert api.send("PUT", f"/api/spaces/coworkers/{story['ada']}", slim).status_code == 405
    assert api.send("DELETE", f"/api/spaces/coworkers/{story['ada']}", None).status_code == 405
    assert api.send("POST", "/api/billing/coworkerinvoices", {}).status_code == 405
    assert api.send("POST", "/api/spaces/cancelledbookings", {}).status_code == 405
    gone = api.send("DELETE", f"/api/spaces/bookings/{story['alan_booking']}", None)
    assert gone.json()["Message"] == "Booking was successfully deleted."
    assert api.get(f"/api/spaces/bookings/{story['alan_booking']}").status_code == 404
    [tombstone] = sim.records("cancelledbookings")
    assert (tombstone["CancellationReason"], tombstone["CoworkerId"]) == (6, story["alan"])
    contract = api.json(f"/api/billing/coworkercontracts/{story['grace_contract']}")
    cancel = {**contract, "CancellationDate": "2026-11-29T23:00:00Z", "Cancelled": False}
    api.send("PUT", "/api/billing/coworkercontracts", cancel)
    contract = api.json(f"/api/billing/coworkercontracts/{story['grace_contract']}")
    assert (contract["Cancelled"], contract["Active"]) == (True, True)  # read-only, derived
    assert contract["CancellationDateLocal"] == "2026-11-30T00:00:00"


# --- throttling and faults ------------------------------------------------------------------


def test_throttling_is_409_with_retry_after_and_no_body(sim: NexudusSim, api: Api) -> None:
    sim.rate.set(2, 60)
    assert api.get("/api/spaces/coworkers").status_code == 200
    assert api.get("/api/spaces/coworkers").status_code == 200
    throttled = api.get("/api/spaces/coworkers")
    assert (throttled.status_code, throttled.content) == (409, b"")
    assert int(throttled.headers["Retry-After"]) >= 1
    sim.rate.set(None)
    sim.faults.next("rate_limit", seconds=3)
    injected = api.get("/api/spaces/coworkers")
    assert (injected.status_code, injected.headers["Retry-After"], injected.content) == (
        409,
        "3",
        b"",
    )


def test_every_fault_kind(sim: NexudusSim, story: dict[str, Any], api: Api) -> None:
    charge = {
        "CoworkerId": story["alan"], "BusinessId": story["mitte"], "Quantity": 1,
        "DiscountAmount": 0, "CreditAmount": 0, "TotalAmount": 5,
    }  # fmt: skip
    sim.faults.next("fail", status=503, path="/coworkers")
    failed = api.get("/api/spaces/coworkers")
    assert (failed.status_code, failed.json()) == (503, {"Message": "simulated server error"})
    sim.faults.next("drop", path="/coworkers")
    with pytest.raises(requests.ConnectionError):
        api.get("/api/spaces/coworkers")
    sim.faults.next("timeout", seconds=2, path="/coworkers")
    with pytest.raises(requests.ReadTimeout):
        api.get("/api/spaces/coworkers", timeout=0.3)
    sim.faults.next("malformed", path="/coworkers")
    broken = api.get("/api/spaces/coworkers")
    assert broken.status_code == 200
    with pytest.raises(ValueError, match=r"Expecting|Unterminated|Invalid|Extra"):
        json.loads(broken.content.decode("utf-8", "replace"))
    sim.faults.next("after_write", method="POST", path="/charges")
    with pytest.raises(requests.ConnectionError):
        api.send("POST", "/api/billing/charges", charge)
    sim.faults.next("late", seconds=2, method="POST", path="/charges")
    with pytest.raises(requests.ReadTimeout):
        api.send("POST", "/api/billing/charges", charge, timeout=0.3)
    assert len(sim.records("charges")) == 2  # both stored, neither acknowledged
    assert api.get("/api/spaces/coworkers").status_code == 200
    assert sim.calls[("POST", "/api/token")] == 1
    assert sim.calls[("POST", "/api/billing/charges")] == 2


# --- webhooks ---------------------------------------------------------------------------------


def test_operator_changes_send_signed_webhooks(
    sim: NexudusSim, story: dict[str, Any], api: Api, receiver: Receiver
) -> None:
    events = ["CoworkerUpdate", "CoworkerInvoicePaid", "BookingDelete", "CheckinCreated"]
    hooks = sim.add_webhook(receiver.url, events)
    assert set(hooks) == set(events)
    sim.update("coworkers", story["ada"], FullName="Ada Lovelace-Byron", Notes="Café über alles")
    sim.pay_invoice(story["ada_invoice"])
    cancelled = sim.cancel_booking(story["alan_booking"])
    checkin = {"BusinessId": story["mitte"], "CoworkerId": story["ada"], "FromTime": "2026-11-16"}
    api.send("POST", "/api/spaces/checkins", checkin)
    assert sim.webhooks.wait_idle()
    assert len(receiver.got) == 4
    for headers, body in receiver.got:
        assert headers["content-type"] == "application/json"
        assert headers["x-nexudus-hook-signature"] == expected_signature("sim-app-secret", body)
    payloads = receiver.payloads()
    assert all(isinstance(p, list) and len(p) == 1 for p in payloads)
    coworker, invoice, booking, made = (p[0] for p in payloads)
    assert coworker == api.json(f"/api/spaces/coworkers/{story['ada']}")  # as GET-by-id
    assert "ü" in receiver.got[0][1].decode()  # sent as UTF-8, signed over '?'
    raw = hmac.new(b"sim-app-secret", receiver.got[0][1], hashlib.sha256).hexdigest().upper()
    assert raw != receiver.got[0][0]["x-nexudus-hook-signature"]
    assert (invoice["Id"], invoice["Paid"], invoice["PaidAmount"]) == (
        story["ada_invoice"],
        True,
        100.0,
    )
    assert booking["Id"] == story["alan_booking"]
    tombstone = api.json(f"/api/spaces/cancelledbookings/{cancelled}")
    assert cancelled != story["alan_booking"]
    assert (tombstone["UniqueId"], tombstone["BookingNumber"]) == (
        booking["UniqueId"],
        booking["BookingNumber"],
    )
    assert tombstone["CancelledOn"] == "2026-11-16T08:00:00Z"
    assert made["CoworkerId"] == story["ada"]
    assert made["FromTimeLocal"] == "2026-11-16T01:00:00"  # "2026-11-16" is UTC midnight


def test_webhook_scope_unsigned_without_a_secret_and_the_http_api(receiver: Receiver) -> None:
    sim = NexudusSim(app_secret=None).start()
    try:
        ids = sim.load_example(DAY)
        sim.add_webhook(receiver.url, ["TeamUpdated"], business_id=ids["mitte"])
        other = sim.create(
            "businesses", {"Name": "Kreuzberg", "SimpleTimeZoneName": "Europe/Berlin"}
        )
        sim.add_webhook(receiver.url, ["TeamUpdated"], business_id=other)  # another location
        sim.update("teams", ids["initech"], TeamMembers=[ids["bjarne"], ids["initech_accounts"]])
        assert sim.webhooks.wait_idle()
        assert len(receiver.got) == 1
        headers, _ = receiver.got[0]
        assert "x-nexudus-hook-signature" not in headers
        assert receiver.payloads()[0][0]["TeamMembers"] == [ids["bjarne"], ids["initech_accounts"]]
        assert sim.get("coworkers", ids["initech_accounts"])["Teams"] == [ids["initech"]]
        api = Api(sim)
        try:
            listed = api.json("/api/sys/webhooks", WebHook_Action=ACTIONS["TeamUpdated"])
            assert listed["TotalItems"] == 2
            assert all(r["Description"] is None for r in listed["Records"])
            body = {"BusinessId": ids["mitte"], "Name": "x", "Action": 500, "URL": receiver.url}
            bad = api.send("POST", "/api/sys/webhooks", body)
            assert bad.json()["Errors"][0]["PropertyName"] == "Action"
            good = api.send("POST", "/api/sys/webhooks", {**body, "Action": ACTIONS["TeamCreated"]})
            assert good.json()["Message"] == "WebHook was successfully created."
        finally:
            api.http.close()
    finally:
        sim.stop()


def test_a_failing_webhook_is_counted_and_disabled(
    sim: NexudusSim, story: dict[str, Any], receiver: Receiver
) -> None:
    sim.webhook_disable_after = 2
    receiver.status = 500
    hook = sim.add_webhook(receiver.url, ["CoworkerUpdate"])["CoworkerUpdate"]
    for n in range(3):
        sim.update("coworkers", story["grace"], Notes=f"change {n}")
        assert sim.webhooks.wait_idle()
    assert len(receiver.got) == 2
    state = sim.get("webhooks", hook)
    assert (state["Active"], state["ErrorCount"], state["LastError"]) == (False, 2, "HTTP 500")


# --- operator changes ---------------------------------------------------------------------------


def test_corrupt_and_operator_errors(
    sim: NexudusSim, story: dict[str, Any], api: Api, clock: Clock
) -> None:
    clock.advance(minutes=5)
    sim.corrupt("coworkers", story["ada"], "AccessCardId", 123456)
    sim.corrupt("coworkers", story["grace"], "FullName")
    changed = api.json("/api/spaces/coworkers", from_Coworker_UpdatedOn="2026-11-16T08:05")
    assert {r["Id"] for r in changed["Records"]} == {story["ada"], story["grace"]}
    assert api.json(f"/api/spaces/coworkers/{story['ada']}")["AccessCardId"] == 123456
    assert "FullName" not in api.json(f"/api/spaces/coworkers/{story['grace']}")
    assert api.get("/api/spaces/coworkers", orderBy="AccessCardId").status_code == 200
    assert MISSING is not None
    with pytest.raises(WorldError, match="Nickname"):
        sim.create("coworkers", {"FullName": "X", "Nickname": "x"})
    with pytest.raises(WorldError, match="CoworkerId"):
        sim.create("checkins", {"BusinessId": story["mitte"], "CoworkerId": 999999})
    with pytest.raises(WorldError, match="no record"):
        sim.update("bookings", 999999, Notes="x")
    sim.delete("visitors", story["grace_hopper"])
    assert api.get(f"/api/spaces/visitors/{story['grace_hopper']}").status_code == 404
    sim.cancel_contract(story["ada_contract"], DAY + timedelta(days=10))
    contract = sim.get("coworkercontracts", story["ada_contract"])
    assert (contract["Cancelled"], contract["Active"]) == (True, True)
    assert contract["CancellationDateLocal"] == "2026-11-26T00:00:00"
    pass_id = sim.sell_day_pass(story["frances"])
    assert sim.get("coworkertimepasses", pass_id)["TimePassName"] == "Day Pass"


# --- the data sets ----------------------------------------------------------------------------


def test_example_story(story: dict[str, Any], api: Api) -> None:
    def one(path: str, key: str) -> Any:
        return api.json(f"{path}/{story[key]}")

    ada, edsger = one("/api/spaces/coworkers", "ada"), one("/api/spaces/coworkers", "edsger")
    assert (ada["AccessCardId"], ada["AccessPincode"], ada["CompanyName"]) == (
        "12:3456",
        "1234",
        "ACME GmbH",
    )
    assert (edsger["AccessCardId"], edsger["FullName"]) == ("", "Edsger Lost")
    assert one("/api/spaces/coworkers", "radia")["AccessPincode"] == "9753"
    ken = one("/api/billing/coworkercontracts", "ken_contract")
    assert (ken["Cancelled"], ken["Active"], ken["CancellationDateLocal"]) == (
        True,
        False,
        "2026-11-15T00:00:00",
    )
    assert ken["CancellationDate"] == "2026-11-14T23:00:00Z"
    assert one("/api/billing/coworkercontracts", "dennis_contract")["StartDateLocal"] == (
        "2026-11-23T00:00:00"
    )
    server = one("/api/billing/coworkercontracts", "radia_server_access")
    assert (server["TariffName"], server["Active"], server["CancellationDateLocal"]) == (
        "Server Access",
        True,
        "2026-12-16T00:00:00",
    )
    dues = {
        key: one("/api/billing/coworkerinvoices", key)["DueDateLocal"][:10]
        for key in ("ada_invoice", "linus_invoice", "barbara_invoice", "initech_invoice")
    }
    assert dues == {
        "ada_invoice": "2026-11-15",
        "linus_invoice": "2026-10-07",
        "barbara_invoice": "2026-11-11",
        "initech_invoice": "2026-10-27",
    }
    initech = one("/api/spaces/teams", "initech")
    assert (initech["PayingMemberId"], initech["TeamMembers"]) == (
        story["initech_accounts"],
        [story["bjarne"]],
    )
    assert one("/api/billing/coworkerinvoices", "initech_invoice")["Paid"] is False
    assert one("/api/billing/timepasses", "day_pass")["MinutesIncluded"] is None
    margaret = one("/api/billing/coworkertimepasses", "margaret_pass")
    assert (margaret["Used"], margaret["UsedDate"]) == (True, "2026-11-16T07:30:00Z")
    booking = one("/api/spaces/bookings", "alan_booking")
    assert (booking["FromTime"], booking["FromTimeLocal"]) == (
        "2026-11-16T09:00:00Z",
        "2026-11-16T10:00:00",
    )
    assert (booking["ResourceName"], booking["CoworkerFullName"]) == (
        "Ada room",
        "Alan Pay-as-you-go",
    )
    guest = one("/api/spaces/visitors", "grace_hopper")
    assert (guest["VisitorCode"], guest["CoworkerId"], guest["ExpectedArrival"]) == (
        "1111",
        story["ada"],
        "2026-11-16T08:00:00Z",
    )
    members = api.json("/api/billing/coworkercontracts", CoworkerContract_Active="true")
    assert members["TotalItems"] == 8  # every contract but Ken's


def test_load_large_sizes_and_spreads(clock: Clock) -> None:
    sim = NexudusSim()
    sim.now = clock  # type: ignore[method-assign]
    sim.load_large(today=DAY)
    coworkers = sim.records("coworkers")
    assert len(coworkers) == 5000
    assert len(sim.records("bookings")) == 20000
    assert len(sim.records("resources")) == 50
    teams = sim.records("teams")
    assert len(teams) == 500
    assert 8 <= sum(len(t["TeamMembers"]) for t in teams) / len(teams) <= 10
    with_card = sum(1 for c in coworkers if c["AccessCardId"])
    with_pin = sum(1 for c in coworkers if c["AccessPincode"])
    assert with_card > 4500
    assert with_pin > 3500
    contracts = sim.records("coworkercontracts")
    on_plan = {c["CoworkerId"] for c in contracts if c["Active"]}
    assert 4000 < len(on_plan) < 4700
    unpaid = [i for i in sim.records("coworkerinvoices") if not i["Paid"]]
    assert 400 < len(unpaid) < 600
    assert any(i["DueDate"] < "2026-11-13" for i in unpaid)  # some are overdue
    assert any(i["DueDate"] > "2026-11-16" for i in unpaid)
    passes = sim.records("coworkertimepasses")
    assert len({p["CoworkerId"] for p in passes}) > 200
    starts = sorted(b["FromTime"] for b in sim.records("bookings"))
    assert starts[0] < "2026-10-18"
    assert starts[-1] > "2026-12-15"
    sim.start()
    api = Api(sim)
    try:
        page = api.json("/api/spaces/bookings", size=5000, page=20)
        assert (page["CurrentPageSize"], page["TotalPages"], page["HasNextPage"]) == (
            1000,
            20,
            False,
        )
    finally:
        api.http.close()
        sim.stop()


def test_concurrent_clients(sim: NexudusSim, story: dict[str, Any]) -> None:
    """Check-ins from several threads each consume at most one pass and none is lost."""
    errors: list[Exception] = []

    def check_in(n: int) -> None:
        client = Api(sim)
        try:
            body = {"BusinessId": story["mitte"], "CoworkerId": story["alan"]}
            answer = client.send(
                "POST", "/api/spaces/checkins", {**body, "FromTime": f"2026-11-{17 + n}T09:00Z"}
            )
            assert answer.status_code == 200
        except Exception as exc:  # collected for the main thread
            errors.append(exc)
        finally:
            client.http.close()

    threads = [threading.Thread(target=check_in, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    checkins = sim.records("checkins")
    assert len(checkins) == 4
    used = [c["CoworkerTimePassGuid"] for c in checkins if c["CoworkerTimePassGuid"]]
    assert len(used) == len(set(used)) == 2  # Alan had two passes, on two different days
