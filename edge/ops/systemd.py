"""sd_notify(3) over $NOTIFY_SOCKET: READY, WATCHDOG and STOPPING.

A dozen lines of the documented datagram protocol; the `systemd` Python
bindings would add a C build against libsystemd for this alone.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edge.systemd")


def notify(message: str) -> bool:
    """Send one notification; False when not under systemd (or it failed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("systemd: cannot notify %r: %s", message.split("\n")[0], exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC, if it is for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
