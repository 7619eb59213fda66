"""`python -m faults.exposure.sandbox -- COMMAND...`: run COMMAND under the
settings of systemd/edge-gateway.service that a score cannot vouch for, read
from the unit itself, without systemd as PID 1:

- every `SystemCallFilter=~...` line: the calls of those groups (expanded by
  `systemd-analyze syscall-filter`) fail with the unit's `EPERM`, through a
  seccomp filter made with libseccomp (systemd's own library for this);
- `ProcSubset=pid`: a private mount namespace with /proc mounted again with
  `subset=pid`, which needs root (said on stderr and skipped otherwise).

The filter is inherited by every child (the snapshot importer, for one). It
adds to whatever the process already has; it does not reproduce the unit's
whole `@system-service` allow list or its other settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

from faults.exposure import UNITS, systemd_analyze

UNIT = UNITS / "edge-gateway.service"

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def unit_settings(unit: Path = UNIT) -> tuple[list[str], bool]:
    """The unit's denied system call groups or names, and whether ProcSubset=pid."""
    denied: list[str] = []
    proc_subset = False
    for line in unit.read_text().splitlines():
        if m := re.fullmatch(r"SystemCallFilter=~(.+)", line.strip()):
            denied += m.group(1).split()
        elif line.strip() == "ProcSubset=pid":
            proc_subset = True
    return denied, proc_subset


def expand(names: list[str]) -> set[str]:
    """System call names, with @groups expanded (nested groups too)."""
    calls: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        out = subprocess.run(
            [systemd_analyze(), "syscall-filter", "--no-pager", name],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        members = [
            ln.strip()
            for ln in out.splitlines()[1:]
            if ln.strip() and not ln.strip().startswith("#")
        ]
        calls |= expand(members)
    return calls


def deny(calls: set[str]) -> int:
    """Make `calls` fail with EPERM in this process and its children; the number
    of calls this architecture has (the others do not exist here)."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    added = 0
    try:
        for name in sorted(calls):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue
            rc = lib.seccomp_rule_add(
                ctypes.c_void_p(ctx),
                ctypes.c_uint32(SCMP_ACT_ERRNO | errno.EPERM),
                ctypes.c_int(nr),
                ctypes.c_uint(0),
            )
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({name})")
            added += 1
        # libseccomp sets no_new_privs first, as systemd does for a filter.
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")
    finally:
        lib.seccomp_release(ctx)
    return added


def proc_subset_pid() -> None:
    """/proc with processes only, in a mount namespace of this process's own."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.mount(b"proc", b"/proc", b"proc", 0, b"subset=pid") != 0:
        raise OSError(ctypes.get_errno(), "mount -t proc -o subset=pid proc /proc")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m faults.exposure.sandbox -- COMMAND...", file=sys.stderr)
        return 2
    groups, subset = unit_settings()
    if subset:
        if os.geteuid() == 0:
            proc_subset_pid()
        else:
            print("sandbox: ProcSubset=pid needs root; not applied", file=sys.stderr)
    count = deny(expand(groups))
    print(f"sandbox: {count} system calls refused ({' '.join(groups)})", file=sys.stderr)
    os.execvp(argv[0], argv)  # noqa: S606 - the command, as given, replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
