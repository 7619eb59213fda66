"""Snapshot import through the Gateway: swap in atomically, or change nothing.

The contract: the gateway "streams and validates [a snapshot] and swaps it in
atomically; a partial or invalid snapshot changes nothing", and refuses a
document "with an error that names the offending path ..., keeping the data it
already has". Each refusal below checks the error, then that the old state
decides exactly as before, that the store's generation did not move, and that
no row of the refused generation is left behind.
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.access.cards import parse_card_spec
from edge.gateway import Gateway
from edge.site.importer import commit_ops, stage_snapshot
from edge.site.sqlite import migrate
from edge.site.state import GatewayError
from edge.site.store import GENERATION_TABLES, MIGRATIONS, Store, insert_ops
from edge.web import views
from hwsim.sitegen import CastMember, example_site
from tests.conftest import DAY, at, gateway_config, run_async, started_gateway
from tests.test_syncdoc import contract_example

Doc = dict[str, Any]
Table = dict[tuple[str, str, str], tuple[bool, str, str | None]]

DOORS = ("front", "office-12", "server-room", "room-ada")
NOON = "10:00"
STRANGER = parse_card_spec("H10301:99:99")


def cast() -> list[CastMember]:
    return example_site(DAY)[1]


def decisions(gw: Gateway, when: str = NOON) -> Table:
    """Dry-run every credential of the example cast at every door."""
    t = at(DAY, when)
    table: Table = {}
    for c in cast():
        for door in DOORS:
            if c.card is not None:
                d = gw.access.dry_run(
                    gw.access.presentation(door, cards=(parse_card_spec(c.card),), at=t)
                )
                table[(c.id, "card", door)] = (d.granted, d.reason, d.holder)
            if c.pin is not None:
                d = gw.access.dry_run(gw.access.presentation(door, pin=c.pin, at=t))
                table[(c.id, "pin", door)] = (d.granted, d.reason, d.holder)
    for door in DOORS:
        d = gw.access.dry_run(gw.access.presentation(door, cards=(STRANGER,), at=t))
        table[("stranger", "card", door)] = (d.granted, d.reason, d.holder)
    return table


async def rows_by_generation(gw: Gateway) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for table in GENERATION_TABLES:
        rows = await gw.site.store.fetchall(
            f"SELECT gen, COUNT(*) FROM {table} GROUP BY gen"  # noqa: S608 - fixed names
        )
        out[table] = {gen: n for gen, n in rows}
    return out


async def stray_rows(gw: Gateway) -> dict[str, int]:
    """Rows of any generation but the current one, per table (only non-zero)."""
    gen = await gw.site.store.generation()
    out = {}
    for table in GENERATION_TABLES:
        row = await gw.site.store.fetchone(
            f"SELECT COUNT(*) FROM {table} WHERE gen != ?",  # noqa: S608 - fixed names
            (gen,),
        )
        assert row is not None
        if row[0]:
            out[table] = row[0]
    return out


def write(tmp_path: Path, content: Doc | bytes, name: str = "incoming.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


# --- a valid import --------------------------------------------------------------


def test_the_decision_table_is_not_trivial(tmp_path: Path, example_doc: Doc) -> None:
    """Comparing tables below means something: it holds grants and denials of many kinds."""

    async def scenario() -> Table:
        empty = await started_gateway(tmp_path / "empty")
        try:
            assert {v[1] for v in decisions(empty).values()} == {"no_site"}
        finally:
            await empty.stop()
        gw = await started_gateway(tmp_path / "state", example_doc)
        try:
            return decisions(gw)
        finally:
            await gw.stop()

    table = run_async(scenario())
    assert table[("m-1002", "card", "front")] == (True, "plan", "m-1002")
    assert table[("m-1001", "card", "office-12")] == (True, "company", "m-1001")
    assert table[("m-1003", "card", "front")] == (False, "billing_suspended", "m-1003")
    assert table[("m-1004", "card", "front")] == (False, "contract_ended", "m-1004")
    assert table[("m-1005", "card", "front")] == (False, "contract_not_started", "m-1005")
    assert table[("m-1010", "card", "front")] == (False, "credential_disabled", "m-1010")
    assert table[("g-9", "pin", "front")] == (True, "guest", "g-9")
    assert table[("m-1008", "card", "room-ada")] == (True, "booking", "m-1008")
    assert table[("stranger", "card", "front")] == (False, "unknown_credential", None)
    assert len({v[1] for v in table.values()}) >= 8


def test_valid_import_serves_decisions(tmp_path: Path, example_doc: Doc) -> None:
    async def scenario() -> tuple[dict[str, Any], Table, int, dict[str, int]]:
        gw = await started_gateway(tmp_path / "state")
        try:
            result = await gw.updates.import_snapshot(write(tmp_path, example_doc))
            return result, decisions(gw), await gw.site.store.generation(), await stray_rows(gw)
        finally:
            await gw.stop()

    result, table, gen, stray = run_async(scenario())
    assert result["generation"] == gen == 1
    assert result["cursor"] == "c-000001"
    assert (result["members"], result["guests"]) == (12, 1)
    assert table[("m-1002", "card", "front")] == (True, "plan", "m-1002")
    assert table[("m-1002", "pin", "office-12")] == (False, "no_access", "m-1002")
    assert stray == {}


def test_running_gateway_reports_the_snapshot_it_serves(tmp_path: Path, example_doc: Doc) -> None:
    """After an import, without a restart, the index and status name the new snapshot.

    The cursor is what delta sync continues from (`changes?since={cursor}`).
    """
    changed = copy.deepcopy(example_doc)
    changed["cursor"] = "c-000002"
    changed["generated_at"] = "2026-11-16T08:00:00+01:00"

    async def scenario() -> list[tuple[Any, ...]]:
        gw = await started_gateway(tmp_path / "state")
        seen = []
        try:
            for doc in (example_doc, changed):
                await gw.updates.import_snapshot(write(tmp_path, doc))
                status = views.status(gw)
                seen.append(
                    (
                        gw.site.index.cursor,
                        status["cursor"],
                        status["snapshot_generated_at"],
                        status["generation"],
                    )
                )
        finally:
            await gw.stop()
        return seen

    assert run_async(scenario()) == [
        ("c-000001", "c-000001", "2026-11-16T07:00:00.000+01:00", 1),
        ("c-000002", "c-000002", "2026-11-16T08:00:00.000+01:00", 2),
    ]


# --- refused documents ----------------------------------------------------------------


def _large(doc: Doc, mutate_last: Callable[[Doc], None]) -> Doc:
    """The example site with 3,000 more members; the last one is changed."""
    for i in range(3000):
        doc["members"].append(
            {
                "id": f"gen-{i}",
                "name": f"Generated {i}",
                "kind": "member",
                "plan": "hot-desk",
                "contract": {"start": "2025-01-01", "end": None},
                "billing": {"status": "ok"},
                "credentials": [
                    {
                        "id": f"gen-{i}-card",
                        "type": "card",
                        "format": "H10306",
                        "facility_code": 2000 + i // 65536,
                        "card_number": i % 65536,
                        "status": "active",
                    }
                ],
            }
        )
    mutate_last(doc["members"][-1])
    return doc


LAST = 12 + 3000 - 1  # index of the last generated member


def _json(mutate: Callable[[Doc], Any]) -> Callable[[Doc], bytes]:
    def build(doc: Doc) -> bytes:
        mutate(doc)
        return json.dumps(doc).encode()

    return build


def _truncated_mid_member(doc: Doc) -> bytes:
    data = json.dumps(doc).encode()
    return data[: data.index(b'"m-1006"') + 5]


REFUSED = [
    pytest.param(
        lambda d: json.dumps(d).encode().replace(b'"rooms": [', b'"rooms": [,'),
        "(document)",
        id="malformed-json",
    ),
    pytest.param(_truncated_mid_member, "(document)", id="truncated-mid-member"),
    pytest.param(lambda d: json.dumps([d]).encode(), "(document)", id="top-level-array"),
    pytest.param(_json(lambda d: d.update(schema="edge-sync/0")), "schema", id="wrong-schema"),
    pytest.param(_json(lambda d: d.pop("cursor")), "cursor", id="missing-cursor"),
    pytest.param(
        _json(lambda d: d["site"].update(timezone="Europe/Atlantis")),
        "site.timezone",
        id="bad-timezone",
    ),
    pytest.param(
        _json(lambda d: d["site"].update(timezone="Europe")),
        "site.timezone",
        id="timezone-naming-a-tzdata-directory",
    ),
    pytest.param(
        _json(lambda d: d.update(members={})),
        "members",
        id="members-not-an-array",
    ),
    pytest.param(
        _json(lambda d: d["members"][0]["credentials"][0].update(card_number=70000)),
        "members[0].credentials[0].card_number",
        id="card-number-too-large",
    ),
    pytest.param(
        _json(lambda d: d["members"][3]["contract"].update(end="2026-13-01")),
        "members[3].contract.end",
        id="month-13",
    ),
    pytest.param(
        _json(lambda d: d["members"][5].update(id="m-1001")),
        "members[5].id",
        id="duplicate-member-id",
    ),
    pytest.param(
        _json(
            lambda d: d["members"][1]["credentials"].append(
                dict(d["members"][0]["credentials"][0], id="x")
            )
        ),
        "members[1].credentials[2]",
        id="card-shared-by-two-members",
    ),
    pytest.param(
        _json(lambda d: d["plans"][0]["access"][0].update(group="nope")),
        "plans[0].access[0].group",
        id="unknown-group",
    ),
    pytest.param(
        _json(lambda d: d["bookings"][0]["attendees"].append("m-404")),
        "bookings[0].attendees[1]",
        id="unknown-attendee-in-last-section",
    ),
    pytest.param(
        _json(lambda d: _large(d, lambda m: m.update(plan="no-such-plan"))),
        f"members[{LAST}].plan",
        id="large-last-member-unknown-plan",
    ),
    pytest.param(
        _json(lambda d: _large(d, lambda m: m["billing"].update(status="overdue"))),
        f"members[{LAST}].billing.status",
        id="large-last-member-bad-billing",
    ),
    pytest.param(
        lambda d: json.dumps(_large(d, lambda _m: None)).encode()[:-3],
        "(document)",
        id="large-truncated-at-the-end",
    ),
]


@pytest.mark.parametrize(("build", "path"), REFUSED)
def test_refused_import_keeps_the_old_state(
    tmp_path: Path, example_doc: Doc, build: Callable[[Doc], bytes], path: str
) -> None:
    incoming = write(tmp_path, build(copy.deepcopy(example_doc)))

    async def scenario() -> None:
        gw = await started_gateway(tmp_path / "state", example_doc)
        try:
            table = decisions(gw)
            gen = await gw.site.store.generation()
            rows = await rows_by_generation(gw)
            cursor = gw.site.index.cursor
            assert await stray_rows(gw) == {}

            with pytest.raises(GatewayError) as info:
                await gw.updates.import_snapshot(incoming)
            assert info.value.code == "refused"
            message = str(info.value)
            assert message.startswith(f"{path}: "), message
            assert len(message) > len(path) + 4

            assert decisions(gw) == table
            assert await gw.site.store.generation() == gen
            assert gw.site.index.generation == gen
            assert gw.site.index.cursor == cursor
            assert await stray_rows(gw) == {}
            assert await rows_by_generation(gw) == rows
        finally:
            await gw.stop()

    run_async(scenario())


def test_refused_large_import_then_a_good_one(tmp_path: Path, example_doc: Doc) -> None:
    """A refusal after batches were staged leaves the store ready for the next import."""
    bad = _large(copy.deepcopy(example_doc), lambda m: m.update(plan="no-such-plan"))
    good = _large(copy.deepcopy(example_doc), lambda _m: None)
    good["cursor"] = "c-000002"

    async def scenario() -> tuple[dict[str, Any], Table, Table, dict[str, int]]:
        gw = await started_gateway(tmp_path / "state", example_doc)
        try:
            before = decisions(gw)
            with pytest.raises(GatewayError):
                await gw.updates.import_snapshot(write(tmp_path, bad, "bad.json"))
            result = await gw.updates.import_snapshot(write(tmp_path, good, "good.json"))
            after = decisions(gw)
            last = gw.access.dry_run(
                gw.access.presentation(
                    "front", cards=(parse_card_spec("H10306:2000:2999"),), at=at(DAY, NOON)
                )
            )
            assert (last.granted, last.reason, last.holder) == (True, "plan", "gen-2999")
            return result, before, after, await stray_rows(gw)
        finally:
            await gw.stop()

    result, before, after, _stray = run_async(scenario())
    assert result["generation"] == 2
    assert result["cursor"] == "c-000002"
    assert result["members"] == 3012
    assert after == before


def test_snapshot_of_another_site_is_refused(tmp_path: Path, example_doc: Doc) -> None:
    other = copy.deepcopy(example_doc)
    other["site"]["id"] = "kreuzberg"

    async def scenario() -> None:
        gw = await started_gateway(tmp_path / "state", example_doc)
        try:
            table, gen = decisions(gw), await gw.site.store.generation()
            with pytest.raises(GatewayError) as info:
                await gw.updates.import_snapshot(write(tmp_path, other))
            assert info.value.code == "refused"
            assert str(info.value).startswith("site.id: ")
            assert "kreuzberg" in str(info.value)
            assert decisions(gw) == table
            assert await gw.site.store.generation() == gen
            assert await stray_rows(gw) == {}
            assert gw.site.index.site_id == "mitte"
        finally:
            await gw.stop()

    run_async(scenario())


def test_first_import_refused_leaves_an_empty_gateway(tmp_path: Path, example_doc: Doc) -> None:
    example_doc["members"][0]["plan"] = "nope"

    async def scenario() -> None:
        gw = await started_gateway(tmp_path / "state")
        try:
            with pytest.raises(GatewayError) as info:
                await gw.updates.import_snapshot(write(tmp_path, example_doc))
            assert str(info.value).startswith("members[0].plan: ")
            assert await gw.site.store.generation() == 0
            assert await rows_by_generation(gw) == {t: {} for t in GENERATION_TABLES}
            assert {v[1] for v in decisions(gw).values()} == {"no_site"}
        finally:
            await gw.stop()

    run_async(scenario())


# --- a changed snapshot ---------------------------------------------------------------


def test_reimport_with_a_suspended_member_changes_only_that_member(
    tmp_path: Path, example_doc: Doc
) -> None:
    changed = copy.deepcopy(example_doc)
    changed["cursor"] = "c-000002"
    grace = next(m for m in changed["members"] if m["id"] == "m-1002")
    grace["billing"] = {"status": "suspended", "grace_until": None}

    async def scenario() -> tuple[Table, Table, dict[str, Any], int]:
        gw = await started_gateway(tmp_path / "state", example_doc)
        try:
            before = decisions(gw)
            result = await gw.updates.import_snapshot(write(tmp_path, changed))
            return before, decisions(gw), result, await gw.site.store.generation()
        finally:
            await gw.stop()

    before, after, result, gen = run_async(scenario())
    assert result["generation"] == gen == 2
    assert result["cursor"] == "c-000002"
    assert before[("m-1002", "card", "front")] == (True, "plan", "m-1002")
    assert after[("m-1002", "card", "front")] == (False, "billing_suspended", "m-1002")
    assert after[("m-1002", "pin", "office-12")][0] is False
    changed_keys = {k for k in before if before[k] != after[k]}
    assert changed_keys
    assert {k[0] for k in changed_keys} == {"m-1002"}


# --- restarts and crashes -------------------------------------------------------------


def test_restart_decides_the_same_without_reimport(tmp_path: Path, example_doc: Doc) -> None:
    state = tmp_path / "state"

    async def scenario() -> None:
        gw = await started_gateway(state, example_doc)
        try:
            table, gen = decisions(gw), await gw.site.store.generation()
        finally:
            await gw.stop()
        (state / "import.json").unlink()  # nothing to re-import from
        again = Gateway(gateway_config(), state)
        await again.start()
        try:
            assert again.site.index.generation == gen == 1
            assert again.site.index.cursor == "c-000001"
            assert decisions(again) == table
        finally:
            await again.stop()

    run_async(scenario())


def test_restart_after_reimport_keeps_the_new_state(tmp_path: Path, example_doc: Doc) -> None:
    state = tmp_path / "state"
    changed = copy.deepcopy(example_doc)
    changed["cursor"] = "c-000002"
    changed["members"][1]["billing"] = {"status": "suspended"}

    async def scenario() -> None:
        gw = await started_gateway(state, example_doc)
        try:
            await gw.updates.import_snapshot(write(tmp_path, changed))
            table = decisions(gw)
        finally:
            await gw.stop()
        again = Gateway(gateway_config(), state)
        await again.start()
        try:
            assert again.site.index.cursor == "c-000002"
            assert decisions(again) == table
            assert table[("m-1002", "card", "front")] == (False, "billing_suspended", "m-1002")
            assert await stray_rows(again) == {}
        finally:
            await again.stop()

    run_async(scenario())


def _stage_partial_generation(db: Path, source_gen: int, target_gen: int) -> dict[str, int]:
    """What a crash mid-import leaves: rows of a generation `meta.gen` never reached."""
    conn = sqlite3.connect(db)
    try:
        counts = {}
        with conn:
            # A push's kept rows (edge/site/pushed.py) belong to a generation too.
            conn.execute(
                "INSERT INTO push_undo (gen, kind, id, rows) VALUES (?, 'holder', 'm-ghost', '{}')",
                (target_gen,),
            )
            for table in GENERATION_TABLES:
                cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                assert cols[0] == "gen"
                rest = ", ".join(cols[1:])
                conn.execute(
                    f"INSERT INTO {table} (gen, {rest}) "  # noqa: S608 - fixed names
                    f"SELECT ?, {rest} FROM {table} WHERE gen = ?",
                    (target_gen, source_gen),
                )
                # A half-written member too: a holder the current generation lacks.
                counts[table] = conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE gen = ?",  # noqa: S608
                    (target_gen,),
                ).fetchone()[0]
            conn.execute(
                "INSERT INTO holders (gen, id, kind, billing, day_pass_balance, credits, data) "
                "VALUES (?, 'm-ghost', 'member', 'ok', 0, 0, '{}')",
                (target_gen,),
            )
            conn.execute(
                "INSERT INTO credentials (gen, holder, id, key, active) "
                "VALUES (?, 'm-ghost', 'ghost-card', ?, 1)",
                (target_gen, STRANGER),
            )
    finally:
        conn.close()
    return counts


def test_partial_generation_left_by_a_crash_is_removed_at_start(
    tmp_path: Path, example_doc: Doc
) -> None:
    state = tmp_path / "state"

    async def scenario() -> None:
        gw = await started_gateway(state, example_doc)
        try:
            table = decisions(gw)
        finally:
            await gw.stop()
        counts = _stage_partial_generation(state / "gateway.db", 1, 2)
        assert all(counts.values()), counts  # the crash left rows in every table

        again = Gateway(gateway_config(), state)
        await again.start()
        try:
            assert await again.site.store.generation() == 1
            assert await stray_rows(again) == {}
            assert decisions(again) == table
            assert table[("stranger", "card", "front")][1] == "unknown_credential"
            # The next import reuses the number of the removed generation cleanly.
            changed = copy.deepcopy(example_doc)
            changed["cursor"] = "c-000002"
            result = await again.updates.import_snapshot(write(tmp_path, changed))
            assert result["generation"] == 2
            assert "m-ghost" not in again.site.index.holders
            assert STRANGER not in again.site.index.cards
        finally:
            await again.stop()

    run_async(scenario())


# --- the fast reader and the detailed one write the same generation -----------------


def _staged_rows(
    state: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, list[tuple[Any, ...]]], list[str]]:
    """Stage `content` through the child process; its rows and the importer's log lines."""
    path = state / "incoming.json"
    state.mkdir(parents=True)
    path.write_bytes(content)

    async def scenario() -> dict[str, list[tuple[Any, ...]]]:
        store = Store(state / "gateway.db")
        await store.start()
        try:
            staged = await stage_snapshot(store, path, "mitte")
            await store.write(commit_ops(staged))
            return {
                table: [
                    tuple(row)
                    for row in await store.fetchall(
                        f"SELECT * FROM {table} WHERE gen = ?",  # noqa: S608 - fixed names
                        (staged.gen,),
                    )
                ]
                for table in GENERATION_TABLES
            }
        finally:
            await store.stop()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge.import"):
        rows = run_async(scenario())
    return {t: sorted(r, key=repr) for t, r in rows.items()}, [
        r.getMessage() for r in caplog.records if r.name == "edge.import"
    ]


def _repeat_a_key_of_the_last_member(doc: Doc) -> bytes:
    """The same document but for a key the last member names twice, the first time with
    a bad value: ijson (the detailed reader) keeps the last value, msgspec checks both,
    so the fast reader declines it, after it has staged every batch before."""
    text = json.dumps(doc)
    last = text.rindex('"kind": "member"')
    return (text[:last] + '"kind": "staff", ' + text[last:]).encode()


def test_a_document_the_fast_reader_declines_is_staged_the_same(
    tmp_path: Path, example_doc: Doc, caplog: pytest.LogCaptureFixture
) -> None:
    doc = _large(example_doc, lambda _m: None)
    fast, fast_log = _staged_rows(tmp_path / "fast", json.dumps(doc).encode(), caplog)
    slow, slow_log = _staged_rows(tmp_path / "slow", _repeat_a_key_of_the_last_member(doc), caplog)
    assert fast_log == []
    assert len(slow_log) == 1, slow_log
    assert "detailed reader" in slow_log[0]
    assert len(fast["holders"]) == 12 + 1 + 3000
    assert fast == slow


def test_contract_example_staged_by_either_reader_is_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Dates and instants as the contract writes them (Z, offsets), guests, bookings."""
    doc = contract_example()
    doc["site"]["id"] = "mitte"
    doc["guests"][0]["valid_from"] = "2026-11-21T08:00:00Z"
    fast, fast_log = _staged_rows(tmp_path / "fast", json.dumps(doc).encode(), caplog)
    slow, slow_log = _staged_rows(tmp_path / "slow", _repeat_a_key_of_the_last_member(doc), caplog)
    assert (fast_log, len(slow_log)) == ([], 1)
    assert fast == slow
    guest = next(row for row in fast["holders"] if row[1] == "g-9")
    assert guest[11] == "2026-11-21T08:00:00+00:00"  # valid_from as the model writes it


@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 123])
def test_rows_written_many_to_a_statement_end_as_one_by_one(count: int) -> None:
    """A later row replaces an earlier one with its key, within a statement too."""
    conn = sqlite3.connect(":memory:")
    migrate(conn, MIGRATIONS)
    rows = [(1, f"h{i % 7}", f"c{i % 13}", f"key-{i}", i % 2) for i in range(count)]
    for sql, params in insert_ops("credentials", 5, rows):
        conn.executemany(sql, params)
    last = {(row[1], row[2]): row for row in rows}
    assert sorted(conn.execute("SELECT * FROM credentials")) == sorted(last.values())
