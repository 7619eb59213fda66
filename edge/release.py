"""Freeing big containers without stalling the event loop.

Dropping the last reference to a dict of 100,000 entries frees all of it in
one C call that holds the interpreter for up to hundreds of milliseconds,
whatever thread does it: every decision waiting behind it waits that long.
Popping entries in chunks from a worker thread gives the loop a bytecode
boundary between chunks, where CPython hands it the interpreter.
"""

from __future__ import annotations

import time
from typing import Any

CHUNK = 2000


def release_gradually(*containers: dict[Any, Any] | set[Any] | list[Any]) -> None:
    """Empty each container in small steps; call from a worker thread."""
    for container in containers:
        while container:
            for _ in range(min(len(container), CHUNK)):
                container.popitem() if isinstance(container, dict) else container.pop()
            time.sleep(0)
