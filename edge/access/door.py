"""The door state machine: strike, contact, exit button, alarms.

Pure and clock-free like the policy: every input carries its instant, every
call returns what to do (`Output`: drive the strike, record an event, give
the reader feedback), and `deadline()` says when `tick` must run next. The
asynchronous controller that owns timers and drivers is a thin shell around
it, and everything here is tested without an event loop or hardware.

Events of the contract (`door.forced`, `door.held_open`, `door.unlocked` /
`door.locked` for schedule and admin causes) are returned as such; the other
transitions (opened, closed, pre-alarm, relock) come back as log-only notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Cause = Literal["grant", "exit", "admin", "schedule"]


@dataclass(frozen=True, slots=True)
class DoorTiming:
    unlock_s: float = 5.0  # a grant unlocks this long
    extended_unlock_s: float = 15.0  # for holders who need longer
    exit_unlock_s: float = 5.0  # request-to-exit
    held_open_s: float = 30.0  # open longer than this after an authorised opening: alarm
    prealarm_s: float = 10.0  # warn this long before the held-open alarm
    relock_on_close: bool = True  # a closed door relocks at once after a grant


@dataclass(frozen=True, slots=True)
class Output:
    """Something to do: `strike` (unlocked or not), an `event`, or a log `note`."""

    kind: Literal["strike", "event", "note", "feedback"]
    value: Any
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoorMachine:
    door: str
    timing: DoorTiming = DoorTiming()
    has_contact: bool = True  # without a door contact there is no forced/held detection

    lockdown: bool = False
    schedule_unlocked: bool = False
    unlocked_until: float | None = None  # grant, exit or admin
    unlock_cause: Cause | None = None
    contact_open: bool | None = None  # None: not known yet
    opened_at: float | None = None
    authorised_open: bool = False
    prealarm_sent: bool = False
    held_sent: bool = False
    strike_unlocked: bool = False  # as last commanded

    # --- inputs ------------------------------------------------------------------

    def grant(self, at: float, extended: bool = False, held_open: bool = False) -> list[Output]:
        """A granted badge; `held_open`: granted only because the unlock schedule holds
        the door open. That door is open already, and a timer of its own would keep
        it unlocked after the schedule ends (or the clock is set back) for someone
        the schedule alone let through."""
        if held_open and self.schedule_unlocked:
            return []
        seconds = self.timing.extended_unlock_s if extended else self.timing.unlock_s
        return self._unlock(at, seconds, "grant")

    def exit_request(self, at: float) -> list[Output]:
        out = [Output("note", "exit requested")]
        return out + self._unlock(at, self.timing.exit_unlock_s, "exit")

    def admin_unlock(self, at: float, seconds: float, by: str) -> list[Output]:
        if self.lockdown:
            return []
        out = self._unlock(at, seconds, "admin")
        out.append(
            Output("event", "door.unlocked", {"cause": "admin", "seconds": seconds, "by": by})
        )
        return out

    def set_schedule(self, at: float, unlocked: bool) -> list[Output]:
        if unlocked == self.schedule_unlocked:
            return []
        self.schedule_unlocked = unlocked
        out = [
            Output("event", "door.unlocked" if unlocked else "door.locked", {"cause": "schedule"})
        ]
        return out + self._update(at)

    def set_lockdown(self, at: float, on: bool) -> list[Output]:
        if on == self.lockdown:
            return []
        self.lockdown = on
        out = [Output("note", "lockdown on" if on else "lockdown off")]
        if on:
            if self.unlock_cause == "admin" and self.unlocked_until is not None:
                out.append(Output("event", "door.locked", {"cause": "lockdown"}))
            self.unlocked_until = None
            self.unlock_cause = None
        return out + self._update(at)

    def contact(self, at: float, is_open: bool) -> list[Output]:
        if is_open == self.contact_open:
            return []
        first_reading = self.contact_open is None
        self.contact_open = is_open
        if not self.has_contact:
            return []
        out: list[Output] = []
        if is_open:
            self.opened_at = at
            self.prealarm_sent = self.held_sent = False
            self.authorised_open = self._unlocked_now(at)
            if self.authorised_open:
                out.append(Output("note", "opened", {"cause": self._cause()}))
            elif first_reading:
                # Found open at start: nobody can say it was forced; watch it as held.
                self.authorised_open = True
                out.append(Output("note", "found open"))
            else:
                out.append(Output("event", "door.forced", {}))
        else:
            held = self.held_sent
            self.opened_at = None
            self.authorised_open = False
            self.prealarm_sent = self.held_sent = False
            out.append(Output("note", "closed after being held open" if held else "closed"))
            if (
                self.timing.relock_on_close
                and self.unlocked_until is not None
                and self.unlock_cause in ("grant", "exit")
            ):
                self.unlocked_until = None
                self.unlock_cause = None
                out.append(Output("note", "relocked on close"))
        return out + self._update(at)

    # --- time ---------------------------------------------------------------------

    def deadline(self) -> float | None:
        """The next instant `tick` has something to do, if any."""
        times = []
        if self.unlocked_until is not None:
            times.append(self.unlocked_until)
        if self._watching_held():
            assert self.opened_at is not None
            if not self.prealarm_sent:
                times.append(self.opened_at + self.timing.held_open_s - self.timing.prealarm_s)
            elif not self.held_sent:
                times.append(self.opened_at + self.timing.held_open_s)
        return min(times) if times else None

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        if self.unlocked_until is not None and now >= self.unlocked_until:
            cause = self.unlock_cause
            self.unlocked_until = None
            self.unlock_cause = None
            if cause == "admin":
                out.append(Output("event", "door.locked", {"cause": "admin"}))
        if self._watching_held():
            assert self.opened_at is not None
            open_for = now - self.opened_at
            if (
                not self.prealarm_sent
                and open_for >= self.timing.held_open_s - self.timing.prealarm_s
            ):
                self.prealarm_sent = True
                out.append(Output("note", "held open: pre-alarm"))
                out.append(Output("feedback", "prealarm"))
            if not self.held_sent and open_for >= self.timing.held_open_s:
                self.held_sent = True
                out.append(Output("event", "door.held_open", {"open_s": round(open_for, 1)}))
        return out + self._update(now)

    # --- views ---------------------------------------------------------------------

    def summary(self, now: float) -> dict[str, object]:
        """The door's state as data (MQTT, Home Assistant): lock, cause, contact, alarm."""
        cause: str | None
        if self.lockdown:
            lock, cause = "locked", "lockdown"
        elif self.schedule_unlocked:
            lock, cause = "unlocked", "schedule"
        elif self.unlocked_until is not None and now < self.unlocked_until:
            lock, cause = "unlocked", self.unlock_cause
        else:
            lock, cause = "locked", None
        contact = None
        alarm = None
        if self.has_contact and self.contact_open is not None:
            contact = "open" if self.contact_open else "closed"
            if self.contact_open and self.held_sent:
                alarm = "held_open"
            elif self.contact_open and not self.authorised_open:
                alarm = "forced"
        return {
            "lock": lock,
            "cause": cause,
            "lockdown": self.lockdown,
            "contact": contact,
            "alarm": alarm,
        }

    def state(self, now: float) -> str:
        """The door's state in words, for `edgectl status`."""
        if self.lockdown:
            base = "lockdown"
        elif self.schedule_unlocked:
            base = "unlocked (schedule)"
        elif self.unlocked_until is not None and now < self.unlocked_until:
            base = f"unlocked ({self.unlock_cause})"
        else:
            base = "locked"
        if not self.has_contact or self.contact_open is None:
            return base
        if not self.contact_open:
            return f"{base}, closed"
        if self.held_sent:
            return f"{base}, HELD OPEN"
        if not self.authorised_open:
            return f"{base}, FORCED OPEN"
        return f"{base}, open"

    # --- internals -----------------------------------------------------------------

    def _unlock(self, at: float, seconds: float, cause: Cause) -> list[Output]:
        if self.lockdown:
            return []
        until = at + seconds
        if self.unlocked_until is None or until > self.unlocked_until:
            self.unlocked_until = until
            self.unlock_cause = cause
        if self.contact_open and not self.authorised_open:
            # A forced door that is now legitimately unlocked stops being forced.
            self.authorised_open = True
        return self._update(at)

    def _unlocked_now(self, at: float) -> bool:
        if self.lockdown:
            return False
        return self.schedule_unlocked or (
            self.unlocked_until is not None and at < self.unlocked_until
        )

    def _cause(self) -> str:
        return "schedule" if self.schedule_unlocked else str(self.unlock_cause)

    def _watching_held(self) -> bool:
        return (
            self.has_contact
            and bool(self.contact_open)
            and self.authorised_open
            and not self.schedule_unlocked
            and self.opened_at is not None
        )

    def _update(self, at: float) -> list[Output]:
        want = self._unlocked_now(at)
        if want == self.strike_unlocked:
            return []
        self.strike_unlocked = want
        return [Output("strike", want)]
