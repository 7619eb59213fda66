"""A simulated Modbus HVAC unit: a room thermostat or fan-coil controller.

The unit is pymodbus's own server (`ModbusTcpServer`, `ModbusSerialServer`)
with a `SimDevice` at the unit's id, as `hwsim.modbus_board` serves a relay
board: TCP on 127.0.0.1, and RTU on a serial device such as one end of a
`hwsim.serial_link.SerialLink`; both at once if asked.

Registers (the common layout of such controllers; addresses configurable):
- holding `mode_address` (0): 0 off, 1 comfort, 2 standby;
- holding `setpoint_address` (1): the setpoint in °C × `scale` (10);
- input `temperature_address` (0): the measured temperature in °C × `scale`,
  two's complement. It moves towards the setpoint at `rate_c_per_s` while
  the unit runs (comfort or standby) and towards `ambient_c` while it is off.

A mode outside 0-2 or a setpoint outside 5-35 °C is refused with exception 3
(illegal data value) and nothing of that write is applied; an address the
unit does not have gets exception 2, coils and discrete inputs exception 1.

The unit's own state (`mode`, `setpoint_c`, `temperature_c`) is the truth:
pymodbus calls the device's action before every access, and the action copies
the state into pymodbus's registers (reads) or checks and applies a write.
The temperature is not stepped by a task: it is computed from the last
change, so reading it from a test is safe at any time.

Faults: `delay_s` (answers late), `stuck` (takes writes and answers them, but
keeps the old values, so a read-back differs), `stop()` and `start()` again on
the same port (gone and back), `set_by_hand()` (someone at the wall unit).

Quirks of pymodbus 3.16 handled here (see `hwsim.modbus_board` for the first):
- Requests for other unit ids go to a catch-all device whose answers are
  dropped on their way out, so the unit stays silent on a shared RS-485 line.
- For a single-register write (function 6) pymodbus answers with the
  register read back after the write, not with the request's echo. A real
  unit echoes; so does this one, also when it is `stuck`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from hwsim.modbus_serving import ModbusServing

OFF, COMFORT, STANDBY = 0, 1, 2
MODES = (OFF, COMFORT, STANDBY)
SETPOINT_MIN_C, SETPOINT_MAX_C = 5.0, 35.0

HOLDING_READS = frozenset({3})
HOLDING_WRITES = frozenset({6, 16})
INPUT_READS = frozenset({4})


class HvacWrite(NamedTuple):
    ns: int  # time.monotonic_ns() when the unit applied it
    mode: int
    setpoint_c: float
    by: Literal["modbus", "hand"]


@dataclass(frozen=True, slots=True)
class _Climate:
    """Mode, setpoint and the temperature at an instant: replaced whole, never changed."""

    mode: int
    setpoint_raw: int
    since_ns: int
    temperature_c: float


class SimHvac:
    """One HVAC unit at `unit`.

    `tcp_port`: 0 picks a free port at the first start (kept for restarts),
    None serves no TCP. `serial_port`: a device to serve RTU on, or None.
    """

    def __init__(
        self,
        *,
        unit: int = 1,
        mode_address: int = 0,
        setpoint_address: int = 1,
        temperature_address: int = 0,
        scale: int = 10,
        mode: int = OFF,
        setpoint_c: float = 20.0,
        ambient_c: float = 15.0,
        temperature_c: float | None = None,  # at start; None: ambient
        rate_c_per_s: float = 0.005,  # a room warms by about 0.3 °C a minute
        tcp_port: int | None = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError("unit must be 1-247")
        if mode_address == setpoint_address:
            raise ValueError("mode and setpoint need their own registers")
        if scale < 1:
            raise ValueError("scale must be at least 1")
        self.unit = unit
        self.mode_address = mode_address
        self.setpoint_address = setpoint_address
        self.temperature_address = temperature_address
        self.scale = scale
        self.ambient_c = ambient_c
        self.rate_c_per_s = rate_c_per_s
        self.tcp_port = tcp_port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.delay_s = 0.0  # each answer this late
        self.stuck = False  # writes are answered but change nothing
        self.history: list[HvacWrite] = []  # writes applied, by Modbus or by hand
        self.requests = 0  # requests for this unit that it answered or refused
        self.writes = 0  # of them, writes (applied, refused, or kept out by `stuck`)
        self.refused = 0  # of them, those answered with an exception
        self._check(mode, self._raw(setpoint_c))
        start_c = ambient_c if temperature_c is None else temperature_c
        self._climate = _Climate(mode, self._raw(setpoint_c), time.monotonic_ns(), start_c)
        self._echo: int | None = None  # function 6: the value to echo (see the docstring)
        self._serving = ModbusServing()
        self._gone: asyncio.Event | None = None  # set by stop(): late answers are not sent
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._serving.running:
            raise RuntimeError("the unit is already started")
        self._gone = asyncio.Event()
        self.tcp_port = await self._serving.start(
            self._devices,
            self._outgoing,
            self.tcp_port,
            self.serial_port,
            self.baudrate,
            self.parity,
            self.stopbits,
        )

    async def stop(self) -> None:
        """The unit goes away (power cut); it keeps its settings for `start()`."""
        if self._gone is not None:
            self._gone.set()  # ends the waits of answers held back by `delay_s`
        await self._serving.stop()

    @property
    def running(self) -> bool:
        return self._serving.running

    # --- what tests see and do -------------------------------------------------------------

    @property
    def mode(self) -> int:
        return self._climate.mode

    @property
    def setpoint_c(self) -> float:
        return self._climate.setpoint_raw / self.scale

    @property
    def temperature_c(self) -> float:
        return self._temperature_at(self._climate, time.monotonic_ns())

    def set_temperature(self, celsius: float) -> None:
        """The room is this warm now (a window opened); it drifts on from here."""
        c = self._climate
        self._climate = _Climate(c.mode, c.setpoint_raw, time.monotonic_ns(), celsius)

    def set_by_hand(self, mode: int, setpoint_c: float) -> None:
        """Someone at the wall unit: the next read shows it, nobody is told."""
        raw = self._raw(setpoint_c)
        self._check(mode, raw)
        self._apply(mode, raw, "hand")

    async def wait_for(
        self,
        mode: int,
        setpoint_c: float,
        timeout: float = 5.0,  # noqa: ASYNC109 - every test wants a bound, so it is built in
    ) -> None:
        """Until the unit is in `mode` at `setpoint_c` (at once if it is); TimeoutError after."""
        raw = self._raw(setpoint_c)
        if (self._climate.mode, self._climate.setpoint_raw) == (mode, raw):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (mode, raw, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # --- the unit's behaviour ----------------------------------------------------------------

    def _raw(self, celsius: float) -> int:
        return round(celsius * self.scale)

    def _check(self, mode: int, setpoint_raw: int) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode}: not one of {MODES}")
        low, high = self._raw(SETPOINT_MIN_C), self._raw(SETPOINT_MAX_C)
        if not low <= setpoint_raw <= high:
            raise ValueError(f"setpoint {setpoint_raw / self.scale} °C: outside 5-35 °C")

    def _temperature_at(self, c: _Climate, now_ns: int) -> float:
        goal = c.setpoint_raw / self.scale if c.mode in (COMFORT, STANDBY) else self.ambient_c
        step = self.rate_c_per_s * max(0, now_ns - c.since_ns) / 1e9
        if abs(goal - c.temperature_c) <= step:
            return goal
        return c.temperature_c + step if goal > c.temperature_c else c.temperature_c - step

    def _apply(self, mode: int, setpoint_raw: int, by: Literal["modbus", "hand"]) -> None:
        now = time.monotonic_ns()
        self._climate = _Climate(mode, setpoint_raw, now, self._temperature_at(self._climate, now))
        self.history.append(HvacWrite(now, mode, setpoint_raw / self.scale, by))
        for want_mode, want_raw, future in list(self._waiters):
            if (want_mode, want_raw) == (mode, setpoint_raw) and not future.done():
                future.set_result(None)

    # --- pymodbus side -------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        def no_bits() -> list[SimData]:
            return [SimData(0, values=[False], datatype=DataType.BITS)]

        holding = [
            SimData(self.mode_address, datatype=DataType.REGISTERS),
            SimData(self.setpoint_address, datatype=DataType.REGISTERS),
        ]
        inputs = [SimData(self.temperature_address, datatype=DataType.REGISTERS)]
        unit = SimDevice(
            self.unit, simdata=(no_bits(), no_bits(), holding, inputs), action=self._access
        )

        # Takes requests for other unit ids (see the module's docstring).
        def none() -> list[SimData]:
            return [SimData(0, datatype=DataType.INVALID)]

        others = SimDevice(0, simdata=(no_bits(), no_bits(), none(), none()), action=self._refuse)
        return [unit, others]

    async def _access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Called by pymodbus before each access; `registers` is the whole block.

        pymodbus has already refused addresses the unit does not have (exception 2).
        """
        result = self._answer(function_code, start_address, address, count, registers, values)
        if function_code != 6 or values is not None:  # not pymodbus's read after a write
            self.requests += 1
            self.writes += values is not None
            if result is not None:
                self.refused += 1
        if self.delay_s > 0 and self._gone is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay_s):
                    await self._gone.wait()
        return result

    def _answer(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        c = self._climate
        if function_code in INPUT_READS:
            measured = self._raw(self._temperature_at(c, time.monotonic_ns()))
            registers[self.temperature_address - start_address] = measured & 0xFFFF
            return None
        if function_code not in HOLDING_READS | HOLDING_WRITES:
            return ExcCodes.ILLEGAL_FUNCTION
        mode_at = self.mode_address - start_address
        setpoint_at = self.setpoint_address - start_address
        if values is None:
            registers[mode_at] = c.mode
            registers[setpoint_at] = c.setpoint_raw
            if function_code == 6 and self._echo is not None:
                registers[address - start_address] = self._echo  # back to the truth next time
                self._echo = None
            return None
        new = {self.mode_address: c.mode, self.setpoint_address: c.setpoint_raw}
        for offset, value in enumerate(values):
            new[address + offset] = int(value)
        try:
            self._check(new[self.mode_address], new[self.setpoint_address])
        except ValueError:
            return ExcCodes.ILLEGAL_VALUE
        if function_code == 6:
            self._echo = int(values[0])
        if self.stuck:
            # pymodbus stores `values` after this returns: make them the old ones.
            kept = {self.mode_address: c.mode, self.setpoint_address: c.setpoint_raw}
            for offset in range(len(values)):
                values[offset] = kept[address + offset]
            return None
        self._apply(new[self.mode_address], new[self.setpoint_address], "modbus")
        return None

    async def _refuse(self, *args: object) -> ExcCodes | None:
        return ExcCodes.GATEWAY_NO_RESPONSE  # never sent: `_outgoing` drops it

    def _outgoing(self, unit_at: int) -> Callable[[bool, bytes], bytes]:
        """A trace hook that drops answers from other units."""

        def trace(sending: bool, data: bytes) -> bytes:
            if not sending:
                return data
            if len(data) <= unit_at or data[unit_at] != self.unit:
                return b""
            return data

        return trace
