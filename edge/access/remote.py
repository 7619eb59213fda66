"""What a remote front end (MQTT, Home Assistant's lock) may do to a door.

Unlock goes through `AccessService.unlock_door`, the admin unlock of
`edgectl door unlock` (known door, seconds within `max_unlock_seconds`,
refused in a lockdown, recorded as `admin.action` and `door.unlocked`), for
the door's own `unlock_seconds` unless told otherwise. Lock ends a timed
unlock (admin, grant or exit) now; a schedule is not overridden (a lockdown
is the way to lock a door its schedule holds open).

Ending an unlock would sit best in `DoorMachine` as an input of its own; it
is done here by moving the machine's deadline to now and letting `tick`
relock the door, which records `door.locked` for an admin unlock.
"""

from __future__ import annotations

import math
import time
from typing import Any

from edge.access.service import AccessService
from edge.site.state import Actor, GatewayError


class DoorRemote:
    def __init__(self, access: AccessService) -> None:
        self.access = access

    def unlock_seconds(self, door: str) -> int:
        hw = self.access.config.doors.get(door)
        if hw is None:
            return self.access.config.access.admin_unlock_seconds
        return max(1, math.ceil(hw.unlock_seconds))

    async def unlock_door(self, door: str, seconds: int, actor: Actor) -> dict[str, Any]:
        return await self.access.unlock_door(door, seconds, actor)

    async def lock_door(self, door: str, actor: Actor) -> dict[str, Any]:
        known = set(self.access.site.index.doors) | set(self.access.config.doors)
        if door not in known:
            names = ", ".join(sorted(known)) or "none imported"
            raise GatewayError("not_found", f"unknown door(s) {door} (known: {names})")
        ctl = self.access.doors.controller(door)
        m = ctl.machine
        now = ctl.now()
        if m.lockdown:
            return {"door": door, "lock": "locked", "ended": None, "why": "lockdown"}
        if m.schedule_unlocked:
            raise GatewayError(
                "refused",
                f"door {door} is unlocked by its schedule; LOCK ends only a timed unlock "
                "(a lockdown locks it)",
            )
        if m.unlocked_until is None or now >= m.unlocked_until:
            return {"door": door, "lock": "locked", "ended": None}
        cause = m.unlock_cause
        details = {"action": "lock", "ended": cause, "by": actor.name, "uid": actor.uid}
        self.access.recorder.emit("admin.action", time.time(), door=door, details=details)
        m.unlocked_until = now
        ctl.run(m.tick(now))
        return {"door": door, "lock": "locked", "ended": cause}
