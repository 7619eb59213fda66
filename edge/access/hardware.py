"""The site's hardware as the config describes it: buses, readers, inputs, strikes.

`Hardware` builds the drivers from `[buses]`, `[readers]` and `[doors]`,
starts and stops them, and turns what they report into calls on
`HardwareEvents` (a presentation at a reader, a reader going offline or
coming back, a tamper report) and on input watchers (`watch_input`). It
knows nothing about policy or door states; `edge.access.doors` does.

Nothing here raises for a missing device: a serial port that is not there, a
GPIO chip that cannot be opened, a key file that is not provisioned, each is
the device's current fault, shown by `edgectl status` and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from drivers.aio import cancel_and_wait
from drivers.modbus import InputPoller, ModbusBus, ModbusError, ModbusPoll
from drivers.osdp import SCBK_D, OsdpBus, OsdpCommandError, OsdpReader, parse_scbk
from drivers.wiegand import (
    EdgeSource,
    Frame,
    FrameError,
    GpiodEdgeSource,
    PinEntry,
    Presented,
    SocketEdgeSource,
    WiegandReader,
    decode_card,
)
from edge.config import (
    Config,
    ModbusRtuBusConfig,
    ModbusStrike,
    ModbusTcpBusConfig,
    OsdpBusSection,
    OsdpReaderSection,
    OsdpStrike,
    WiegandReaderSection,
)
from edge.secrets import SecretError, read_secret, secret_path, write_secret

log = logging.getLogger("edge.hardware")

Side = Literal["in", "out"]

# A reader that has not connected this long after start is reported offline.
STARTUP_GRACE_S = 3.0
SUPERVISE_S = 0.5
TEXT_OUTPUT = 6  # the OSDP capability function code of a text display


class HardwareEvents(Protocol):
    """What the hardware tells the rest of the gateway."""

    def presented(self, port: ReaderPort, p: Presented) -> None: ...

    def reader_changed(self, port: ReaderPort, online: bool, first: bool) -> None: ...

    def reader_status(self, port: ReaderPort, tamper: bool, power_failure: bool) -> None: ...


@dataclass
class ReaderPort:
    """One configured reader, whatever its driver, as the door layer sees it."""

    name: str
    kind: Literal["osdp", "wiegand"]
    door: str | None = None
    side: Side = "in"
    fault: str | None = "not started"  # why it cannot be used now, in words
    detail: str = ""  # what is fine about it, in words ("secure channel")
    online: bool = False
    reported_online: bool | None = None  # as the last reader.online/offline event said
    driver: Any = None
    read_ns: int = 0  # when the last card read reached the gateway (CLOCK_MONOTONIC)
    where: str = ""  # what the driver opens, for messages
    feedback_fn: Callable[[bool], Awaitable[None]] | None = None
    # An OSDP key file that cannot be used (missing, malformed, SCBK-D): the real
    # cause, which the driver only knows as "no key for the secure channel".
    key_fault: str | None = None

    async def feedback(self, granted: bool) -> None:
        if self.feedback_fn is None or not self.online:
            return
        try:
            await self.feedback_fn(granted)
        except (OsdpCommandError, OSError) as exc:
            log.warning("%s: feedback not shown: %s", self.name, exc)

    def view(self) -> dict[str, Any]:
        state = "online" if self.online else "offline"
        if self.online and self.detail:
            state = f"online ({self.detail})"
        return {
            "name": self.name,
            "kind": self.kind,
            "door": self.door,
            "side": self.side,
            "state": state,
            "fault": self.fault,
            "read_ns": self.read_ns,
        }


@dataclass
class _Inputs:
    """The inputs read from one unit of one bus, and who wants each."""

    bus: str
    unit: int
    watchers: dict[int, list[Callable[[bool], None]]] = field(default_factory=dict)
    poller: InputPoller | None = None


class Hardware:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        events: HardwareEvents,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.events = events
        self.modbus: dict[str, ModbusBus] = {}
        self.osdp: dict[str, OsdpBus] = {}
        self.readers: dict[str, ReaderPort] = {}
        self._inputs: dict[tuple[str, int], _Inputs] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wiegand_retry: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._started = False
        self._build()

    # --- construction ----------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        units: dict[str, set[int]] = {}
        for door in cfg.doors.values():
            if isinstance(door.strike, ModbusStrike):
                units.setdefault(door.strike.bus, set()).add(door.strike.unit)
            for ref in (door.contact, door.exit):
                if ref is not None:
                    units.setdefault(ref.bus, set()).add(ref.unit)
        for dev in cfg.devices.values():
            if dev.type == "modbus_hvac":
                units.setdefault(dev.bus, set()).add(dev.unit)
        for name, bus in cfg.buses.items():
            if isinstance(bus, (ModbusRtuBusConfig, ModbusTcpBusConfig)):
                self.modbus[name] = ModbusBus(name, bus, units=units.get(name, ()))
            elif isinstance(bus, OsdpBusSection):
                self.osdp[name] = OsdpBus(bus, name=name)
        sides: dict[str, tuple[str | None, Side]] = {}
        for door_id, door in cfg.doors.items():
            for r in door.in_readers:
                sides[r] = (door_id, "in")
            for r in door.out_readers:
                sides[r] = (door_id, "out")
        for name, rc in cfg.readers.items():
            served, side = sides.get(name, (None, "in"))  # a reader may serve no door yet
            port = ReaderPort(name, rc.type, served, side)
            if isinstance(rc, OsdpReaderSection):
                self._build_osdp(port, rc)
            else:
                self._build_wiegand(port, rc)
            self.readers[name] = port

    def _osdp_key(self, name: str, rc: OsdpReaderSection) -> tuple[bytes | None, str | None]:
        """The reader's key from its secret file; a problem with it is its fault."""
        key_name = rc.key or f"osdp-{name}"
        try:
            raw = read_secret(self.state_dir, key_name)
        except SecretError as exc:
            return None, str(exc)
        if raw is None:
            if rc.install_mode:
                return None, None
            where = secret_path(self.state_dir, key_name)
            return None, f"key file {where} is not provisioned (see docs/hardware.md)"
        try:
            key = parse_scbk(raw)
        except ValueError as exc:
            return None, f"{secret_path(self.state_dir, key_name)}: {exc}"
        if key == SCBK_D and not rc.install_mode:
            # The default key is public: a reader keyed with it is not secured (Annex D.8).
            where = secret_path(self.state_dir, key_name)
            return None, f"key file {where} holds the default key SCBK-D (install mode only)"
        return key, None

    def _build_osdp(self, port: ReaderPort, rc: OsdpReaderSection) -> None:
        key, problem = self._osdp_key(port.name, rc)
        driver_cfg = rc
        if rc.install_mode and key is not None:
            # Enrolled on an earlier start: the key file is the reader's key now.
            log.warning(
                "%s: already enrolled (its key file exists); remove install_mode from the "
                "config (delete the key file to enrol a factory-reset reader again)",
                port.name,
            )
            driver_cfg = rc.model_copy(update={"install_mode": False})
        reader = self.osdp[rc.bus].add_reader(driver_cfg, key)
        port.driver = reader

        async def feedback(granted: bool) -> None:
            await reader.feedback(granted)
            level, count = reader.info.capabilities.get(TEXT_OUTPUT, (0, 0))
            if level and count:  # a reader with a display says it in words too
                await reader.text("WELCOME" if granted else "ACCESS DENIED", seconds=3)

        port.feedback_fn = feedback
        port.fault = problem or "not connected yet"
        port.key_fault = problem
        pins = PinEntry(timeout_ns=int(5e9))

        def card(bits: int, bit_count: int, fmt: str) -> None:
            port.read_ns = reader.bus.last_rx_ns
            try:
                read = decode_card(Frame(bits, bit_count), frozenset({bit_count}))
            except FrameError as exc:
                log.warning("%s: card refused: %s", port.name, exc)
                return
            self.events.presented(port, Presented(port.name, cards=read.keys(), card=read))

        def keys(text: str) -> None:
            now = time.monotonic_ns()
            for k in text:
                if k not in "0123456789*#":
                    continue
                pin = pins.key(k, now)
                if pin is not None:
                    self.events.presented(port, Presented(port.name, pin=pin))

        def status(tamper: bool, power: bool) -> None:
            if tamper:
                log.error("%s: TAMPER", port.name)
            if power:
                log.error("%s: power failure reported", port.name)
            self.events.reader_status(port, tamper, power)

        def online() -> None:
            self._check_readers()
            if reader.install_mode and reader.state == "secure":
                self._spawn(self._enrol(port, rc), f"reader[{port.name}].enrol")

        def offline() -> None:
            self._check_readers()

        reader.on_card, reader.on_keys, reader.on_status = card, keys, status
        reader.on_online, reader.on_offline = online, offline

    def _build_wiegand(self, port: ReaderPort, rc: WiegandReaderSection) -> None:
        source: EdgeSource
        if rc.edges == "socket":
            assert rc.socket is not None
            source = SocketEdgeSource(str(rc.socket))
            port.where = f"socket {rc.socket}"
        else:
            assert rc.d0 is not None
            assert rc.d1 is not None
            source = GpiodEdgeSource(rc.chip, rc.d0, rc.d1)
            port.where = f"{rc.chip} lines {rc.d0} (D0) and {rc.d1} (D1)"
        indicator = None
        if rc.edges == "gpiod" and (rc.led_line is not None or rc.beeper_line is not None):
            indicator = GpiodIndicator(rc.chip, rc.led_line, rc.beeper_line)

        def presented(p: Presented) -> None:
            # When the last bit reached the gateway: the datagram's arrival from the
            # simulator, the kernel's timestamp of the edge on GPIO.
            port.read_ns = getattr(source, "last_rx_ns", 0) or reader.last_edge_ns
            self.events.presented(port, p)

        reader = WiegandReader(
            port.name,
            source,
            presented,
            gap_ns=int(rc.frame_gap_ms * 1e6),
            raw_lengths=frozenset(rc.raw_lengths),
            pin_timeout_ns=int(rc.pin_timeout_s * 1e9),
            indicator=indicator,
            formats=frozenset(rc.card_formats),
        )
        port.driver = reader
        port.feedback_fn = reader.feedback
        port.detail = "Wiegand, not supervised"

    # --- lifecycle -------------------------------------------------------------------

    def watch_input(self, bus: str, unit: int, address: int, fn: Callable[[bool], None]) -> None:
        """Call `fn(value)` with an input's value at the first read and on every change."""
        group = self._inputs.setdefault((bus, unit), _Inputs(bus, unit))
        group.watchers.setdefault(address, []).append(fn)

    async def start(self) -> None:
        self._started = True
        self._started_at = time.monotonic()
        for bus in self.modbus.values():
            await bus.start()
        for (bus_name, unit), group in self._inputs.items():
            bus_cfg = self.config.buses[bus_name]
            assert isinstance(bus_cfg, (ModbusRtuBusConfig, ModbusTcpBusConfig))
            first, last = min(group.watchers), max(group.watchers)

            def changed(address: int, value: bool, _ns: int, group: _Inputs = group) -> None:
                for fn in group.watchers.get(address, ()):
                    fn(value)

            group.poller = InputPoller(
                self.modbus[bus_name],
                unit,
                first,
                last - first + 1,
                ModbusPoll(period_ms=bus_cfg.input_poll_ms),
                changed,
            )
            await group.poller.start()
        for osdp_bus in self.osdp.values():
            await osdp_bus.start()
        failed = []
        for port in self.readers.values():
            if isinstance(port.driver, WiegandReader) and not await self._start_wiegand(port):
                failed.append(port)
        if failed:
            self._wiegand_retry = asyncio.create_task(
                self._retry_wiegand(failed), name="hardware.wiegand_retry"
            )
        self._supervisor = asyncio.create_task(self._supervise(), name="hardware.supervise")

    async def _start_wiegand(self, port: ReaderPort) -> bool:
        try:
            await port.driver.start()
        except Exception as exc:  # a missing chip, a busy line, a bad socket path
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            port.fault = f"cannot open {port.where}: {reason}"
            log.error("%s: %s", port.name, port.fault)
            with contextlib.suppress(Exception):
                await port.driver.stop()
            return False
        port.online, port.fault = True, None
        return True

    async def _retry_wiegand(self, ports: list[ReaderPort]) -> None:
        while ports:
            await asyncio.sleep(10)
            ports = [p for p in ports if not await self._start_wiegand(p)]

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_S)
            self._check_readers()

    def _check_readers(self) -> None:
        """Report every reader whose state changed since it was last reported."""
        young = time.monotonic() - self._started_at < STARTUP_GRACE_S
        for port in self.readers.values():
            reader = port.driver
            if isinstance(reader, OsdpReader):
                port.online = reader.state != "offline"
                if port.online:
                    port.fault = None
                    port.detail = "secure channel" if reader.state == "secure" else "IN CLEAR"
                else:
                    port.fault = port.key_fault or reader.bus.fault or reader.fault or port.fault
            if port.reported_online == port.online:
                continue
            first = port.reported_online is None
            if first and not port.online and young:
                continue  # give it time to connect before calling it offline
            port.reported_online = port.online
            try:
                self.events.reader_changed(port, port.online, first)
            except Exception:
                log.exception("%s: reporting its state failed", port.name)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for task in (self._wiegand_retry, self._supervisor):
            await cancel_and_wait(task)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for port in self.readers.values():
            if isinstance(port.driver, WiegandReader) and port.online:
                await port.driver.stop()
            port.online, port.fault = False, "stopped"
        for bus in self.osdp.values():
            await bus.stop()
        for group in self._inputs.values():
            if group.poller is not None:
                await group.poller.stop()
        for mb in self.modbus.values():
            await mb.stop()

    # --- reader events -----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enrol(self, port: ReaderPort, rc: OsdpReaderSection) -> None:
        """Install mode: give the reader a random key of its own and keep it secret."""
        reader: OsdpReader = port.driver
        key_name = rc.key or f"osdp-{port.name}"
        key = os.urandom(16)
        # Stored first: if the reader takes the key and the reply is lost, it is not lost too.
        path = await asyncio.to_thread(write_secret, self.state_dir, key_name, key.hex().encode())
        try:
            await reader.install_key(key)
        except OsdpCommandError as exc:
            log.error("%s: enrolment failed, will retry on reconnection: %s", port.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return
        log.warning(
            "%s: enrolled with a new key stored in %s; remove install_mode from its config",
            port.name,
            path,
        )

    # --- views ---------------------------------------------------------------------------

    def buses_view(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, mb in self.modbus.items():
            out.append(
                {
                    "name": name,
                    "kind": mb.config.type,
                    "state": "online" if mb.online else "offline",
                    "fault": mb.fault,
                }
            )
        for name, ob in self.osdp.items():
            out.append(
                {
                    "name": name,
                    "kind": "osdp",
                    "state": "offline" if ob.fault else "online",
                    "fault": ob.fault,
                    # Frames refused since start, by cause (drivers.osdp.PROTOCOL_ERRORS).
                    "refused": {k: n for k, n in sorted(ob.counters.items()) if n},
                }
            )
        return out


class GpiodIndicator:
    """A Wiegand reader's LED and beeper inputs, driven low through GPIO outputs.

    Readers pull these inputs up internally and act on low: LED low is green,
    beeper low sounds. A grant is green and one short beep; a denial three beeps.
    """

    def __init__(self, chip: str, led: int | None, beeper: int | None) -> None:
        self.chip = chip
        self.led = led
        self.beeper = beeper
        self._request: Any = None

    def _lines(self) -> Any:
        if self._request is None:
            import gpiod
            from gpiod.line import Direction, Value

            lines = tuple(x for x in (self.led, self.beeper) if x is not None)
            settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)
            self._request = gpiod.request_lines(
                self.chip, consumer="edge-gateway", config={lines: settings}
            )
        return self._request

    async def show(self, granted: bool) -> None:
        from gpiod.line import Value

        req = self._lines()
        if self.led is not None and granted:
            req.set_value(self.led, Value.INACTIVE)
        for _ in range(1 if granted else 3):
            if self.beeper is not None:
                req.set_value(self.beeper, Value.INACTIVE)
            await asyncio.sleep(0.1)
            if self.beeper is not None:
                req.set_value(self.beeper, Value.ACTIVE)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        if self.led is not None:
            req.set_value(self.led, Value.ACTIVE)


# --- strikes -------------------------------------------------------------------------------


def strike_writer(
    hw: Hardware, strike: ModbusStrike | OsdpStrike
) -> tuple[str, Callable[[bool], Awaitable[None]]]:
    """What writes a strike's relay (energised or not), and its name for people."""
    if isinstance(strike, ModbusStrike):
        bus = hw.modbus[strike.bus]

        async def write_coil(on: bool) -> None:
            await bus.write_coil(strike.unit, strike.coil, on)

        return f"{strike.bus} unit {strike.unit} coil {strike.coil}", write_coil
    reader: OsdpReader = hw.readers[strike.reader].driver

    async def write_output(on: bool) -> None:
        await reader.output(strike.output, on)

    return f"{strike.reader} output {strike.output}", write_output


STRIKE_ERRORS = (ModbusError, OsdpCommandError)
