"""The door machine and the access decision as one stateful system (hypothesis).

Hypothesis drives a small site through badges, entitlement changes sent the
way the cloud sends them (`check_batch` + `patch_index`: a plan that ends,
billing overdue past its grace, a grant revoked, day passes used up), cloud
syncs and outages (cache freshness, the offline policy), wall-clock jumps
forward and back, door contacts, admin unlocks and lockdowns. The real parts
decide (`decide`), drive the strike (`DoorMachine`) and say whether the cache
can vouch (`offline_reason`); the expected answer comes from a model written
here from the contract's words, not from the policy code.

Invariants: every decision is the model's, and a strike is energised only
while a grant the model agrees with, the door's unlock schedule (evaluated by
the model) or an audited admin unlock holds it, never under lockdown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
)

from edge.access.door import DoorMachine, DoorTiming
from edge.access.policy import Presentation, decide, door_unlocked
from edge.access.service import offline_reason
from edge.site.changes import check_batch, patch_index
from edge.site.model import SiteIndex
from edge.site.runtime import RuntimeState, note_day_pass
from tests.conftest import DAY, index_of
from tests.props import state_settings

BERLIN = ZoneInfo("Europe/Berlin")
STALE_HOURS = 6.0
TIMING = DoorTiming(unlock_s=5.0, exit_unlock_s=5.0, held_open_s=30.0, prealarm_s=10.0)
# front denies on a stale cache (offline_policy = "locked"); lobby trusts its cache.
DENY_STALE = frozenset({"front"})
DOORS = ("front", "lobby")
HOLDERS = ("m-plan", "m-grant", "m-pass")
START = datetime(DAY.year, DAY.month, DAY.day, 8, 30, tzinfo=BERLIN).timestamp()  # a Monday


def _access(group: str, schedule: str) -> dict[str, Any]:
    return {"group": group, "schedule": schedule}


def _card(n: int) -> dict[str, Any]:
    return {
        "id": f"c-{n}",
        "type": "card",
        "format": "H10301",
        "facility_code": 7,
        "card_number": n,
        "status": "active",
    }


def _member(mid: str, n: int, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": mid,
        "name": mid,
        "kind": "member",
        "company": None,
        "plan": None,
        "contract": {"start": None, "end": None},
        "billing": {"status": "ok", "grace_until": None},
        "access": [],
        "credentials": [_card(n)],
        "day_passes": [],
        "day_pass_balance": 0,
        "credits": 0,
    }
    m.update(extra)
    return m


def site_doc() -> dict[str, Any]:
    return {
        "schema": "edge-sync/1",
        "cursor": "c-1",
        "generated_at": "2026-11-16T07:00:00+01:00",
        "site": {
            "id": "mitte",
            "name": "Mitte",
            "timezone": "Europe/Berlin",
            "day_pass_access": [_access("all", "office")],
        },
        "schedules": [
            {
                "id": "always",
                "closed_on_holidays": False,
                "windows": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}],
            },
            {
                "id": "office",
                "closed_on_holidays": False,
                "windows": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}],
            },
            {
                "id": "lobby-hours",
                "closed_on_holidays": False,
                "windows": [{"days": "mon-fri", "from": "09:00", "to": "12:00"}],
            },
        ],
        "holidays": [],
        "doors": [
            {"id": "front", "name": "front", "mode": "card_or_pin", "unlock_schedule": None},
            {
                "id": "lobby",
                "name": "lobby",
                "mode": "card_or_pin",
                "unlock_schedule": "lobby-hours",
                "first_person_in": False,
            },
        ],
        "access_groups": [
            {"id": "front", "doors": ["front"]},
            {"id": "all", "doors": ["front", "lobby"]},
        ],
        "plans": [{"id": "hot-desk", "access": [_access("all", "office")]}],
        "companies": [],
        "members": [
            _member("m-plan", 1, plan="hot-desk"),
            _member("m-grant", 2, access=[_access("front", "always")]),
            _member("m-pass", 3, kind="nonmember", day_pass_balance=2),
        ],
        "guests": [],
        "rooms": [],
        "bookings": [],
    }


CARDS = {"m-plan": "H10301:7:1", "m-grant": "H10301:7:2", "m-pass": "H10301:7:3"}


# --- the model: the contract's rules, written out for this site -----------------------


def _local(t: float) -> datetime:
    return datetime.fromtimestamp(t, BERLIN)


def _weekday_window(t: float, start_min: int, end_min: int) -> bool:
    local = _local(t)
    minute = local.hour * 60 + local.minute
    return local.weekday() < 5 and start_min <= minute < end_min


def office_open(t: float) -> bool:
    return _weekday_window(t, 8 * 60, 18 * 60)


def lobby_open(t: float) -> bool:
    return _weekday_window(t, 9 * 60, 12 * 60)


def _instant(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def billing_allows(m: dict[str, Any], t: float) -> bool:
    b = m["billing"]
    if b["status"] == "ok":
        return True
    grace = _instant(b["grace_until"])
    return b["status"] == "past_due" and grace is not None and t < grace


@dataclass
class Expected:
    granted: bool
    uses_pass: bool = False  # a day pass is consumed by this grant


def expected(model: Model, holder: str, door: str, t: float) -> Expected:
    """What the contract says happens when `holder` badges at `door` at gateway time `t`."""
    if model.lockdown:
        return Expected(False)
    m = model.docs[holder]
    entitled = False
    uses_pass = False
    if billing_allows(m, t):
        end = _instant(m["contract"]["end"])
        if m["plan"] == "hot-desk" and (end is None or t < end) and office_open(t):
            entitled = True  # m-plan: its plan, office hours, inside the contract
        elif m["access"] and door == "front":  # m-grant: front, always
            entitled = True
        elif m["day_pass_balance"] > 0 or holder == "m-pass":
            day = _local(t).date()
            if office_open(t):
                if (holder, day) in model.pass_days:
                    entitled = True
                elif m["day_pass_balance"] - model.passes_used.get(holder, 0) > 0:
                    entitled = uses_pass = True
    if entitled and door in DENY_STALE and model.cache_untrusted(t):
        entitled = uses_pass = False  # the offline policy: a stale cache cannot vouch
    if not entitled and door == "lobby" and lobby_open(t):
        return Expected(True)  # held open by its schedule: anyone passes
    return Expected(entitled, uses_pass)


class Model:
    def __init__(self) -> None:
        self.docs = {m["id"]: m for m in site_doc()["members"]}
        self.lockdown = False
        self.pass_days: set[tuple[str, Any]] = set()
        self.passes_used: dict[str, int] = {}
        self.synced_at = START
        self.cloud_time = START

    def cache_untrusted(self, t: float) -> bool:
        return t - self.synced_at > STALE_HOURS * 3600 or t < self.cloud_time - 300


# --- the system ----------------------------------------------------------------------


def _holder_creds(ix: SiteIndex, holder: str) -> list[tuple[str, str]]:
    return [(c.id, k) for k, c in ix.cards.items() if c.holder == holder]


class DoorSystem(RuleBasedStateMachine):
    """The real decision and door machines, fed through their own interfaces."""

    base_index: SiteIndex

    def __init__(self) -> None:
        super().__init__()
        self.ix = copy.deepcopy(self.base_index)
        self.st = RuntimeState()
        self.model = Model()
        self.true_t = START  # what time it really is (the cloud's clock)
        self.skew = 0.0  # the gateway's clock less the true time
        self.mono = 1000.0  # the loop's monotonic clock: never jumps
        self.machines = {d: DoorMachine(d, TIMING, has_contact=True) for d in DOORS}
        self.cloud_up = True
        # Why each strike may be energised: the model's own bookkeeping.
        self.granted_until = dict.fromkeys(DOORS, 0.0)
        self.admin_until = dict.fromkeys(DOORS, 0.0)
        self._refresh_offline()
        self._sync_doors()

    @property
    def now(self) -> float:
        return self.true_t + self.skew

    # --- plumbing as the service does it ------------------------------------------------

    def _refresh_offline(self) -> None:
        reason, _ = offline_reason(
            self.now, self.model.cloud_time, self.model.synced_at, STALE_HOURS
        )
        self.st.offline_reason = reason
        self.st.offline_methods = {d: "locked" for d in DENY_STALE} if reason is not None else {}

    def _sync_doors(self) -> None:
        local = _local(self.now)
        for d in DOORS:
            m = self.machines[d]
            m.set_lockdown(self.mono, self.st.in_lockdown(d))
            m.set_schedule(
                self.mono, door_unlocked(self.ix, self.st, self.ix.doors[d], local) is not None
            )

    def _change(self, holder: str) -> None:
        doc = self.model.docs[holder]
        old = {holder: _holder_creds(self.ix, holder)}
        batch = check_batch(self.ix, [{"op": "upsert", "kind": "member", "data": doc}])
        assert not batch.refused, batch.refused
        patch_index(self.ix, batch, old)
        self._refresh_offline()
        self._sync_doors()

    def _advance(self, seconds: float) -> None:
        self.true_t += seconds
        self.mono += seconds
        for m in self.machines.values():
            m.tick(self.mono)
        self._refresh_offline()
        self._sync_doors()

    # --- rules -----------------------------------------------------------------------------

    @rule(holder=st.sampled_from(HOLDERS), door=st.sampled_from(DOORS))
    def badge(self, holder: str, door: str) -> None:
        t = self.now
        want = expected(self.model, holder, door, t)
        d = decide(self.ix, self.st, Presentation(door=door, at=t, cards=(CARDS[holder],)))
        assert d.granted == want.granted, (holder, door, _local(t).isoformat(), d, want)
        assert (d.effects.day_pass is not None) == want.uses_pass, (d, want)
        if d.effects.day_pass is not None:  # applied as the service applies it
            note_day_pass(self.st, d.effects.day_pass)
            self.model.pass_days.add((holder, d.effects.day_pass.day))
            self.model.passes_used[holder] = self.model.passes_used.get(holder, 0) + 1
        if d.granted:  # as AccessService._open passes it on
            self.machines[door].grant(self.mono, held_open=d.reason == "unlocked")
            if d.reason != "unlocked":
                self.granted_until[door] = self.mono + TIMING.unlock_s

    @rule(
        seconds=st.sampled_from((1.0, 4.0, 6.0, 45.0, 600.0, 3 * 3600.0, 6.5 * 3600.0, 7 * 3600.0))
    )
    def time_passes(self, seconds: float) -> None:
        if self.cloud_up:  # the pull scheduler keeps the cache fresh
            self._advance(seconds)
            self._sync()
        else:
            self._advance(seconds)

    @rule(jump=st.sampled_from((-86400.0, -3600.0, -900.0, -120.0, 120.0, 3600.0, 86400.0)))
    def clock_jumps(self, jump: float) -> None:
        """The gateway's wall clock is set wrong (or right again); the loop's is not."""
        self.skew += jump
        self._refresh_offline()
        self._sync_doors()

    @rule()
    def clock_fixed(self) -> None:
        self.skew = 0.0
        self._refresh_offline()
        self._sync_doors()

    @rule(up=st.booleans())
    def cloud(self, up: bool) -> None:
        self.cloud_up = up
        if up:
            self._sync()

    def _sync(self) -> None:
        # A successful pull: the cache is current as of the gateway's clock, and the
        # cloud vouches for its own (true) time.
        self.model.synced_at = self.now
        self.model.cloud_time = max(self.model.cloud_time, self.true_t)
        self._refresh_offline()
        self._sync_doors()

    @rule(minutes=st.sampled_from((-30, 0, 30)))
    def plan_ends(self, minutes: int) -> None:
        end = _local(self.now + minutes * 60).isoformat()
        self.model.docs["m-plan"]["contract"]["end"] = end
        self._change("m-plan")

    @rule(holder=st.sampled_from(HOLDERS), grace_min=st.sampled_from((None, -60, 0, 20, 600)))
    def billing_overdue(self, holder: str, grace_min: int | None) -> None:
        grace = None if grace_min is None else _local(self.now + grace_min * 60).isoformat()
        self.model.docs[holder]["billing"] = {"status": "past_due", "grace_until": grace}
        self._change(holder)

    @rule(holder=st.sampled_from(HOLDERS))
    def billing_settled(self, holder: str) -> None:
        self.model.docs[holder]["billing"] = {"status": "ok", "grace_until": None}
        self._change(holder)

    @rule(holder=st.sampled_from(HOLDERS))
    def suspended(self, holder: str) -> None:
        self.model.docs[holder]["billing"] = {"status": "suspended", "grace_until": None}
        self._change(holder)

    @rule()
    def grant_revoked(self) -> None:
        self.model.docs["m-grant"]["access"] = []
        self._change("m-grant")

    @rule()
    def grant_restored(self) -> None:
        self.model.docs["m-grant"]["access"] = [_access("front", "always")]
        self._change("m-grant")

    @rule()
    def contract_renewed(self) -> None:
        self.model.docs["m-plan"]["contract"]["end"] = None
        self._change("m-plan")

    @rule(door=st.sampled_from(DOORS), is_open=st.booleans())
    def contact(self, door: str, is_open: bool) -> None:
        self.machines[door].contact(self.mono, is_open)

    @rule(door=st.sampled_from(DOORS))
    def exit_button(self, door: str) -> None:
        # Request-to-exit unlocks from inside: a cause of its own, counted as a grant.
        self.machines[door].exit_request(self.mono)
        if not self.model.lockdown:
            self.granted_until[door] = max(
                self.granted_until[door], self.mono + TIMING.exit_unlock_s
            )

    @rule(door=st.sampled_from(DOORS), seconds=st.sampled_from((2.0, 30.0)))
    def admin_unlock(self, door: str, seconds: float) -> None:
        if self.st.in_lockdown(door):
            return  # the service refuses it (unlock_door: "lift it first")
        self.machines[door].admin_unlock(self.mono, seconds, "ops")
        self.admin_until[door] = max(self.admin_until[door], self.mono + seconds)

    @rule(on=st.booleans())
    def lockdown(self, on: bool) -> None:
        self.st.lockdown_site = on
        self.model.lockdown = on
        if on:
            self.granted_until = dict.fromkeys(DOORS, 0.0)
            self.admin_until = dict.fromkeys(DOORS, 0.0)
        self._sync_doors()

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def strike_energised_only_for_a_reason(self) -> None:
        for d, m in self.machines.items():
            if not m.strike_unlocked:
                continue
            assert not self.model.lockdown, f"{d}: unlocked in lockdown"
            reasons = {
                "grant": self.mono < self.granted_until[d],
                "admin": self.mono < self.admin_until[d],
                "schedule": d == "lobby" and lobby_open(self.now),
            }
            assert any(reasons.values()), (d, _local(self.now).isoformat(), m)

    @invariant()
    def schedule_follows_the_clock(self) -> None:
        lobby = self.machines["lobby"]
        assert lobby.schedule_unlocked == (lobby_open(self.now) and not self.model.lockdown)
        assert not self.machines["front"].schedule_unlocked


@pytest.fixture(scope="module")
def door_index(tmp_path_factory: pytest.TempPathFactory) -> SiteIndex:
    return index_of(tmp_path_factory.mktemp("door-states"), site_doc())


def test_door_machine_states(door_index: SiteIndex) -> None:
    DoorSystem.base_index = door_index
    DoorSystem.TestCase.settings = state_settings("fast")
    DoorSystem.TestCase().runTest()


def test_a_badge_at_a_door_held_open_does_not_outlast_the_schedule() -> None:
    """Regression (found by the machine above, long form): anyone's badge at a door
    held open by its schedule started a grant timer of its own, so the strike stayed
    energised past the schedule's end, or after the clock was set back out of it."""
    m = DoorMachine("lobby", TIMING, has_contact=True)
    m.set_schedule(0.0, True)
    assert m.strike_unlocked
    m.grant(1.0, held_open=True)  # decided "unlocked": let through by the schedule
    m.set_schedule(2.0, False)  # the window ends (or the clock goes back) 1 s later
    assert not m.strike_unlocked
    # An entitled holder's grant still runs its own timer.
    m.set_schedule(3.0, True)
    m.grant(4.0)
    m.set_schedule(5.0, False)
    assert m.strike_unlocked
    m.tick(4.0 + TIMING.unlock_s)
    assert not m.strike_unlocked
