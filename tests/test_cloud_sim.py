"""The cloud simulator against the contract: real HTTP on loopback, a real broker for
pushes, and the gateway's own snapshot reader and push verifier as the judges."""

from __future__ import annotations

import http.client
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.keys import load_public_key
from edge.site.syncdoc import DocError, read_snapshot_file
from edge.sync.push import PushMessage, PushRejected, verify
from hwsim.cloud import CloudSim, PushFailed, WorldError
from tests.conftest import Mosquitto

AUTH = {"Authorization": "Bearer sim-token"}
KIND_OF = {
    "schedules": "schedule",
    "holidays": "holiday",
    "doors": "door",
    "access_groups": "access_group",
    "plans": "plan",
    "companies": "company",
    "members": "member",
    "guests": "guest",
    "rooms": "room",
    "bookings": "booking",
}
SECTIONS = list(KIND_OF)  # in the contract's order
AT = "2026-11-16T09:00:01.123+01:00"


@pytest.fixture
def sim(example_doc: dict[str, Any]) -> Iterator[CloudSim]:
    cloud = CloudSim(example_doc).start()
    yield cloud
    cloud.stop()


def get(sim: CloudSim, endpoint: str, timeout: float = 10, **kw: Any) -> requests.Response:
    url = f"{sim.url}/sites/{sim.site}/{endpoint}"
    return requests.get(url, headers=AUTH, timeout=timeout, **kw)


def post_events(sim: CloudSim, events: list[Any]) -> requests.Response:
    url = f"{sim.url}/sites/{sim.site}/events"
    return requests.post(url, json={"events": events}, headers=AUTH, timeout=10)


def event(eid: str, type: str = "access.granted", **fields: Any) -> dict[str, Any]:
    return {"id": eid, "type": type, "at": AT, "site": "mitte", "gateway": "gw-1", **fields}


def download_snapshot(sim: CloudSim, path: Path) -> Path:
    with get(sim, "snapshot", stream=True) as r:
        assert r.status_code == 200
        with path.open("wb") as f:
            for chunk in r.iter_content(64 * 1024):
                f.write(chunk)
    return path


def read_with_gateway(path: Path) -> tuple[Any, Counter[str]]:
    """The gateway's own streaming reader: the header and the objects per kind."""
    kinds: Counter[str] = Counter()
    header = read_snapshot_file(str(path), lambda kind, obj, where: kinds.update([kind]))
    return header, kinds


def world(sim: CloudSim) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sim.snapshot_bytes())
    doc.pop("generated_at")
    return doc


# --- authentication and routing ------------------------------------------------------


def test_a_missing_or_wrong_token_is_401_and_a_forbidden_gateway_403(sim: CloudSim) -> None:
    url = f"{sim.url}/sites/mitte/changes?since={sim.cursor}"
    r = requests.get(url, timeout=5)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in r.json()["error"]
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 200

    sim.token = "rotated"
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 401
    rotated = {"Authorization": "Bearer rotated"}
    assert requests.get(url, headers=rotated, timeout=5).status_code == 200

    sim.forbidden = True
    r = requests.get(url, headers=rotated, timeout=5)
    assert r.status_code == 403
    assert "forbidden" in r.json()["error"]
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 401  # 401 comes first


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/api/edge/v1/sites/kreuzberg/snapshot", 404, "kreuzberg"),
        ("GET", "/api/edge/v1/sites/mitte/everything", 404, "no such endpoint"),
        ("GET", "/api/edge/v1/sites/mitte/snapshot/", 404, "no such endpoint"),
        ("GET", "/elsewhere", 404, "no such path"),
        ("POST", "/api/edge/v1/sites/mitte/snapshot", 405, "use GET"),
        ("GET", "/api/edge/v1/sites/mitte/events", 405, "use POST"),
        ("OPTIONS", "/api/edge/v1/sites/mitte/snapshot", 501, "Unsupported method"),
    ],
)
def test_wrong_paths_sites_and_methods_are_answered_in_json(
    sim: CloudSim, method: str, path: str, status: int, words: str
) -> None:
    base = sim.url.removesuffix("/api/edge/v1")
    r = requests.request(method, base + path, headers=AUTH, timeout=5)
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/json"
    assert words in r.json()["error"]


# --- snapshot ------------------------------------------------------------------------


def test_the_snapshot_has_the_contracts_shape_and_passes_the_gateways_reader(
    sim: CloudSim, example_doc: dict[str, Any], tmp_path: Path
) -> None:
    path = download_snapshot(sim, tmp_path / "snapshot.json")
    doc = json.loads(path.read_bytes())
    assert list(doc) == ["schema", "cursor", "generated_at", "site", *SECTIONS]
    assert doc["schema"] == "edge-sync/1"
    assert doc["cursor"] == sim.cursor == "c-000001"
    for section in ["site", *SECTIONS]:
        assert doc[section] == example_doc[section]

    header, kinds = read_with_gateway(path)
    assert header.cursor == sim.cursor
    assert header.site.id == "mitte"
    assert header.generated_at is not None
    assert abs(header.generated_at.timestamp() - time.time()) < 60
    expected = {section: len(example_doc[section]) for section in SECTIONS}
    assert {section: kinds[KIND_OF[section]] for section in SECTIONS} == expected


def test_the_snapshot_is_built_from_the_world_as_it_is_now(sim: CloudSim, tmp_path: Path) -> None:
    sim.suspend_member("m-1002")
    sim.end_contract("m-1001", "2026-12-31")
    sim.delete("guest", "g-9")
    cursor = sim.sell_day_pass("m-1008", "dp-new", valid_from="2026-11-17")
    doc = get(sim, "snapshot").json()
    assert doc["cursor"] == cursor == sim.cursor == "c-000005"
    members = {m["id"]: m for m in doc["members"]}
    assert members["m-1002"]["billing"] == {"status": "suspended", "grace_until": None}
    assert members["m-1001"]["contract"]["end"] == "2026-12-31"
    assert members["m-1008"]["day_passes"][-1] == {
        "id": "dp-new",
        "valid_from": "2026-11-17",
        "valid_to": None,
    }
    assert [m["id"] for m in doc["members"]][:3] == ["m-1001", "m-1002", "m-1003"]  # order kept
    assert doc["guests"] == []
    header, _ = read_with_gateway(download_snapshot(sim, tmp_path / "s.json"))
    assert header.cursor == cursor


# --- changes -------------------------------------------------------------------------


def booking(bid: str = "b-77") -> dict[str, Any]:
    return {
        "id": bid,
        "room": "ada",
        "member": "m-1002",
        "start": "2026-11-16T14:00:00+01:00",
        "end": "2026-11-16T15:00:00+01:00",
    }


def test_changes_come_in_order_page_by_page(sim: CloudSim) -> None:
    start = sim.cursor
    cursors = [
        sim.suspend_member("m-1002"),
        sim.end_contract("m-1001", "2026-12-31T18:00:00+01:00"),
        sim.sell_day_pass("m-1008", "dp-x"),
        sim.add_booking(booking()),
        sim.delete("guest", "g-9"),
    ]
    assert cursors == [f"c-00000{n}" for n in range(2, 7)]

    pages = []
    since = start
    while True:
        page = get(sim, f"changes?since={since}&limit=2").json()
        pages.append(page)
        since = page["cursor"]
        if not page["more"]:
            break
    assert [len(p["changes"]) for p in pages] == [2, 2, 1]
    assert [p["cursor"] for p in pages] == [cursors[1], cursors[3], cursors[4]]
    changes = [c for p in pages for c in p["changes"]]
    assert [(c["op"], c["kind"]) for c in changes] == [
        ("upsert", "member"),
        ("upsert", "member"),
        ("upsert", "member"),
        ("upsert", "booking"),
        ("delete", "guest"),
    ]
    assert changes[0]["data"]["billing"] == {"status": "suspended", "grace_until": None}
    assert changes[1]["data"] == sim.member("m-1001")
    assert changes[3]["data"]["status"] == "confirmed"  # defaults filled in
    assert changes[4] == {"op": "delete", "kind": "guest", "id": "g-9"}

    middle = get(sim, f"changes?since={cursors[2]}").json()
    assert middle == {"changes": changes[3:], "cursor": sim.cursor, "more": False}
    assert get(sim, f"changes?since={sim.cursor}").json() == {
        "changes": [],
        "cursor": sim.cursor,
        "more": False,
    }


def test_a_page_holds_at_most_1000_changes(sim: CloudSim) -> None:
    start = sim.cursor
    for i in range(1001):
        sim.upsert("holiday", {"date": "2030-01-01", "name": f"renamed {i} times"})
    page = get(sim, f"changes?since={start}&limit=5000").json()
    assert len(page["changes"]) == 1000
    assert page["more"] is True
    assert page["cursor"] == "c-001001"
    assert len(get(sim, f"changes?since={start}").json()["changes"]) == 500  # the default


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "since: required"),
        ("since=c-000001&limit=0", "limit: 0"),
        ("since=c-000001&limit=x", "limit: not an integer"),
    ],
)
def test_bad_change_queries_are_400(sim: CloudSim, query: str, words: str) -> None:
    r = get(sim, f"changes?{query}")
    assert r.status_code == 400
    assert words in r.json()["error"]


def test_a_cursor_too_old_unknown_or_ahead_is_410(sim: CloudSim) -> None:
    start = sim.cursor
    sim.suspend_member("m-1002")
    assert get(sim, f"changes?since={start}").status_code == 200
    sim.compact()
    r = get(sim, f"changes?since={start}")
    assert r.status_code == 410
    assert r.headers["Content-Type"] == "application/json"
    assert "too old" in r.json()["error"]
    assert get(sim, f"changes?since={sim.cursor}").json()["changes"] == []  # the current one works
    after = sim.suspend_member("m-1001")
    assert len(get(sim, "changes?since=c-000002").json()["changes"]) == 1
    assert get(sim, f"changes?since={after}").status_code == 200
    for since, words in [("c-999999", "ahead"), ("abc", "not a cursor"), ("c-12", "not a cursor")]:
        r = get(sim, f"changes?since={since}")
        assert (r.status_code, words in r.json()["error"]) == (410, True), since


def test_only_the_last_keep_changes_are_kept(example_doc: dict[str, Any]) -> None:
    with CloudSim(example_doc, keep_changes=2) as sim:
        start = sim.cursor
        first = sim.suspend_member("m-1001")
        sim.suspend_member("m-1002")
        sim.suspend_member("m-1006")
        assert get(sim, f"changes?since={start}").status_code == 410
        page = get(sim, f"changes?since={first}").json()
        assert [c["data"]["id"] for c in page["changes"]] == ["m-1002", "m-1006"]


# --- events --------------------------------------------------------------------------


def test_events_are_idempotent_by_id(sim: CloudSim) -> None:
    first = post_events(sim, [event("e1"), event("e2"), event("e3", "usage.day_pass")])
    assert first.json() == {"accepted": ["e1", "e2", "e3"], "rejected": []}
    again = post_events(sim, [event("e2"), event("e3", "usage.day_pass"), event("e4")])
    assert again.json() == {"accepted": ["e2", "e3", "e4"], "rejected": []}
    assert sim.counts() == {"access.granted": 3, "usage.day_pass": 1}
    assert sim.duplicates == 2
    assert sim.received == {"e1": 1, "e2": 2, "e3": 2, "e4": 1}
    assert sorted(sim.events) == ["e1", "e2", "e3", "e4"]
    assert sim.events["e4"]["gateway"] == "gw-1"


def test_rejected_events_say_why_and_are_not_counted(sim: CloudSim) -> None:
    sim.reject_types = {"door.forced"}
    events = [
        event("e1", "door.forced"),
        {"id": "e2", "type": "access.denied"},
        event("e3", at="yesterday"),
        {"id": "e4", "at": AT},
        event("e5", site="kreuzberg"),
        event("e6"),
    ]
    r = post_events(sim, events)
    assert r.status_code == 200
    errors = {item["id"]: item["error"] for item in r.json()["rejected"]}
    assert r.json()["accepted"] == ["e6"]
    assert sorted(errors) == ["e1", "e2", "e3", "e4", "e5"]
    assert "'door.forced' is not accepted" in errors["e1"]
    assert errors["e2"].startswith("at:")
    assert errors["e3"].startswith("at:")
    assert errors["e4"].startswith("type:")
    assert "kreuzberg" in errors["e5"]
    assert sim.counts() == {"access.granted": 1}

    sim.reject_types.clear()  # a rejected event was never stored: it may come again
    assert post_events(sim, [event("e1", "door.forced")]).json()["accepted"] == ["e1"]
    assert sim.counts() == {"access.granted": 1, "door.forced": 1}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "body: not JSON"),
        (b'{"evts": []}', "body.events: missing"),
        (b'{"events": {}}', "body.events: missing or not an array"),
        (json.dumps({"events": [event(f"e{i}") for i in range(501)]}).encode(), "at most 500"),
        (json.dumps({"events": [event("e1"), {"type": "x", "at": AT}]}).encode(), "events[1].id"),
        (json.dumps({"events": [event("e1"), "e2"]}).encode(), "events[1]: not an object"),
    ],
)
def test_a_malformed_batch_is_400_and_stores_nothing(
    sim: CloudSim, body: bytes, words: str
) -> None:
    url = f"{sim.url}/sites/mitte/events"
    r = requests.post(url, data=body, headers=AUTH, timeout=10)
    assert r.status_code == 400
    assert words in r.json()["error"]
    assert sim.events == {}


def test_500_events_is_the_most_in_one_request(sim: CloudSim) -> None:
    r = post_events(sim, [event(f"e{i}") for i in range(500)])
    assert len(r.json()["accepted"]) == 500
    assert sim.counts() == {"access.granted": 500}


# --- faults --------------------------------------------------------------------------


def test_failures_and_rate_limits_match_their_paths_and_run_out(sim: CloudSim) -> None:
    since = f"changes?since={sim.cursor}"
    sim.faults.fail_next(2, status=502, path="changes")
    assert get(sim, since).status_code == 502
    assert get(sim, "snapshot").status_code == 200  # another path: untouched
    r = get(sim, since)
    assert (r.status_code, r.headers["Content-Type"]) == (502, "application/json")
    assert get(sim, since).status_code == 200

    sim.faults.rate_limit_next(1, retry_after=7)
    r = get(sim, since)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "7")
    sim.faults.rate_limit_next(1, path="snapshot", status=503)
    assert get(sim, since).status_code == 200
    r = get(sim, "snapshot")
    assert (r.status_code, r.headers["Retry-After"]) == (503, "2")
    assert get(sim, "snapshot").status_code == 200

    with pytest.raises(ValueError, match="429 or 503"):
        sim.faults.rate_limit_next(1, status=500)


def test_a_failed_or_rate_limited_post_stores_nothing(sim: CloudSim) -> None:
    sim.faults.fail_next(1, path="events")
    sim.faults.rate_limit_next(1, path="events")
    assert post_events(sim, [event("e1")]).status_code == 500
    assert post_events(sim, [event("e1")]).status_code == 429
    assert sim.events == {}
    assert post_events(sim, [event("e1")]).json()["accepted"] == ["e1"]


def test_a_dropped_connection_gets_no_response_and_does_nothing(sim: CloudSim) -> None:
    sim.faults.drop_next(1, path="events")
    with pytest.raises(requests.ConnectionError):
        post_events(sim, [event("e1")])
    assert sim.events == {}
    assert sim.requests[-1] == ("POST", "/api/edge/v1/sites/mitte/events", 0)
    assert post_events(sim, [event("e1")]).status_code == 200
    assert sim.counts() == {"access.granted": 1}


def test_a_truncated_response_has_the_full_length_but_half_the_body(sim: CloudSim) -> None:
    sim.faults.truncate_next(1, path="snapshot")
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request("GET", "/api/edge/v1/sites/mitte/snapshot", headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200
        length = int(response.headers["Content-Length"])
        with pytest.raises(http.client.IncompleteRead) as err:
            response.read()
    finally:
        conn.close()
    assert len(err.value.partial) == length // 2
    assert length == len(sim.snapshot_bytes())
    sim.faults.truncate_next(1, path="changes")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # as requests sees it
        get(sim, f"changes?since={sim.cursor}")
    assert get(sim, "snapshot").status_code == 200


def test_a_malformed_snapshot_starts_well_and_fails_the_gateways_reader(
    sim: CloudSim, tmp_path: Path
) -> None:
    sim.faults.malformed_next(1, path="snapshot")
    r = get(sim, "snapshot")
    assert r.status_code == 200
    assert r.content.startswith(b'{"schema":"edge-sync/1","cursor":"c-000001"')
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    path = tmp_path / "bad.json"
    path.write_bytes(r.content)
    with pytest.raises(DocError):
        read_with_gateway(path)
    read_with_gateway(download_snapshot(sim, tmp_path / "good.json"))  # the next one is fine

    sim.faults.malformed_next(1, path="changes")
    r = get(sim, f"changes?since={sim.cursor}")
    with pytest.raises(requests.JSONDecodeError):
        r.json()


def test_latency_delays_every_api_request(sim: CloudSim) -> None:
    sim.faults.latency_s = 1.0
    with pytest.raises(requests.Timeout):
        get(sim, "snapshot", timeout=0.2)
    sim.faults.latency_s = 0.0
    assert get(sim, "snapshot", timeout=5).status_code == 200


def test_a_stalled_snapshot_can_be_cut_off_midway(sim: CloudSim) -> None:
    sim.faults.stall_snapshot_s = 60
    received = b""
    with get(sim, "snapshot", stream=True) as r:
        length = int(r.headers["Content-Length"])
        chunks = r.iter_content(64)
        received += next(chunks)
        assert received.startswith(b'{"schema":"edge-sync/1"')
        sim.stop()  # the cloud goes away mid-snapshot; stop() does not wait for the stall
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            received += b"".join(chunks)
    assert 0 < len(received) < length


def test_events_stored_but_not_acknowledged_are_not_counted_twice(sim: CloudSim) -> None:
    sim.faults.fail_after_store_next(1)
    sim.faults.fail_after_store_next(1, drop=True)
    assert get(sim, f"changes?since={sim.cursor}").status_code == 200  # GETs are untouched
    batch = [event("e1"), event("e2", "usage.day_pass")]
    assert post_events(sim, batch).status_code == 500
    assert sim.counts() == {"access.granted": 1, "usage.day_pass": 1}
    with pytest.raises(requests.ConnectionError):
        post_events(sim, [*batch, event("e3")])
    assert sim.counts() == {"access.granted": 2, "usage.day_pass": 1}
    r = post_events(sim, [*batch, event("e3")])
    assert r.json() == {"accepted": ["e1", "e2", "e3"], "rejected": []}
    assert sim.counts() == {"access.granted": 2, "usage.day_pass": 1}
    assert sim.duplicates == 2 + 3
    # Stored once, but counted at the simulator as often as it arrived.
    assert sim.received == {"e1": 3, "e2": 3, "e3": 2}


# --- outage --------------------------------------------------------------------------


def test_after_a_stop_the_cloud_comes_back_on_the_same_port(sim: CloudSim) -> None:
    url, port = sim.url, sim.port
    session = requests.Session()
    since = sim.cursor
    assert session.get(f"{url}/sites/mitte/snapshot", headers=AUTH, timeout=5).ok
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(f"{url}/sites/mitte/snapshot", headers=AUTH, timeout=5)
    during = sim.suspend_member("m-1002")  # the operator works on during the outage
    sim.start()
    assert (sim.url, sim.port) == (url, port)
    page = session.get(f"{url}/sites/mitte/changes?since={since}", headers=AUTH, timeout=5).json()
    assert page["cursor"] == during
    assert page["changes"][0]["data"]["billing"]["status"] == "suspended"
    session.close()


# --- a large site --------------------------------------------------------------------


def test_a_large_site_is_served_and_changed_one_member_at_a_time(tmp_path: Path) -> None:
    with CloudSim.large(2000) as sim:
        header, kinds = read_with_gateway(download_snapshot(sim, tmp_path / "a.json"))
        assert kinds["member"] == 2000
        assert kinds["company"] == 202
        changed = {**sim.member("m-7"), "name": "Renamed"}
        cursor = sim.upsert("member", changed)
        header, kinds = read_with_gateway(download_snapshot(sim, tmp_path / "b.json"))
        assert (header.cursor, kinds["member"]) == (cursor, 2000)
        members = json.loads((tmp_path / "b.json").read_bytes())["members"]
        assert members[7] == changed
        assert [m["id"] for m in members[:3]] == ["m-0", "m-1", "m-2"]


# --- the operator ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.suspend_member("m-404"), "member: unknown member 'm-404'"),
        (lambda s: s.set_billing("m-1001", "late"), "status: 'late'"),
        (lambda s: s.set_billing("m-1001", "past_due", "soon"), "grace_until"),
        (lambda s: s.end_contract("m-1001", "2026-13-40"), "end:"),
        (lambda s: s.upsert("widget", {"id": "w"}), "kind: 'widget'"),
        (lambda s: s.upsert("member", {"name": "no id"}), "data.id: required"),
        (lambda s: s.upsert("holiday", {"name": "no date"}), "data.date: required"),
        (lambda s: s.upsert("site", {"id": "kreuzberg"}), "data.id: the site is 'mitte'"),
        (lambda s: s.delete("site", "mitte"), "kind: 'site' cannot be deleted"),
        (lambda s: s.delete("member", "m-404"), "id: unknown member"),
        (lambda s: s.add_booking({**booking(), "room": "nope"}), "room: unknown room"),
        (lambda s: s.add_booking({**booking(), "member": "m-404"}), "member: unknown member"),
        (lambda s: s.add_booking({**booking(), "attendees": ["x"]}), "attendees[0]"),
        (lambda s: s.add_booking({**booking(), "end": None}), "end: required"),
        (lambda s: s.sell_day_pass("m-1007", "dp-7"), "pass_id"),
        (lambda s: s.sell_day_pass("m-1007", valid_to="later"), "valid_to"),
    ],
)
def test_operator_mistakes_are_refused_and_change_nothing(
    example_doc: dict[str, Any], change: Callable[[CloudSim], str], words: str
) -> None:
    sim = CloudSim(example_doc)
    before = world(sim)
    with pytest.raises(WorldError) as err:
        change(sim)
    assert words in str(err.value)
    assert world(sim) == before


def test_a_day_pass_is_sold_from_today_by_default(example_doc: dict[str, Any]) -> None:
    sim = CloudSim(example_doc)
    cursor = sim.sell_day_pass("m-1008")
    sold = sim.member("m-1008")["day_passes"][-1]
    assert sold["id"] == f"dp-{cursor[2:]}"
    assert len(sold["valid_from"]) == 10
    assert sold["valid_to"] is None


def admin(sim: CloudSim, op: str, body: Any = None) -> requests.Response:
    url = sim.url.removesuffix("/api/edge/v1") + "/admin/" + op
    if body is None:
        return requests.get(url, timeout=5)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, timeout=5)


def test_the_admin_api_acts_as_the_operator_without_a_token(sim: CloudSim) -> None:
    r = admin(sim, "suspend", {"member": "m-1002"})
    assert r.json() == {"cursor": sim.cursor}
    assert sim.member("m-1002")["billing"]["status"] == "suspended"
    assert admin(sim, "billing", {"member": "m-1002", "status": "ok"}).status_code == 200
    assert sim.member("m-1002")["billing"]["status"] == "ok"
    assert admin(sim, "end_contract", {"member": "m-1001", "end": "2026-12-31"}).ok
    assert sim.member("m-1001")["contract"]["end"] == "2026-12-31"
    assert admin(sim, "day_pass", {"member": "m-1008", "id": "dp-9"}).ok
    assert sim.member("m-1008")["day_passes"][-1]["id"] == "dp-9"
    assert admin(sim, "booking", booking("b-88")).ok
    holiday = {"date": "2026-12-26", "name": "Boxing Day"}
    assert admin(sim, "upsert", {"kind": "holiday", "data": holiday}).ok
    r = admin(sim, "delete", {"kind": "guest", "id": "g-9"})
    assert r.json()["cursor"] == sim.cursor == "c-000008"
    doc = get(sim, "snapshot").json()
    assert "b-88" in [b["id"] for b in doc["bookings"]]
    assert holiday in doc["holidays"]
    assert doc["guests"] == []

    post_events(sim, [event("e1"), event("e1")])
    r = admin(sim, "counts")
    assert r.json() == {"counts": {"access.granted": 1}, "duplicates": 1, "cursor": sim.cursor}


@pytest.mark.parametrize(
    ("op", "body", "status", "words"),
    [
        ("suspend", {"member": "m-404"}, 400, "unknown member 'm-404'"),
        ("suspend", {}, 400, "member: required"),
        ("suspend", b"nope", 400, "body: not JSON"),
        ("suspend", [], 400, "body: not a JSON object"),
        ("end_contract", {"member": "m-1001", "end": "tomorrow"}, 400, "end:"),
        ("booking", {**booking(), "room": "nope"}, 400, "room: unknown room"),
        ("upsert", {"kind": "widget", "data": {"id": "w"}}, 400, "kind: 'widget'"),
        ("upsert", {"kind": "member"}, 400, "data: required"),
        ("delete", {"kind": "guest", "id": "g-404"}, 400, "unknown guest"),
        ("reboot", {}, 404, "no such admin operation"),
        ("counts", {}, 405, "use GET"),
    ],
)
def test_admin_mistakes_are_named_and_change_nothing(
    sim: CloudSim, op: str, body: Any, status: int, words: str
) -> None:
    before = world(sim)
    r = admin(sim, op, body)
    assert r.status_code == status
    assert words in r.json()["error"]
    assert world(sim) == before


# --- pushes --------------------------------------------------------------------------


class Subscriber:
    """The gateway's side of the broker: every envelope published to the push topic."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-gateway")
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg.payload)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK from the broker"

    def next(self) -> bytes:
        return self.messages.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Nonces:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def seen(self, nonce: str) -> bool:
        return nonce in self.used


@pytest.fixture
def pushing(example_doc: dict[str, Any], mosquitto: Mosquitto) -> Iterator[CloudSim]:
    cloud = CloudSim(example_doc, mqtt=(mosquitto.host, mosquitto.port)).start()
    yield cloud
    cloud.stop()


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto, "edge/mitte/push")
    yield sub
    sub.close()


def accept(sim: CloudSim, raw: bytes, nonces: Nonces) -> PushMessage:
    """What the gateway does with a message: verify, then remember the nonce."""
    keys = {"cloud-2026": load_public_key(sim.public_key_b64)}
    msg = verify(raw, keys, "mitte", time.time(), nonces)
    nonces.used.add(msg.nonce)
    return msg


def test_a_change_is_pushed_as_a_signed_envelope_that_verifies(
    pushing: CloudSim, gateway: Subscriber
) -> None:
    since = pushing.cursor
    pushing.suspend_member("m-1002")
    raw = gateway.next()
    msg = accept(pushing, raw, Nonces())
    assert (msg.type, msg.site, msg.key_id) == ("changes", "mitte", "cloud-2026")
    pulled = get(pushing, f"changes?since={since}").json()["changes"]
    assert msg.body["changes"] == pulled
    assert pulled[0]["data"]["billing"]["status"] == "suspended"
    envelope = json.loads(raw)
    assert set(envelope) == {"key_id", "payload", "sig"}
    assert "=" not in envelope["payload"] + envelope["sig"]  # base64url without padding


def test_sync_resync_and_command_pushes(pushing: CloudSim, gateway: Subscriber) -> None:
    nonces = Nonces()
    command = {"name": "unlock", "door": "front", "seconds": 5}
    sent = [pushing.push_sync(), pushing.push_resync(), pushing.push_command(command)]
    got = [gateway.next() for _ in sent]
    assert [json.loads(raw) for raw in got] == sent
    msgs = [accept(pushing, raw, nonces) for raw in got]
    assert [m.type for m in msgs] == ["sync", "resync", "command"]
    assert msgs[2].body["command"] == command
    assert len(nonces.used) == 3


def test_the_gateway_refuses_a_bad_signature_an_unknown_key_and_a_replay(
    pushing: CloudSim, gateway: Subscriber
) -> None:
    nonces = Nonces()
    pushing.push({"type": "sync"}, bad_signature=True)
    pushing.push({"type": "sync"}, key_id="cloud-1999")
    pushing.push({"type": "sync"}, signing_key=Ed25519PrivateKey.generate())
    reasons = []
    for _ in range(3):
        with pytest.raises(PushRejected) as err:
            accept(pushing, gateway.next(), nonces)
        reasons.append(err.value.reason)
    assert reasons == ["bad_signature", "unknown_key", "bad_signature"]

    pushing.push_sync()
    first = gateway.next()
    accept(pushing, first, nonces)
    pushing.replay_last_push()
    replayed = gateway.next()
    assert replayed == first
    with pytest.raises(PushRejected) as err:
        accept(pushing, replayed, nonces)
    assert err.value.reason == "replayed"


def test_a_lost_push_leaves_the_change_to_be_pulled(pushing: CloudSim, gateway: Subscriber) -> None:
    since = pushing.cursor
    pushing.push_enabled = False
    pushing.suspend_member("m-1002")
    pushing.push_enabled = True
    pushing.push_sync()
    # QoS 1 from one session arrives in order: had the change gone out, it would be first.
    assert accept(pushing, gateway.next(), Nonces()).type == "sync"
    assert len(get(pushing, f"changes?since={since}").json()["changes"]) == 1


def test_pushes_resume_after_the_broker_restarts(
    example_doc: dict[str, Any], mosquitto: Mosquitto, gateway: Subscriber
) -> None:
    sim = CloudSim(example_doc, mqtt=(mosquitto.host, mosquitto.port))
    sim.push_timeout_s = 0.5
    with sim:
        mosquitto.stop()
        cursor = sim.suspend_member("m-1002")  # the push is lost, not raised
        assert cursor == sim.cursor
        with pytest.raises(PushFailed, match="not connected"):
            sim.push_sync()
        mosquitto.start()
        assert gateway.subscribed.wait(10)
        sim.push_timeout_s = 5
        sent = sim.push_sync()
        assert json.loads(gateway.next()) == sent


def test_pushing_needs_a_broker_which_may_come_later(
    example_doc: dict[str, Any], mosquitto: Mosquitto, gateway: Subscriber
) -> None:
    with CloudSim(example_doc) as sim:
        assert sim.suspend_member("m-1002") == "c-000002"  # no broker: changes are only logged
        with pytest.raises(PushFailed, match="no broker"):
            sim.push_sync()
        envelope = sim.envelope({"type": "sync"})  # signed all the same
        assert accept(sim, json.dumps(envelope).encode(), Nonces()).type == "sync"

        sim.connect_mqtt(mosquitto.host, mosquitto.port)
        sim.suspend_member("m-1001")
        msg = accept(sim, gateway.next(), Nonces())
        assert msg.body["changes"][0]["data"]["id"] == "m-1001"


# --- command line ------------------------------------------------------------------


def test_the_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    errors = (tmp_path / "stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwsim.cloud", "--port", "0", "--token", "t-1"],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().split(":", 1) for _ in range(7))
        info = {k.strip(): v.strip() for k, v in lines.items()}
        assert info["token"] == "t-1"
        assert info["push"] == "off"
        load_public_key(info["public_key"])
        r = requests.get(
            f"{info['url']}/sites/{info['site']}/snapshot",
            headers={"Authorization": "Bearer t-1"},
            timeout=10,
        )
        assert r.json()["schema"] == "edge-sync/1"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        errors.close()
