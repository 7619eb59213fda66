"""Wiegand readers: D0/D1 falling edges to card reads and PINs.

Layers, each usable alone:
- `encode_card` / `decode_card`: frames of the four HID formats the contract
  names (26-bit H10301, 34-bit H10306, 35-bit Corporate 1000, 37-bit H10304)
  with their parity checks, and raw frames of lengths a site allows.
- `decode_key` and `PinEntry`: keypads that send 4 or 8 bits per key.
- `FrameAssembler`: edges (with kernel timestamps) to frames, ended by a gap;
  edges too close together (noise, or both lines at once) spoil the frame.
- `GpiodEdgeSource`: falling edges from libgpiod v2, timestamped by the
  kernel, so Python's scheduling jitter cannot corrupt bits.

Frames are integers, first bit sent in the most significant position.
Nothing here grants anything: a frame that is not exactly right is an error
(`FrameError`), counted and logged by the caller, never a card.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger("drivers.wiegand")

FormatName = Literal["H10301", "H10306", "C1000", "H10304"]
FrameProblem = Literal["wrong_length", "bad_parity", "noise", "too_long"]

KEYS = "0123456789*#"  # keypad codes 0-11


class FrameError(ValueError):
    def __init__(self, problem: FrameProblem, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Frame:
    bits: int  # first bit sent is the most significant
    length: int

    def bit(self, t: int) -> int:
        """The t-th bit sent (0 is the first)."""
        return (self.bits >> (self.length - 1 - t)) & 1

    def field(self, start: int, width: int) -> int:
        return (self.bits >> (self.length - start - width)) & ((1 << width) - 1)

    def as_text(self) -> str:
        return format(self.bits, f"0{self.length}b")


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card as read: its decoded format (if any) and its raw bits."""

    length: int
    raw_hex: str
    format: FormatName | None = None
    facility: int | None = None
    number: int | None = None

    def keys(self) -> tuple[str, ...]:
        """Lookup keys, best first: the decoded format, then the raw bits."""
        raw = f"raw:{self.raw_hex}"
        if self.format is None:
            return (raw,)
        return (f"{self.format}:{self.facility}:{self.number}", raw)


def raw_hex(frame: Frame) -> str:
    """The frame's bits as hex, right-aligned, zero-padded to whole digits."""
    return format(frame.bits, f"0{(frame.length + 3) // 4}x")


# --- the four formats -----------------------------------------------------------


def _parity(frame: Frame, positions: range | list[int]) -> int:
    return sum(frame.bit(t) for t in positions) & 1


@dataclass(frozen=True)
class _Layout:
    name: FormatName
    length: int
    facility: tuple[int, int]  # (first bit sent, width)
    number: tuple[int, int]

    def parity_rules(self) -> list[tuple[int, list[int], int]]:
        """(parity bit, bits it covers, wanted total parity: 0 even, 1 odd)."""
        n = self.length
        if self.name == "C1000":
            p2 = [t for t in range(2, 34) if t % 3 != 1]
            p35 = [1, *(t for t in range(2, 33) if t % 3 != 0)]
            # Order matters when encoding: P2, then P35 (covers P2), then P1 (covers all).
            return [(1, p2, 0), (34, p35, 1), (0, list(range(1, 35)), 1)]
        half = (n - 2) // 2
        lead = list(range(1, 1 + half + (1 if self.name == "H10304" else 0)))
        trail = list(range(n - 1 - half - (1 if self.name == "H10304" else 0), n - 1))
        return [(0, lead, 0), (n - 1, trail, 1)]


LAYOUTS: dict[int, _Layout] = {
    26: _Layout("H10301", 26, (1, 8), (9, 16)),
    34: _Layout("H10306", 34, (1, 16), (17, 16)),
    35: _Layout("C1000", 35, (2, 12), (14, 20)),
    37: _Layout("H10304", 37, (1, 16), (17, 19)),
}
BY_NAME: dict[str, _Layout] = {layout.name: layout for layout in LAYOUTS.values()}


def encode_card(fmt: str, facility: int, number: int) -> Frame:
    layout = BY_NAME.get(fmt)
    if layout is None:
        raise ValueError(f"unknown format {fmt!r}")
    (fs, fw), (ns, nw) = layout.facility, layout.number
    if not (0 <= facility < 1 << fw and 0 <= number < 1 << nw):
        raise ValueError(f"{fmt} holds a {fw}-bit facility and a {nw}-bit number")
    n = layout.length
    bits = (facility << (n - fs - fw)) | (number << (n - ns - nw))
    for pos, covered, wanted in layout.parity_rules():
        frame = Frame(bits, n)
        if _parity(frame, covered) != wanted:
            bits |= 1 << (n - 1 - pos)
        # a rule's bit is set so that (covered bits + parity bit) has the wanted parity
    return Frame(bits, n)


def _parity_ok(frame: Frame, layout: _Layout) -> bool:
    return all(
        (_parity(frame, covered) + frame.bit(pos)) & 1 == wanted
        for pos, covered, wanted in layout.parity_rules()
    )


def decode_card(
    frame: Frame,
    raw_lengths: frozenset[int] = frozenset(),
    formats: frozenset[str] | None = None,
) -> CardRead:
    """A card from a frame: by format when its length is one, else raw if allowed.

    A frame of a format's length with a wrong parity is refused, not read as
    raw: bit errors must never turn into a different card. `formats` limits
    the formats accepted (None: all four).
    """
    layout = LAYOUTS.get(frame.length)
    if layout is not None and formats is not None and layout.name not in formats:
        layout = None
    if layout is not None:
        if not _parity_ok(frame, layout):
            raise FrameError(
                "bad_parity", f"{frame.length}-bit {layout.name} frame {frame.as_text()}"
            )
        return CardRead(
            length=frame.length,
            raw_hex=raw_hex(frame),
            format=layout.name,
            facility=frame.field(*layout.facility),
            number=frame.field(*layout.number),
        )
    if frame.length in raw_lengths:
        return CardRead(length=frame.length, raw_hex=raw_hex(frame))
    raise FrameError(
        "wrong_length",
        f"{frame.length} bits is no card format this reader accepts (formats: "
        f"{', '.join(str(n) for n in accepted_lengths(formats)) or 'none'}; "
        f"raw: {sorted(raw_lengths) or 'none'})",
    )


def accepted_lengths(formats: frozenset[str] | None) -> list[int]:
    return sorted(n for n, layout in LAYOUTS.items() if formats is None or layout.name in formats)


# --- keypads ----------------------------------------------------------------------


def encode_key(key: str, bits: Literal[4, 8]) -> Frame:
    code = KEYS.index(key)
    if bits == 4:
        return Frame(code, 4)
    return Frame(((~code & 0xF) << 4) | code, 8)


def decode_key(frame: Frame) -> str:
    """One key press: 4 bits (the code) or 8 bits (complement, then code)."""
    if frame.length == 4:
        code = frame.bits
    elif frame.length == 8:
        code, check = frame.bits & 0xF, frame.bits >> 4
        if check != (~code & 0xF):
            raise FrameError("bad_parity", f"8-bit key {frame.as_text()}: halves disagree")
    else:
        raise FrameError("wrong_length", f"{frame.length} bits is not a key")
    if code >= len(KEYS):
        raise FrameError("bad_parity", f"key code {code} is no key")
    return KEYS[code]


class PinEntry:
    """Keys to a PIN: `#` submits, `*` clears, a pause abandons the entry."""

    def __init__(self, timeout_ns: int = 5_000_000_000, max_digits: int = 16) -> None:
        self.timeout_ns = timeout_ns
        self.max_digits = max_digits
        self._digits = ""
        self._last_ns = 0

    @property
    def pending(self) -> bool:
        return bool(self._digits)

    def expire(self, now_ns: int) -> bool:
        """Drop a stale entry; True if one was dropped."""
        if self._digits and now_ns - self._last_ns > self.timeout_ns:
            self._digits = ""
            return True
        return False

    def key(self, key: str, now_ns: int) -> str | None:
        """Feed one key; returns the PIN when `#` submits a non-empty entry."""
        self.expire(now_ns)
        self._last_ns = now_ns
        if key == "*":
            self._digits = ""
        elif key == "#":
            pin, self._digits = self._digits, ""
            return pin or None
        elif len(self._digits) < self.max_digits:
            self._digits += key
        return None


# --- edges to frames -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    line: Literal[0, 1]  # D0 carries a 0 bit, D1 a 1 bit
    ns: int  # kernel timestamp, CLOCK_MONOTONIC


class FrameAssembler:
    """Collects falling edges into frames; a quiet gap ends a frame.

    Readers send a bit every 1-2 ms (pulses of 50-100 µs); anything closer
    than `min_interval_ns` to the previous edge (a glitch, or D0 and D1
    falling together) spoils the frame, which is then refused whole.
    """

    def __init__(
        self, gap_ns: int = 25_000_000, min_interval_ns: int = 200_000, max_bits: int = 64
    ) -> None:
        self.gap_ns = gap_ns
        self.min_interval_ns = min_interval_ns
        self.max_bits = max_bits
        self._bits = 0
        self._count = 0
        self._last_ns: int | None = None
        self._noise = 0

    def feed(self, edge: Edge) -> Frame | FrameError | None:
        """Add an edge; returns the previous frame if this edge starts a new one."""
        done = None
        if self._last_ns is not None:
            since = edge.ns - self._last_ns
            if since > self.gap_ns:
                done = self._finish()
            elif since < self.min_interval_ns:
                self._noise += 1
        self._last_ns = edge.ns
        self._bits = (self._bits << 1) | edge.line
        self._count += 1
        return done

    @property
    def count(self) -> int:
        """Bits (edges) in the frame being collected."""
        return self._count

    def flush(self) -> Frame | FrameError | None:
        """End the frame now (it is known to be complete), without waiting for the gap."""
        return self._finish() if self._count else None

    def due_ns(self) -> int | None:
        """When the frame being collected ends if no edge comes (None: idle)."""
        return None if self._last_ns is None else self._last_ns + self.gap_ns

    def poll(self, now_ns: int) -> Frame | FrameError | None:
        """End the frame if the line has been quiet for the gap."""
        if self._last_ns is not None and now_ns - self._last_ns > self.gap_ns:
            return self._finish()
        return None

    def _finish(self) -> Frame | FrameError:
        frame = Frame(self._bits, self._count)
        noise = self._noise
        self._bits, self._count, self._last_ns, self._noise = 0, 0, None, 0
        if noise:
            return FrameError(
                "noise", f"{noise} edge(s) too close together in a {frame.length}-bit frame"
            )
        if frame.length > self.max_bits:
            return FrameError("too_long", f"{frame.length} bits")
        return frame


# --- edge sources ----------------------------------------------------------------------


class EdgeSource(Protocol):
    """Where edges come from: libgpiod on a board, the simulator in tests."""

    async def start(self, on_edges: Callable[[list[Edge]], None]) -> None: ...

    async def stop(self) -> None: ...


class GpiodEdgeSource:
    """Falling edges of D0 and D1 from a GPIO chip through libgpiod v2.

    The kernel timestamps each edge (CLOCK_MONOTONIC) when it happens; the
    request's file descriptor is watched by the event loop, so edges are read
    in batches without a thread. Lines are biased up, as readers expect.
    """

    def __init__(self, chip: str, d0: int, d1: int, consumer: str = "edge-gateway") -> None:
        self.chip = chip
        self.d0 = d0
        self.d1 = d1
        self.consumer = consumer
        self._request: Any = None

    async def start(self, on_edges: Callable[[list[Edge]], None]) -> None:
        import gpiod  # imported here: a gateway without Wiegand readers needs no GPIO
        from gpiod.line import Bias, Clock, Direction
        from gpiod.line import Edge as GpioEdge

        settings = gpiod.LineSettings(
            direction=Direction.INPUT,
            edge_detection=GpioEdge.FALLING,
            bias=Bias.PULL_UP,
            event_clock=Clock.MONOTONIC,
        )
        self._request = gpiod.request_lines(
            self.chip, consumer=self.consumer, config={(self.d0, self.d1): settings}
        )
        request = self._request

        def readable() -> None:
            events = request.read_edge_events()
            on_edges([Edge(0 if e.line_offset == self.d0 else 1, e.timestamp_ns) for e in events])

        asyncio.get_running_loop().add_reader(request.fd, readable)

    async def stop(self) -> None:
        if self._request is not None:
            asyncio.get_running_loop().remove_reader(self._request.fd)
            self._request.release()
            self._request = None


class SocketEdgeSource:
    """Edges from a Unix datagram socket: how the simulated site feeds a daemon.

    Each datagram holds edges as (line: u8, ns: u64) records, timestamped by
    the sender as the kernel would (CLOCK_MONOTONIC). The gateway binds the
    socket; `hwsim.wiegand.SocketEdgeSender` sends to it.
    """

    RECORD = struct.Struct("<BQ")

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self.last_rx_ns = 0  # when the last datagram was read (CLOCK_MONOTONIC)

    @classmethod
    def decode(cls, data: bytes) -> list[Edge]:
        """A datagram's edges; a trailing partial record is ignored."""
        size = cls.RECORD.size
        return [
            Edge(1 if line else 0, ns)
            for line, ns in (
                cls.RECORD.unpack_from(data, i) for i in range(0, len(data) - size + 1, size)
            )
        ]

    async def start(self, on_edges: Callable[[list[Edge]], None]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.setblocking(False)
        self._sock = sock

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return
                self.last_rx_ns = time.monotonic_ns()
                batch = self.decode(data)
                if batch:
                    on_edges(batch)

        asyncio.get_running_loop().add_reader(sock.fileno(), readable)

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


# --- the reader --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presented:
    """What a person presented at a reader: a card (its lookup keys) or a PIN."""

    reader: str
    cards: tuple[str, ...] = ()
    pin: str | None = None
    card: CardRead | None = None


class Indicator(Protocol):
    """The reader's LED and beeper lines, or a simulator's record of them."""

    async def show(self, granted: bool) -> None: ...


class WiegandReader:
    """One Wiegand reader: edges in, card reads and PINs out.

    Refused frames (wrong length, bad parity, noise, too long) are counted
    per problem and logged, and never reach the decision.
    """

    def __init__(
        self,
        name: str,
        source: EdgeSource,
        on_presented: Callable[[Presented], None],
        *,
        gap_ns: int = 25_000_000,
        raw_lengths: frozenset[int] = frozenset(),
        pin_timeout_ns: int = 5_000_000_000,
        indicator: Indicator | None = None,
        formats: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.on_presented = on_presented
        self.assembler = FrameAssembler(gap_ns=gap_ns)
        self.raw_lengths = raw_lengths
        self.formats = formats
        # A frame this long cannot grow into another accepted one: it is decided at its
        # last bit instead of after the gap (a frame takes 2 ms a bit, the gap 25 ms).
        self.complete_at = max([*accepted_lengths(formats), *raw_lengths, 8])
        self.pin = PinEntry(timeout_ns=pin_timeout_ns)
        self.indicator = indicator
        self.frames = 0
        self.last_edge_ns = 0  # the kernel's timestamp of the last edge read
        self.refused: dict[str, int] = {}
        self.last_problem: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self.source.start(self._edges)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.source.stop()

    async def feedback(self, granted: bool) -> None:
        if self.indicator is not None:
            await self.indicator.show(granted)

    def _edges(self, batch: list[Edge]) -> None:
        if batch:
            self.last_edge_ns = batch[-1].ns
        for edge in batch:
            done = self.assembler.feed(edge)
            if done is not None:
                self._frame(done)
            if self.assembler.count == self.complete_at:
                flushed = self.assembler.flush()
                if flushed is not None:
                    self._frame(flushed)
        self._arm()

    def _arm(self) -> None:
        """Wake up when the line has been quiet long enough to end the frame."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.assembler.due_ns()
        if due is not None:
            loop = asyncio.get_running_loop()
            # The loop's clock is CLOCK_MONOTONIC too: kernel timestamps compare directly.
            self._timer = loop.call_at(due / 1e9 + 0.0005, self._quiet)

    def _quiet(self) -> None:
        self._timer = None
        done = self.assembler.poll(time.monotonic_ns())
        if done is not None:
            self._frame(done)
        else:
            self._arm()

    def _frame(self, frame: Frame | FrameError) -> None:
        if isinstance(frame, FrameError):
            self._refuse(frame)
            return
        self.frames += 1
        try:
            if frame.length in (4, 8):
                key = decode_key(frame)
                pin = self.pin.key(key, time.monotonic_ns())
                if pin is not None:
                    self.on_presented(Presented(self.name, pin=pin))
                return
            card = decode_card(frame, self.raw_lengths, self.formats)
        except FrameError as exc:
            self._refuse(exc)
            return
        self.on_presented(Presented(self.name, cards=card.keys(), card=card))

    def _refuse(self, exc: FrameError) -> None:
        self.refused[exc.problem] = self.refused.get(exc.problem, 0) + 1
        self.last_problem = str(exc)
        log.warning("%s: frame refused: %s", self.name, exc)
