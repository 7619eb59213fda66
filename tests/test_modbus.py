"""Modbus boards: the driver against pymodbus's server, over TCP and over RTU
through the simulated cable, at 9600 and 115200 baud."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from drivers.modbus import (
    Backoff,
    BusOffline,
    ExceptionReply,
    InputPoller,
    ModbusBus,
    ModbusBusConfig,
    ModbusPoll,
    ModbusRtuBus,
    ModbusTcpBus,
)
from hwsim.modbus_board import CoilChange, ModbusBoard
from hwsim.serial_link import Direction, SerialLink
from tests.conftest import run_async

TRANSPORTS = ["tcp", "rtu-9600", "rtu-115200"]
FAST = Backoff(initial_s=0.02, max_s=0.1)


@dataclass
class Rig:
    board: ModbusBoard
    bus: ModbusBus
    link: SerialLink | None


@contextlib.asynccontextmanager
async def rig(
    transport: str,
    *,
    units: tuple[int, ...] = (1,),
    board_unit: int = 1,
    backoff: Backoff = FAST,
    **bus_options: Any,
) -> AsyncIterator[Rig]:
    """A board, the bus to it, and for RTU the cable between; all stopped after."""
    async with contextlib.AsyncExitStack() as stack:
        link = None
        config: ModbusRtuBus | ModbusTcpBus
        if transport == "tcp":
            board = ModbusBoard(unit=board_unit)
            await board.start()
            stack.push_async_callback(board.stop)
            assert board.tcp_port is not None
            config = ModbusTcpBus(
                type="modbus_tcp", host="127.0.0.1", port=board.tcp_port, timeout_s=0.3
            )
        else:
            baudrate = int(transport.removeprefix("rtu-"))
            link = SerialLink(baudrate)
            await link.start()
            stack.push_async_callback(link.stop)
            board = ModbusBoard(
                unit=board_unit, tcp_port=None, serial_port=link.b, baudrate=baudrate
            )
            await board.start()
            stack.push_async_callback(board.stop)
            config = ModbusRtuBus(
                type="modbus_rtu", port=link.a, baudrate=baudrate, timeout_s=0.3, retries=0
            )
        bus = ModbusBus("bus1", config, units=units, backoff=backoff, **bus_options)
        await bus.start()
        stack.push_async_callback(bus.stop)
        yield Rig(board, bus, link)


async def until(predicate: Callable[[], bool], within: float = 5) -> None:
    """Wait for a state the simulators and the bus have no event for."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling a test condition on purpose
            await asyncio.sleep(0.01)


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


# --- requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_coil_writes_reach_the_board(transport: str) -> None:
    async def scenario() -> tuple[list[CoilChange], list[bool], list[bool]]:
        async with rig(transport) as r:
            assert r.bus.online
            assert r.bus.fault is None
            await r.bus.write_coil(1, 0, True)
            await r.bus.write_coil(1, 3, True)
            await r.bus.write_coil(1, 3, True)  # no change: not in the history
            await r.bus.write_coil(1, 0, False)
            async with asyncio.timeout(5):
                await r.board.wait_coil(3, True)
                await r.board.wait_coil(0, False)
            return r.board.history, await r.bus.read_coils(1, 0, 8), r.board.coils

    history, read, coils = run_async(scenario())
    assert [(c.coil, c.on) for c in history] == [(0, True), (3, True), (0, False)]
    assert [c.ns for c in history] == sorted(c.ns for c in history)
    assert read == coils == [False, False, False, True, False, False, False, False]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inputs_set_on_the_board_are_read(transport: str) -> None:
    async def scenario() -> tuple[list[bool], list[bool]]:
        async with rig(transport) as r:
            r.board.set_input(1, True)
            r.board.set_input(6, True)
            first = await r.bus.read_discrete_inputs(1, 0, 8)
            r.board.set_input(1, False)
            return first, await r.bus.read_discrete_inputs(1, 1, 6)

    first, second = run_async(scenario())
    assert first == [False, True, False, False, False, False, True, False]
    assert second == [False, False, False, False, False, True]


@pytest.mark.parametrize("transport", ["tcp", "rtu-115200"])
def test_a_modbus_exception_is_an_answer_not_an_outage(transport: str) -> None:
    async def scenario() -> tuple[ExceptionReply, bool]:
        async with rig(transport) as r:
            with pytest.raises(ExceptionReply) as caught:
                await r.bus.read_coils(1, 40, 2)  # the board has 8 coils
            return caught.value, r.bus.online

    error, online = run_async(scenario())
    assert error.code == 2
    assert "illegal data address" in str(error)
    assert online


def test_one_board_served_over_tcp_and_rtu_at_once() -> None:
    async def scenario() -> tuple[list[bool], list[bool]]:
        link = SerialLink(115200)
        await link.start()
        board = ModbusBoard(serial_port=link.b, baudrate=115200)
        await board.start()
        assert board.tcp_port is not None
        tcp = ModbusBus(
            "tcp", ModbusTcpBus(type="modbus_tcp", host="127.0.0.1", port=board.tcp_port), units=[1]
        )
        rtu = ModbusBus(
            "rtu", ModbusRtuBus(type="modbus_rtu", port=link.a, baudrate=115200), units=[1]
        )
        await tcp.start()
        await rtu.start()
        try:
            await tcp.write_coil(1, 5, True)
            board.set_input(0, True)
            return await rtu.read_coils(1, 0, 8), await rtu.read_discrete_inputs(1, 0, 1)
        finally:
            await rtu.stop()
            await tcp.stop()
            await board.stop()
            await link.stop()

    coils, inputs = run_async(scenario())
    assert coils == [False] * 5 + [True, False, False]
    assert inputs == [True]


def test_bad_arguments_are_refused_before_the_wire() -> None:
    async def scenario() -> None:
        async with rig("tcp") as r:
            with pytest.raises(ValueError, match="unit 0"):
                await r.bus.write_coil(0, 1, True)
            with pytest.raises(ValueError, match="count 0"):
                await r.bus.read_coils(1, 0, 0)
            with pytest.raises(ValueError, match="address 70000"):
                await r.bus.read_discrete_inputs(1, 70000, 1)

    run_async(scenario())


# --- the poller ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_poller_reports_every_input_first_then_only_changes(transport: str) -> None:
    async def scenario() -> list[list[tuple[int, bool]]]:
        changes: asyncio.Queue[tuple[int, bool, int]] = asyncio.Queue()
        async with rig(transport) as r:
            r.board.set_input(2, True)
            poller = InputPoller(
                r.bus,
                1,
                0,
                4,
                ModbusPoll(period_ms=20),
                lambda address, value, ns: changes.put_nowait((address, value, ns)),
            )
            await poller.start()
            try:
                rounds = []
                for flip in (None, (1, True), (1, False), (3, True)):
                    if flip is not None:
                        r.board.set_input(*flip)
                    expected = 4 if flip is None else 1
                    async with asyncio.timeout(5):
                        got = [await changes.get() for _ in range(expected)]
                    rounds.append([(a, v) for a, v, _ in got])
                # Many polls later, nothing else was reported.
                polls = r.board.requests
                await until(lambda: r.board.requests >= polls + 3)
                assert changes.empty()
                return rounds
            finally:
                await poller.stop()

    rounds = run_async(scenario())
    assert rounds == [
        [(0, False), (1, False), (2, True), (3, False)],
        [(1, True)],
        [(1, False)],
        [(3, True)],
    ]


def test_a_failing_callback_does_not_stop_the_poller(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[tuple[int, bool]]:
        seen: list[tuple[int, bool]] = []

        def on_change(address: int, value: bool, ns: int) -> None:
            seen.append((address, value))
            raise RuntimeError("consumer bug")

        async with rig("tcp") as r:
            poller = InputPoller(r.bus, 1, 0, 1, ModbusPoll(period_ms=10), on_change)
            await poller.start()
            try:
                await until(lambda: len(seen) == 1)
                r.board.set_input(0, True)
                await until(lambda: len(seen) == 2)
            finally:
                await poller.stop()
        return seen

    assert run_async(scenario()) == [(0, False), (0, True)]
    assert "on_change failed" in caplog.text


def test_tasks_are_named() -> None:
    async def scenario() -> set[str]:
        async with rig("tcp") as r:
            poller = InputPoller(r.bus, 1, 0, 1, ModbusPoll(), lambda *_: None)
            await poller.start()
            names = {t.get_name() for t in asyncio.all_tasks()}
            await poller.stop()
            return names

    names = run_async(scenario())
    assert {"modbus[bus1].supervise", "modbus[bus1].poll[unit 1]"} <= names


# --- one bus, one lock ----------------------------------------------------------------------


def test_concurrent_requests_never_interleave_on_the_wire() -> None:
    wire: list[tuple[Direction, bytes]] = []

    async def scenario() -> list[Any]:
        async with rig("rtu-115200") as r:
            assert r.link is not None
            r.link.observer = lambda direction, data, ns: wire.append((direction, data))
            r.board.set_input(5, True)
            requests: list[Coroutine[Any, Any, Any]] = []
            for i in range(24):
                if i % 3 == 0:
                    requests.append(r.bus.write_coil(1, i % 8, True))
                elif i % 3 == 1:
                    requests.append(r.bus.read_discrete_inputs(1, 0, 8))
                else:
                    requests.append(r.bus.read_coils(1, 0, 8))
            return await asyncio.gather(*requests)

    results = run_async(scenario())
    assert all(x == [False] * 5 + [True, False, False] for x in results[1::3])
    # Group the bytes by direction: requests and answers must strictly alternate,
    # each group being exactly one frame with a good CRC.
    groups: list[tuple[Direction, bytearray]] = []
    for direction, data in wire:
        if groups and groups[-1][0] == direction:
            groups[-1][1].extend(data)
        else:
            groups.append((direction, bytearray(data)))
    assert [d for d, _ in groups] == ["a->b", "b->a"] * 24
    for _, frame in groups:
        body, crc = bytes(frame[:-2]), bytes(frame[-2:])
        assert crc16(body) == crc, frame.hex(" ")
        assert body[0] == 1  # unit
    requests = [bytes(f) for d, f in groups if d == "a->b"]
    assert all(len(f) == 8 for f in requests)  # fc 1, 2 and 5 requests are 8 bytes


# --- faults -------------------------------------------------------------------------------


def test_a_missing_serial_port_is_a_fault_not_an_exception(tmp_path: Path) -> None:
    port = str(tmp_path / "usb-FTDI_missing-if00-port0")

    async def scenario() -> tuple[bool, str | None, str]:
        bus = ModbusBus("bus1", ModbusRtuBus(type="modbus_rtu", port=port), units=[1])
        await bus.start()
        try:
            with pytest.raises(BusOffline) as caught:
                await bus.write_coil(1, 0, True)
            return bus.online, bus.fault, str(caught.value)
        finally:
            await bus.stop()

    online, fault, error = run_async(scenario())
    assert not online
    assert fault == f"port {port} not found"
    assert error == f"bus1: port {port} not found"


def test_an_unopenable_port_says_why(tmp_path: Path) -> None:
    port = tmp_path / "not-a-tty"
    port.write_text("")

    async def scenario() -> str | None:
        bus = ModbusBus("bus1", ModbusRtuBus(type="modbus_rtu", port=str(port)), units=[1])
        await bus.start()
        try:
            return bus.fault
        finally:
            await bus.stop()

    assert run_async(scenario()) == f"port {port} is not a serial device"


def test_a_closed_tcp_port_is_a_fault_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends

    async def scenario() -> tuple[bool, str | None]:
        config = ModbusTcpBus(type="modbus_tcp", host="127.0.0.1", port=port, timeout_s=0.3)
        bus = ModbusBus("bus1", config, units=[1])
        await bus.start()
        try:
            return bus.online, bus.fault
        finally:
            await bus.stop()

    online, fault = run_async(scenario())
    assert not online
    assert fault == f"cannot connect to 127.0.0.1:{port}: connection refused"


@pytest.mark.parametrize("transport", ["tcp", "rtu-9600"])
def test_a_unit_that_does_not_answer(transport: str) -> None:
    async def scenario() -> tuple[bool, str | None, bool, str | None]:
        # The board is unit 1; the bus expects a board at unit 1 and one at unit 2.
        async with rig(transport, units=(1, 2)) as r:
            at_start = r.bus.online, r.bus.fault
            with pytest.raises(BusOffline, match="unit 2 does not answer"):
                await r.bus.read_coils(2, 0, 1)
            await r.bus.write_coil(1, 0, True)  # the other unit is still served
            return *at_start, r.board.coils[0], r.bus.fault

    online, fault, coil, later = run_async(scenario())
    assert not online
    assert fault == "unit 2 does not answer"
    assert coil
    assert later == "unit 2 does not answer"


@pytest.mark.parametrize("transport", ["tcp", "rtu-9600", "rtu-115200"])
def test_a_board_that_goes_away_and_comes_back(transport: str) -> None:
    async def scenario() -> tuple[str | None, list[CoilChange]]:
        async with rig(transport) as r:
            await r.board.stop()
            with contextlib.suppress(BusOffline):
                await r.bus.read_coils(1, 0, 1)  # RTU notices at the next request
            await until(lambda: not r.bus.online)
            fault = r.bus.fault
            with pytest.raises(BusOffline):
                await r.bus.write_coil(1, 2, True)
            await r.board.start()
            await until(lambda: r.bus.online)
            await r.bus.write_coil(1, 2, True)
            return fault, r.board.history

    fault, history = run_async(scenario())
    if transport == "tcp":
        assert fault is not None
        assert fault.startswith("connection to 127.0.0.1:")
    else:
        assert fault == "unit 1 does not answer"
    assert [(c.coil, c.on) for c in history] == [(2, True)]


def test_a_cut_cable_is_noticed_without_requests_and_healed() -> None:
    async def scenario() -> str | None:
        async with rig("rtu-115200", idle_probe_s=0.05) as r:
            assert r.link is not None
            r.link.cut()
            await until(lambda: not r.bus.online)  # found by the idle probe
            fault = r.bus.fault
            r.link.restore()
            await until(lambda: r.bus.online)
            assert await r.bus.read_coils(1, 0, 2) == [False, False]
            return fault

    assert run_async(scenario()) == "unit 1 does not answer"


def test_an_unplugged_serial_adapter() -> None:
    async def scenario() -> tuple[str, str | None]:
        # No retry during the test: the freed pty number may soon be another test's.
        async with rig("rtu-115200", backoff=Backoff(initial_s=600, max_s=600)) as r:
            assert r.link is not None
            port = r.link.a
            await r.board.stop()
            await r.link.stop()  # both ptys vanish, as /dev/ttyUSB0 does
            with contextlib.suppress(BusOffline):
                await r.bus.read_coils(1, 0, 1)
            await until(lambda: not r.bus.online)
            return port, r.bus.fault

    port, fault = run_async(scenario())
    assert fault == f"port {port} went away"


def test_a_hung_tcp_board_does_not_answer() -> None:
    async def scenario() -> str | None:
        async with rig("tcp") as r:
            r.board.answering = False
            with pytest.raises(BusOffline, match="unit 1 does not answer"):
                await r.bus.read_coils(1, 0, 1)
            fault = r.bus.fault
            r.board.answering = True
            await until(lambda: r.bus.online)
            return fault

    assert run_async(scenario()) == "unit 1 does not answer"


def test_a_fault_is_logged_once_then_debug_then_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.modbus")

    async def scenario() -> None:
        async with rig("rtu-115200") as r:
            assert r.link is not None
            r.link.cut()
            for _ in range(3):
                with contextlib.suppress(BusOffline):
                    await r.bus.read_coils(1, 0, 1)
            retries = "retrying in"
            await until(lambda: caplog.text.count(retries) >= 3)
            r.link.restore()
            await until(lambda: r.bus.online)

    run_async(scenario())
    ours = [rec for rec in caplog.records if rec.name == "drivers.modbus"]
    errors = [rec.getMessage() for rec in ours if rec.levelno == logging.ERROR]
    assert errors[0] == "bus1: unit 1 does not answer"
    assert errors[1].startswith("bus1: last frames:\n")  # the ring buffer, dumped
    assert len(errors) == 2
    infos = [rec.getMessage() for rec in ours if rec.levelno == logging.INFO]
    assert infos[0].startswith("bus1: online (/dev/pts/")
    assert infos[1].startswith("bus1: back online after ")
    assert infos[1].endswith("(was: unit 1 does not answer)")
    assert len(infos) == 2


def test_the_ring_buffer_keeps_the_last_frames() -> None:
    async def scenario() -> list[Any]:
        async with rig("rtu-115200", keep_frames=6) as r:
            for coil in range(5):
                await r.bus.write_coil(1, coil, True)
            return r.bus.frames()

    frames = run_async(scenario())
    assert [f.direction for f in frames] == ["tx", "rx"] * 3
    # A write is echoed: request and answer are the same 8 bytes.
    last_write = bytes.fromhex("01050004ff00")  # unit 1, write coil 4 on
    assert frames[-1].data == frames[-2].data == last_write + crc16(last_write)
    assert [f.ns for f in frames] == sorted(f.ns for f in frames)


def test_requests_before_start_and_after_stop_are_refused() -> None:
    async def scenario() -> None:
        async with rig("tcp") as r:
            pass
        with pytest.raises(BusOffline):
            await r.bus.read_coils(1, 0, 1)
        assert not r.bus.online
        fresh = ModbusBus("bus2", ModbusTcpBus(type="modbus_tcp", host="127.0.0.1"), units=[1])
        with pytest.raises(BusOffline, match="not started"):
            await fresh.read_coils(1, 0, 1)
        await fresh.stop()  # a bus never started stops quietly

    run_async(scenario())


# --- backoff -----------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30)
    for attempt in range(100):
        cap = min(30, 0.5 * 2**attempt)
        delays = {backoff.delay(attempt) for _ in range(20)}
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(delays) > 1  # jittered


# --- configuration ------------------------------------------------------------------------------


class Doc(BaseModel):
    bus: ModbusBusConfig
    poll: ModbusPoll = ModbusPoll()


RTU = {"type": "modbus_rtu", "port": "/dev/serial/by-id/usb-FTDI-if00"}
TCP = {"type": "modbus_tcp", "host": "10.0.0.7"}


def test_config_defaults() -> None:
    doc = Doc.model_validate({"bus": RTU})
    assert doc.bus == ModbusRtuBus(
        type="modbus_rtu",
        port=RTU["port"],
        baudrate=9600,
        parity="N",
        stopbits=1,
        interframe_gap_ms=5,
        timeout_s=0.5,
        retries=1,
    )
    assert doc.poll.period_ms == 100
    tcp = Doc.model_validate({"bus": TCP}).bus
    assert isinstance(tcp, ModbusTcpBus)
    assert tcp.port == 502


@pytest.mark.parametrize(
    ("doc", "loc", "kind"),
    [
        ({"bus": {**RTU, "parity": "X"}}, ("bus", "modbus_rtu", "parity"), "literal_error"),
        ({"bus": {**RTU, "stopbits": 3}}, ("bus", "modbus_rtu", "stopbits"), "literal_error"),
        ({"bus": {**RTU, "baudrate": 96000}}, ("bus", "modbus_rtu", "baudrate"), "literal_error"),
        ({"bus": {**RTU, "baud": 9600}}, ("bus", "modbus_rtu", "baud"), "extra_forbidden"),
        ({"bus": {**RTU, "timeout_s": 0}}, ("bus", "modbus_rtu", "timeout_s"), "greater_than"),
        (
            {"bus": {**RTU, "interframe_gap_ms": -1}},
            ("bus", "modbus_rtu", "interframe_gap_ms"),
            "greater_than_equal",
        ),
        ({"bus": {**RTU, "retries": 9}}, ("bus", "modbus_rtu", "retries"), "less_than_equal"),
        ({"bus": {"type": "modbus_rtu"}}, ("bus", "modbus_rtu", "port"), "missing"),
        ({"bus": {**TCP, "port": 70000}}, ("bus", "modbus_tcp", "port"), "less_than_equal"),
        ({"bus": {**TCP, "port": "502"}}, ("bus", "modbus_tcp", "port"), "int_type"),
        ({"bus": {**TCP, "baudrate": 9600}}, ("bus", "modbus_tcp", "baudrate"), "extra_forbidden"),
        ({"bus": {"type": "modbus_ascii"}}, ("bus",), "union_tag_invalid"),
        ({"bus": TCP, "poll": {"period_ms": 0}}, ("poll", "period_ms"), "greater_than_equal"),
        ({"bus": TCP, "poll": {"period": 100}}, ("poll", "period"), "extra_forbidden"),
    ],
)
def test_bad_config_names_the_key(doc: dict[str, Any], loc: tuple[str, ...], kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Doc.model_validate(doc)
    errors = caught.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)]
