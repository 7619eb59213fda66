"""Door commands over MQTT: `edge/{site}/doors/{door}/command` (Home Assistant's lock).

Only with `[homeassistant] door_commands = true`. "UNLOCK" pulses the door for
its configured unlock time through the admin unlock of `edgectl door unlock`
(refused in a lockdown, recorded as `admin.action` and `door.unlocked`);
`{"action": "unlock", "seconds": N}` for another time, up to `[access]
max_unlock_seconds`; "LOCK" ends a timed unlock now. Every command, done or
refused, is logged and written to the audit log as `mqtt.unlock`,
`mqtt.lock` (or `mqtt.command` for a payload that is not one) by the actor
`mqtt:<by>`, `mqtt:ha` when the payload names nobody. A refused command
changes nothing.

MQTT 3.1.1 does not tell a subscriber who published, so `by` is only what
the publisher says: the broker's ACL is what keeps the topic to admin users
(`docs/mosquitto-acl.example`). The subscription is QoS 0, so the broker
does not queue commands for the gateway's persistent session while it is
away (an UNLOCK must not open a door when the gateway comes back an hour
later). A command published retained would be delivered again at every
reconnect: admin clients must not retain (Home Assistant's lock does not).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edge.mqtt.topics import TOPICS, subscription
from edge.site.state import Actor, GatewayError

if TYPE_CHECKING:
    from edge.mqtt.link import MqttLink
    from edge.site.recorder import Recorder

log = logging.getLogger("edge.mqtt")

MAX_PAYLOAD = 256
ANYONE = Actor("mqtt:ha")  # who a payload that names nobody comes from, as far as we know
FIELDS = ("action", "seconds", "by")


class DoorControl(Protocol):
    """What a door command may do (`edge.access.remote.DoorRemote` is one)."""

    def unlock_seconds(self, door: str) -> int:
        """The door's own unlock time, for a plain UNLOCK."""

    async def unlock_door(self, door: str, seconds: int, actor: Actor) -> dict[str, Any]: ...

    async def lock_door(self, door: str, actor: Actor) -> dict[str, Any]: ...


class CommandError(ValueError):
    """A payload that is not a door command; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Command:
    action: Literal["unlock", "lock"]
    seconds: int | None = None
    by: str | None = None


def parse_command(payload: bytes) -> Command:
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        text = payload.decode().strip()
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    if text.upper() in ("UNLOCK", "LOCK"):
        return Command("unlock" if text.upper() == "UNLOCK" else "lock")
    if not text.startswith("{"):
        raise CommandError(
            f'payload {text[:40]!r} is not a command (expected "UNLOCK", "LOCK" or '
            '{"action": "unlock", "seconds": N})'
        )
    try:
        body = json.loads(text)
    except RecursionError:
        # json's C scanner gives up on deep nesting with RecursionError, not ValueError.
        raise CommandError("payload is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise CommandError(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandError("payload: expected a JSON object")
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(unknown)} (expected: {', '.join(FIELDS)})")
    action = body.get("action")
    if not isinstance(action, str) or action.lower() not in ("unlock", "lock"):
        raise CommandError('action: expected "unlock" or "lock"')
    seconds = body.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        raise CommandError("seconds: expected a whole number of seconds")
    if seconds is not None and action.lower() == "lock":
        raise CommandError("seconds: only with unlock")
    by = body.get("by")
    if by is not None and (
        not isinstance(by, str) or not 1 <= len(by) <= 64 or not by.isprintable()
    ):
        raise CommandError("by: expected a name of 1 to 64 printable characters")
    return Command("unlock" if action.lower() == "unlock" else "lock", seconds, by)


class DoorCommandTopic:
    def __init__(
        self, link: MqttLink, site_id: str, doors: DoorControl, recorder: Recorder
    ) -> None:
        self.doors = doors
        self.recorder = recorder
        self._prefix, self._suffix = (
            TOPICS["door_command"].pattern.format(site=site_id, door="\0").split("\0")
        )
        self._tasks: set[asyncio.Task[None]] = set()
        link.subscribe(
            subscription("door_command", site=site_id), self.on_message, qos=0, fresh_only=True
        )

    async def stop(self) -> None:
        """Let commands under way write their audit row (the store is still open)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def on_message(self, topic: str, payload: bytes) -> None:
        door = topic.removeprefix(self._prefix).removesuffix(self._suffix)
        try:
            cmd = parse_command(payload)
        except CommandError as exc:
            log.warning("mqtt: %s: command refused, nothing changed: %s", topic, exc)
            shown = payload[:64].decode(errors="replace")
            params = {"door": door, "topic": topic, "payload": shown}
            audit = self.recorder.audit(ANYONE, "mqtt.command", params, f"refused: {exc}")
            self._spawn(audit, door)
            return
        self._spawn(self._run(topic, door, cmd), door)

    def _spawn(self, coro: Coroutine[Any, Any, None], door: str) -> None:
        task = asyncio.create_task(coro, name=f"mqtt.door_command[{door}]")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, topic: str, door: str, cmd: Command) -> None:
        actor = Actor(f"mqtt:{cmd.by}") if cmd.by else ANYONE
        params: dict[str, Any] = {"door": door, "topic": topic}
        try:
            if cmd.action == "unlock":
                seconds = cmd.seconds
                if seconds is None:
                    seconds = self.doors.unlock_seconds(door)
                params["seconds"] = seconds
                result = await self.doors.unlock_door(door, seconds, actor)
            else:
                result = await self.doors.lock_door(door, actor)
        except GatewayError as exc:
            log.warning("mqtt: %s: %s by %s refused: %s", topic, cmd.action, actor.name, exc)
            await self.recorder.audit(actor, f"mqtt.{cmd.action}", params, f"refused: {exc}")
            return
        log.warning("mqtt: %s: %s by %s: %s", topic, cmd.action, actor.name, result)
        await self.recorder.audit(actor, f"mqtt.{cmd.action}", params, "ok")
