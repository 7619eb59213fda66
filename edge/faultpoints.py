"""Named fault points for the kill -9 campaign (`faults/kill9`).

`EDGE_FAULTPOINT=name[:N]` arms one point: at its Nth pass (1 when N is
omitted) the process SIGKILLs itself, exactly where a power cut or an OOM
kill could stop it. Unset, `hit` is one comparison against None.

The points: `store.before_commit` and `store.after_commit` (each store
transaction), `sync.upload_answered` (the cloud answered an upload, before
its events are marked delivered), `sync.change_page` (a page of changes
fetched, before it is applied), `updates.before_flip` and
`updates.after_flip` (a snapshot's generation made current).

The arming is process state on purpose: it comes from the environment of the
process, like a debugger's breakpoint, and nothing in the gateway reads it.
"""

from __future__ import annotations

import os
import signal

ENV = "EDGE_FAULTPOINT"

POINTS = frozenset(
    {
        "store.before_commit",
        "store.after_commit",
        "sync.upload_answered",
        "sync.change_page",
        "updates.before_flip",
        "updates.after_flip",
    }
)


class FaultPointError(ValueError):
    """A malformed `EDGE_FAULTPOINT`; the message names the variable and the fix."""


def parse(spec: str) -> tuple[str, int]:
    """`name[:N]` as (name, N); FaultPointError names what is wrong."""
    name, _, count = spec.strip().partition(":")
    if name not in POINTS:
        raise FaultPointError(
            f"{ENV}: unknown fault point {name!r} (one of: {', '.join(sorted(POINTS))})"
        )
    if not count:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise FaultPointError(f"{ENV}: {spec!r}: the pass count must be a whole number >= 1")
    return name, int(count)


class _Armed:
    """The armed point and how many passes are left before the kill."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.left = 0

    def load(self) -> None:
        spec = os.environ.get(ENV)
        if not spec:
            self.name, self.left = None, 0
            return
        self.name, self.left = parse(spec)


_armed = _Armed()
_armed.load()


def reload() -> None:
    """Read `EDGE_FAULTPOINT` again (a process forked from a zygote sets it after import)."""
    _armed.load()


def hit(name: str) -> None:
    """Pass the fault point `name`: the process dies here when it is armed and due."""
    if _armed.name is None or _armed.name != name:
        return
    _armed.left -= 1
    if _armed.left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
