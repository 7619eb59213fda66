"""Modbus relay/IO boards over RTU (RS-485) or TCP, through pymodbus.

Layers:
- Config models: `ModbusRtuBus` and `ModbusTcpBus` (one per bus, told apart
  by `type`) and `ModbusPoll` (how often inputs are read).
- `ModbusBus`: the one owner of a bus. Every request takes the bus's lock,
  waits out the inter-frame gap and goes through pymodbus's async client; so
  requests never interleave on the wire, whoever sends them. The bus
  supervises itself: `start()` never raises for a missing port or a silent
  board, it marks the bus offline with a cause a person can act on, logs it
  once and retries with capped, jittered backoff. The last frames are kept in
  a ring buffer and dumped on a protocol error.
- `InputPoller`: reads a board's discrete inputs (door contacts, exit
  buttons) at a fixed period and reports changes.

pymodbus runs on the event loop: its serial transport watches pyserial's
file descriptor with `add_reader`, so there is no thread. Its own reconnect
task is turned off (`reconnect_delay=0`): reconnecting is the supervisor's
job, which names its task and backs off with jitter.

pymodbus logs to the `pymodbus` logger, at ERROR for every request that
times out; the daemon should raise that logger's level, since this module
reports faults once, as the house style asks.

Size: over 600 lines, and `ModbusBus` over 400, on purpose. The RTU and TCP
transports, the supervision and the input pollers share one bus lock and one
fault state. Kept together, a request's path is one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.aio import cancel_and_wait

log = logging.getLogger("drivers.modbus")

# --- configuration ---------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


BaudRate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400]


class ModbusRtuBus(_Section):
    """An RS-485 line, through a serial adapter, with boards at unit ids."""

    type: Literal["modbus_rtu"]
    # A stable name, for example /dev/serial/by-id/usb-FTDI_..., not /dev/ttyUSB0.
    port: Annotated[str, Field(min_length=1)]
    baudrate: BaudRate = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    # Silence between the end of one frame and the start of the next. RTU
    # needs 3.5 characters (4 ms at 9600 baud); slow boards want more.
    interframe_gap_ms: Annotated[float, Field(ge=0, le=1000)] = 5
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5  # per attempt
    retries: Annotated[int, Field(ge=0, le=5)] = 1  # attempts after the first


class ModbusTcpBus(_Section):
    """A board (or an RTU gateway) reached over Modbus TCP."""

    type: Literal["modbus_tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0


ModbusBusConfig = Annotated[ModbusRtuBus | ModbusTcpBus, Field(discriminator="type")]


class ModbusPoll(_Section):
    """How often a board's inputs are read."""

    period_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


# --- errors ------------------------------------------------------------------------------


class ModbusError(Exception):
    """A request that did not complete; the message says why."""


class BusOffline(ModbusError):
    """The bus or the unit is down; the supervisor is bringing it back."""


class ExceptionReply(ModbusError):
    """The board answered with a Modbus exception (it is there, but said no)."""

    def __init__(self, unit: int, what: str, code: int) -> None:
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"unit {unit}: {what}: exception {code} ({name})")
        self.unit = unit
        self.code = code


EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class _NoAnswer(Exception):
    """Internal: a unit did not give a valid answer (timeouts, garbage)."""


class _LinkLost(Exception):
    """Internal: the port or connection went away during a request."""


# --- diagnostics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireFrame:
    """A frame as sent or received, for the ring buffer."""

    ns: int  # time.monotonic_ns()
    direction: Literal["tx", "rx"]
    data: bytes
    note: str = ""  # for rx: "incomplete", "discarded" (a bad frame), "late"

    def line(self, ref_ns: int) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{(self.ns - ref_ns) / 1e6:+10.1f} ms {self.direction} {self.data.hex(' ')}{note}"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (each delay in [cap/2, cap])."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        cap = min(self.max_s, self.initial_s * 2 ** min(attempt, 32))
        return random.uniform(cap / 2, cap)


# --- the bus -----------------------------------------------------------------------------

Request = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


class ModbusBus:
    """The one owner of a Modbus bus: a lock, a gap, a supervisor, a ring buffer.

    `units` are the unit ids the supervisor checks at start and after a
    reconnection (a unit used in a request is added). A unit that does not
    answer puts the bus offline with that cause; requests to it fail at once
    (`BusOffline`) while the supervisor probes it with backoff, so one dead
    board does not hold the line for the others.
    """

    def __init__(
        self,
        name: str,
        config: ModbusRtuBus | ModbusTcpBus,
        *,
        units: Iterable[int],
        backoff: Backoff | None = None,
        idle_probe_s: float = 5.0,
        keep_frames: int = 32,
    ) -> None:
        self.name = name
        self.config = config
        self.backoff = backoff or Backoff()
        self.idle_probe_s = idle_probe_s
        self._units = set(units)
        for unit in self._units:
            _check_unit(unit)
        self._frames: deque[WireFrame] = deque(maxlen=keep_frames)
        self._started = False
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._generation = 0  # which client the connection callbacks belong to
        self._lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._link_fault: str | None = "not started"
        self._unit_faults: dict[int, str] = {}
        self._reported = False  # the first state has been logged
        self._down_since_ns: int | None = None
        self._next_tx_ns = 0
        self._last_ok_ns: dict[int, int] = {}
        self._rx_pending = b""
        self._rx_pending_ns = 0
        self._rx_seen = False

    # --- state ---------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._started and self._link_fault is None and not self._unit_faults

    @property
    def fault(self) -> str | None:
        """Why the bus is offline, for people (`edgectl status`); None when online."""
        if self._link_fault is not None:
            return self._link_fault
        if self._unit_faults:
            return "; ".join(self._unit_faults[u] for u in sorted(self._unit_faults))
        return None

    def frames(self) -> list[WireFrame]:
        """The last frames on the wire, oldest first."""
        return list(self._frames)

    def format_frames(self) -> str:
        frames = self.frames()
        if not frames:
            return "(no frames)"
        ref = frames[-1].ns
        return "\n".join(f.line(ref) for f in frames)

    def _gap_ns(self) -> int:
        if isinstance(self.config, ModbusRtuBus):
            return int(self.config.interframe_gap_ms * 1_000_000)
        return 0

    def _where(self) -> str:
        c = self.config
        if isinstance(c, ModbusRtuBus):
            return f"{c.port} at {c.baudrate} 8{c.parity}{c.stopbits}"
        return f"{c.host}:{c.port}"

    def _set_state(
        self, link_fault: str | None, unit_faults: dict[int, str], *, dump: bool = False
    ) -> None:
        """Apply a new state and log the transition: once at ERROR, then DEBUG, INFO back."""
        was_online, old_fault = self.online, self.fault
        self._link_fault = link_fault
        self._unit_faults = unit_faults
        now_online, fault = self.online, self.fault
        first = not self._reported
        self._reported = True
        if now_online:
            if first:
                log.info("%s: online (%s)", self.name, self._where())
            elif not was_online:
                down_s = (time.monotonic_ns() - (self._down_since_ns or 0)) / 1e9
                log.info("%s: back online after %.1f s (was: %s)", self.name, down_s, old_fault)
            self._down_since_ns = None
            return
        if first or was_online:
            self._down_since_ns = time.monotonic_ns()
            log.error("%s: %s", self.name, fault)
            if dump and self._frames:
                log.error("%s: last frames:\n%s", self.name, self.format_frames())
            if self._wake is not None:
                self._wake.set()
        elif fault != old_fault:
            log.debug("%s: still offline: %s", self.name, fault)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the port and check the units; never raises for a missing board."""
        if self._started:
            raise RuntimeError(f"{self.name}: already started")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._started = True
        self._reported = False
        async with self._lock:
            await self._guarded(self._recover(reopen=True))
        self._task = asyncio.create_task(self._supervise(), name=f"modbus[{self.name}].supervise")

    async def stop(self) -> None:
        """Stop supervising and close the port. Stop pollers first."""
        if not self._started:
            return
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        assert self._lock is not None
        async with self._lock:  # let a request in flight finish
            self._close_client()
            self._started = False
            self._link_fault = "stopped"
            self._unit_faults = {}
        await asyncio.sleep(0)  # let the transport's connection_lost run
        log.debug("%s: stopped", self.name)

    # --- requests ------------------------------------------------------------------------

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        """Switch a relay; returns once the board has acknowledged it."""
        _check_address(address, 1)
        what = f"write coil {address} {'on' if on else 'off'}"
        reply = await self._request(unit, what, lambda c: c.write_coil(address, on, device_id=unit))
        if reply.address != address or list(reply.bits[:1]) != [on]:
            self._protocol_error(unit, f"{what}: acknowledged as coil {reply.address} {reply.bits}")

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        _check_address(address, count)
        what = f"read coils {address}+{count}"
        reply = await self._request(
            unit, what, lambda c: c.read_coils(address, count=count, device_id=unit)
        )
        return self._bits(unit, what, reply, count)

    async def read_discrete_inputs(self, unit: int, address: int, count: int) -> list[bool]:
        _check_address(address, count)
        what = f"read inputs {address}+{count}"
        reply = await self._request(
            unit, what, lambda c: c.read_discrete_inputs(address, count=count, device_id=unit)
        )
        return self._bits(unit, what, reply, count)

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        _check_address(address, count, most=125)
        what = f"read holding registers {address}+{count}"
        reply = await self._request(
            unit, what, lambda c: c.read_holding_registers(address, count=count, device_id=unit)
        )
        return self._registers(unit, what, reply, count)

    async def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        _check_address(address, count, most=125)
        what = f"read input registers {address}+{count}"
        reply = await self._request(
            unit, what, lambda c: c.read_input_registers(address, count=count, device_id=unit)
        )
        return self._registers(unit, what, reply, count)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Function 6; returns once the unit has echoed the value."""
        _check_address(address, 1)
        _check_values([value])
        what = f"write register {address} = {value}"
        reply = await self._request(
            unit, what, lambda c: c.write_register(address, value, device_id=unit)
        )
        if reply.address != address or list(reply.registers[:1]) != [value]:
            self._protocol_error(
                unit, f"{what}: acknowledged as register {reply.address} = {reply.registers}"
            )

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        """Function 16; returns once the unit has acknowledged the range."""
        _check_address(address, len(values), most=123)
        _check_values(values)
        what = f"write registers {address}+{len(values)} = {values}"
        reply = await self._request(
            unit, what, lambda c: c.write_registers(address, values, device_id=unit)
        )
        if reply.address != address or reply.count != len(values):
            self._protocol_error(
                unit, f"{what}: acknowledged as registers {reply.address}+{reply.count}"
            )

    def _registers(self, unit: int, what: str, reply: ModbusPDU, count: int) -> list[int]:
        if len(reply.registers) != count:
            self._protocol_error(unit, f"{what}: got {len(reply.registers)} registers")
        return list(reply.registers)

    def _bits(self, unit: int, what: str, reply: ModbusPDU, count: int) -> list[bool]:
        if len(reply.bits) < count:
            self._protocol_error(unit, f"{what}: got {len(reply.bits)} bits")
        return [bool(b) for b in reply.bits[:count]]

    def _protocol_error(self, unit: int, detail: str) -> NoReturn:
        log.warning(
            "%s: unit %d: %s; last frames:\n%s", self.name, unit, detail, self.format_frames()
        )
        raise ModbusError(f"unit {unit}: {detail}")

    async def _request(self, unit: int, what: str, call: Request) -> ModbusPDU:
        _check_unit(unit)
        if self._lock is None:
            raise BusOffline(f"{self.name}: not started")
        async with self._lock:
            self._units.add(unit)
            if self._link_fault is not None:
                raise BusOffline(f"{self.name}: {self._link_fault}")
            if unit in self._unit_faults:
                raise BusOffline(f"{self.name}: {self._unit_faults[unit]}")
            try:
                reply = await self._transact(unit, call)
            except _LinkLost as exc:
                self._set_state(str(exc), {}, dump=True)
                raise BusOffline(f"{self.name}: {exc}") from None
            except _NoAnswer as exc:
                self._set_state(None, {**self._unit_faults, unit: str(exc)}, dump=True)
                raise BusOffline(f"{self.name}: {exc}") from None
        if reply.isError():
            error = ExceptionReply(unit, what, reply.exception_code)
            log.warning("%s: %s; last frames:\n%s", self.name, error, self.format_frames())
            raise error
        return reply

    async def _transact(self, unit: int, call: Request) -> ModbusPDU:
        """One request and its answer, under the lock, after the gap. Changes no state."""
        client = self._client
        if client is None or not client.connected:
            raise _LinkLost(self._lost_text())
        wait_ns = self._next_tx_ns - time.monotonic_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        self._rx_seen = False
        try:
            reply = await call(client)
        except ConnectionException:
            raise _LinkLost(self._lost_text()) from None
        except ModbusException:
            # pymodbus raises ModbusIOException after its retries time out,
            # and for answers it cannot match to the request.
            self._flush_rx("incomplete")
            if not client.connected:
                raise _LinkLost(self._lost_text()) from None
            if self._rx_seen:
                raise _NoAnswer(f"unit {unit} sends no valid answer") from None
            raise _NoAnswer(f"unit {unit} does not answer") from None
        finally:
            self._next_tx_ns = time.monotonic_ns() + self._gap_ns()
        self._last_ok_ns[unit] = time.monotonic_ns()
        return reply

    # --- supervision -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        assert self._lock is not None
        assert self._wake is not None
        attempt = 0
        while True:
            if self.online:
                attempt = 0
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_probe_s):
                        await self._wake.wait()
                if self.online:
                    async with self._lock:
                        await self._guarded(self._probe_idle())
                continue
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.debug("%s: retrying in %.2f s: %s", self.name, delay, self.fault)
            await asyncio.sleep(delay)
            async with self._lock:
                await self._guarded(self._recover(reopen=self._link_fault is not None))

    async def _guarded(self, step: Awaitable[None]) -> None:
        """Supervision must outlive a bug in a library: log it, go offline, retry."""
        try:
            await step
        except Exception:
            log.exception("%s: supervision failed", self.name)
            self._close_client()
            self._set_state("internal error (see the log)", {})

    async def _probe(self, unit: int) -> None:
        """Any answer, even a Modbus exception, shows the unit is there."""
        await self._transact(unit, lambda c: c.read_coils(0, count=1, device_id=unit))

    async def _probe_idle(self) -> None:
        """Check units nobody has talked to lately: a board can die quietly."""
        now = time.monotonic_ns()
        idle = {
            u for u in self._units if now - self._last_ok_ns.get(u, 0) >= self.idle_probe_s * 1e9
        }
        await self._probe_units(idle, dict(self._unit_faults))

    async def _recover(self, *, reopen: bool) -> None:
        """Under the lock: reopen the port if needed, then probe the units that are down."""
        if reopen or self._client is None or not self._client.connected:
            fault = await self._open()
            if fault is not None:
                self._set_state(fault, {})
                return
            todo = set(self._units)
        else:
            todo = set(self._unit_faults)
        faults = {u: f for u, f in self._unit_faults.items() if u not in todo}
        await self._probe_units(todo, faults)

    async def _probe_units(self, units: set[int], faults: dict[int, str]) -> None:
        """Probe these units; a silent one gets a fault, a lost link takes the bus down."""
        try:
            for unit in sorted(units):
                try:
                    await self._probe(unit)
                except _NoAnswer as exc:
                    faults[unit] = str(exc)
        except _LinkLost as exc:
            self._set_state(str(exc), {}, dump=True)
            return
        self._set_state(None, faults, dump=True)

    # --- the pymodbus client -------------------------------------------------------------------

    async def _open(self) -> str | None:
        """A fresh client, connected; or why not."""
        self._close_client()
        if (missing := self._missing_port()) is not None:
            return missing
        self._generation += 1
        client = self._make_client(self._generation)
        self._client = client
        if await client.connect() and client.connected:
            return None
        self._close_client()
        return await self._diagnose()

    def _make_client(self, generation: int) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        # Only ever on the loop: pymodbus's client constructor takes the running
        # loop and makes futures. A fresh client per connection leaves no state
        # (pending futures, failure counters) from the last one.
        c = self.config
        connection = partial(self._connection_changed, generation)
        if isinstance(c, ModbusRtuBus):
            return AsyncModbusSerialClient(
                c.port,
                baudrate=c.baudrate,
                bytesize=8,
                parity=c.parity,
                stopbits=c.stopbits,
                name=f"modbus[{self.name}]",
                reconnect_delay=0,  # the supervisor reconnects
                timeout=c.timeout_s,
                retries=c.retries,
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
                trace_connect=connection,
            )
        return AsyncModbusTcpClient(
            c.host,
            port=c.port,
            name=f"modbus[{self.name}]",
            reconnect_delay=0,
            timeout=c.timeout_s,
            retries=0,  # TCP retransmits by itself
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
            trace_connect=connection,
        )

    def _close_client(self) -> None:
        client, self._client = self._client, None
        self._generation += 1  # callbacks of the old client are ignored from now on
        if client is not None:
            client.close()
        self._flush_rx("")

    def _connection_changed(self, generation: int, connected: bool) -> None:
        """pymodbus's trace_connect: a serial port or a TCP connection went away."""
        if connected or generation != self._generation or not self._started:
            return
        self._set_state(self._lost_text(), {}, dump=True)

    def _missing_port(self) -> str | None:
        c = self.config
        if isinstance(c, ModbusRtuBus) and not os.path.exists(c.port):
            return f"port {c.port} not found"
        return None

    def _lost_text(self) -> str:
        c = self.config
        if isinstance(c, ModbusRtuBus):
            return f"port {c.port} went away"
        return f"connection to {c.host}:{c.port} lost"

    async def _diagnose(self) -> str:
        """pymodbus only says that it could not connect; find out why."""
        c = self.config
        if isinstance(c, ModbusRtuBus):
            return _diagnose_port(c.port)
        try:
            async with asyncio.timeout(c.timeout_s):
                _, writer = await asyncio.open_connection(c.host, c.port)
        except TimeoutError:
            return f"cannot connect to {c.host}:{c.port}: no answer in {c.timeout_s} s"
        except OSError as exc:
            return f"cannot connect to {c.host}:{c.port}: {_reason(exc)}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return f"cannot connect to {c.host}:{c.port}"

    # --- the ring buffer, fed by pymodbus's trace hooks ----------------------------------------

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic_ns()
        if sending:
            self._flush_rx("late")  # bytes that came after the last answer
            self._frames.append(WireFrame(now, "tx", bytes(data)))
            return data
        # pymodbus hands over its whole receive buffer each time bytes arrive.
        if self._rx_pending and not data.startswith(self._rx_pending):
            self._flush_rx("discarded")
        if not self._rx_pending:
            self._rx_pending_ns = now
        self._rx_pending = bytes(data)
        self._rx_seen = True
        return data

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._flush_rx("")
        return pdu

    def _flush_rx(self, note: str) -> None:
        if self._rx_pending:
            self._frames.append(WireFrame(self._rx_pending_ns, "rx", self._rx_pending, note))
            self._rx_pending = b""


def _diagnose_port(port: str) -> str:
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"port {port} not found"
    except PermissionError:
        return f"port {port}: permission denied (is the gateway's user in the port's group?)"
    except OSError as exc:
        return f"cannot open port {port}: {_reason(exc)}"
    try:
        if not os.isatty(fd):
            return f"port {port} is not a serial device"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return f"port {port} is in use by another program"
    finally:
        os.close(fd)
    return f"cannot open port {port}"


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):  # a host name that does not resolve
        return str(exc.strerror or exc).lower()
    # asyncio's connect errors carry the address in strerror; the errno says it better.
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def _check_unit(unit: int) -> None:
    if not 1 <= unit <= 247:
        raise ValueError(f"unit {unit}: Modbus unit ids are 1-247")


def _check_address(address: int, count: int, *, most: int = 2000) -> None:
    # Register requests carry fewer (125 read, 123 written): their callers pass `most`.
    if not 0 <= address <= 0xFFFF or not 1 <= count <= most or address + count > 0x10000:
        raise ValueError(f"address {address}, count {count}: outside 0-65535 or 1-{most}")


def _check_values(values: list[int]) -> None:
    for value in values:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value}: outside 0-65535")


# --- inputs --------------------------------------------------------------------------------

OnChange = Callable[[int, bool, int], None]


class InputPoller:
    """Reads `count` discrete inputs from `address` on a unit every period.

    `on_change(address, value, monotonic_ns)` is called for each input whose
    value differs from the last read (every input on the first read). While
    the bus is down nothing is reported; after it, only what changed.
    """

    def __init__(
        self,
        bus: ModbusBus,
        unit: int,
        address: int,
        count: int,
        poll: ModbusPoll,
        on_change: OnChange,
    ) -> None:
        self.bus = bus
        self.unit = unit
        self.address = address
        self.count = count
        self.poll = poll
        self.on_change = on_change
        self.values: list[bool] | None = None  # the last read, None before the first
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the poller is already started")
        _check_unit(self.unit)
        _check_address(self.address, self.count)
        name = f"modbus[{self.bus.name}].poll[unit {self.unit}]"
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        period_ns = self.poll.period_ms * 1_000_000
        next_ns = time.monotonic_ns()
        while True:
            try:
                values = await self.bus.read_discrete_inputs(self.unit, self.address, self.count)
            except ModbusError:
                pass  # the bus logs and recovers; the last values stand
            except Exception:  # a library bug must not end the door's inputs for good
                log.exception("%s: unit %d: polling inputs failed", self.bus.name, self.unit)
            else:
                self._report(values, time.monotonic_ns())
            next_ns += period_ns
            now = time.monotonic_ns()
            if next_ns < now:  # fell behind (a slow or dead bus): do not catch up in a burst
                next_ns = now + period_ns
            await asyncio.sleep((next_ns - now) / 1e9)

    def _report(self, values: list[bool], ns: int) -> None:
        old, self.values = self.values, values
        for i, value in enumerate(values):
            if old is None or old[i] != value:
                try:
                    self.on_change(self.address + i, value, ns)
                except Exception:
                    log.exception(
                        "%s: unit %d: input %d: on_change failed",
                        self.bus.name,
                        self.unit,
                        self.address + i,
                    )
