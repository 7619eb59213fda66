"""A simulated serial cable between two pseudo-terminals, with wire time.

Each end of the cable is a pty pair: a program opens the end's slave device
(`link.a`, `link.b`, for example `/dev/pts/7`) as it would open
`/dev/ttyUSB0`, and the link moves bytes between the two masters on the
event loop. A pty alone delivers a write at once; a real line takes
`bits_per_byte / baudrate` seconds per byte (10 bits for 8N1: start, 8 data,
stop). So each direction is a transmitter that sends one byte after the
other: a byte is delivered no earlier than its predecessor's delivery plus one
byte's wire time, and no earlier than one byte's wire time after it was
written. Order is kept in each direction.

The link does not look at the bytes: Modbus RTU and OSDP alike. It is full
duplex (RS-232 or four-wire RS-485); collisions of a two-wire bus are not
simulated, since both protocols are master/slave and never talk at once.

`cut()` simulates an unplugged cable: bytes in flight and bytes written
meanwhile are lost, as on a real line, until `restore()`. `inject()` puts
bytes on the wire that neither end wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["a->b", "b->a"]

# Called with the direction, the bytes delivered together and the monotonic
# time (ns) at which they reached the far end.
Observer = Callable[[Direction, bytes, int], None]


@dataclass
class _End:
    master: int
    slave: int  # held open by the link, so the master never sees a hangup
    path: str


@dataclass
class _Lane:
    """One direction of the cable: bytes waiting for their delivery time."""

    name: Direction
    src: _End
    dst: _End
    queue: deque[tuple[int, int]] = field(default_factory=deque)  # (due ns, byte)
    last_due_ns: int = 0
    timer: asyncio.TimerHandle | None = None


class SerialLink:
    """Two pseudo-terminals joined by a simulated cable at `baudrate`."""

    def __init__(self, baudrate: int, bits_per_byte: int = 10) -> None:
        if baudrate <= 0 or bits_per_byte <= 0:
            raise ValueError("baudrate and bits_per_byte must be positive")
        self.baudrate = baudrate
        self.bits_per_byte = bits_per_byte
        self.observer: Observer | None = None
        self.dropped = 0  # bytes lost while cut, or because nobody read the far end
        self._ends: tuple[_End, _End] | None = None
        self._lanes: tuple[_Lane, _Lane] | None = None
        self._connected = True
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def byte_ns(self) -> int:
        """Wire time of one byte, rounded up to whole nanoseconds."""
        return -(-self.bits_per_byte * 1_000_000_000 // self.baudrate)

    @property
    def a(self) -> str:
        """The device path of end A (for pyserial)."""
        return self._started()[0].path

    @property
    def b(self) -> str:
        """The device path of end B."""
        return self._started()[1].path

    @property
    def connected(self) -> bool:
        return self._connected

    def cut(self) -> None:
        """Unplug the cable: bytes in flight and written from now on are lost."""
        self._connected = False
        for lane in self._lanes or ():
            self.dropped += len(lane.queue)
            lane.queue.clear()
            lane.last_due_ns = 0
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None

    def restore(self) -> None:
        """Plug the cable back in."""
        self._connected = True

    def inject(self, direction: Direction, data: bytes) -> None:
        """Bytes on the wire that neither end wrote (line noise, a stray device),
        after what is in flight in that direction. Call it on the link's loop."""
        if self._lanes is None:
            raise RuntimeError("the link is not started")
        self._enqueue(self._lanes[0] if direction == "a->b" else self._lanes[1], data)

    async def start(self) -> None:
        if self._ends is not None:
            raise RuntimeError("the link is already started")
        loop = asyncio.get_running_loop()
        ends = (self._open_end(), self._open_end())
        self._loop = loop
        self._ends = ends
        self._lanes = (_Lane("a->b", ends[0], ends[1]), _Lane("b->a", ends[1], ends[0]))
        for lane in self._lanes:
            loop.add_reader(lane.src.master, self._readable, lane)

    async def stop(self) -> None:
        """Close both ends. Stop the programs using the ends first."""
        if self._ends is None or self._lanes is None or self._loop is None:
            return
        for lane in self._lanes:
            self._loop.remove_reader(lane.src.master)
            if lane.timer is not None:
                lane.timer.cancel()
        for end in self._ends:
            for fd in (end.master, end.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._ends = self._lanes = self._loop = None

    # --- internals ---------------------------------------------------------------

    def _started(self) -> tuple[_End, _End]:
        if self._ends is None:
            raise RuntimeError("the link is not started")
        return self._ends

    @staticmethod
    def _open_end() -> _End:
        master, slave = os.openpty()
        # Raw: no echo, no CR/LF translation, no signals on ^C, 8-bit clean.
        # pyserial sets its own (raw) attributes when it opens the slave.
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        return _End(master, slave, os.ttyname(slave))

    def _readable(self, lane: _Lane) -> None:
        try:
            data = os.read(lane.src.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO: no slave open. Cannot happen while the link holds the
            # slave, but a closed pty must not spin the loop.
            return
        if data:
            self._enqueue(lane, data)

    def _enqueue(self, lane: _Lane, data: bytes) -> None:
        if not self._connected:
            self.dropped += len(data)
            return
        now = time.monotonic_ns()
        due = max(lane.last_due_ns, now)
        step = self.byte_ns
        for byte in data:
            due += step
            lane.queue.append((due, byte))
        lane.last_due_ns = due
        self._schedule(lane)

    def _schedule(self, lane: _Lane) -> None:
        if lane.timer is not None or not lane.queue or self._loop is None:
            return
        delay = (lane.queue[0][0] - time.monotonic_ns()) / 1e9
        lane.timer = self._loop.call_later(max(delay, 0.0), self._deliver, lane)

    def _deliver(self, lane: _Lane) -> None:
        lane.timer = None
        now = time.monotonic_ns()
        out = bytearray()
        # Timers may fire a little early (the selector rounds timeouts); a
        # byte is never delivered before its due time.
        while lane.queue and lane.queue[0][0] <= now:
            out.append(lane.queue.popleft()[1])
        if out:
            try:
                written = os.write(lane.dst.master, out)
            except BlockingIOError:
                written = 0
            self.dropped += len(out) - written
            if written and self.observer is not None:
                self.observer(lane.name, bytes(out[:written]), now)
        self._schedule(lane)
