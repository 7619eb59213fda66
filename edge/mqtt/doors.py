"""Each door's state on the site broker, retained, published when it changes.

`edge/{site}/doors/{door}/state` carries `{"door", "lock", "cause",
"lockdown", "contact", "alarm", "readers", "fault"}`: lock is "locked" or
"unlocked" (cause: grant, exit, admin, schedule or lockdown), contact "open",
"closed" or null (no contact wired), alarm "forced", "held_open" or null, and
each of the door's readers with its availability. Changes are collected on
the loop and published once per turn of it, after the door's own work (the
strike command goes first); an unchanged state is not published again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from edge.mqtt.link import MqttLink
from edge.mqtt.topics import topic


class DoorStates:
    def __init__(
        self,
        link: MqttLink,
        site_id: str,
        doors: Callable[[], Iterable[str]],
        state_of: Callable[[str], dict[str, Any]],
    ) -> None:
        self.link = link
        self.site_id = site_id
        self.doors = doors
        self.state_of = state_of
        self._sent: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._scheduled = False
        link.on_connect(self._connected)

    def changed(self, door: str) -> None:
        """Something may have changed `door`: publish it on the loop's next turn."""
        self._dirty.add(door)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def refresh_all(self) -> None:
        for door in self.doors():
            self.changed(door)

    def _connected(self) -> None:
        self._sent.clear()  # a broker that restarted without persistence lost them
        self.refresh_all()

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for door in sorted(dirty):
            body = json.dumps({"door": door, **self.state_of(door)}, sort_keys=True).encode()
            if self._sent.get(door) == body:
                continue
            self._sent[door] = body
            self.link.publish(topic("door_state", site=self.site_id, door=door), body, retain=True)
