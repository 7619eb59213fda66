"""asyncio helpers the drivers and the gateway share."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a task and wait for its end, cancelling again if it goes on.

    On Python 3.11, asyncio.wait_for (which pymodbus awaits each answer with)
    returns the answer instead of raising CancelledError when the answer and
    the cancellation arrive in the same loop iteration, so a single cancel can
    be lost and the task would go on: https://github.com/python/cpython/issues/86296
    (fixed in 3.12).
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
