"""Changes (`edge-sync/1` delta) through the gateway: checked in order, refused
with their path, committed with the cursor, and patched into the index exactly
as a fresh load of the store would build it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edge.access.policy import Presentation, decide
from edge.gateway import Gateway
from edge.site.index import load_index
from edge.site.model import SiteIndex
from tests.conftest import DAY, at, run_async, started_gateway


def _same_index(a: SiteIndex, b: SiteIndex) -> None:
    """Two indexes hold the same site (container order aside)."""
    assert a.holders == b.holders
    assert a.cards == b.cards
    assert {k: sorted(map(repr, v)) for k, v in a.pins.items()} == {
        k: sorted(map(repr, v)) for k, v in b.pins.items()
    }
    assert a.bookings == b.bookings
    assert {k: set(v) for k, v in a.bookings_by_holder.items()} == {
        k: set(v) for k, v in b.bookings_by_holder.items()
    }
    assert a.companies == b.companies
    assert a.plans == b.plans
    assert a.doors == b.doors
    assert a.holidays == b.holidays
    assert a.groups == b.groups
    assert a.schedules == b.schedules
    assert a.rooms == b.rooms
    assert a.credential_count == b.credential_count
    assert a.cursor == b.cursor


def _member(doc: dict[str, Any], mid: str) -> dict[str, Any]:
    return copy.deepcopy(next(m for m in doc["members"] if m["id"] == mid))


def _apply(
    tmp_path: Path, doc: dict[str, Any], changes: list[Any], cursor: str | None = "c-2"
) -> tuple[dict[str, Any], SiteIndex, SiteIndex, int]:
    """Apply changes to a gateway on the example site; the patched and the reloaded index."""

    async def go() -> tuple[dict[str, Any], SiteIndex, SiteIndex, int]:
        gw: Gateway = await started_gateway(tmp_path, doc)
        try:
            result = await gw.updates.apply_changes(changes, cursor, "test")
            fresh = load_index(gw.site.db_path, gw.site.index.generation)
            refused = await gw.site.store.fetchall("SELECT path FROM refused_changes")
            return result, gw.site.index, fresh, len(refused)
        finally:
            await gw.stop()

    return run_async(go())


def _card(ix: SiteIndex, door: str, card: str, hhmm: str = "10:00") -> str:
    d = decide(ix, _state(), Presentation(door=door, at=at(DAY, hhmm), cards=(card,)))
    return f"{'granted' if d.granted else 'denied'}:{d.reason}"


def _state() -> Any:
    from edge.site.runtime import RuntimeState

    return RuntimeState()


def test_member_changes_patch_the_index_as_a_reload_would(
    tmp_path: Path, example_doc: dict[str, Any]
) -> None:
    suspended = _member(example_doc, "m-1002")
    suspended["billing"] = {"status": "suspended"}
    moved = _member(example_doc, "m-1003")
    # m-1003 takes m-1002's card: the later holder keeps it.
    moved["credentials"].append({**_member(example_doc, "m-1002")["credentials"][0], "id": "taken"})
    new = {
        "id": "m-2000",
        "kind": "member",
        "plan": "resident",
        "billing": {"status": "ok"},
        "credentials": [
            {
                "id": "n1",
                "type": "card",
                "format": "H10301",
                "facility_code": 99,
                "card_number": 1,
                "status": "active",
            },
            {"id": "n2", "type": "pin", "pin_hmac": "ab" * 32, "status": "active"},
        ],
        "access": [{"group": "server", "schedule": "always"}],
    }
    # Within the batch, a card passes from m-1006 to m-1005: the later holder keeps it.
    first, second = _member(example_doc, "m-1006"), _member(example_doc, "m-1005")
    shared = {
        "id": "shared",
        "type": "card",
        "format": "raw",
        "value": "abcdef",
        "status": "active",
    }
    first["credentials"].append(shared)
    second["credentials"].append({**shared, "id": "shared-2"})
    booking = copy.deepcopy(example_doc["bookings"][0])
    booking["attendees"] = ["m-2000"]
    changes = [
        {"op": "upsert", "kind": "member", "data": suspended},
        {"op": "upsert", "kind": "member", "data": new},
        {"op": "upsert", "kind": "member", "data": moved},
        {"op": "upsert", "kind": "booking", "data": booking},
        {"op": "delete", "kind": "member", "id": "m-1004"},
        {"op": "delete", "kind": "guest", "id": "g-9"},
        {
            "op": "upsert",
            "kind": "company",
            "data": {"id": "acme", "billing": {"status": "suspended"}, "access": []},
        },
        {"op": "upsert", "kind": "holiday", "data": {"date": DAY.isoformat()}},
        {
            "op": "upsert",
            "kind": "plan",
            "data": {"id": "hot-desk", "access": [{"group": "members", "schedule": "always"}]},
        },
        {"op": "upsert", "kind": "door", "data": {"id": "front", "mode": "card_or_pin"}},
        {"op": "delete", "kind": "member", "id": "m-1004"},  # twice: harmless
        {"op": "upsert", "kind": "member", "data": first},
        {"op": "upsert", "kind": "member", "data": second},
    ]
    result, patched, fresh, refused = _apply(tmp_path, example_doc, changes)
    assert result["applied"] == len(changes)
    assert not result["refused"]
    assert not refused
    assert not result["reloaded"]
    _same_index(patched, fresh)
    assert patched.holders["m-1002"].billing.status == "suspended"
    assert "m-1004" not in patched.holders
    assert "g-9" not in patched.holders
    assert patched.cards["H10301:99:1"].holder == "m-2000"
    key = next(k for k, c in fresh.cards.items() if c.id == "taken")
    assert patched.cards[key].holder == "m-1003"
    d = decide(patched, _state(), Presentation(door="front", at=at(DAY, "10:00"), cards=(key,)))
    assert d.holder == "m-1003"
    assert patched.cards["raw:abcdef"].id == "shared-2"


def test_a_bad_change_is_refused_with_its_path_and_the_rest_apply(
    tmp_path: Path, example_doc: dict[str, Any]
) -> None:
    good = _member(example_doc, "m-1002")
    good["billing"] = {"status": "suspended"}
    bad_date = _member(example_doc, "m-1003")
    bad_date["contract"]["end"] = "2026-13-40"
    changes = [
        {"op": "upsert", "kind": "member", "data": bad_date},
        {"op": "upsert", "kind": "member", "data": {**good, "plan": "gold"}},
        {"op": "frobnicate", "kind": "member", "id": "m-1"},
        {"op": "upsert", "kind": "spaceship", "data": {}},
        {"op": "delete", "kind": "plan", "id": "resident"},  # members still use it
        {"op": "delete", "kind": "site", "id": "mitte"},
        {"op": "upsert", "kind": "site", "data": {**example_doc["site"], "id": "other"}},
        {"op": "upsert", "kind": "guest", "data": {**example_doc["guests"][0], "id": "m-1001"}},
        "not an object",
        {"op": "upsert", "kind": "member", "data": good},
    ]
    result, patched, fresh, refused = _apply(tmp_path, example_doc, changes)
    assert result["applied"] == 1
    assert refused == 9
    paths = [r.split(":")[0] for r in result["refused"]]
    assert paths == [
        "changes[0].data.contract.end",
        "changes[1].data.plan",
        "changes[2].op",
        "changes[3].kind",
        "changes[4].id",
        "changes[5].kind",
        "changes[6].data.id",
        "changes[7].data.id",
        "changes[8]",
    ]
    assert "unknown plan 'gold'" in result["refused"][1]
    assert "still used by" in result["refused"][4]
    _same_index(patched, fresh)
    assert patched.holders["m-1002"].billing.status == "suspended"
    # The refused change left m-1003 as it was.
    assert patched.holders["m-1003"].contract_end is None


def test_references_follow_the_order_of_the_batch(
    tmp_path: Path, example_doc: dict[str, Any]
) -> None:
    member = _member(example_doc, "m-1002")
    changes = [
        # A new plan, then a member on it: fine. The member then leaves the plan,
        # and the plan can go.
        {"op": "upsert", "kind": "plan", "data": {"id": "gold", "access": []}},
        {"op": "upsert", "kind": "member", "data": {**member, "plan": "gold"}},
        {"op": "delete", "kind": "plan", "id": "gold"},  # refused: m-1002 is on it
        {"op": "upsert", "kind": "member", "data": member},
        {"op": "delete", "kind": "plan", "id": "gold"},
    ]
    result, patched, fresh, _ = _apply(tmp_path, example_doc, changes)
    assert [r.split(":")[0] for r in result["refused"]] == ["changes[2].id"]
    assert "member m-1002" in result["refused"][0]
    assert "gold" not in patched.plans
    _same_index(patched, fresh)


def test_a_schedule_change_rebuilds_the_index(tmp_path: Path, example_doc: dict[str, Any]) -> None:
    staffed = next(s for s in example_doc["schedules"] if s["id"] == "staffed")
    closed = {**staffed, "windows": [{"days": "sun", "from": "10:00", "to": "11:00"}]}
    changes = [{"op": "upsert", "kind": "schedule", "data": closed}]
    result, patched, fresh, _ = _apply(tmp_path, example_doc, changes, cursor="c-9")
    assert result["reloaded"]
    assert patched.cursor == "c-9"
    _same_index(patched, fresh)
    # Every hot-desk grant now follows the new windows (the reference day is a Monday).
    hot_desk_card = "H10301:12:3456"
    assert patched.cards[hot_desk_card].holder == "m-1001"
    assert _card(patched, "front", hot_desk_card) != "granted:plan"


def test_the_cursor_moves_with_the_changes(tmp_path: Path, example_doc: dict[str, Any]) -> None:
    async def go() -> None:
        gw = await started_gateway(tmp_path, example_doc)
        try:
            await gw.updates.apply_changes([], "c-77", "test")
            assert gw.site.index.cursor == "c-77"
            assert (await gw.site.store.meta())["cursor"] == "c-77"
            await gw.updates.apply_changes(
                [{"op": "delete", "kind": "member", "id": "m-1"}], None, "t"
            )
            assert (await gw.site.store.meta())["cursor"] == "c-77"
        finally:
            await gw.stop()
        gw = Gateway(gw.config, tmp_path)
        await gw.start()
        try:
            assert gw.site.index.cursor == "c-77"
        finally:
            await gw.stop()

    run_async(go())
