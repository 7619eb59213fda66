"""Door controllers: the asynchronous shell around each `DoorMachine`.

A controller owns one door's timer (the machine's `deadline`), its strike
writer and its readers' feedback, and feeds the machine what happens: grants
(from the gateway's decisions), exit requests and contact changes (from the
hardware's inputs), admin unlocks, lockdown and the unlock schedule (from
the runtime state, re-read every second and after every change).

Every door the site index or the config knows has a controller; a door with
no hardware configured still keeps its state (admin unlock, schedule) for
`edgectl status` and the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from drivers.aio import cancel_and_wait
from edge.access.door import DoorMachine, DoorTiming, Output
from edge.access.hardware import STRIKE_ERRORS, Hardware, ReaderPort, strike_writer
from edge.config import Config, DoorHardware

log = logging.getLogger("edge.doors")

# A strike's state is written again this often, so a board that restarted (and
# dropped its relays) is put back in the state the door should be in.
REASSERT_S = 10.0
STRIKE_RETRY_MAX_S = 5.0

Emit = Callable[[str, str | None, dict[str, Any]], None]


class StrikeDriver:
    """Writes the strike relay: the latest wanted state wins, failures are retried."""

    def __init__(self, name: str, write: Callable[[bool], Awaitable[None]], fail_mode: str) -> None:
        self.name = name
        self.write = write
        self.fail_mode = fail_mode
        self.want_unlocked = False
        self.energised: bool | None = None  # as last acknowledged by the device
        self.fault: str | None = None
        self.last_write_ns = 0  # when the latest write was sent (for bench/)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def energise_for(self, unlocked: bool) -> bool:
        # Fail-secure strikes unlock when energised; fail-safe (maglocks) lock.
        return unlocked if self.fail_mode == "secure" else not unlocked

    def set(self, unlocked: bool) -> None:
        self.want_unlocked = unlocked
        self._wake.set()

    def start(self, door: str) -> None:
        self._wake.set()  # the locked state is written at once, whatever the relay was
        self._task = asyncio.create_task(self._run(), name=f"door[{door}].strike")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REASSERT_S):
                    await self._wake.wait()
            self._wake.clear()
            energise = self.energise_for(self.want_unlocked)
            self.last_write_ns = time.monotonic_ns()
            try:
                await self.write(energise)
            except STRIKE_ERRORS as exc:
                if self.fault is None:
                    log.error("strike %s: not switched: %s", self.name, exc)
                self.fault = f"strike not switched: {exc}"
                failures += 1
                await asyncio.sleep(min(STRIKE_RETRY_MAX_S, 0.1 * 2**failures))
                self._wake.set()
                continue
            if self.fault is not None:
                log.info("strike %s: switched again (was: %s)", self.name, self.fault)
            self.fault = None
            failures = 0
            self.energised = energise


Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class DoorController:
    def __init__(
        self,
        door: str,
        hw: DoorHardware | None,
        emit: Emit,
        spawn: Spawn,
        changed: Callable[[str], None] = lambda _door: None,
        moved: Callable[[str, str], None] = lambda _door, _what: None,
    ) -> None:
        self.door = door
        self.changed = changed
        self.moved = moved
        self.hw = hw
        self.emit = emit
        self.spawn = spawn
        timing = DoorTiming()
        if hw is not None:
            timing = DoorTiming(
                unlock_s=hw.unlock_seconds,
                extended_unlock_s=hw.extended_unlock_seconds,
                exit_unlock_s=hw.exit_unlock_seconds,
                held_open_s=hw.held_open_seconds,
                prealarm_s=hw.prealarm_seconds,
                relock_on_close=hw.relock_on_close,
            )
        self.machine = DoorMachine(
            door, timing, has_contact=hw is not None and hw.contact is not None
        )
        self.strike: StrikeDriver | None = None
        self.readers: list[ReaderPort] = []
        self.input_faults: list[Callable[[], str | None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._exit_pressed: bool | None = None

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    # --- inputs -------------------------------------------------------------------------

    def grant(self, extended: bool, held_open: bool = False) -> None:
        self.run(self.machine.grant(self.now(), extended, held_open))

    def contact(self, value: bool) -> None:
        assert self.hw is not None
        assert self.hw.contact is not None
        is_open = value == (self.hw.contact.open_when == "on")
        was_open = self.machine.contact_open
        self.run(self.machine.contact(self.now(), is_open))
        if is_open and was_open is False:  # an opening, not a door found open at start
            self.moved(self.door, "door contact opened")

    def exit_input(self, value: bool) -> None:
        assert self.hw is not None
        assert self.hw.exit is not None
        pressed = value == (self.hw.exit.pressed_when == "on")
        was, self._exit_pressed = self._exit_pressed, pressed
        if pressed and was is False:  # a press, not a button found pressed at start
            self.run(self.machine.exit_request(self.now()))
            self.moved(self.door, "exit button")

    # --- outputs ------------------------------------------------------------------------

    def run(self, outputs: list[Output]) -> None:
        for out in outputs:
            if out.kind == "strike":
                if self.strike is not None:
                    self.strike.set(bool(out.value))
                log.info("door %s: %s", self.door, "unlocked" if out.value else "locked")
            elif out.kind == "event":
                self.emit(str(out.value), self.door, dict(out.details))
            elif out.kind == "note":
                extra = " ".join(f"{k}={v}" for k, v in out.details.items())
                log.info("door %s: %s%s", self.door, out.value, f" ({extra})" if extra else "")
            elif out.kind == "feedback":
                # The held-open pre-alarm: the door's readers show red and beep.
                log.warning("door %s: %s", self.door, out.value)
                for r in self.readers:
                    self.spawn(r.feedback(False), f"reader[{r.name}].prealarm")
        self._arm()
        self.changed(self.door)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.machine.deadline()
        if due is not None:
            self._timer = asyncio.get_running_loop().call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.run(self.machine.tick(self.now()))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- views ----------------------------------------------------------------------------

    def faults(self) -> list[str]:
        out = []
        if self.strike is not None and self.strike.fault:
            out.append(self.strike.fault)
        for fault in self.input_faults:
            problem = fault()
            if problem:
                out.append(problem)
        for r in self.readers:
            if r.fault:
                out.append(f"reader {r.name}: {r.fault}")
        return out

    def view(self) -> dict[str, Any]:
        m = self.machine
        now = self.now()
        until = (
            m.unlocked_until if m.unlocked_until is not None and now < m.unlocked_until else None
        )
        faults = self.faults()
        return {
            "state": m.state(now),
            "unlocked_for_s": round(until - now, 1) if until is not None else None,
            "contact": None
            if m.contact_open is None or not m.has_contact
            else ("open" if m.contact_open else "closed"),
            "strike": None
            if self.strike is None
            else {
                "name": self.strike.name,
                "fail_mode": self.strike.fail_mode,
                "energised": self.strike.energised,
                # CLOCK_MONOTONIC of the last command sent, for latency measurements.
                "command_ns": self.strike.last_write_ns,
            },
            "readers": [r.view() for r in self.readers],
            "fault": "; ".join(faults) if faults else None,
        }


class Doors:
    """Every door's controller, the site hardware, and the schedule loop."""

    def __init__(self, config: Config, hardware: Hardware | None, emit: Emit) -> None:
        self.config = config
        self.hardware = hardware
        self.emit = emit
        self.controllers: dict[str, DoorController] = {}
        # Told (with the door's id) after anything may have changed a door's state.
        # Told (with the door's id) when its state may have changed: MQTT, the console.
        self.observers: list[Callable[[str], None]] = []
        # Told (door, what, wall-clock time) when someone goes through a door without a
        # credential: its contact opens or its exit button is pressed (room presence).
        self.movement: list[Callable[[str, str, float], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        for door_id, hw in config.doors.items():
            ctl = DoorController(door_id, hw, emit, self.spawn, self._changed, self._moved)
            self.controllers[door_id] = ctl
            if hardware is not None:
                self._wire(ctl, hw, hardware)

    def _wire(self, ctl: DoorController, hw: DoorHardware, hardware: Hardware) -> None:
        ctl.readers = [p for p in hardware.readers.values() if p.door == ctl.door]
        if hw.strike is not None:
            name, write = strike_writer(hardware, hw.strike)
            ctl.strike = StrikeDriver(name, write, hw.fail_mode)
        if hw.contact is not None:
            c = hw.contact
            hardware.watch_input(c.bus, c.unit, c.input, ctl.contact)
            ctl.input_faults.append(_bus_fault(hardware, c.bus, "door contact"))
        if hw.exit is not None:
            e = hw.exit
            hardware.watch_input(e.bus, e.unit, e.input, ctl.exit_input)
            if e.bus != (hw.contact.bus if hw.contact else None):
                ctl.input_faults.append(_bus_fault(hardware, e.bus, "exit button"))

    def _moved(self, door: str, what: str) -> None:
        at = time.time()
        for observer in self.movement:
            observer(door, what, at)

    def controller(self, door: str) -> DoorController:
        ctl = self.controllers.get(door)
        if ctl is None:
            ctl = DoorController(door, None, self.emit, self.spawn, self._changed)
            self.controllers[door] = ctl
        return ctl

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a short job (reader feedback) as a task that stop() can cancel."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, sync: Callable[[], None]) -> None:
        for ctl in self.controllers.values():
            if ctl.strike is not None:
                ctl.strike.start(ctl.door)
        sync()
        self._task = asyncio.create_task(self._every_second(sync), name="doors.schedule")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for ctl in self.controllers.values():
            ctl.stop()
            if ctl.strike is not None:
                await ctl.strike.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _every_second(sync: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.001)
            try:
                sync()
            except Exception:  # a bug here must not end the schedules for good
                log.exception("doors: schedule sync failed")

    def apply_state(
        self, states: Iterable[tuple[str, bool, bool]], quiet: frozenset[str] = frozenset()
    ) -> None:
        """(door, schedule unlocked, lockdown) for every door; `quiet` doors emit no event."""
        for door, scheduled, lockdown in states:
            ctl = self.controller(door)
            now = ctl.now()
            out = ctl.machine.set_lockdown(now, lockdown)
            out += ctl.machine.set_schedule(now, scheduled)
            if door in quiet:
                out = [o for o in out if o.kind != "event"]
            if out:
                ctl.run(out)

    def decided(
        self,
        door: str,
        granted: bool,
        extended: bool,
        port: ReaderPort | None,
        held_open: bool = False,
    ) -> None:
        if granted:
            self.controller(door).grant(extended, held_open)
        if port is not None:
            self.spawn(port.feedback(granted), f"reader[{port.name}].feedback")

    def admin_unlock(self, door: str, seconds: float, by: str) -> None:
        ctl = self.controller(door)
        ctl.run(ctl.machine.admin_unlock(ctl.now(), seconds, by))

    def view(self, door: str) -> dict[str, Any]:
        return self.controller(door).view()

    def _changed(self, door: str) -> None:
        for observer in self.observers:
            observer(door)

    def state_of(self, door: str) -> dict[str, Any]:
        """A door's state as published on MQTT: the machine's summary, its readers'
        availability and its faults in words."""
        ctl = self.controller(door)
        faults = ctl.faults()
        return {
            **ctl.machine.summary(ctl.now()),
            "readers": {r.name: r.online for r in ctl.readers},
            "fault": "; ".join(faults) if faults else None,
        }


def _bus_fault(hardware: Hardware, bus: str, what: str) -> Callable[[], str | None]:
    def fault() -> str | None:
        mb = hardware.modbus.get(bus)
        if mb is None or mb.online:
            return None
        return f"{what} not read: {mb.fault}"

    return fault
