"""Simulated OSDP readers: libosdp peripheral devices on one end of a serial line.

libosdp (https://github.com/goToMain/libosdp) is an independent OSDP
implementation, so a reader simulated with it checks our control panel
against someone else's reading of the spec: framing, CRC, sequence numbers and
the secure channel byte for byte.

`SimOsdpBus` opens the simulated bus end (for example `SerialLink.b`) and
shares it between its readers as a multi-drop RS-485 bus does: every reader
sees every frame and answers only its own address. Each `SimReader` is one
libosdp `PeripheralDevice`; it records the commands it gets (LED, buzzer,
text, outputs, new keys) so tests can observe them, and it presents cards and
keys through libosdp's event API.

Threads: one per simulated bus ("sim-osdp"), which refreshes every reader on
it as soon as bytes arrive (and every 10 ms otherwise), as a reader's firmware
would on a UART interrupt; libosdp's own `PeripheralDevice.start()` thread
sleeps 20 ms between refreshes, so its replies would take up to 20 ms.
`SimOsdpBus.stop()` joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import termios
import threading
import tty
from dataclasses import dataclass, field
from typing import Any, Literal

import osdp

log = logging.getLogger("hwsim.osdp_reader")

KEYPAD_CODES = {"*": 0x7F, "#": 0x0D}  # digits are sent as ASCII


def _complete_prefix(buf: bytearray) -> int:
    """How many leading bytes of `buf` end with a complete OSDP frame (0: none yet)."""
    end = 0
    while True:
        som = buf.find(0x53, end)
        if som < 0 or len(buf) - som < 4:
            return end
        length = buf[som + 2] | buf[som + 3] << 8
        if length < 8 or length > 1500:  # not a frame start: let libosdp skip the byte
            end = som + 1
            continue
        if len(buf) - som < length:
            return end
        end = som + length


class _Wire:
    """The bus end, shared: what one reader's channel reads, all readers see."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.channels: list[_Channel] = []
        self._partial = bytearray()

    def pump(self) -> None:
        """Move the whole frames the line has into every reader's receive buffer.

        A reader's UART hands its firmware a frame when the line goes idle; libosdp
        is handed whole frames too (it misreads a secure-channel frame that reaches
        it in pieces, as at 9600 baud, where bytes arrive a millisecond apart).
        """
        with self.lock:
            while True:
                try:
                    data = os.read(self.fd, 4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return  # the line is gone; the readers just hear nothing
                if not data:
                    break
                self._partial += data
            ready = _complete_prefix(self._partial)
            if not ready:
                return
            data = bytes(self._partial[:ready])
            del self._partial[:ready]
            for channel in self.channels:
                if channel.active:
                    channel.rx += data

    def write(self, data: bytes) -> int:
        with self.lock:
            try:
                return os.write(self.fd, data)
            except OSError:
                return 0


class _Channel(osdp.Channel):  # type: ignore[misc]
    """libosdp's view of the wire: called from the reader's refresh thread."""

    def __init__(self, wire: _Wire) -> None:
        super().__init__()
        self.wire = wire
        self.rx = bytearray()
        self.active = False

    def read(self, max_bytes: int) -> bytes:
        self.wire.pump()
        with self.wire.lock:
            out = bytes(self.rx[:max_bytes])
            del self.rx[:max_bytes]
        return out

    def write(self, buf: bytes) -> int:
        return self.wire.write(bytes(buf))

    def flush(self) -> None:
        with self.wire.lock:
            self.rx.clear()


@dataclass
class LedState:
    color: int  # libosdp's colour codes: 0 off, 1 red, 2 green, 3 amber, 4 blue
    temporary: bool
    on_count: int
    off_count: int


@dataclass
class SimState:
    """What the reader has been told to do, for tests to look at."""

    leds: list[LedState] = field(default_factory=list)
    beeps: list[int] = field(default_factory=list)  # repeat count of each buzzer command
    texts: list[str] = field(default_factory=list)
    outputs: dict[int, bool] = field(default_factory=dict)
    output_timers: dict[int, int] = field(default_factory=dict)  # in 100 ms units
    keys: list[bytes] = field(default_factory=list)  # SCBKs received by KEYSET
    commands: list[dict[str, Any]] = field(default_factory=list)


class SimReader:
    """One libosdp peripheral device at `address`.

    `scbk` None puts the reader in install mode (it accepts SCBK-D until a
    KEYSET gives it a key). `secure` makes it refuse everything but the
    handshake in clear (libosdp's ENFORCE_SECURE). `wrong_key` makes it hold a
    key that differs from `scbk` in one bit, as a mis-provisioned reader would.
    """

    def __init__(
        self,
        address: int,
        scbk: bytes | None = None,
        *,
        secure: bool = True,
        wrong_key: bool = False,
        name: str | None = None,
    ) -> None:
        self.address = address
        self.scbk = scbk
        self.secure = secure and scbk is not None
        self.wrong_key = wrong_key
        self.name = name or f"sim-pd{address}"
        self.state = SimState()
        self._lock = threading.Lock()
        self._pd: Any = None
        self._channel: _Channel | None = None

    # --- the reader's user ---------------------------------------------------------

    def present_card(
        self, bits: int, bit_count: int, fmt: Literal["wiegand", "unspecified"] = "wiegand"
    ) -> None:
        """A card read: `bits` with the first bit read in the most significant place."""
        n_bytes = (bit_count + 7) // 8
        data = (bits << (n_bytes * 8 - bit_count)).to_bytes(n_bytes, "big")
        self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "format": osdp.CardFormat.Wiegand
                if fmt == "wiegand"
                else osdp.CardFormat.Unspecified,
                "direction": 0,
                "length": bit_count,
                "data": data,
            }
        )

    def press_keys(self, keys: str) -> None:
        data = bytes(KEYPAD_CODES.get(k, ord(k)) for k in keys)
        self._submit({"event": osdp.Event.KeyPress, "reader_no": 0, "data": data})

    def report_status(self, tamper: bool, power: bool) -> None:
        """A local status change (osdp_LSTATR): tamper switch, power failure."""
        self._submit(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Local,
                "nr_entries": 2,
                "report": bytes([tamper, power]),
            }
        )

    @property
    def sc_active(self) -> bool:
        return self._pd is not None and bool(self._pd.is_sc_active())

    @property
    def current_key(self) -> bytes | None:
        """The key the reader holds now (after any KEYSET)."""
        with self._lock:
            return self.state.keys[-1] if self.state.keys else self._key()

    # --- lifecycle (driven by SimOsdpBus) -----------------------------------------------

    def _key(self) -> bytes | None:
        if self.scbk is None or not self.wrong_key:
            return self.scbk
        return bytes([self.scbk[0] ^ 0x01]) + self.scbk[1:]

    def _start(self, wire: _Wire) -> None:
        channel = _Channel(wire)
        flags = [osdp.LibFlag.EnforceSecure] if self.secure else []
        info = osdp.PDInfo(
            self.address, channel, scbk=self.current_key, name=self.name, flags=flags
        )
        caps = osdp.PDCapabilities(
            [
                (osdp.Capability.OutputControl, 1, 4),
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.TextOutput, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
            ]
        )
        pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning)
        # Straight to the binding: PeripheralDevice's own handler also puts every
        # command on a queue that only its get_command() drains, which nothing here
        # calls (one dict kept per command, for as long as the reader runs).
        pd.ctx.set_command_callback(self._on_command)
        with wire.lock:
            wire.channels.append(channel)
            channel.active = True
        self._channel = channel
        # The bus's thread refreshes the device (see SimOsdpBus); libosdp's own
        # refresh thread would sleep 20 ms between refreshes, which no reader does.
        pd.lock = threading.Lock()
        self._pd = pd

    def _refresh(self) -> None:
        pd = self._pd
        if pd is not None:
            with pd.lock:
                pd.ctx.refresh()

    def _stop(self, wire: _Wire) -> None:
        pd = self._pd
        if pd is None:
            return
        with pd.lock:  # a refresh in progress finishes first
            self._pd = None
        with wire.lock:
            if self._channel in wire.channels:
                wire.channels.remove(self._channel)
        self._channel = None

    def _submit(self, event: dict[str, Any]) -> None:
        if self._pd is None:
            raise RuntimeError(f"{self.name} is not running")
        if not self._pd.submit_event(event):
            raise RuntimeError(f"{self.name}: libosdp refused the event (queue full?)")

    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, None]:
        """libosdp's command callback, on the refresh thread: record and accept.

        The answer is a new tuple each time, never a constant such as `return 0,
        None`. The binding's pd_command_cb() (python/osdp_sys/pd.c, libosdp 3.2.0
        and master as of 2026-06) parses the answer with
        `PyArg_ParseTuple(result, "IO", &ret_val, &result)`, which overwrites its
        reference to the tuple with a borrowed one to the tuple's second item, and
        then `Py_XDECREF(result)`s that item. So each command takes one reference
        from the second item and none from the tuple. From a constant tuple the
        item lost is None's, for good: on Python 3.11 (None is immortal only from
        3.12) None's count reaches zero after some 35,000 commands and the process
        dies with "Fatal Python error: none_dealloc". From a new tuple the stray
        decref takes back the reference the tuple gave its item, and the tuple,
        which the binding never releases, stays alive holding it: 56 bytes leaked
        per command, and nothing freed early. With a binding that releases the
        tuple, the tuple is simply freed. Not reported upstream yet; the lines:
        https://github.com/osdp-dev/libosdp/blob/45d03d81c75f/python/osdp_sys/pd.c#L137-L147
        """
        try:
            self._record(cmd)
        except Exception:  # raised into libosdp, the binding would parse a NULL result
            log.exception("%s: command %r", self.name, cmd)
            status = -1
        else:
            status = 0
        return (status, None)  # built at run time: a new tuple (see above)

    def _record(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("command")
        with self._lock:
            s = self.state
            s.commands.append(dict(cmd))
            if kind == osdp.Command.LED:
                s.leds.append(
                    LedState(
                        color=cmd["on_color"],
                        temporary=bool(cmd["temporary"]),
                        on_count=cmd["on_count"],
                        off_count=cmd["off_count"],
                    )
                )
            elif kind == osdp.Command.Buzzer:
                s.beeps.append(cmd["rep_count"])
            elif kind == osdp.Command.Text:
                s.texts.append(cmd["data"])
            elif kind == osdp.Command.Output:
                # Control codes 2, 4 and 5 switch on; 1, 3 and 6 switch off.
                s.outputs[cmd["output_no"]] = cmd["control_code"] in (2, 4, 5)
                s.output_timers[cmd["output_no"]] = cmd["timer_count"]
            elif kind == osdp.Command.Keyset:
                s.keys.append(bytes(cmd["data"]))


class SimOsdpBus:
    """Simulated readers sharing one bus end (a device path such as `SerialLink.b`)."""

    # Between refreshes with nothing on the line (libosdp's timers need ticks too).
    IDLE_REFRESH_S = 0.01

    def __init__(self, port: str, readers: list[SimReader]) -> None:
        self.port = port
        self.readers = {r.address: r for r in readers}
        self._wire: _Wire | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _run(self, wire: _Wire) -> None:
        """Refresh every reader as soon as bytes arrive, as firmware on a UART interrupt."""
        while not self._stopping.is_set():
            with contextlib.suppress(OSError, ValueError):
                select.select([wire.fd], [], [], self.IDLE_REFRESH_S)
            for reader in list(self.readers.values()):
                reader._refresh()

    async def start(self) -> None:
        fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        with contextlib.suppress(termios.error):
            termios.tcflush(fd, termios.TCIOFLUSH)  # what the CP sent while we were away
        self._wire = _Wire(fd)
        for reader in self.readers.values():
            reader._start(self._wire)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(self._wire,), name="sim-osdp")
        self._thread.start()

    async def stop(self) -> None:
        """Power the readers off: stop and join their threads, close the line."""
        wire, self._wire = self._wire, None
        if wire is None:
            return
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for reader in self.readers.values():
            reader._stop(wire)
        with contextlib.suppress(OSError):
            os.close(wire.fd)

    async def power_off(self, address: int) -> None:
        """One reader goes silent (unplugged, or its power fails); the others go on."""
        if self._wire is not None:
            await asyncio.to_thread(self.readers[address]._stop, self._wire)

    async def power_on(self, address: int) -> None:
        """The reader comes back, as after a power cycle: no session, its key kept."""
        if self._wire is not None and self.readers[address]._pd is None:
            self.readers[address]._start(self._wire)

    async def __aenter__(self) -> SimOsdpBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
