"""Degraded modes: each door's offline policy while the cache cannot be trusted,
a database found unreadable at start, and a stepped system clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.access.policy import DENY_REASONS, GRANT_REASONS, Presentation, decide
from edge.config import ConfigError, parse_config
from edge.site.clock import STEP_S, SteadyClock
from edge.site.model import SiteIndex
from edge.site.runtime import RuntimeState
from edge.site.syncdoc import CARD_FIELD_BITS
from hwsim.cloud import CloudSim
from hwsim.sitegen import example_site
from tests.conftest import DAY, at, run_async, started_gateway
from tests.test_sync import (
    RESIDENT_CARD,
    config,
    events_of,
    start,
    synced,
    wait_for,
)
from tests.test_sync import decide as decide_at_daemon

UNKNOWN_CARD_OF_CODE = "H10301:77:123"  # not in the site; facility code 77
RESIDENT = "m-1002"


def degraded(reason: str, methods: dict[str, str], **kw: Any) -> RuntimeState:
    return RuntimeState(
        offline_reason=reason,
        offline_methods=methods,
        offline_facility_codes=frozenset({"H10301:77"}),
        **kw,
    )


def p(door: str, card: str, hhmm: str = "10:00") -> Presentation:
    return Presentation(door=door, at=at(DAY, hhmm), cards=(card,))


# --- the policies, decision by decision -------------------------------------------


def test_locked_admits_only_the_exempt(example_index: SiteIndex) -> None:
    st = degraded("cache_stale", {"front": "locked"}, offline_exempt=frozenset({RESIDENT}))
    d = decide(example_index, st, p("front", RESIDENT_CARD))
    assert (d.granted, d.reason) == (True, "plan")  # exempt: decided on the cache
    st = degraded("cache_stale", {"front": "locked"})
    d = decide(example_index, st, p("front", RESIDENT_CARD))
    assert (d.granted, d.reason) == (False, "cache_stale")
    assert d.details == {
        "offline": "cache_stale",
        "offline_policy": "locked",
        "holder_reason": "plan",
    }
    d = decide(example_index, st, p("front", UNKNOWN_CARD_OF_CODE))
    assert (d.granted, d.reason) == (False, "unknown_credential")  # a denial stays itself
    # A door on "cache" is not touched.
    assert decide(example_index, st, p("office-12", RESIDENT_CARD)).reason == "no_access"


def test_facility_code_admits_the_codes_even_unknown_to_the_cache(example_index: SiteIndex) -> None:
    st = degraded("database_unreadable", {"front": "facility_code"})
    d = decide(example_index, st, p("front", UNKNOWN_CARD_OF_CODE))
    assert (d.granted, d.reason) == (True, "facility_code")
    d = decide(example_index, st, p("front", "H10301:78:123"))
    assert (d.granted, d.reason) == (False, "unknown_credential")
    d = decide(example_index, st, p("front", RESIDENT_CARD))  # H10306:1000: not a listed code
    assert (d.granted, d.reason) == (False, "database_unreadable")
    # With nothing loaded at all, the codes still open the door.
    empty = SiteIndex.empty()
    assert decide(empty, st, p("front", UNKNOWN_CARD_OF_CODE)).granted
    d = decide(empty, st, p("front", RESIDENT_CARD))
    assert (d.granted, d.reason) == (False, "database_unreadable")


def test_unlocked_admits_anyone_and_lockdown_beats_every_policy(
    example_index: SiteIndex,
) -> None:
    st = degraded("no_site_data", {"front": "unlocked"})
    d = decide(SiteIndex.empty(), st, p("front", "raw:ff"))
    assert (d.granted, d.reason) == (True, "unlocked")
    for method in ("unlocked", "facility_code", "locked"):
        st = degraded("cache_stale", {"front": method}, lockdown_site=True)
        d = decide(example_index, st, p("front", UNKNOWN_CARD_OF_CODE))
        assert (d.granted, d.reason) == (False, "lockdown")


def test_no_unlock_schedule_holds_a_degraded_door_open() -> None:
    doc, _ = example_site(DAY)
    doors = {d["id"]: d for d in doc["doors"]}
    scheduled = next(d for d in doors.values() if d.get("unlock_schedule"))
    scheduled["first_person_in"] = False  # held open by the schedule alone
    ix = _index(doc)
    # At a time its schedule holds it open, a stranger passes on "cache"...
    when = _open_instant(ix, scheduled["id"])
    stranger = Presentation(door=scheduled["id"], at=when, cards=("raw:ff",))
    assert decide(ix, RuntimeState(), stranger).reason == "unlocked"
    # ...but not while the clock or the cache cannot be trusted.
    st = degraded("clock_untrusted", {scheduled["id"]: "locked"})
    d = decide(ix, st, stranger)
    assert (d.granted, d.reason) == (False, "unknown_credential")


def _index(doc: dict[str, Any]) -> SiteIndex:
    import tempfile

    from tests.conftest import index_of

    with tempfile.TemporaryDirectory() as tmp:
        return index_of(Path(tmp), doc)


def _open_instant(ix: SiteIndex, door: str) -> float:
    """An instant of the test week at which `door`'s unlock schedule holds it open."""
    from datetime import datetime

    from edge.access.policy import door_unlocked

    for day in range(7):
        for hour in range(24):
            t = at(DAY, "00:00") + (day * 24 + hour) * 3600 + 1800
            local = datetime.fromtimestamp(t, ix.tz)
            if door_unlocked(ix, RuntimeState(), ix.doors[door], local) is not None:
                return t
    raise AssertionError(f"{door}'s schedule is never open in the test week")


def test_the_reasons_are_declared() -> None:
    assert "facility_code" in GRANT_REASONS
    assert {"database_unreadable", "no_site_data", "cache_stale", "clock_untrusted"} <= set(
        DENY_REASONS
    )


# --- configuration ------------------------------------------------------------------


def test_facility_code_doors_need_codes_and_codes_must_fit() -> None:
    base = '[site]\nid = "mitte"\n'
    with pytest.raises(ConfigError, match=r"doors\.front\.offline_policy.*offline_facility_codes"):
        parse_config(base + '[doors.front]\noffline_policy = "facility_code"\n')
    with pytest.raises(ConfigError, match=r"'H10301:256'.*below 256"):
        parse_config(base + '[access]\noffline_facility_codes = ["H10301:256"]\n')
    with pytest.raises(ConfigError, match=r"unknown card format 'W26'"):
        parse_config(base + '[access]\noffline_facility_codes = ["W26:1"]\n')
    cfg = parse_config(
        base + '[access]\noffline_facility_codes = ["H10301:007"]\n'
        '[doors.front]\noffline_policy = "facility_code"\n'
        '[doors.back]\noffline_policy = "deny_stale"\n'
    )
    assert cfg.access.offline_facility_codes == ("H10301:7",)


def test_the_config_knows_the_same_card_formats_as_the_documents() -> None:
    from edge.config import FACILITY_CODE_BITS

    assert {f: bits[0] for f, bits in CARD_FIELD_BITS.items()} == FACILITY_CODE_BITS


# --- a stepped clock ------------------------------------------------------------------


class Clocks:
    """A system clock the test steps, and a monotonic one it advances."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def steady(c: Clocks) -> SteadyClock:
    return SteadyClock(300, wall=lambda: c.wall, mono=lambda: c.mono)


def test_the_clock_follows_slewing_but_not_a_step(clocks: Clocks) -> None:
    clock = steady(clocks)
    for _ in range(100):  # NTP slews at most 0.5 ms a second; here 10 ms a second
        clocks.advance(1)
        clocks.wall += 0.01
        assert clock.now() == clocks.wall
    assert clock.step is None
    before = clock.now()
    clocks.wall += 6 * 3600  # `date -s` six hours ahead
    clocks.advance(1)
    assert clock.now() == pytest.approx(before + 1)
    assert clock.step == pytest.approx(6 * 3600)
    clocks.advance(10)
    assert clock.now() == pytest.approx(before + 11)
    clocks.wall -= 12 * 3600 + STEP_S  # and back further than it was
    assert clock.now() == pytest.approx(before + 11)


def test_the_cloud_settles_who_is_right(clocks: Clocks) -> None:
    clock = steady(clocks)
    truth = clocks.wall
    clocks.wall += 3600
    clock.now()
    assert clock.step is not None
    # The cloud agrees with the clock as it was: the system clock stays unfollowed,
    # and decisions count from the cloud's time.
    clock.vouch(truth)
    clocks.advance(5)
    assert clock.now() == pytest.approx(truth + 5)
    # Corrected (an NTP step back to the truth): followed again once the cloud agrees.
    clocks.wall -= 3600
    clock.vouch(truth + 5)
    assert clock.step is None
    clocks.advance(1)
    assert clock.now() == clocks.wall
    # A box booted with a clock an hour slow: nothing stepped while running, but the
    # cloud's first answer shows it, and doors decide on the cloud's time.
    clocks.wall -= 3600
    late = steady(clocks)
    late.vouch(clocks.wall + 3600)
    assert late.now() == pytest.approx(clocks.wall + 3600)
    assert late.step == pytest.approx(-3600)


def test_a_stepped_clock_decides_and_schedules_at_the_steady_time(
    tmp_path: Path, example_doc: dict[str, Any], clocks: Clocks
) -> None:
    async def go() -> None:
        gw = await started_gateway(tmp_path, example_doc)
        try:
            clocks.wall = at(DAY, "10:00")
            gw.site.clock = steady(clocks)
            assert gw.access.presentation("front", (RESIDENT_CARD,)).at == clocks.wall
            clocks.wall += 14 * 3600  # 00:00 the next night
            clocks.advance(1)
            p = gw.access.presentation("front", (RESIDENT_CARD,))
            assert p.at == pytest.approx(at(DAY, "10:00") + 1)
            gw.access.sync_doors()
            assert gw.site.clock.step == pytest.approx(14 * 3600)
            for _ in range(100):  # the alarm is recorded by the writer, soon
                rows = await gw.site.store.fetchall("SELECT body FROM outbox")
                if any("clock_stepped" in body for (body,) in rows):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no clock_stepped alarm recorded")
        finally:
            await gw.stop()

    run_async(go())


# --- an unreadable database at start, with the real daemon and the cloud simulator ---


@pytest.fixture
def cloud() -> Iterator[CloudSim]:
    doc, _ = example_site(DAY)
    sim = CloudSim(doc).start()
    try:
        yield sim
    finally:
        sim.stop()


DOORS = (
    '[access]\noffline_facility_codes = ["H10301:77"]\n'
    '[doors.front]\noffline_policy = "facility_code"\n'
    '[doors.office-12]\noffline_policy = "unlocked"\n'
)


def test_an_unreadable_database_is_set_aside_and_the_doors_run_their_policy(
    daemon_factory: Any, cloud: CloudSim
) -> None:
    d = start(daemon_factory, config(cloud, extra=DOORS))
    synced(d, cloud)
    assert decide_at_daemon(d, RESIDENT_CARD) == (True, "plan")
    d.stop()
    db = d.state_dir / "gateway.db"
    garbage = b"\x5a" * 4096
    with db.open("r+b") as f:  # the header and the first pages: not a database any more
        f.write(garbage * 4)
    for extra in ("gateway.db-wal", "gateway.db-shm"):
        (d.state_dir / extra).unlink(missing_ok=True)
    cloud.stop()
    d.start()
    status = d.ctl_json("status")
    assert status["offline"]["reason"] == "database_unreadable"
    assert status["offline"]["policies"] == {"front": "facility_code", "office-12": "unlocked"}
    kept = Path(status["database_set_aside"])
    assert kept.parent == d.state_dir / "corrupt"
    assert kept.read_bytes()[:4096] == garbage
    text = d.ctl("status").stdout
    assert "DATABASE:    unreadable at start" in text
    assert "OFFLINE:     database_unreadable" in text
    assert decide_at_daemon(d, UNKNOWN_CARD_OF_CODE) == (True, "facility_code")
    assert decide_at_daemon(d, RESIDENT_CARD) == (False, "database_unreadable")
    assert decide_at_daemon(d, RESIDENT_CARD, door="office-12") == (True, "unlocked")
    assert "unreadable" in d.output()
    # The cloud is back: a snapshot, and the doors decide on it again.
    cloud.start()
    d.ctl("sync", "now")
    synced(d, cloud)
    wait_for("trusted again", lambda: d.ctl_json("status")["offline"] is None)
    assert decide_at_daemon(d, RESIDENT_CARD) == (True, "plan")
    alarms = [e["details"]["alarm"] for e in events_of(d, "gateway.alarm")]
    assert "database_unreadable" in alarms
    assert "database_unreadable_cleared" in alarms
    wait_for("delivered", lambda: d.ctl_json("sync", "status")["backlog_total"] == 0)
