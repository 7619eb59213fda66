"""A simulated Wiegand reader: frames to D0/D1 falling edges with real timing.

Readers pull a line low for about 50 µs per bit and send a bit every 1-2 ms.
`edges` turns a frame into timestamped edges with optional jitter, noise
edges and flipped bits; `SimEdgeSource` delivers them to a driver in real
time, as the kernel would deliver them from GPIO, through the same
`EdgeSource` interface as `drivers.wiegand.GpiodEdgeSource`.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from typing import Literal

from drivers.wiegand import Edge, Frame, SocketEdgeSource, encode_key

PULSE_NS = 50_000
INTERVAL_NS = 2_000_000  # from one bit's falling edge to the next


def edges(
    frame: Frame,
    start_ns: int,
    *,
    interval_ns: int = INTERVAL_NS,
    jitter_ns: int = 0,
    noise: int = 0,
    flip: int = 0,
    rng: random.Random | None = None,
) -> list[Edge]:
    """The falling edges of one frame.

    `jitter_ns` moves each bit by up to that much; `noise` adds that many
    glitch edges right after random bits (a few µs later, on either line);
    `flip` inverts that many random bits (the line the bit arrives on).
    """
    rng = rng or random.Random(0)
    flipped = set(rng.sample(range(frame.length), flip)) if flip else set()
    out: list[Edge] = []
    for t in range(frame.length):
        bit = frame.bit(t) ^ (1 if t in flipped else 0)
        at = start_ns + t * interval_ns + (rng.randint(-jitter_ns, jitter_ns) if jitter_ns else 0)
        out.append(Edge(1 if bit else 0, max(at, start_ns)))
    for _ in range(noise):
        after = rng.randrange(len(out))
        out.append(Edge(rng.choice((0, 1)), out[after].ns + rng.randint(1_000, 20_000)))
    out.sort(key=lambda e: e.ns)
    return out


def wire_ns(frame: Frame, interval_ns: int = INTERVAL_NS) -> int:
    """How long the frame takes on the wire (first edge to last pulse's end)."""
    return (frame.length - 1) * interval_ns + PULSE_NS


async def play(
    frame: Frame,
    deliver: Callable[[Edge], None],
    *,
    interval_ns: int = INTERVAL_NS,
    jitter_ns: int = 0,
    noise: int = 0,
    flip: int = 0,
    rng: random.Random | None = None,
    burst: bool = False,
) -> int:
    """Deliver a frame's edges at their times, from now; returns the last timestamp.

    `burst`: deliver them all at once, stamped with the same times, as a kernel
    hands over a frame's queued edges. A frame then cannot be split by a stall
    of the sender's own loop, which a reader would rightly take for the end of
    a frame (for tests of what a frame holds, not of timing).
    """
    stream = edges(
        frame,
        time.monotonic_ns(),
        interval_ns=interval_ns,
        jitter_ns=jitter_ns,
        noise=noise,
        flip=flip,
        rng=rng,
    )
    for edge in stream:
        delay = (edge.ns - time.monotonic_ns()) / 1e9
        if delay > 0 and not burst:
            await asyncio.sleep(delay)
        deliver(edge)
    return stream[-1].ns


class SimEdgeSource:
    """An `EdgeSource` fed by the simulator, in real time on the event loop."""

    def __init__(self) -> None:
        self._on_edges: Callable[[list[Edge]], None] | None = None

    async def start(self, on_edges: Callable[[list[Edge]], None]) -> None:
        self._on_edges = on_edges

    async def stop(self) -> None:
        self._on_edges = None

    async def send(
        self,
        frame: Frame,
        *,
        interval_ns: int = INTERVAL_NS,
        jitter_ns: int = 0,
        noise: int = 0,
        flip: int = 0,
        rng: random.Random | None = None,
    ) -> int:
        """Send one frame bit by bit; returns the last edge's timestamp."""
        if self._on_edges is None:
            raise RuntimeError("the source is not started")
        on_edges = self._on_edges
        return await play(
            frame,
            lambda edge: on_edges([edge]),
            interval_ns=interval_ns,
            jitter_ns=jitter_ns,
            noise=noise,
            flip=flip,
            rng=rng,
        )


class SocketEdgeSender:
    """Sends a simulated reader's edges to a daemon's `SocketEdgeSource`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # When the last edge actually left (the loop may wake a little after an edge's time).
        self.last_sent_ns = 0

    def close(self) -> None:
        self._sock.close()

    async def send(
        self,
        frame: Frame,
        *,
        interval_ns: int = INTERVAL_NS,
        jitter_ns: int = 0,
        noise: int = 0,
        flip: int = 0,
        rng: random.Random | None = None,
        burst: bool = False,
    ) -> int:
        """Send a frame in real time, one datagram per edge, or with `burst` all its
        edges in one datagram at once; returns the last timestamp."""
        batch: list[bytes] = []

        def deliver(edge: Edge) -> None:
            record = SocketEdgeSource.RECORD.pack(edge.line, edge.ns)
            if burst:
                # One datagram: a unix socket queues only a few, and a blocking
                # send to a reader on this same loop would never return.
                batch.append(record)
                return
            self._sock.sendto(record, self.path)
            self.last_sent_ns = time.monotonic_ns()

        last = await play(
            frame,
            deliver,
            interval_ns=interval_ns,
            jitter_ns=jitter_ns,
            noise=noise,
            flip=flip,
            rng=rng,
            burst=burst,
        )
        if batch:
            self._sock.sendto(b"".join(batch), self.path)
            self.last_sent_ns = time.monotonic_ns()
        return last

    async def send_keys(self, keys: str, bits: Literal[4, 8] = 4) -> None:
        for key in keys:
            await self.send(encode_key(key, bits))
            await asyncio.sleep(0.05)
