"""The bridge's published site: validation, references, one card per holder,
change order, and the config that makes the fixed part of a site."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.config import fixed_objects, parse_config
from bridge.platforms.base import (
    Span,
    billing_status,
    card_credential,
    pin_credential,
    plans_of,
)
from bridge.site import SiteState
from edge.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Berlin")


def member(mid: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": mid,
        "name": mid,
        "kind": "member",
        "billing": {"status": "ok", "grace_until": None},
        "credentials": [],
    }
    doc.update(fields)
    return doc


def card(cid: str, number: int) -> dict[str, Any]:
    return {
        "id": cid,
        "type": "card",
        "format": "H10301",
        "facility_code": 12,
        "card_number": number,
        "status": "active",
    }


def site_with(*objs: tuple[str, dict[str, Any]]) -> SiteState:
    state = SiteState("mitte")
    staged = state.stage({(k, o["id"]): o for k, o in objs})
    assert not staged.refusals, [r.text() for r in staged.refusals.values()]
    state.commit(staged)
    return state


def test_changes_come_in_an_order_a_gateway_can_apply() -> None:
    state = SiteState("mitte")
    staged = state.stage(
        {
            ("member", "m-1"): member("m-1", company="co-1"),
            ("company", "co-1"): {"id": "co-1", "billing": {"status": "ok"}},
        }
    )
    assert [c["kind"] for c in staged.changes] == ["company", "member"]
    state.commit(staged)
    assert state.seq == 2
    # Deleting both: the member first, then what it referred to.
    staged = state.stage({("member", "m-1"): None, ("company", "co-1"): None})
    assert [(c["op"], c["kind"]) for c in staged.changes] == [
        ("delete", "member"),
        ("delete", "company"),
    ]


def test_an_unchanged_object_makes_no_change() -> None:
    state = site_with(("member", member("m-1")))
    staged = state.stage({("member", "m-1"): member("m-1")})
    assert staged.changes == []
    state.commit(staged)
    assert state.seq == 1


def test_an_invalid_object_keeps_its_last_good_version_and_says_why() -> None:
    state = site_with(("member", member("m-1", name="Ada")))
    bad = member("m-1", name="Ada", contract={"start": "2026-13-01", "end": None})
    staged = state.stage({("member", "m-1"): bad}, {("member", "m-1"): "coworkers 1"})
    assert staged.changes == []
    refusal = staged.refusals[("member", "m-1")]
    assert refusal.path == "members[m-1].contract.start"
    assert "coworkers 1" in refusal.text()
    state.commit(staged)
    assert json.loads(state.text(("member", "m-1")) or "{}")["name"] == "Ada"
    # Fixed on the platform: the refusal clears.
    staged = state.stage({("member", "m-1"): member("m-1", name="Ada L.")})
    assert ("member", "m-1") in staged.cleared
    state.commit(staged)
    assert ("member", "m-1") not in state.refusals


def test_a_booking_whose_member_left_leaves_with_the_reason() -> None:
    state = site_with(("room", {"id": "ada"}), ("member", member("m-1")))
    booking = {
        "id": "b-1",
        "room": "ada",
        "member": "m-1",
        "start": "2026-11-16T10:00:00+01:00",
        "end": "2026-11-16T11:00:00+01:00",
        "status": "confirmed",
    }
    state.commit(state.stage({("booking", "b-1"): booking}))
    staged = state.stage({("member", "m-1"): None})
    assert [(c["op"], c["kind"]) for c in staged.changes] == [
        ("delete", "booking"),
        ("delete", "member"),
    ]
    assert "member 'm-1' is not in the site" in staged.refusals[("booking", "b-1")].reason


def test_a_new_object_with_a_dangling_reference_is_not_published() -> None:
    state = SiteState("mitte")
    staged = state.stage({("member", "m-1"): member("m-1", company="co-9")})
    assert staged.changes == []
    assert staged.refusals[("member", "m-1")].reason == "company 'co-9' is not in the site"


def test_a_card_stays_with_the_holder_who_has_it() -> None:
    state = site_with(("member", member("m-1", credentials=[card("m-1-card", 3456)])))
    staged = state.stage({("member", "m-2"): member("m-2", credentials=[card("m-2-card", 3456)])})
    [change] = staged.changes
    assert change["data"]["credentials"] == []
    assert "already belongs to 'm-1'" in staged.refusals[("member", "m-2")].reason


def test_a_card_moved_in_one_batch_goes_to_the_new_holder() -> None:
    state = site_with(("member", member("m-1", credentials=[card("m-1-card", 3456)])))
    staged = state.stage(
        {
            ("member", "m-1"): member("m-1"),
            ("member", "m-2"): member("m-2", credentials=[card("m-2-card", 3456)]),
        }
    )
    assert not staged.refusals
    state.commit(staged)
    assert (
        json.loads(state.text(("member", "m-2")) or "{}")["credentials"][0]["card_number"] == 3456
    )


def test_the_snapshot_has_every_section() -> None:
    state = site_with(("member", member("m-1")))
    text = '{"schema":"edge-sync/1"' + "".join(state.snapshot_parts()) + "}"
    doc = json.loads(text)
    assert doc["site"] is None
    assert doc["members"][0]["id"] == "m-1"
    assert doc["bookings"] == []


# --- shared mapping rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12:3456", {"format": "H10301", "facility_code": 12, "card_number": 3456}),
        ("H10306:1000:50001", {"format": "H10306", "facility_code": 1000, "card_number": 50001}),
        ("c1000:100:70001", {"format": "C1000", "facility_code": 100, "card_number": 70001}),
        (" 0A0B0C0D ", {"format": "raw", "value": "0a0b0c0d"}),
        ("raw:04123456", {"format": "raw", "value": "04123456"}),
    ],
)
def test_card_numbers_as_operators_type_them(text: str, expected: dict[str, Any]) -> None:
    assert card_credential(text, "H10301") == {"type": "card", **expected}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("123456", "bare number"),
        ("12:99999", "does not fit H10301"),
        ("300:1", "does not fit H10301"),
        ("ab:cd", "must be digits"),
        ("1:2:3:4", "not a card number"),
        ("XYZ-12", "not a card number"),
    ],
)
def test_card_numbers_that_cannot_be_read_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        card_credential(text, "H10301")


def test_pins_become_the_contracts_digest_and_need_the_key() -> None:
    key = bytes.fromhex("5e" * 32)
    digest = pin_credential("1234", key)["pin_hmac"]
    assert len(digest) == 64
    with pytest.raises(ValueError, match="1 to 16 digits"):
        pin_credential("12a4", key)
    with pytest.raises(ValueError, match="not provisioned"):
        pin_credential("1234", None)


def test_billing_follows_the_oldest_unpaid_invoice_with_grace() -> None:
    due = 1_000_000.0
    assert billing_status([], 3, due, TZ) == ({"status": "ok", "grace_until": None}, None)
    ok, at = billing_status([due], 3, due - 1, TZ)
    assert ok["status"] == "ok"
    assert at == due
    past_due, at = billing_status([due + 500, due], 3, due + 10, TZ)
    assert past_due["status"] == "past_due"
    assert at == due + 3 * 86400
    assert past_due["grace_until"] == "1970-01-15T14:46:40+01:00"
    suspended, at = billing_status([due], 3, due + 3 * 86400, TZ)
    assert suspended == {"status": "suspended", "grace_until": None}
    assert at is None


def test_the_current_plan_is_the_contract_and_other_plans_are_grants() -> None:
    cfg = parse_config((REPO / "bridge/example.toml").read_text())
    site = cfg.sites["mitte"]
    today = date(2026, 11, 16)
    spans = [
        Span("resident", date(2026, 1, 1), None),
        Span("server-access", date(2026, 1, 1), date(2026, 12, 16)),
        Span("hot-desk", date(2026, 11, 23), None),
    ]
    plans = plans_of(spans, today, site, TZ)
    assert plans.plan == "resident"
    assert plans.contract == {"start": "2026-01-01", "end": None}
    assert {
        "group": "server",
        "schedule": "always",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-16",
    } in plans.grants
    # Nothing current: the next one; nothing next: the last one.
    assert (
        plans_of([Span("hot-desk", date(2026, 11, 23), None)], today, site, TZ).plan == "hot-desk"
    )
    ended = plans_of([Span("hot-desk", date(2025, 1, 1), date(2026, 11, 15))], today, site, TZ)
    assert ended.contract == {"start": "2025-01-01", "end": "2026-11-15"}
    assert ended.rechecks == []


# --- configuration --------------------------------------------------------------------


def test_the_example_config_is_valid_and_makes_a_valid_site() -> None:
    cfg = parse_config((REPO / "bridge/example.toml").read_text(), "bridge/example.toml")
    assert set(cfg.sites) == {"mitte", "kreuzberg"}
    objs = fixed_objects("mitte", cfg.sites["mitte"])
    state = SiteState("mitte")
    staged = state.stage(objs)
    assert not staged.refusals
    assert ("door", "front") in staged.texts
    assert ("holiday", "2026-12-25") in staged.texts


BASE = """
[platforms.nx]
type = "nexudus"
username = "ops@example.com"
[sites.s]
platform = "nx"
locations = ["1"]
[sites.s.schedules.always]
windows = [{days = "mon-sun", from = "00:00", to = "24:00"}]
[sites.s.doors.front]
[sites.s.access_groups]
members = ["front"]
"""


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        (
            '[sites.s.plans.p]\nmatch = ["A"]\naccess = [{group = "nope", schedule = "always"}]\n',
            "sites.s.plans.p.access[0].group: unknown access group 'nope'",
        ),
        (
            '[sites.s.rooms.r]\nresource = "R"\ndoor = "back"\n',
            "sites.s.rooms.r.door: unknown door",
        ),
        ('[sites.s.usage]\ncheckin_doors = ["back"]\n', "sites.s.usage.checkin_doors[0]"),
        ('[sites.s.holidays]\n"2026-02-30" = "x"\n', "sites.s.holidays.2026-02-30: not a date"),
        ('[sites.t]\nplatform = "zz"\nlocations = ["1"]\n', "sites.t.platform: unknown platform"),
        ('[platforms.y]\ntype = "cobot"\nurl = "https://x"\n', "platforms.y"),
        ('[bridge]\ntls_cert = "/x.pem"\n', "bridge: tls_cert and tls_key go together"),
        ("[sites.s.companies.c]\nmatch = []\n", "sites.s.companies.c.match"),
    ],
)
def test_bad_configs_name_the_key(extra: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra, "bridge.toml")
    assert any(path in p for p in err.value.problems), err.value.problems
