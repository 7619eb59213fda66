"""Validation of `edge-sync/1` documents: what is refused, and with which path.

The contract: the gateway "must reject a document that breaks this contract
with an error that names the offending path (`members[12].contract.end: not a
date`)", and "must ignore unknown fields". Every refusal below asserts the exact
path of the first problem and a fragment of the message that tells an operator
what is wrong.

Object-level cases run twice: through `validate_object` for the single object,
and embedded at the same place in the example site through the streaming
reader, so the reader must report the same path.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edge.site import fastdoc
from edge.site.fastdoc import (
    CredentialF,
    Declined,
    GuestData,
    GuestF,
    MemberData,
    MemberF,
    read_snapshot_fast,
)
from edge.site.store import Rows
from edge.site.syncdoc import (
    SCHEMA,
    Access,
    Billing,
    Contract,
    CredentialDoc,
    DayPassDoc,
    DocError,
    GuestDoc,
    MemberDoc,
    SnapshotHeader,
    _Yielding,
    read_snapshot,
    read_snapshot_file,
    validate_object,
)
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, pin_hmac
from tests.conftest import DAY, index_of

Doc = dict[str, Any]
Mutation = Callable[[Any], None]

# Where objects of each kind live in a snapshot.
SECTIONS = {
    "schedule": "schedules",
    "holiday": "holidays",
    "door": "doors",
    "access_group": "access_groups",
    "plan": "plans",
    "company": "companies",
    "member": "members",
    "guest": "guests",
    "room": "rooms",
    "booking": "bookings",
}


def write(tmp_path: Path, content: Doc | bytes, name: str = "snapshot.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def read(tmp_path: Path, content: Doc | bytes) -> tuple[SnapshotHeader, list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    header = read_snapshot_file(
        str(write(tmp_path, content)), lambda kind, obj, _path: seen.append((kind, obj))
    )
    return header, seen


def refused(tmp_path: Path, content: Doc | bytes) -> DocError:
    with pytest.raises(DocError) as info:
        read(tmp_path, content)
    return info.value


def assert_error(err: DocError, path: str, fragment: str) -> None:
    assert (err.path, fragment in err.message) == (path, True), str(err)
    assert str(err) == f"{path}: {err.message}"
    assert err.message.strip()
    assert err.message != path


def cred(doc: Doc, holder: int, index: int) -> Doc:
    return doc["members"][holder]["credentials"][index]  # type: ignore[no-any-return]


def setter(key: str, value: Any) -> Mutation:
    def mutate(obj: Any) -> None:
        obj[key] = value

    return mutate


# --- the example site is what the paths below count in ----------------------


def test_example_site_layout_the_tables_rely_on(example_doc: Doc) -> None:
    ids = [m["id"] for m in example_doc["members"]]
    assert ids[:12] == [f"m-{1001 + i}" for i in range(12)]
    assert [c["id"] for c in example_doc["members"][0]["credentials"]] == [
        "m-1001-card",
        "m-1001-pin",
    ]
    assert example_doc["members"][7]["credentials"][0]["format"] == "raw"
    assert [s["id"] for s in example_doc["schedules"]] == ["always", "staffed", "lunch", "night"]
    assert example_doc["doors"][0]["unlock_schedule"] == "lunch"
    assert example_doc["bookings"][0]["attendees"] == ["m-1007"]


def test_example_site_is_accepted(tmp_path: Path, example_doc: Doc) -> None:
    header, seen = read(tmp_path, example_doc)
    assert header.cursor == "c-000001"
    assert header.site.id == "mitte"
    kinds = [k for k, _ in seen]
    assert kinds.count("member") == 12
    assert kinds.count("guest") == 1
    assert kinds.count("site") == 1


# --- single objects ---------------------------------------------------------------

# (kind, index of the object in the example site, mutation, path below the object,
#  fragment of the message)
OBJECT_CASES = [
    # wrong types
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(facility_code="12"),
        ".credentials[0].facility_code",
        "integer",
        id="facility-code-as-string",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(status="enabled"),
        ".credentials[0].status",
        "'active' or 'disabled'",
        id="credential-status-enabled",
    ),
    pytest.param(
        "member",
        0,
        setter("day_pass_balance", True),
        ".day_pass_balance",
        "integer",
        id="bool-for-day-pass-balance",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(card_number=False),
        ".credentials[0].card_number",
        "integer",
        id="bool-for-card-number",
    ),
    pytest.param("room", 0, setter("capacity", True), ".capacity", "integer", id="bool-capacity"),
    pytest.param(
        "company", 0, setter("day_passes", 2.5), ".day_passes", "integer", id="float-day-passes"
    ),
    pytest.param(
        "company", 0, setter("credits", -1), ".credits", "greater than", id="negative-credits"
    ),
    pytest.param("member", 0, setter("kind", "staff"), ".kind", "'member'", id="unknown-kind"),
    pytest.param("door", 1, setter("mode", "face"), ".mode", "card_and_pin", id="unknown-mode"),
    pytest.param(
        "door", 0, setter("first_person_in", "yes"), ".first_person_in", "bool", id="str-for-bool"
    ),
    pytest.param("member", 0, setter("id", ""), ".id", "identifier", id="empty-id"),
    pytest.param("member", 0, setter("id", "x" * 65), ".id", "64", id="id-too-long"),
    pytest.param("member", 0, setter("billing", None), ".billing", "dictionary", id="billing-null"),
    pytest.param(
        "member",
        0,
        lambda m: m.pop("billing"),
        ".billing",
        "required",
        id="billing-missing",
    ),
    pytest.param(
        "booking", 0, lambda b: b.pop("start"), ".start", "required", id="booking-start-missing"
    ),
    # cards and PINs
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(card_number=70000),
        ".credentials[0].card_number",
        "does not fit H10301",
        id="h10301-number-70000",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(facility_code=256),
        ".credentials[0].facility_code",
        "does not fit H10301",
        id="h10301-facility-256",
    ),
    pytest.param(
        "member",
        5,
        lambda m: m["credentials"][0].update(facility_code=4096),
        ".credentials[0].facility_code",
        "does not fit C1000",
        id="c1000-company-4096",
    ),
    pytest.param(
        "member",
        6,
        lambda m: m["credentials"][0].update(card_number=1 << 19),
        ".credentials[0].card_number",
        "does not fit H10304",
        id="h10304-number-2**19",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(card_number=-1),
        ".credentials[0].card_number",
        "does not fit",
        id="negative-card-number",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].pop("card_number"),
        ".credentials[0].card_number",
        "required",
        id="card-number-missing",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][0].update(format="H99999"),
        ".credentials[0].format",
        "'H10301'",
        id="unknown-card-format",
    ),
    pytest.param(
        "member",
        7,
        lambda m: m["credentials"][0].update(value="0A0B0C0G"),
        ".credentials[0].value",
        "hex",
        id="raw-value-not-hex",
    ),
    pytest.param(
        "member",
        7,
        lambda m: m["credentials"][0].pop("value"),
        ".credentials[0].value",
        "required",
        id="raw-value-missing",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][1].update(pin_hmac="ab" * 31),
        ".credentials[1].pin_hmac",
        "64 hex",
        id="pin-hmac-62-hex",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][1].update(pin_hmac="g" * 64),
        ".credentials[1].pin_hmac",
        "64 hex",
        id="pin-hmac-not-hex",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"][1].update(pin_hmac="1234"),
        ".credentials[1].pin_hmac",
        "64 hex",
        id="pin-in-clear",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["credentials"].append(dict(m["credentials"][0], card_number=9)),
        ".credentials[2].id",
        "duplicate credential id 'm-1001-card'",
        id="duplicate-credential-id",
    ),
    # dates, instants and times of day
    pytest.param(
        "member",
        0,
        lambda m: m["contract"].update(end="2026-13-01"),
        ".contract.end",
        "not a date",
        id="date-month-13",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["contract"].update(start="21.11.2026"),
        ".contract.start",
        "not a date",
        id="date-dotted",
    ),
    pytest.param("holiday", 0, setter("date", "2026-02-30"), ".date", "no such day", id="feb-30"),
    pytest.param(
        "holiday", 0, setter("date", "2026-12-25T00:00:00Z"), ".date", "not a date", id="holiday-ts"
    ),
    pytest.param(
        "guest",
        0,
        setter("valid_from", "2026-11-16T09:00:00"),
        ".valid_from",
        "offset",
        id="instant-without-offset",
    ),
    pytest.param(
        "guest",
        0,
        setter("valid_to", "2026-11-16"),
        ".valid_to",
        "not an instant",
        id="date-where-instant-wanted",
    ),
    pytest.param(
        "member",
        0,
        lambda m: m["billing"].update(grace_until="2026-11-20T00:00:00+0100"),
        ".billing.grace_until",
        "not an instant",
        id="offset-without-colon",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][0].update({"from": "25:00"}),
        ".windows[0].from",
        "time of day",
        id="time-25:00",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][0].update({"from": "24:00", "to": "23:00"}),
        ".windows[0].from",
        "24:00",
        id="24:00-as-from",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][0].update(to="24:01"),
        ".windows[0].to",
        "time of day",
        id="24:01-as-to",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][1].update({"from": "8:00"}),
        ".windows[1].from",
        "HH:MM",
        id="time-without-leading-zero",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][0].update({"from": "08:00", "to": "08:00"}),
        ".windows[0].to",
        "empty",
        id="empty-window",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][0].update(days="monday-friday"),
        ".windows[0].days",
        "unknown day 'monday-friday'",
        id="unknown-day-name",
    ),
    pytest.param(
        "schedule",
        1,
        lambda s: s["windows"][1].update(days="sat-"),
        ".windows[1].days",
        "unknown day",
        id="open-day-range",
    ),
    # ranges
    pytest.param(
        "member",
        0,
        setter("contract", {"start": "2026-06-01", "end": "2026-05-01"}),
        ".contract.end",
        "ends before it starts",
        id="contract-end-month-before-start",
    ),
    pytest.param(
        "member",
        0,
        setter("contract", {"start": "2026-06-01", "end": "2026-05-31"}),
        ".contract.end",
        "ends before it starts",
        id="contract-end-date-day-before-start-date",
    ),
    pytest.param(
        "member",
        0,
        setter(
            "contract", {"start": "2026-06-01T12:00:00+02:00", "end": "2026-06-01T11:00:00+02:00"}
        ),
        ".contract.end",
        "ends before it starts",
        id="contract-end-instant-before-start",
    ),
    pytest.param(
        "booking",
        0,
        setter("end", "2026-11-16T09:00:00+01:00"),
        ".end",
        "ends before it starts",
        id="booking-end-before-start",
    ),
    pytest.param(
        "booking",
        0,
        lambda b: b.update(end=b["start"]),
        ".end",
        "ends before it starts",
        id="booking-zero-length",
    ),
    pytest.param(
        "guest",
        0,
        setter("valid_to", "2026-11-16T08:00:00+01:00"),
        ".valid_to",
        "ends before it starts",
        id="guest-valid-to-before-valid-from",
    ),
    pytest.param(
        "member",
        10,
        lambda m: m["access"][0].update(
            valid_from="2026-12-01T00:00:00+01:00", valid_to="2026-11-01T00:00:00+01:00"
        ),
        ".access[0].valid_to",
        "ends before it starts",
        id="grant-valid-to-before-valid-from",
    ),
    pytest.param(
        "member",
        6,
        lambda m: m["day_passes"][0].update(valid_from="2026-11-16", valid_to="2026-11-10"),
        ".day_passes[0].valid_to",
        "ends before it starts",
        id="day-pass-valid-to-before-valid-from",
    ),
    # kinds
    pytest.param(
        "member", 6, setter("plan", "hot-desk"), ".plan", "nonmember", id="nonmember-with-plan"
    ),
    pytest.param("site", None, setter("timezone", "Mars/Olympus"), ".timezone", "IANA", id="tz"),
    pytest.param("site", None, setter("timezone", ""), ".timezone", "time zone", id="tz-empty"),
    pytest.param(
        "site", None, setter("timezone", "Europe"), ".timezone", "time zone", id="tz-a-directory"
    ),
    pytest.param(
        "site", None, setter("timezone", "A" * 300), ".timezone", "time zone", id="tz-overlong"
    ),
]


def _object(doc: Doc, kind: str, index: int | None) -> tuple[Any, str]:
    if kind == "site":
        return doc["site"], "site"
    section = SECTIONS[kind]
    return doc[section][index], f"{section}[{index}]"


@pytest.mark.parametrize(("kind", "index", "mutate", "below", "fragment"), OBJECT_CASES)
def test_object_refused(
    example_doc: Doc, kind: str, index: int | None, mutate: Mutation, below: str, fragment: str
) -> None:
    obj, path = _object(example_doc, kind, index)
    validate_object(kind, copy.deepcopy(obj), path)  # the unchanged object is fine
    mutate(obj)
    with pytest.raises(DocError) as info:
        validate_object(kind, obj, path)
    assert_error(info.value, path + below, fragment)


@pytest.mark.parametrize(("kind", "index", "mutate", "below", "fragment"), OBJECT_CASES)
def test_object_refused_inside_document(
    tmp_path: Path,
    example_doc: Doc,
    kind: str,
    index: int | None,
    mutate: Mutation,
    below: str,
    fragment: str,
) -> None:
    obj, path = _object(example_doc, kind, index)
    mutate(obj)
    assert_error(refused(tmp_path, example_doc), path + below, fragment)


def test_the_contracts_own_error_example() -> None:
    member = {
        "id": "m-2000",
        "kind": "member",
        "billing": {"status": "ok"},
        "contract": {"start": "2026-01-01", "end": "next year"},
    }
    with pytest.raises(DocError) as info:
        validate_object("member", member, "members[12]")
    assert info.value.path == "members[12].contract.end"
    assert str(info.value).startswith("members[12].contract.end: not a date")


def test_not_an_object_is_refused_by_validate_object() -> None:
    for kind, data in [("member", ["m-1"]), ("door", "front"), ("schedule", None)]:
        with pytest.raises(DocError) as info:
            validate_object(kind, data, "x[3]")
        assert_error(info.value, "x[3]", "not an object")


@pytest.mark.parametrize(
    ("days", "start", "end"),
    [
        pytest.param("mon-fri", "00:00", "24:00", id="whole-days"),
        pytest.param("fri-mon", "22:00", "06:00", id="wrapping-days-overnight"),
        pytest.param("sun", "23:59", "00:00", id="one-minute-to-midnight"),
    ],
)
def test_valid_windows_are_accepted(days: str, start: str, end: str) -> None:
    validate_object(
        "schedule", {"id": "s", "windows": [{"days": days, "from": start, "to": end}]}, "s"
    )


def test_one_day_contract_and_mixed_bounds_are_accepted() -> None:
    for contract in (
        {"start": "2026-06-01", "end": "2026-06-01"},
        {"start": "2026-06-01T09:00:00+02:00", "end": "2026-06-01"},
        {"start": "2026-06-01", "end": "2026-06-01T09:00:00+02:00"},
        {"start": None, "end": "2026-06-01"},
    ):
        validate_object(
            "member",
            {"id": "m", "kind": "member", "billing": {"status": "ok"}, "contract": contract},
            "members[0]",
        )


# --- whole documents --------------------------------------------------------------


def _truncate_mid_member(doc: Doc) -> bytes:
    data = json.dumps(doc).encode()
    cut = data.index(b'"m-1005"') + 4  # inside the member's id string
    return data[:cut]


def _bytes(transform: Callable[[bytes], bytes]) -> Callable[[Doc], bytes]:
    return lambda doc: transform(json.dumps(doc).encode())


def _edit(mutate: Callable[[Doc], Any]) -> Callable[[Doc], Doc]:
    def build(doc: Doc) -> Doc:
        mutate(doc)
        return doc

    return build


def _shared_card_with_guest(doc: Doc) -> None:
    doc["guests"][0]["credentials"].append(
        dict(cred(doc, 0, 0), id="g-9-card")  # Ada's card, on her guest
    )


DOCUMENT_CASES = [
    # the header
    pytest.param(
        _edit(setter("schema", "edge-sync/2")), "schema", "'edge-sync/1'", id="wrong-schema"
    ),
    pytest.param(_edit(lambda d: d.pop("schema")), "schema", "'edge-sync/1'", id="no-schema"),
    pytest.param(
        _edit(lambda d: (d.update(schema="edge-sync/2"), d["doors"][1].update(mode="face"))),
        "schema",
        "'edge-sync/1'",
        id="wrong-schema-reported-before-body-problems",
    ),
    pytest.param(_edit(lambda d: d.pop("cursor")), "cursor", "required", id="missing-cursor"),
    pytest.param(_edit(setter("cursor", "")), "cursor", "non-empty", id="empty-cursor"),
    pytest.param(_edit(setter("cursor", 17)), "cursor", "string", id="cursor-not-a-string"),
    pytest.param(
        _edit(setter("generated_at", "yesterday")),
        "generated_at",
        "not an instant",
        id="bad-generated-at",
    ),
    pytest.param(_edit(lambda d: d.pop("site")), "site", "required", id="missing-site"),
    pytest.param(_edit(setter("site", "mitte")), "site", "not an object", id="site-not-object"),
    pytest.param(
        _edit(lambda d: d["site"].pop("timezone")), "site.timezone", "required", id="no-timezone"
    ),
    pytest.param(
        _edit(lambda d: d["site"].update(timezone="Europe/Berlim")),
        "site.timezone",
        "'Europe/Berlim'",
        id="bad-timezone",
    ),
    # the JSON itself
    pytest.param(
        _bytes(lambda b: b.replace(b'"capacity": 6', b'"capacity": 6,,')),
        "(document)",
        "malformed JSON",
        id="malformed-json",
    ),
    pytest.param(
        _bytes(lambda b: b.replace(b'"capacity": 6', b'"capacity": NaN')),
        "(document)",
        "malformed JSON",
        id="nan",
    ),
    pytest.param(_truncate_mid_member, "(document)", "malformed JSON", id="truncated-mid-member"),
    pytest.param(
        _bytes(lambda b: b[:-2]), "(document)", "malformed JSON", id="truncated-last-bytes"
    ),
    pytest.param(
        _bytes(lambda b: b + b'{"schema": "edge-sync/1"}'),
        "(document)",
        "malformed JSON",
        id="trailing-garbage",
    ),
    pytest.param(
        _bytes(lambda b: b.replace(b'"Mitte"', b'"Mi\xfftte"')),
        "(document)",
        "malformed JSON",
        id="invalid-utf8",
    ),
    pytest.param(lambda _d: b"", "(document)", "malformed JSON", id="empty-file"),
    pytest.param(lambda d: [d], "(document)", "not a JSON object", id="top-level-array"),
    pytest.param(lambda _d: b"null", "(document)", "not a JSON object", id="top-level-null"),
    pytest.param(
        lambda _d: b'"edge-sync/1"', "(document)", "not a JSON object", id="top-level-string"
    ),
    # sections and items
    pytest.param(
        _edit(setter("members", {"m-1001": {}})), "members", "not an array", id="members-object"
    ),
    pytest.param(_edit(setter("members", None)), "members", "not an array", id="members-null"),
    pytest.param(
        _edit(setter("bookings", "b-55")), "bookings", "not an array", id="bookings-string"
    ),
    pytest.param(_edit(setter("doors", {"front": {}})), "doors", "not an array", id="doors-object"),
    pytest.param(
        _edit(lambda d: d["members"].__setitem__(4, "m-1005")),
        "members[4]",
        "not an object",
        id="member-not-object",
    ),
    pytest.param(
        _edit(lambda d: d["members"].__setitem__(4, None)),
        "members[4]",
        "not an object",
        id="member-null",
    ),
    pytest.param(
        _edit(lambda d: d["schedules"].append(["always"])),
        "schedules[4]",
        "not an object",
        id="schedule-not-object",
    ),
    # duplicates
    pytest.param(
        _edit(lambda d: d["members"][1].update(id="m-1001")),
        "members[1].id",
        "duplicate member id 'm-1001'",
        id="duplicate-member-id",
    ),
    pytest.param(
        _edit(lambda d: d["doors"].append({"id": "front"})),
        "doors[4].id",
        "duplicate door id 'front'",
        id="duplicate-door-id",
    ),
    pytest.param(
        _edit(lambda d: d["holidays"].append({"date": d["holidays"][0]["date"]})),
        "holidays[1].date",
        "duplicate holiday",
        id="duplicate-holiday-date",
    ),
    pytest.param(
        _edit(lambda d: d["members"][1]["credentials"].append(dict(cred(d, 0, 0), id="x"))),
        "members[1].credentials[2]",
        "m-1001",
        id="card-shared-by-two-members",
    ),
    pytest.param(
        _edit(
            lambda d: d["members"][2]["credentials"].append(
                dict(cred(d, 7, 0), id="x", value=cred(d, 7, 0)["value"].lower())
            )
        ),
        "members[7].credentials[0]",
        "m-1003",
        id="raw-card-shared-differing-in-case",
    ),
    pytest.param(
        _edit(_shared_card_with_guest),
        # Guests are read before members (members have a pass of their own).
        "members[0].credentials[0]",
        "'g-9'",
        id="card-shared-by-member-and-guest",
    ),
    # references to unknown objects
    pytest.param(
        _edit(lambda d: d["members"][0].update(plan="nope")),
        "members[0].plan",
        "unknown plan 'nope'",
        id="member-plan",
    ),
    pytest.param(
        _edit(lambda d: d["members"][0].update(company="nope")),
        "members[0].company",
        "unknown company 'nope'",
        id="member-company",
    ),
    pytest.param(
        _edit(lambda d: d["access_groups"][1]["doors"].append("nope")),
        "access_groups[1].doors[2]",
        "unknown door 'nope'",
        id="group-door",
    ),
    pytest.param(
        _edit(lambda d: d["plans"][1]["access"][0].update(group="nope")),
        "plans[1].access[0].group",
        "unknown access group 'nope'",
        id="plan-grant-group",
    ),
    pytest.param(
        _edit(lambda d: d["members"][10]["access"][0].update(group="nope")),
        "members[10].access[0].group",
        "unknown access group 'nope'",
        id="member-grant-group",
    ),
    pytest.param(
        _edit(lambda d: d["companies"][0]["access"][0].update(schedule="nope")),
        "companies[0].access[0].schedule",
        "unknown schedule 'nope'",
        id="company-grant-schedule",
    ),
    pytest.param(
        _edit(lambda d: d["guests"][0]["access"][0].update(schedule="nope")),
        "guests[0].access[0].schedule",
        "unknown schedule 'nope'",
        id="guest-grant-schedule",
    ),
    pytest.param(
        _edit(lambda d: d["doors"][0].update(unlock_schedule="nope")),
        "doors[0].unlock_schedule",
        "unknown schedule 'nope'",
        id="door-unlock-schedule",
    ),
    pytest.param(
        _edit(lambda d: d["guests"][0].update(host="nope")),
        "guests[0].host",
        "unknown member 'nope'",
        id="guest-host",
    ),
    pytest.param(
        _edit(lambda d: d["bookings"][0].update(room="nope")),
        "bookings[0].room",
        "unknown room 'nope'",
        id="booking-room",
    ),
    pytest.param(
        _edit(lambda d: d["bookings"][0].update(member="nope")),
        "bookings[0].member",
        "unknown member 'nope'",
        id="booking-member",
    ),
    pytest.param(
        _edit(lambda d: d["bookings"][0]["attendees"].append("nope")),
        "bookings[0].attendees[1]",
        "'nope'",
        id="booking-attendee",
    ),
    pytest.param(
        _edit(lambda d: d["rooms"][0].update(door="nope")),
        "rooms[0].door",
        "unknown door 'nope'",
        id="room-door",
    ),
    pytest.param(
        _edit(lambda d: d["site"]["day_pass_access"][0].update(group="nope")),
        "site.day_pass_access[0].group",
        "unknown access group 'nope'",
        id="site-day-pass-group",
    ),
    pytest.param(
        _edit(lambda d: d["schedules"].pop(2)),
        "doors[0].unlock_schedule",
        "unknown schedule 'lunch'",
        id="referenced-schedule-removed",
    ),
]


@pytest.mark.parametrize(("build", "path", "fragment"), DOCUMENT_CASES)
def test_document_refused(
    tmp_path: Path,
    example_doc: Doc,
    build: Callable[[Doc], Any],
    path: str,
    fragment: str,
) -> None:
    content = build(example_doc)
    if isinstance(content, list):
        content = json.dumps(content).encode()
    assert_error(refused(tmp_path, content), path, fragment)


def test_booking_attendee_may_be_a_guest(tmp_path: Path, example_doc: Doc) -> None:
    example_doc["bookings"][0]["attendees"].append("g-9")
    read(tmp_path, example_doc)


def test_a_pin_shared_by_two_holders_is_not_a_shared_card(tmp_path: Path, example_doc: Doc) -> None:
    # The contract limits cards to one holder; PINs may collide (the gateway denies
    # an ambiguous PIN at the door instead).
    example_doc["members"][1]["credentials"].append(dict(cred(example_doc, 0, 1), id="same-pin"))
    read(tmp_path, example_doc)


def test_one_holder_may_have_many_cards(tmp_path: Path, example_doc: Doc) -> None:
    example_doc["members"][0]["credentials"].append(
        {"id": "second", "type": "card", "format": "raw", "value": "beef", "status": "active"}
    )
    read(tmp_path, example_doc)


# --- unknown fields -----------------------------------------------------------------


def _with_extras(doc: Doc) -> Doc:
    """Every object of the document, and the document itself, with unknown fields."""
    doc = copy.deepcopy(doc)

    def extra(obj: Any, depth: int = 0) -> None:
        if isinstance(obj, dict):
            for value in list(obj.values()):
                extra(value, depth + 1)
            obj[f"x_future_{depth}"] = {"nested": [1, 2.5, None, {"deep": True}]}
            obj["colour"] = "teal"
        elif isinstance(obj, list):
            for item in obj:
                extra(item, depth + 1)

    extra(doc)
    doc["invoices"] = [{"id": "inv-1", "total": "12.00 EUR"}]
    doc["schema_minor"] = 3
    return doc


def test_unknown_fields_everywhere_are_ignored(tmp_path: Path, example_doc: Doc) -> None:
    extended = _with_extras(example_doc)
    assert extended["members"][0]["credentials"][0]["colour"] == "teal"
    assert extended["schedules"][1]["windows"][0]["colour"] == "teal"
    assert extended["members"][0]["contract"]["colour"] == "teal"
    header, seen = read(tmp_path, example_doc)
    header_x, seen_x = read(tmp_path, extended)
    assert header_x == header
    assert seen_x == seen


def test_document_with_unknown_fields_imports(tmp_path: Path, example_doc: Doc) -> None:
    index = index_of(tmp_path, _with_extras(example_doc))
    assert index.site_id == "mitte"
    assert len(index.holders) == 13
    assert "H10301:12:3456" in index.cards
    assert set(index.doors) == {"front", "office-12", "server-room", "room-ada"}


# --- the contract's example document ------------------------------------------------


def contract_example() -> Doc:
    """The snapshot printed in edge-sync-api.md, with real HMACs for `<hex>`.

    Two additions make it self-consistent: the `room-ada` door that its room
    refers to, and the member `m-1002` that its booking names as an attendee.
    """
    return {
        "schema": "edge-sync/1",
        "cursor": "c-000123",
        "generated_at": "2026-11-21T08:00:00Z",
        "site": {
            "id": "mitte",
            "name": "Mitte",
            "timezone": "Europe/Berlin",
            "day_pass_access": [{"group": "members", "schedule": "staffed"}],
        },
        "schedules": [
            {"id": "always", "windows": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]},
            {
                "id": "staffed",
                "closed_on_holidays": True,
                "windows": [
                    {"days": "mon-fri", "from": "08:00", "to": "19:00"},
                    {"days": "sat", "from": "10:00", "to": "16:00"},
                ],
            },
            {"id": "night", "windows": [{"days": "mon-sun", "from": "22:00", "to": "06:00"}]},
        ],
        "holidays": [{"date": "2026-12-25", "name": "Christmas Day"}],
        "doors": [
            {
                "id": "front",
                "name": "Front entrance",
                "unlock_schedule": "staffed",
                "first_person_in": True,
                "mode": "card",
            },
            {"id": "office-12", "name": "Office 12", "mode": "card_or_pin"},
            {"id": "server-room", "name": "Server room", "mode": "card_and_pin"},
            {"id": "room-ada", "name": "Ada room", "mode": "card"},  # added
        ],
        "access_groups": [
            {"id": "members", "doors": ["front"]},
            {"id": "office-12", "doors": ["front", "office-12"]},
        ],
        "plans": [
            {"id": "hot-desk", "access": [{"group": "members", "schedule": "staffed"}]},
            {"id": "resident", "access": [{"group": "members", "schedule": "always"}]},
        ],
        "companies": [
            {
                "id": "acme",
                "name": "ACME GmbH",
                "billing": {"status": "ok"},
                "access": [{"group": "office-12", "schedule": "always"}],
                "day_passes": 10,
                "credits": 40,
            }
        ],
        "members": [
            {
                "id": "m-1001",
                "name": "Ada Lovelace",
                "kind": "member",
                "company": "acme",
                "company_manager": False,
                "plan": "hot-desk",
                "contract": {"start": "2026-01-01", "end": None},
                "billing": {"status": "past_due", "grace_until": "2026-11-25T00:00:00+01:00"},
                "access": [
                    {
                        "group": "office-12",
                        "schedule": "always",
                        "valid_from": None,
                        "valid_to": "2026-12-31T18:00:00+01:00",
                    }
                ],
                "credentials": [
                    {
                        "id": "cr-1",
                        "type": "card",
                        "format": "H10301",
                        "facility_code": 12,
                        "card_number": 3456,
                        "status": "active",
                    },
                    {
                        "id": "cr-2",
                        "type": "card",
                        "format": "raw",
                        "value": "04A1B2C3D4E5F6",
                        "status": "active",
                    },
                    {
                        "id": "cr-3",
                        "type": "pin",
                        "pin_hmac": pin_hmac(EXAMPLE_PIN_KEY, "1234"),
                        "status": "active",
                    },
                ],
                "day_passes": [{"id": "dp-7", "valid_from": "2026-11-21", "valid_to": None}],
                "day_pass_balance": 0,
                "credits": 5,
            },
            {  # added: the booking's attendee
                "id": "m-1002",
                "name": "Charles Babbage",
                "kind": "member",
                "plan": "resident",
                "billing": {"status": "ok"},
            },
        ],
        "guests": [
            {
                "id": "g-9",
                "name": "Grace Hopper",
                "host": "m-1001",
                "valid_from": "2026-11-21T09:00:00+01:00",
                "valid_to": "2026-11-21T18:00:00+01:00",
                "access": [{"group": "members", "schedule": "staffed"}],
                "credentials": [
                    {
                        "id": "cr-9",
                        "type": "pin",
                        "pin_hmac": pin_hmac(EXAMPLE_PIN_KEY, "9999"),
                        "status": "active",
                    }
                ],
            }
        ],
        "rooms": [
            {
                "id": "ada",
                "name": "Ada room",
                "door": "room-ada",
                "capacity": 6,
                "no_show_release_min": 15,
                "checkin_early_min": 10,
                "credits_per_hour": 2,
            }
        ],
        "bookings": [
            {
                "id": "b-55",
                "room": "ada",
                "member": "m-1001",
                "attendees": ["m-1002"],
                "start": "2026-11-21T10:00:00+01:00",
                "end": "2026-11-21T11:00:00+01:00",
                "status": "confirmed",
                "invoiced": False,
                "recurrence_id": None,
            }
        ],
    }


def test_contract_example_is_accepted(tmp_path: Path) -> None:
    doc = contract_example()
    assert doc["schema"] == SCHEMA
    header, seen = read(tmp_path, doc)
    assert header.cursor == "c-000123"
    assert header.site.timezone == "Europe/Berlin"
    assert header.generated_at is not None
    assert header.generated_at.isoformat() == "2026-11-21T08:00:00+00:00"
    by_kind: dict[str, list[Any]] = {}
    for kind, obj in seen:
        by_kind.setdefault(kind, []).append(obj)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "schedule": 3,
        "holiday": 1,
        "door": 4,
        "access_group": 2,
        "plan": 2,
        "company": 1,
        "site": 1,
        "member": 2,
        "guest": 1,
        "room": 1,
        "booking": 1,
    }
    ada = by_kind["member"][0]
    assert [c.key() for c in ada.credentials] == [
        "H10301:12:3456",
        "raw:04a1b2c3d4e5f6",  # raw values compare case-insensitively
        f"pin:{pin_hmac(EXAMPLE_PIN_KEY, '1234')}",
    ]


def test_contract_example_without_the_room_door_is_refused(tmp_path: Path) -> None:
    doc = contract_example()
    doc["doors"] = [d for d in doc["doors"] if d["id"] != "room-ada"]
    assert_error(refused(tmp_path, doc), "rooms[0].door", "unknown door 'room-ada'")


def test_contract_example_imports(tmp_path: Path) -> None:
    index = index_of(tmp_path, contract_example())
    assert index.cursor == "c-000123"
    assert index.holders["g-9"].host == "m-1001"
    assert index.bookings["b-55"].door == "room-ada"
    assert index.bookings["b-55"].holders == frozenset({"m-1001", "m-1002"})


# --- the fast reader agrees with the detailed one ----------------------------------
#
# `edge.site.fastdoc` reads members and guests with msgspec and declines anything
# it cannot vouch for; the importer then runs the detailed reader above. It must
# never accept what the detailed reader refuses, and what it accepts must become
# exactly the same rows.

Tables = dict[str, list[tuple[Any, ...]]]
TABLES = ("objects", "holders", "credentials", "grants", "day_passes")


def _tables(batches: list[Rows]) -> Tables:
    return {t: sorted((row for b in batches for row in getattr(b, t)), key=repr) for t in TABLES}


def detailed_rows(content: bytes) -> tuple[SnapshotHeader, Tables] | DocError:
    rows = Rows.new(2)
    try:
        header = read_snapshot(
            lambda: _Yielding(io.BytesIO(content)), lambda kind, obj, _p: rows.add(kind, obj)
        )
    except DocError as exc:
        return exc
    return header, _tables([rows])


def fast_rows(content: bytes, batch_rows: int = 7) -> tuple[SnapshotHeader, Tables] | None:
    documents = Rows.new(2)
    batches = [documents]
    try:
        snap = read_snapshot_fast(
            content,
            2,
            lambda kind, obj, _p: documents.add(kind, obj),
            batches.append,
            batch_rows,
        )
    except Declined:
        return None
    tables = _tables(batches)
    holders = [row[2] for row in tables["holders"]]
    assert (snap.members, snap.guests) == (
        len(holders) - holders.count("guest"),
        holders.count("guest"),
    )
    assert snap.credentials == len(tables["credentials"])
    return snap.header, tables


def agree(content: bytes) -> tuple[bool, bool]:
    """(fast reader accepted, detailed reader accepted); fails if they disagree on rows."""
    detailed = detailed_rows(content)
    fast = fast_rows(content)
    if fast is not None:
        assert not isinstance(detailed, DocError), f"fast reader accepted: {detailed}"
        assert fast == detailed
    return fast is not None, not isinstance(detailed, DocError)


def test_fast_reader_takes_the_example_documents(example_doc: Doc) -> None:
    for doc in (example_doc, contract_example(), _with_extras(example_doc)):
        assert agree(json.dumps(doc).encode()) == (True, True)
        assert agree(json.dumps(doc, indent=2, ensure_ascii=False).encode()) == (True, True)


@pytest.mark.parametrize(("kind", "index", "mutate", "below", "fragment"), OBJECT_CASES)
def test_fast_reader_declines_every_refused_object(
    example_doc: Doc, kind: str, index: int | None, mutate: Mutation, below: str, fragment: str
) -> None:
    mutate(_object(example_doc, kind, index)[0])
    assert agree(json.dumps(example_doc).encode()) == (False, False)


@pytest.mark.parametrize(("build", "path", "fragment"), DOCUMENT_CASES)
def test_fast_reader_declines_every_refused_document(
    example_doc: Doc, build: Callable[[Doc], Any], path: str, fragment: str
) -> None:
    content = build(example_doc)
    if not isinstance(content, bytes):
        content = json.dumps(content).encode()
    assert agree(content) == (False, False)


def _top_level(doc: Doc, extra: str) -> bytes:
    return json.dumps(doc).encode()[:-1] + b", " + extra.encode() + b"}"


def _member_text(doc: Doc, replace: str, by: str) -> bytes:
    """The document with the first occurrence of `replace` in its JSON text replaced."""
    text = json.dumps(doc)
    assert replace in text
    return text.replace(replace, by, 1).encode()


def _lone_member(doc: Doc) -> Doc:
    return dict(doc["members"][0], id="m-9", credentials=[])


# (build from the example document, whether the detailed reader accepts it); the fast
# reader declines where JSON parsers differ and accepts the rest.
TRICKY_DOCUMENTS = [
    # Repeated keys: ijson keeps the last value, msgspec checks every one.
    pytest.param(
        lambda d: _top_level(d, '"members": []'), True, False, id="members-twice-at-top-level"
    ),
    pytest.param(lambda d: _top_level(d, '"cursor": "c-2"'), True, False, id="cursor-twice"),
    pytest.param(
        lambda d: _member_text(d, '"kind": "member"', '"kind": "staff", "kind": "member"'),
        True,
        False,
        id="bad-then-good-value-in-a-member",
    ),
    pytest.param(
        lambda d: _member_text(d, '"kind": "member"', '"kind": "member", "kind": "staff"'),
        False,
        False,
        id="good-then-bad-value-in-a-member",
    ),
    pytest.param(
        lambda d: _member_text(d, '"kind": "member"', '"kind": "nonmember", "kind": "member"'),
        True,
        True,
        id="two-good-values-in-a-member",
    ),
    # ijson's prefix for members' items names a top-level key too.
    pytest.param(
        lambda d: _top_level(d, '"members.item": ' + json.dumps(_lone_member(d))),
        True,
        False,
        id="members-item-key",
    ),
    pytest.param(lambda d: _top_level(d, '"members.items": 1'), True, True, id="other-dotted-key"),
    # ijson turns a lone surrogate into '?'; msgspec refuses it.
    pytest.param(
        lambda d: _member_text(d, '"Ada Lovelace"', '"Ada \\ud800"'), True, False, id="surrogate"
    ),
    pytest.param(
        lambda d: _member_text(d, '"Ada Lovelace"', '"Ada \\ud83d\\ude00 \\u00e9\\n\\t\\"/"'),
        True,
        True,
        id="escapes-in-a-name",
    ),
    pytest.param(
        lambda d: _member_text(d, '"members"', '"memb\\u0065rs"'), True, True, id="escaped-key"
    ),
    pytest.param(
        lambda d: b" \n\t" + json.dumps(d, indent="\t").encode() + b"\r\n",
        True,
        True,
        id="whitespace-everywhere",
    ),
    pytest.param(lambda d: json.dumps(d).encode() + b" {}", False, False, id="trailing-value"),
    pytest.param(lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode(), False, False, id="bom"),
    pytest.param(lambda d: b"[]", False, False, id="array"),
    pytest.param(lambda d: b"{}", False, False, id="empty-object"),
    pytest.param(lambda d: b"", False, False, id="empty"),
]


@pytest.mark.parametrize(("build", "detailed", "fast"), TRICKY_DOCUMENTS)
def test_fast_reader_on_tricky_documents(
    example_doc: Doc, build: Callable[[Doc], bytes], detailed: bool, fast: bool
) -> None:
    assert agree(build(example_doc)) == (fast, detailed)


# Values that sit on either side of a rule, for every field of members and guests:
# (valid, invalid). A generated object takes a valid value for most fields, so
# that a good share of documents is accepted and their rows are compared too.
_DATES = (
    [
        "2026-01-05",
        "2025-12-31",
        "2027-01-01",
        "2026-01-05T10:00:00Z",  # written back as +00:00
        "2026-01-05 10:00:00+01:00",  # written back with a T
        "2026-01-05T10:00:00.5+01:00",  # written back as .500000
        "2026-01-05T10:00:00.1234567+01:00",  # written back as .123456
        "2026-01-05T10:00:00.123456-05:30",
        "2026-01-05T23:30:00-10:00",
        "2026-01-05T00:00:00+14:00",
    ],
    [
        "2026-02-30",
        "2026-1-5",
        "2026-13-01",
        "2026-01-05t10:00:00z",
        "2026-01-05T10:00:00",
        "2026-01-05T24:00:00+01:00",
        "2026-01-05T10:00:00+25:00",
        "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0665",
        "",
        20260105,
    ],
)
_INSTANTS = ([d for d in _DATES[0] if len(d) > 10], ["2026-01-05", *_DATES[1]])
# The same instants a day later: a guest's stay that does not end before it starts.
_INSTANTS_LATER = ([t.replace("-05", "-06", 1) for t in _INSTANTS[0]], _INSTANTS[1])
_IDS = (["m-x", "m-y", "x" * 64, "é" * 64, "\x7f", "😀"], ["x" * 65, "", "a\nb", "tab\t", 7, None])
_NUMBERS = ([0, 1, 255, 4095, 65535, (1 << 19) - 1, (1 << 20) - 1], [-1, True, 1.0, 2.5, "1", None])
_BITS = (
    [0, 1, 255, 256, 4095, 4096, 65535, 65536, (1 << 19) - 1, 1 << 19, (1 << 20) - 1, 1 << 20],
    [-1, True, 1.0, "1", 10**20],
)
_HMAC = "ab" * 32


def _pick(draw: st.DrawFn, pools: tuple[list[Any], list[Any]]) -> Any:
    valid, invalid = pools
    # Hypothesis favours the ends of a range: a value inside it is the rare one.
    if draw(st.integers(0, 19)) == 13:
        return draw(st.sampled_from(invalid))
    return draw(st.sampled_from(valid))


def _opt(
    draw: st.DrawFn, obj: dict[str, Any], key: str, pools: tuple[list[Any], list[Any]]
) -> None:
    """An optional field: absent, null or a value."""
    roll = draw(st.integers(0, 3))
    if roll == 1:
        obj[key] = None
    elif roll > 1:
        obj[key] = _pick(draw, pools)


def _req(
    draw: st.DrawFn, obj: dict[str, Any], key: str, pools: tuple[list[Any], list[Any]]
) -> None:
    """A required field: present, but now and then missing."""
    if draw(st.integers(0, 29)) != 13:
        obj[key] = _pick(draw, pools)


def _bad_list(draw: st.DrawFn, obj: dict[str, Any], key: str) -> None:
    if draw(st.integers(0, 29)) == 13:
        obj[key] = draw(st.sampled_from([None, {}, "x"]))


@st.composite
def _grants(draw: st.DrawFn) -> list[Any]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        g: dict[str, Any] = {}
        _req(draw, g, "group", (["members", "office-12"], ["nope", None, "members\n"]))
        _req(draw, g, "schedule", (["always", "staffed"], ["nope", "\talways"]))
        _opt(draw, g, "valid_from", _DATES)
        _opt(draw, g, "valid_to", _DATES)
        out.append(g)
    return out


@st.composite
def _credentials(draw: st.DrawFn, number: int) -> list[Any]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        c: dict[str, Any] = {}
        _req(draw, c, "id", ([f"c{i}", f"c{i}", "c0", "c\\n"], ["x" * 65, 1, "c\n"]))
        _req(draw, c, "status", (["active", "disabled"], ["enabled"]))
        kind = _pick(draw, (["card", "card", "pin"], ["face"]))
        c["type"] = kind
        if kind == "pin":
            _req(draw, c, "pin_hmac", ([_HMAC, _HMAC.upper()], [_HMAC[:-1], "zz" * 32, None]))
        else:
            fmt = _pick(draw, (["H10301", "H10306", "C1000", "H10304", "raw"], ["H99999", None]))
            c["format"] = fmt
            if fmt == "raw":
                _req(draw, c, "value", (["beef", "BEEF", f"{number:x}0a"], ["xyz", "", "0a\n"]))
            else:
                _req(draw, c, "facility_code", _BITS)
                # mostly a card of this member's own, now and then one of the example's
                _req(draw, c, "card_number", ([number * 7 + i, 3456], _BITS[1]))
        if draw(st.integers(0, 9)) == 0:  # fields of the other types, checked all the same
            _opt(draw, c, "value", (["0a"], ["zz"]))
            _opt(draw, c, "facility_code", _BITS)
        out.append(c)
    return out


@st.composite
def _day_passes(draw: st.DrawFn) -> list[Any]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        p: dict[str, Any] = {}
        _req(draw, p, "id", (["d1", "d2"], ["", 3, "d\x01"]))
        _opt(draw, p, "valid_from", _DATES)
        _opt(draw, p, "valid_to", _DATES)
        out.append(p)
    return out


@st.composite
def _member(draw: st.DrawFn) -> Doc:
    number = draw(st.integers(0, 10**6))
    m: dict[str, Any] = {}
    _req(draw, m, "id", ([f"m-{number}", f"m-{number}", *_IDS[0]], _IDS[1]))
    _req(draw, m, "kind", (["member", "member", "nonmember"], ["guest"]))
    _req(draw, m, "billing", ([{"status": "ok"}, {"status": "suspended"}], [None, {}]))
    if "billing" in m and isinstance(m["billing"], dict) and draw(st.booleans()):
        m["billing"]["status"] = "past_due"
        _opt(draw, m["billing"], "grace_until", _INSTANTS)
    if draw(st.booleans()):
        m["name"] = draw(st.text(max_size=8)) if draw(st.integers(0, 19)) != 13 else None
    _opt(draw, m, "company", (["acme", "initech"], ["nope", 5, "ac\x1fme"]))
    _opt(
        draw,
        m,
        "plan",
        (["hot-desk"] if m.get("kind") != "nonmember" else [None], ["nope", "hot-desk\r"]),
    )
    if draw(st.booleans()):
        m["company_manager"] = _pick(draw, ([True, False], [0, "yes", None]))
    if draw(st.booleans()):
        contract: dict[str, Any] = {}
        _opt(draw, contract, "start", _DATES)
        _opt(draw, contract, "end", _DATES)
        m["contract"] = contract
    _bad_list(draw, m, "contract")
    for key, values in [
        ("access", _grants()),
        ("credentials", _credentials(number)),
        ("day_passes", _day_passes()),
    ]:
        if draw(st.booleans()):
            m[key] = draw(values)
        _bad_list(draw, m, key)
    for key in ("day_pass_balance", "credits"):
        if draw(st.booleans()):
            m[key] = _pick(draw, _NUMBERS)
    if draw(st.booleans()):
        m["x_future"] = {"a": [1.5, None, {"kind": "staff"}]}
    return m


@st.composite
def _guest(draw: st.DrawFn) -> Doc:
    number = draw(st.integers(0, 10**6))
    g: dict[str, Any] = {}
    _req(draw, g, "id", ([f"g-{number}"], ["g-9", "m-1001", "", 3, "g\f"]))
    _req(draw, g, "host", (["m-1001", "m-1002"], ["g-9", "nope", None, "m-1001\b"]))
    if draw(st.booleans()):
        g["name"] = draw(st.text(max_size=8))
    _req(draw, g, "valid_from", _INSTANTS)
    _req(draw, g, "valid_to", _INSTANTS_LATER)
    for key, values in [
        ("access", _grants()),
        ("credentials", _credentials(number)),
        ("day_passes", _day_passes()),
    ]:
        if draw(st.booleans()):
            g[key] = draw(values)
        _bad_list(draw, g, key)
    return g


_EXAMPLE = json.dumps(example_site(DAY)[0])


@settings(max_examples=500, deadline=None)
@given(members=st.lists(_member(), max_size=3), guests=st.lists(_guest(), max_size=2))
def test_fast_reader_agrees_with_the_detailed_one(members: list[Doc], guests: list[Doc]) -> None:
    doc = json.loads(_EXAMPLE)
    doc["members"] += members
    doc["guests"] += guests
    fast, detailed = agree(json.dumps(doc).encode())
    event(f"detailed reader accepts: {detailed}")
    assert fast == detailed  # and it leaves out nothing that json.dumps can write


@settings(max_examples=100, deadline=None)
@given(
    member=_member(),
    text=st.text(min_size=1, max_size=12),
    # at which valid member of the example site the generated one goes in
    at=st.integers(0, 12),
)
def test_fast_reader_agrees_on_names_and_order(member: Doc, text: str, at: int) -> None:
    doc = json.loads(_EXAMPLE)
    member["name"] = text
    doc["members"].insert(at, member)
    fast, detailed = agree(json.dumps(doc, ensure_ascii=False).encode())
    assert fast == detailed


def test_fast_structs_follow_the_models() -> None:
    """Same fields in the same order: a struct encodes to the JSON its model dumps."""

    def fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
        return struct.__struct_fields__

    assert fields(MemberData) == tuple(f for f in MemberDoc.model_fields if f != "credentials")
    assert fields(GuestData) == tuple(f for f in GuestDoc.model_fields if f != "credentials")
    for struct, model in [
        (MemberF, MemberDoc),
        (GuestF, GuestDoc),
        (CredentialF, CredentialDoc),
        (fastdoc.DayPassF, DayPassDoc),
    ]:
        assert set(fields(struct)) == set(model.model_fields), struct
    for struct, model in [
        (fastdoc.AccessF, Access),
        (fastdoc.ContractF, Contract),
        (fastdoc.BillingF, Billing),
    ]:
        assert fields(struct) == tuple(model.model_fields), struct
