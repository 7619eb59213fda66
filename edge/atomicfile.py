"""Files that survive a power cut whole: the old content or the new, never a
mix, never an empty or missing file.

The new content goes to a temporary file beside the target, which is fsynced,
then renamed over the target, then the directory is fsynced so the rename
itself is on the disk. Without the first fsync a cut can leave the renamed
name pointing at a file whose data never reached the disk (an empty or torn
secret); without the last one, the rename can be undone by the cut.
`faults/powercut/files.py` checks this by replaying every prefix of these
calls with unsynced data dropped or torn.

Temporary files are named `.<name>.tmp-<random>`; `remove_leftovers` deletes
those a cut or a crash left behind (the gateway does so at start).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a create, a rename, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(directory: Path, mode: int = 0o700) -> None:
    """`mkdir -p` whose new entries are durable (each new one's parent fsynced)."""
    if directory.is_dir():
        return
    make_directory(directory.parent, mode)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, mode)
        fsync_directory(directory.parent)


class StagedFile:
    """The temporary file being written; `write` takes all of `data` or raises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600, exclusive: bool = False) -> Iterator[StagedFile]:
    """Write `path` through a temporary file, put in its place when the block ends
    without an exception (and removed when it does not). `exclusive`: refuse,
    with FileExistsError, to replace an existing file."""
    temp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            yield StagedFile(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(temp, path)  # fails if the target exists: never replaced
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, exclusive: bool = False) -> None:
    """Replace `path` with `data`, whole, durably (see the module's docstring)."""
    with atomic_writer(path, mode, exclusive) as f:
        f.write(data)


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the temporary files that an interrupted `atomic_writer` left in
    `directory`; the names removed."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and TEMP_MARK in entry.name and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed
