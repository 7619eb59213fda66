"""A simulated Modbus relay/IO board: relays are coils, door contacts and
exit buttons are discrete inputs.

The board is pymodbus's own server (`ModbusTcpServer`, `ModbusSerialServer`)
with a `SimDevice` at the board's unit id, so the gateway's driver talks to a real Modbus stack
over real transports: TCP on 127.0.0.1, and RTU on a serial device such as
one end of a `hwsim.serial_link.SerialLink`. Both transports may serve the
same board at once.

The board's own lists (`coils`, `inputs`) are the truth: pymodbus calls the
device's action before every access, and the action copies them into
pymodbus's registers (reads) or records the change (writes). So tests can
watch relays (`history`, `wait_coil`) and press buttons (`set_input`).

Quirks of pymodbus 3.16 this works around:
- A request for another unit id raises KeyError inside `SimCore` (it falls
  back to the catch-all device 0, which need not exist) and is answered with
  exception 4, even with `ignore_missing_devices`. A board on RS-485 must stay
  silent instead, so a catch-all device takes such requests and the answer
  is dropped on its way out (`_outgoing`).
- Bits live in 16-bit registers and the action is told how many registers a
  request touches, not how many bits: a read that starts at a valid address
  but runs past the last coil or input gets False for the missing ones
  instead of exception 2. Reads starting past the end and writes past it
  are refused with exception 2, as a real board does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from hwsim.modbus_serving import ModbusServing

COIL_FUNCTIONS = frozenset({1, 5, 15})
INPUT_FUNCTIONS = frozenset({2})
WRITE_FUNCTIONS = frozenset({5, 15})


class CoilChange(NamedTuple):
    ns: int  # time.monotonic_ns() when the board applied the write
    coil: int
    on: bool


def _to_registers(bits: list[bool]) -> list[int]:
    """Bits to 16-bit registers, bit 0 in the least significant position."""
    regs = []
    for start in range(0, len(bits), 16):
        regs.append(sum(1 << i for i, bit in enumerate(bits[start : start + 16]) if bit))
    return regs


class ModbusBoard:
    """One board with `coils` relays and `inputs` discrete inputs at `unit`.

    `tcp_port`: 0 picks a free port at the first start (kept for restarts),
    None serves no TCP. `serial_port`: a device to serve RTU on, or None.
    """

    def __init__(
        self,
        *,
        unit: int = 1,
        coils: int = 8,
        inputs: int = 8,
        tcp_port: int | None = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError("unit must be 1-247")
        self.unit = unit
        self.coils = [False] * coils
        self.inputs = [False] * inputs
        self.tcp_port = tcp_port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.history: list[CoilChange] = []
        self.answering = True  # False: hear requests, answer nothing (a hung board)
        self.requests = 0  # requests for this unit that the board answered or refused
        self._serving = ModbusServing()
        self._waiters: list[tuple[int, bool, asyncio.Future[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._serving.running:
            raise RuntimeError("the board is already started")
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
        await self._serving.stop()

    @property
    def running(self) -> bool:
        return self._serving.running

    # --- what tests see and do -------------------------------------------------------------

    def set_input(self, address: int, value: bool) -> None:
        """A door contact or button changes; the next read sees it."""
        self.inputs[address] = value

    async def wait_coil(self, coil: int, on: bool) -> None:
        """Until `coil` is `on` (at once if it is). Bound it with asyncio.timeout."""
        if self.coils[coil] == on:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (coil, on, future)
        self._waiters.append(entry)
        try:
            await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # --- pymodbus side -------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        def bits(n: int) -> list[SimData]:
            return [SimData(0, values=[False] * max(n, 1), datatype=DataType.BITS)]

        def no_registers() -> list[SimData]:
            return [SimData(0, datatype=DataType.INVALID)]

        board = SimDevice(
            self.unit,
            simdata=(bits(len(self.coils)), bits(len(self.inputs)), no_registers(), no_registers()),
            action=self._access,
        )
        # Takes requests for other unit ids (see the module's docstring).
        others = SimDevice(
            0, simdata=(bits(1), bits(1), no_registers(), no_registers()), action=self._refuse
        )
        return [board, others]

    async def _access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Called by pymodbus before each access; `registers` is the whole block."""
        del start_address, count  # blocks start at 0; count is in registers, not bits
        if function_code in COIL_FUNCTIONS:
            state = self.coils
        elif function_code in INPUT_FUNCTIONS:
            state = self.inputs
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        if address >= len(state):
            return ExcCodes.ILLEGAL_ADDRESS
        if values is not None and function_code in WRITE_FUNCTIONS:
            if address + len(values) > len(state):
                return ExcCodes.ILLEGAL_ADDRESS
            self._write_coils(address, [bool(v) for v in values])
        if values is not None or function_code not in WRITE_FUNCTIONS:
            self.requests += 1  # pymodbus reads back after a single-coil write: not counted
        padded = state + [False] * (-len(state) % 16)
        regs = _to_registers(padded)
        registers[: len(regs)] = regs
        return None

    async def _refuse(self, *args: object) -> ExcCodes | None:
        return ExcCodes.GATEWAY_NO_RESPONSE  # never sent: `_outgoing` drops it

    def _write_coils(self, address: int, values: list[bool]) -> None:
        now = time.monotonic_ns()
        for coil, on in enumerate(values, start=address):
            if self.coils[coil] != on:
                self.coils[coil] = on
                self.history.append(CoilChange(now, coil, on))
        for coil, on, future in list(self._waiters):
            if self.coils[coil] == on and not future.done():
                future.set_result(None)

    def _outgoing(self, unit_at: int) -> Callable[[bool, bytes], bytes]:
        """A trace hook that drops answers from other units and a hung board's."""

        def trace(sending: bool, data: bytes) -> bytes:
            if not sending:
                return data
            if not self.answering or len(data) <= unit_at or data[unit_at] != self.unit:
                return b""
            return data

        return trace
