"""A simulated disk with a volatile write cache, for power-cut campaigns.

Each file keeps two images: what the running program sees (`current`) and
what is on the platter (`durable`). A write changes `current` at once and is
remembered as pending; a sync makes the file's pending writes durable. At a
power cut the pending writes of every file meet one fate, as in SQLite's own
crash tests (src/test6.c): all dropped, a prefix kept with the last write torn,
or any subset kept (the cache wrote them out of order), each kept write torn
at 512-byte sector or 4 KiB page boundaries. Kept writes land in issue order,
so an older write never overwrites a newer one of the same bytes.

File creation and deletion take effect on the platter at once (SQLite asks
for directory syncs where it needs them; its crash tests model data, not
names). The names are modelled by `faults.powercut.files` for the gateway's
own files, where renames are the point.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

SECTOR = 512
PAGE = 4096


class Fate(Enum):
    """What happens to unsynced writes at a cut."""

    DROP = "drop"  # none reach the platter
    TEAR = "tear"  # a prefix does, the last one torn
    REORDER = "reorder"  # any subset does, each possibly torn


class DiskDead(OSError):
    """The power is off: the program may not touch the disk any more."""


@dataclass
class _Write:
    offset: int
    data: bytes | None  # None: a truncate to `offset` bytes


@dataclass
class SimFile:
    durable: bytearray = field(default_factory=bytearray)
    current: bytearray = field(default_factory=bytearray)
    pending: list[_Write] = field(default_factory=list)

    def write(self, offset: int, data: bytes) -> None:
        _put(self.current, offset, data)
        self.pending.append(_Write(offset, data))

    def truncate(self, size: int) -> None:
        del self.current[size:]
        self.pending.append(_Write(size, None))

    def sync(self) -> None:
        self.durable = bytearray(self.current)
        self.pending.clear()


def _put(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))  # a hole reads as zeros
    buf[offset : offset + len(data)] = data


def tear(offset: int, data: bytes, unit: int, rng: random.Random) -> list[tuple[int, bytes]]:
    """The pieces of one write that reach the platter when it is torn: the
    write split at `unit` boundaries (absolute offsets), each piece kept or not."""
    pieces: list[tuple[int, bytes]] = []
    start = offset
    end = offset + len(data)
    while start < end:
        stop = min(end, (start // unit + 1) * unit)
        if rng.random() < 0.5:
            pieces.append((start, data[start - offset : stop - offset]))
        start = stop
    return pieces


class Disk:
    """Files by name, with their durable and current images."""

    def __init__(self, files: dict[str, bytearray] | None = None) -> None:
        # The images given become the durable ones; the program sees copies.
        self.files: dict[str, SimFile] = {
            name: SimFile(data, bytearray(data)) for name, data in (files or {}).items()
        }
        self.dead = False
        self.ops = 0  # writes, truncates and syncs so far (where a cut may fall)
        self.cut_at: int | None = None  # the op count at which the power goes

    # --- what the program does -------------------------------------------------

    def _step(self) -> bool:
        """Whether the op may go ahead. The op the power goes at fails; later
        ones (a program closing its files) vanish without a word, as on a
        machine that is off: the campaign stops at the first failure and treats
        nothing acknowledged after the cut as acknowledged."""
        if self.dead:
            return False
        self.ops += 1
        if self.cut_at is not None and self.ops > self.cut_at:
            self.dead = True
            raise DiskDead("power cut")
        return True

    def open(self, name: str, create: bool) -> SimFile:
        f = self.files.get(name)
        if f is None:
            if not create or self.dead:
                raise FileNotFoundError(name)
            f = self.files[name] = SimFile()
        return f

    def exists(self, name: str) -> bool:
        return name in self.files

    def delete(self, name: str) -> None:
        if self.dead:
            return
        if self.files.pop(name, None) is None:
            raise FileNotFoundError(name)

    def write(self, f: SimFile, offset: int, data: bytes) -> None:
        if self._step():
            f.write(offset, data)

    def truncate(self, f: SimFile, size: int) -> None:
        if self._step():
            f.truncate(size)

    def sync(self, f: SimFile) -> None:
        if self._step():
            f.sync()

    # --- the cut -------------------------------------------------------------

    def after_cut(self, rng: random.Random, fate: Fate | None = None) -> tuple[Disk, Fate]:
        """The disk as the next boot finds it: durable images plus whatever
        unsynced writes the fate lets through."""
        self.dead = True
        fate = fate or rng.choice(list(Fate))
        unit = rng.choice((SECTOR, PAGE))
        survivors: dict[str, bytearray] = {}
        for name, f in self.files.items():
            image = bytearray(f.durable)
            pending = f.pending
            if fate is Fate.DROP or not pending:
                kept: list[tuple[_Write, bool]] = []
            elif fate is Fate.TEAR:
                n = rng.randint(0, len(pending))
                kept = [(w, i == n - 1) for i, w in enumerate(pending[:n])]
            else:
                kept = [(w, rng.random() < 0.3) for w in pending if rng.random() < 0.5]
            for w, torn in kept:
                if w.data is None:
                    del image[w.offset :]
                elif torn:
                    for off, piece in tear(w.offset, w.data, unit, rng):
                        _put(image, off, piece)
                else:
                    _put(image, w.offset, w.data)
            survivors[name] = image
        return Disk(survivors), fate

    def unsynced(self) -> int:
        """Bytes written since the last sync of their file (for reports)."""
        return sum(len(w.data or b"") for f in self.files.values() for w in f.pending)
