"""A bus of one OSDP reader whose serial line is the harness: every frame the
control panel writes is answered at once by `answer(frame)`, the bytes going
through the bus's own splitter and exchange; a missing answer is a timeout
without the wait. The reader is then driven turn by turn without an event loop
(nothing in its path waits, except a BUSY reply's pause, where the run stops)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from drivers.osdp import OsdpBus, OsdpBusConfig, OsdpReader, OsdpReaderConfig

ADDRESS = 1


class _Line:
    def __init__(self, bus: OsdpBus, answer: Callable[[bytes], bytes | None]) -> None:
        self.bus, self.answer = bus, answer

    def write(self, frame: bytes) -> int:
        reply = self.answer(frame)
        if reply:
            self.bus._received(reply)
        return len(frame)


class FuzzBus(OsdpBus):
    async def _next(self, seconds: float) -> bytes | OSError | None:
        # What the line answered is queued already; nothing more comes (a timeout).
        return self._rx.popleft() if self._rx else None


def reader_on_line(
    answer: Callable[[bytes], bytes | None], *, secure: bool, key: bytes | None = None
) -> OsdpReader:
    bus = FuzzBus(OsdpBusConfig(type="osdp", port="/dev/fuzz", offline_after_misses=2))
    config = OsdpReaderConfig(type="osdp", address=ADDRESS, secure=secure, key="k" if key else None)
    reader = bus.add_reader(config, key)
    reader.on_card = lambda bits, count, fmt: None
    reader.on_keys = lambda keys: None
    reader.on_status = lambda tamper, power: None
    bus._serial = _Line(bus, answer)
    return reader


@functools.cache
def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def turns(reader: OsdpReader, most: int) -> None:
    """Up to `most` turns of the reader (connect, then polls), as the bus task runs them.

    A loop is set as the running one, never run: a BUSY reply's pause schedules a
    timer on it and the turn yields, which ends the run for this input.
    """
    loop = _loop()
    asyncio.events._set_running_loop(loop)
    try:
        for _ in range(most):
            turn = reader._turn()
            try:
                turn.send(None)
            except StopIteration:
                continue
            turn.close()
            break
    finally:
        asyncio.events._set_running_loop(None)
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        for handle in scheduled:
            handle.cancel()
        scheduled.clear()
