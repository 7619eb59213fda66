"""Wiegand bit streams and keypad input: datagrams of edges as the gateway reads them
(`drivers.wiegand.SocketEdgeSource.decode`, records of line and kernel timestamp)
through a real `WiegandReader`: frame assembly by timing, card formats and
parity, raw lengths, 4- and 8-bit keys and PIN entry. The reader refuses bad
frames by counting and logging them, so no exception is allowed here. The first
byte chooses the reader's setup (formats, raw lengths); the rest are edges."""

from __future__ import annotations

from drivers.wiegand import Edge, Presented, SocketEdgeSource, WiegandReader
from faults.fuzz.harness import Harness

SETUPS: list[tuple[frozenset[str] | None, frozenset[int]]] = [
    (None, frozenset()),
    (None, frozenset({32, 56})),
    (frozenset({"H10301"}), frozenset({34})),
    (frozenset(), frozenset({1, 64})),
]


class _Reader(WiegandReader):
    """A reader whose quiet-line timer is run by the harness (no event loop)."""

    def _arm(self) -> None:
        pass


def _presented(p: Presented) -> None:
    pass


def run(data: bytes) -> None:
    if not data:
        return
    formats, raw = SETUPS[data[0] % len(SETUPS)]
    reader = _Reader(
        "fuzz", SocketEdgeSource("/nonexistent"), _presented, raw_lengths=raw, formats=formats
    )
    edges: list[Edge] = SocketEdgeSource.decode(data[1:])
    # Datagrams of up to 8 edges, as a sender batches them.
    for i in range(0, len(edges), 8):
        reader._edges(edges[i : i + 8])
    due = reader.assembler.due_ns()
    if due is not None:  # the line goes quiet: the timer would end the frame
        done = reader.assembler.poll(due + 1)
        if done is not None:
            reader._frame(done)


HARNESS = Harness("wiegand", run, (), max_len=1024)
