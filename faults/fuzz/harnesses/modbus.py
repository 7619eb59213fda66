"""Modbus responses as `drivers.modbus.ModbusBus` sees them: the fuzzed bytes are
what came back on the wire, decoded by pymodbus's own framer (RTU or TCP/MBAP)
and PDU decoder, handed to the bus's real request methods (coils, inputs,
holding and input registers, single and multiple writes) with its checks of
what was acknowledged. The documented errors are `ModbusError` and its kinds
(`BusOffline` for a unit that sends nothing valid, `ExceptionReply`).

The first byte picks the request, the second the framing (RTU with the CRC
as sent, RTU with the harness fixing the CRC so that the fuzzer reaches the
PDU, or TCP); the rest is the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.framer.base import FramerBase
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.modbus import ModbusBus, ModbusError, ModbusTcpBus
from faults.fuzz.harness import Harness

UNIT = 1


class _Wire:
    """The client side of pymodbus after the bytes arrived: framer, decoder, the
    device-id check of its transaction manager, and the bus's trace hooks."""

    connected = True

    def __init__(self, bus: ModbusBus, framer: FramerBase, answer: bytes) -> None:
        self.bus, self.framer, self.answer = bus, framer, answer

    async def _reply(self) -> ModbusPDU:
        data = self.bus._trace_packet(False, self.answer)
        _, pdu = self.framer.handleFrame(data, UNIT, 0)
        if pdu is None:  # pymodbus waits for more and times out
            raise ModbusIOException("no response")
        if pdu.dev_id != UNIT:
            raise ModbusIOException("wrong device id")
        return self.bus._trace_pdu(False, pdu)

    async def write_coil(self, *a: Any, **kw: Any) -> ModbusPDU:
        return await self._reply()

    read_coils = read_discrete_inputs = read_holding_registers = write_coil
    read_input_registers = write_register = write_registers = write_coil


def _requests(bus: ModbusBus) -> list[Coroutine[Any, Any, object]]:
    return [
        bus.write_coil(UNIT, 3, True),
        bus.read_coils(UNIT, 0, 8),
        bus.read_discrete_inputs(UNIT, 0, 12),
        bus.read_holding_registers(UNIT, 100, 4),
        bus.read_input_registers(UNIT, 0, 1),
        bus.write_register(UNIT, 7, 215),
        bus.write_registers(UNIT, 10, [1, 2, 3]),
    ]


def _crc(frame: bytes) -> bytes:
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def run(data: bytes) -> None:
    if len(data) < 2:
        return
    bus = ModbusBus("fuzz", ModbusTcpBus(type="modbus_tcp", host="127.0.0.1"), units=[UNIT])
    bus._lock = asyncio.Lock()  # what start() makes; uncontended, it never waits
    mode, answer = data[1] % 3, data[2:]
    framer: FramerBase
    if mode == 2:
        framer = FramerSocket(DecodePDU(False))
    else:
        framer = FramerRTU(DecodePDU(False))
        if mode == 1:
            answer += _crc(answer)
    bus._client = _Wire(bus, framer, answer)  # type: ignore[assignment]
    requests = _requests(bus)
    call = requests[data[0] % len(requests)]
    for other in requests:
        if other is not call:
            other.close()
    # Nothing in the request path waits on the loop here: run it to its end in one step.
    try:
        call.send(None)
    except StopIteration:
        return
    call.close()
    raise AssertionError("the request waited on the event loop")


HARNESS = Harness("modbus", run, (ModbusError,), max_len=512)
