"""An APSW VFS whose files live on a simulated disk (`faults.powercut.disk`).

SQLite runs on it unchanged: its pager and WAL code do their writes and syncs
here, and a power cut is the disk dying at a chosen write or sync. The VFS
has no shared memory, so WAL databases must be opened in EXCLUSIVE locking
mode (SQLite then keeps the WAL index in heap memory); one process holds the
database, as in the gateway.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from typing import cast

import apsw

from faults.powercut.disk import Disk, DiskDead, SimFile

_names = itertools.count()
CUT_MESSAGE = "power cut"


@contextlib.contextmanager
def quiet_cuts() -> Iterator[None]:
    """Silence the cut's own error where SQLite cannot return it (a rollback or a
    close after the cut; APSW hands it to `sys.unraisablehook`); others still show."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        exc = unraisable.exc_value
        if not (isinstance(exc, apsw.IOError) and str(exc) == CUT_MESSAGE):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


class SimVFSFile:
    """One open file; locking is a no-op (one connection per disk)."""

    def __init__(self, disk: Disk, name: str, f: SimFile, delete_on_close: bool) -> None:
        self.disk = disk
        self.name = name
        self.f = f
        self.delete_on_close = delete_on_close

    def xRead(self, amount: int, offset: int) -> bytes:
        # Fewer bytes than asked: APSW zero-fills and reports a short read.
        return bytes(self.f.current[offset : offset + amount])

    def xWrite(self, data: bytes, offset: int) -> None:
        try:
            self.disk.write(self.f, offset, bytes(data))
        except DiskDead:
            raise apsw.IOError(CUT_MESSAGE) from None

    def xTruncate(self, newsize: int) -> None:
        try:
            self.disk.truncate(self.f, newsize)
        except DiskDead:
            raise apsw.IOError(CUT_MESSAGE) from None

    def xSync(self, flags: int) -> None:
        try:
            self.disk.sync(self.f)
        except DiskDead:
            raise apsw.IOError(CUT_MESSAGE) from None

    def xFileSize(self) -> int:
        return len(self.f.current)

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 512

    def xDeviceCharacteristics(self) -> int:
        return 0  # no atomic or safe-append promises: SQLite takes the careful path

    def xClose(self) -> None:
        if self.delete_on_close and not self.disk.dead:
            self.disk.files.pop(self.name, None)


class SimVFS(apsw.VFS):
    """Registers itself under a fresh name; open databases with `vfs=vfs.name`."""

    def __init__(self, disk: Disk) -> None:
        self.name = f"powercut{next(_names)}"
        self.disk = disk
        super().__init__(self.name, base="")

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        if name is None:
            path = f"/tmp-{next(_names)}"
        elif isinstance(name, apsw.URIFilename):
            path = name.filename()
        else:
            path = name
        create = bool(flags[0] & apsw.SQLITE_OPEN_CREATE)
        try:
            f = self.disk.open(path, create)
        except FileNotFoundError:
            raise apsw.CantOpenError(path) from None
        except DiskDead:
            raise apsw.IOError(CUT_MESSAGE) from None
        flags[1] = flags[0]
        delete_on_close = bool(flags[0] & apsw.SQLITE_OPEN_DELETEONCLOSE) or name is None
        # APSW takes any object with the xMethods; apsw.VFSFile itself would
        # open a real file through another VFS.
        return cast(apsw.VFSFile, SimVFSFile(self.disk, path, f, delete_on_close))

    def xDelete(self, filename: str, syncdir: bool) -> None:
        try:
            self.disk.delete(filename)
        except FileNotFoundError:
            exc = apsw.IOError(filename)
            setattr(exc, "extendedresult", apsw.SQLITE_IOERR_DELETE_NOENT)  # noqa: B010
            raise exc from None
        except DiskDead:
            raise apsw.IOError(CUT_MESSAGE) from None

    def xAccess(self, pathname: str, flags: int) -> bool:
        return self.disk.exists(pathname)

    def xFullPathname(self, name: str) -> str:
        return name if name.startswith("/") else "/" + name
