"""OSDP frames in both directions: the byte stream cut into frames by
`drivers.osdp.FrameSplitter` and each decoded by `decode_packet` (commands and
replies alike, refused with `PacketError`); then the same bytes as the answers
of a reader on a bus (`_osdp.reader_on_line`): the control panel's own path
from the port's bytes through its exchange (sequence numbers, address, BUSY,
NAK) to connecting (osdp_PDID, osdp_PDCAP) and polling (card data, keypad,
status), in clear. The reader reports what is wrong and goes offline; nothing
may escape from its turn.

Input: answers, each a length byte and that many bytes (length 0: no answer)."""

from __future__ import annotations

import contextlib

from drivers.osdp import FrameSplitter, PacketError, decode_packet
from faults.fuzz.harness import Harness
from faults.fuzz.harnesses._osdp import reader_on_line, turns


def answers(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def run(data: bytes) -> None:
    # The stream alone, in pieces as a port delivers them.
    splitter = FrameSplitter()
    for piece in answers(data):
        for item in splitter.feed(piece):
            if isinstance(item, bytes):
                with contextlib.suppress(PacketError):
                    decode_packet(item)
    # The same bytes as a reader's answers to the control panel.
    queue = answers(data)
    queue.reverse()
    reader = reader_on_line(lambda frame: queue.pop() if queue else None, secure=False)
    turns(reader, 8)


HARNESS = Harness("osdp_frames", run, (), max_len=1024)
