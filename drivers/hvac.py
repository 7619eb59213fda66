"""HVAC units over Modbus: a room's thermostat or fan-coil controller.

Most such controllers keep their operating mode and setpoint in two holding
registers and the measured temperature in an input register, with the
temperature as °C × 10. `ModbusHvacConfig` says where and how; `HvacUnit`
drives one unit towards what the room wants:

- `want("comfort" | "standby" | "off")` sets the desired state and wakes the
  unit's task, which writes mode and setpoint (one function-16 write when the
  registers are adjacent, else setpoint then mode with function 6) and reads
  them back. The command counts as done only when the read-back matches.
  "off" writes the standby setpoint too, so a unit switched on at the wall
  starts from standby.
- A read-back that differs, or a refused or garbled request, is tried again
  `retries` times; then the unit is unavailable with a `fault` (logged once
  at ERROR, DEBUG while it stays, INFO when it is back) and the command is
  tried once per step of a capped, jittered backoff (1 s doubling to 60 s)
  until the unit confirms it. A unit that was unavailable is always written
  again when it is back: it may have lost its settings with its power.
- `confirmed` is the target the registers last read back as (None when they
  match none): after a change at the wall it is None until the unit is put
  back, and a unit that never took a new command still shows the old one.
- Every `poll_s` the unit is read back (and its temperature read): a unit
  changed at the wall is put back (logged once at WARNING) and status gets a
  fresh temperature. Nothing is read in between while all is well: a
  Raspberry Pi with many units must not spend its cores polling.

The bus (`drivers.modbus.ModbusBus`) serialises requests and supervises the
line; while it reports the unit offline (`BusOffline`), requests fail at once
without touching the wire, and the unit checks every `backoff.initial_s`
whether the bus is back, so it re-applies promptly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from drivers.aio import cancel_and_wait
from drivers.modbus import Backoff, BusOffline, ModbusBus, ModbusError

log = logging.getLogger("drivers.hvac")

Target = Literal["comfort", "standby", "off"]
TARGETS: tuple[Target, ...] = ("comfort", "standby", "off")

# --- configuration ---------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Register = Annotated[int, Field(ge=0, le=0xFFFF)]
Celsius = Annotated[float, Field(ge=5, le=35)]


class ModbusHvacConfig(_Section):
    """An HVAC unit (thermostat, fan-coil controller) at a unit id on a Modbus bus."""

    type: Literal["modbus_hvac"]
    room: Annotated[str, Field(min_length=1)]  # the room it heats or cools
    bus: Annotated[str, Field(min_length=1)]  # a Modbus bus in [buses]
    unit: Annotated[int, Field(ge=1, le=247)]
    mode_register: Register = 0  # holding
    setpoint_register: Register = 1  # holding, °C × scale
    # Input register with the measured temperature (°C × scale, signed); None (`false` in
    # TOML, which has no null): the unit has no sensor and no temperature is read.
    temperature_register: Register | None = 0
    scale: Annotated[int, Field(ge=1, le=1000)] = 10  # register value = °C × scale
    # The unit's values for its modes (see its manual).
    mode_off: Register = 0
    mode_comfort: Register = 1
    mode_standby: Register = 2
    comfort_c: Celsius = 21.0
    standby_c: Celsius = 17.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2  # attempts after the first, for a read-back
    # The unit is read back this often (a change at the wall, the temperature); 0 = never.
    poll_s: Annotated[float, Field(ge=0, le=3600)] = 60

    @field_validator("temperature_register", mode="before")
    @classmethod
    def _false_is_none(cls, value: object) -> object:
        if value is False:
            return None
        if value is True:
            raise ValueError(
                "true is not a register: give the input register's number, "
                "or false for a unit without a temperature sensor"
            )
        return value

    @field_validator("setpoint_register")
    @classmethod
    def _own_register(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("mode_register"):
            raise ValueError(f"register {value} is the mode_register too; they must differ")
        return value

    @field_validator("mode_comfort", "mode_standby")
    @classmethod
    def _distinct_modes(cls, value: int, info: ValidationInfo) -> int:
        earlier = (
            ("mode_off",) if info.field_name == "mode_comfort" else ("mode_off", "mode_comfort")
        )
        for other in earlier:
            if info.data.get(other) == value:
                raise ValueError(f"{value} is {other} too; each mode needs its own value")
        return value

    @field_validator("standby_c")
    @classmethod
    def _standby_not_above_comfort(cls, value: float, info: ValidationInfo) -> float:
        comfort = info.data.get("comfort_c")
        if comfort is not None and value > comfort:
            raise ValueError(
                f"{value:g} °C is above comfort_c ({comfort:g} °C); "
                "standby must be as warm as comfort or cooler"
            )
        return value

    @field_validator("poll_s")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("0 (never) or at least 0.1 s: polling faster only burns the bus")
        return value


# --- the unit ----------------------------------------------------------------------------


class _Unconfirmed(Exception):
    """Internal: the unit answered, but did not take the command."""


def _signed(raw: int) -> int:
    return raw - 0x10000 if raw >= 0x8000 else raw


class HvacUnit:
    """Drives one Modbus HVAC unit towards a target and reports what it does.

    `on_change(unit)` is called on the loop whenever `confirmed`, `available`,
    `fault` or `temperature_c` changes. `backoff` is for tests.
    """

    def __init__(
        self,
        name: str,
        cfg: ModbusHvacConfig,
        bus: ModbusBus,
        on_change: Callable[[HvacUnit], None],
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.bus = bus
        self.on_change = on_change
        self.backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        self._target: Target | None = None
        self._confirmed: Target | None = None
        self._mode_raw: int | None = None
        self._setpoint_raw: int | None = None
        self._temperature_c: float | None = None
        self._available = False
        self._fault: str | None = "not started"
        self._reapply = False  # write even if the last read-back matched
        self._said_unavailable = False
        self._down_since = 0.0
        self._reported: tuple[Target | None, bool, float | None, str | None] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- state -----------------------------------------------------------------------------

    @property
    def room(self) -> str:
        return self.cfg.room

    @property
    def target(self) -> Target | None:
        """What the room wants; None until `want()`."""
        return self._target

    @property
    def confirmed(self) -> Target | None:
        """The target the unit's registers last read back as; None for none of them."""
        return self._confirmed

    @property
    def mode(self) -> Target | int | None:
        """The mode as last read: its name, or the raw value for one the config does not name."""
        if self._mode_raw is None:
            return None
        name = self._mode_name(self._mode_raw)
        return self._mode_raw if name is None else name

    @property
    def setpoint_c(self) -> float | None:
        if self._setpoint_raw is None:
            return None
        return self._setpoint_raw / self.cfg.scale

    @property
    def temperature_c(self) -> float | None:
        """The measured temperature as last read; None without a sensor or before a read."""
        return self._temperature_c

    @property
    def available(self) -> bool:
        return self._available

    @property
    def fault(self) -> str | None:
        """Why the unit is unavailable, for people (`edgectl status`); None when available."""
        return self._fault

    def view(self) -> dict[str, object]:
        return {
            "type": self.cfg.type,
            "target": self._target,
            "confirmed": self._confirmed,
            "mode": self.mode,
            "setpoint_c": self.setpoint_c,
            "temperature_c": self._temperature_c,
            "available": self._available,
            "fault": self._fault,
        }

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the unit's task; never raises for a unit that does not answer."""
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._wake = asyncio.Event()
        self._fault = "not read yet"
        self._task = asyncio.create_task(self._run(), name=f"hvac[{self.name}]")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    # --- commands ----------------------------------------------------------------------------

    def want(self, target: Target) -> None:
        """Drive the unit to `target` until its registers read back as it."""
        if target not in TARGETS:
            raise ValueError(f"{target!r}: not one of {', '.join(TARGETS)}")
        if target == self._target:
            return
        log.debug("%s: wanted %s (was %s)", self.name, target, self._target)
        self._target = target
        self._reapply = True
        if self._wake is not None:
            self._wake.set()

    def _registers_for(self, target: Target) -> tuple[int, int]:
        c = self.cfg
        if target == "comfort":
            return c.mode_comfort, round(c.comfort_c * c.scale)
        if target == "standby":
            return c.mode_standby, round(c.standby_c * c.scale)
        return c.mode_off, round(c.standby_c * c.scale)

    def _mode_name(self, raw: int) -> Target | None:
        c = self.cfg
        names: dict[int, Target] = {
            c.mode_off: "off",
            c.mode_comfort: "comfort",
            c.mode_standby: "standby",
        }
        return names.get(raw)

    def _describe(self, mode: int | None, setpoint: int | None) -> str:
        """For people: "comfort at 21 °C", "mode 7 at 21 °C"."""
        if mode is None or setpoint is None:
            return "nothing read yet"
        return f"{self._mode_name(mode) or f'mode {mode}'} at {setpoint / self.cfg.scale:g} °C"

    # --- the task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        failures = 0
        next_poll = 0.0  # time.monotonic(); the first read is at once
        period = self.cfg.poll_s or math.inf
        while True:
            self._wake.clear()
            target = self._target
            try:
                if target is not None and (self._reapply or self._confirmed != target):
                    await self._apply(target)
                elif failures or time.monotonic() >= next_poll:
                    await self._observe()
                else:
                    await self._sleep(
                        None if next_poll == math.inf else next_poll - time.monotonic()
                    )
                    continue
            except (ModbusError, _Unconfirmed) as exc:
                failures += 1
                self._reapply = True
                self._set_available(False, str(exc))
                offline = isinstance(exc, BusOffline)
                await self._backoff(self.backoff.delay(failures - 1), watch_bus=offline)
                continue
            except Exception:  # a bug here or in a library must not end the unit for good
                log.exception("%s: internal error", self.name)
                failures += 1
                self._reapply = True
                self._set_available(False, "internal error (see the log)")
                await self._backoff(self.backoff.delay(failures - 1), watch_bus=False)
                continue
            failures = 0
            self._set_available(True, None)
            next_poll = time.monotonic() + period

    async def _apply(self, target: Target) -> None:
        """Write and read back until it reads back right; raise after 1 + retries attempts.

        A unit already unavailable gets one attempt each time: the backoff paces them.
        """
        mode, setpoint = self._registers_for(target)
        attempts = 1 + self.cfg.retries if self._available else 1
        problem = ""
        for _ in range(attempts):
            try:
                await self._write(mode, setpoint)
                await self._read()
            except BusOffline:
                raise  # no use trying again before the bus is back
            except ModbusError as exc:  # refused, or an answer that made no sense
                problem = str(exc)
                continue
            if (self._mode_raw, self._setpoint_raw) == (mode, setpoint):
                if self._target == target:  # else want() came meanwhile: write that one too
                    self._reapply = False
                log.debug("%s: %s confirmed", self.name, target)
                return
            now = self._describe(self._mode_raw, self._setpoint_raw)
            wrote = self._describe(mode, setpoint)
            problem = f"unit {self.cfg.unit} reads back {now} after {wrote} was written"
        raise _Unconfirmed(f"{target} not confirmed: {problem}")

    async def _observe(self) -> None:
        """Read the unit; put it back if it was changed at the wall."""
        await self._read()
        target = self._target
        if target is not None and self._confirmed != target:
            log.warning(
                "%s: changed outside the gateway (now %s); setting %s again",
                self.name,
                self._describe(self._mode_raw, self._setpoint_raw),
                target,
            )
            self._reapply = True

    async def _write(self, mode: int, setpoint: int) -> None:
        c, bus = self.cfg, self.bus
        if c.setpoint_register == c.mode_register + 1:
            await bus.write_registers(c.unit, c.mode_register, [mode, setpoint])
        elif c.mode_register == c.setpoint_register + 1:
            await bus.write_registers(c.unit, c.setpoint_register, [setpoint, mode])
        else:  # the setpoint first: the unit never runs the new mode at the old setpoint
            await bus.write_register(c.unit, c.setpoint_register, setpoint)
            await bus.write_register(c.unit, c.mode_register, mode)

    async def _read(self) -> None:
        c, bus = self.cfg, self.bus
        if abs(c.setpoint_register - c.mode_register) == 1:
            first = min(c.mode_register, c.setpoint_register)
            values = await bus.read_holding_registers(c.unit, first, 2)
            mode = values[c.mode_register - first]
            setpoint = values[c.setpoint_register - first]
        else:
            (mode,) = await bus.read_holding_registers(c.unit, c.mode_register, 1)
            (setpoint,) = await bus.read_holding_registers(c.unit, c.setpoint_register, 1)
        temperature = None
        if c.temperature_register is not None:
            (raw,) = await bus.read_input_registers(c.unit, c.temperature_register, 1)
            temperature = _signed(raw) / c.scale
        self._mode_raw, self._setpoint_raw = mode, setpoint
        self._temperature_c = temperature
        self._confirmed = next(
            (t for t in TARGETS if self._registers_for(t) == (mode, setpoint)), None
        )

    async def _sleep(self, seconds: float | None) -> bool:
        """Until `want()` wakes the unit (True) or `seconds` pass (False); None: no limit."""
        assert self._wake is not None
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _backoff(self, delay: float, *, watch_bus: bool) -> None:
        """Wait before trying again; a new target ends it, and so does the bus coming back."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if await self._sleep(min(left, self.backoff.initial_s) if watch_bus else left):
                return
            if watch_bus and self.bus.online:
                return

    # --- reporting ---------------------------------------------------------------------------

    def _set_available(self, available: bool, fault: str | None) -> None:
        was, old_fault = self._available, self._fault
        self._available, self._fault = available, fault
        if available:
            if self._said_unavailable:
                down_s = time.monotonic() - self._down_since
                log.info("%s: available again after %.1f s (was: %s)", self.name, down_s, old_fault)
            elif not was:
                log.info(
                    "%s: available (%s, measuring %s)",
                    self.name,
                    self._describe(self._mode_raw, self._setpoint_raw),
                    "nothing" if self._temperature_c is None else f"{self._temperature_c:g} °C",
                )
            self._said_unavailable = False
        elif not self._said_unavailable:
            log.error("%s: unavailable: %s", self.name, fault)
            self._said_unavailable = True
            self._down_since = time.monotonic()
        elif fault != old_fault:
            log.debug("%s: still unavailable: %s", self.name, fault)
        self._report()

    def _report(self) -> None:
        now = (self._confirmed, self._available, self._temperature_c, self._fault)
        if now == self._reported:
            return
        self._reported = now
        try:
            self.on_change(self)
        except Exception:
            log.exception("%s: on_change failed", self.name)
