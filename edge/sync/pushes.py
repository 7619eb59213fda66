"""Signed pushes from the cloud, once verified: changes applied at once (then a
pull brings them into cursor order), `sync`/`resync` turned into pulls, and
`unlock`/`lockdown` commands run and audited.

A push's nonce is durable before its command runs, so a replay after a crash
is refused; refused pushes raise alarms, at most `ALARMS_PER_MINUTE` a
reason, so whoever can publish on the broker cannot flood the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.config import CloudConfig
from edge.keys import load_public_key
from edge.site.recorder import Recorder
from edge.site.state import Actor, GatewayError, SiteState
from edge.site.updates import SiteUpdates
from edge.sync.push import MAX_SKEW_S, PushMessage, PushRejected, verify

log = logging.getLogger("edge.sync")

NONCE_KEEP_S = 4 * MAX_SKEW_S  # a nonce older than the skew window is refused as stale anyway
ALARMS_PER_MINUTE = 10


@dataclass
class Nonces:
    """Push nonces accepted recently (NonceLog); persisted by the caller."""

    seen_at: dict[str, float] = field(default_factory=dict)

    def seen(self, nonce: str) -> bool:
        return nonce in self.seen_at

    def prune(self, now: float) -> None:
        for n in [n for n, at in self.seen_at.items() if at < now - NONCE_KEEP_S]:
            del self.seen_at[n]


class DoorCommands(Protocol):
    """The commands a signed push may carry (the access service is one)."""

    async def unlock_door(self, door: str, seconds: int, actor: Actor) -> dict[str, Any]: ...

    async def set_lockdown(self, on: bool, doors: list[str], actor: Actor) -> dict[str, Any]: ...


class Pushes:
    def __init__(
        self,
        cfg: CloudConfig,
        site: SiteState,
        recorder: Recorder,
        updates: SiteUpdates,
        doors: DoorCommands,
        request_pull: Callable[[bool], None],
        spawn: Callable[[Awaitable[Any], str], None],
    ) -> None:
        self.site = site
        self.site_id = site.config.site.id
        self.recorder = recorder
        self.updates = updates
        self.doors = doors
        self.request_pull = request_pull
        self.spawn = spawn
        self.keys = {k: load_public_key(v) for k, v in cfg.keys.items()}
        self.nonces = Nonces()
        self.accepted = 0
        self.rejected = 0
        self.last_at: float | None = None
        self._alarms: dict[str, tuple[float, int, int]] = {}  # reason: (window start, n, held)

    async def load(self) -> None:
        """The nonces already accepted (a replay across a restart is refused)."""
        for nonce, at in await self.site.store.fetchall("SELECT nonce, at FROM push_nonces"):
            self.nonces.seen_at[nonce] = at

    async def prune(self, now: float) -> None:
        self.nonces.prune(now)
        await self.site.store.write(
            [("DELETE FROM push_nonces WHERE at < ?", (now - NONCE_KEEP_S,))]
        )

    def on_push(self, _topic: str, raw: bytes) -> None:
        now = time.time()
        try:
            msg = verify(raw, self.keys, self.site_id, now, self.nonces)
        except PushRejected as exc:
            self.rejected += 1
            log.error("sync: push refused: %s", exc)
            self._alarm_limited(exc.reason, exc.detail)
            if exc.reason == "stale":
                # Perhaps genuine but late (queued while we were away): catch up by pulling.
                self.request_pull(False)
            return
        self.nonces.seen_at[msg.nonce] = now
        noted = self.site.store.submit(
            [("INSERT OR IGNORE INTO push_nonces (nonce, at) VALUES (?, ?)", (msg.nonce, now))]
        )
        self.accepted += 1
        self.last_at = now
        log.info("sync: push %s (key %s, nonce %s)", msg.type, msg.key_id, msg.nonce)
        if msg.type == "changes":
            self.spawn(self._push_changes(msg), "sync.push_changes")
        elif msg.type == "sync":
            self.request_pull(False)
        elif msg.type == "resync":
            self.request_pull(True)
        else:
            self.spawn(self._command(msg, noted), "sync.push_command")

    def _alarm_limited(self, reason: str, detail: str) -> None:
        """At most ALARMS_PER_MINUTE refused-push alarms per reason: whoever can
        publish on the broker must not be able to flood the outbox."""
        now = time.time()
        start, n, held = self._alarms.get(reason, (now, 0, 0))
        if now - start >= 60:
            start, n = now, 0
        if n < ALARMS_PER_MINUTE:
            extra = {"suppressed_before": held} if held else {}
            self.recorder.alarm("push_rejected", detail, reason=reason, **extra)
            self._alarms[reason] = (start, n + 1, 0)
        else:
            self._alarms[reason] = (start, n, held + 1)

    async def _push_changes(self, msg: PushMessage) -> None:
        if not self.site.index.loaded:
            # Changes need a snapshot to apply to; the pull takes one and with it
            # everything up to the cloud's cursor, this change included.
            log.info("sync: pushed changes before the first snapshot; pulling instead")
            self.request_pull(False)
            return
        changes = msg.body.get("changes")
        try:
            await self.updates.apply_changes(changes, None, "push", prefix="push.changes")
        except Exception as exc:
            log.exception("sync: push changes failed")
            self.recorder.alarm("push_failed", f"applying pushed changes failed: {exc}")
        # The pull brings the pushed changes into cursor order with any in between.
        self.request_pull(False)

    async def _command(self, msg: PushMessage, noted: asyncio.Future[int]) -> None:
        # The nonce is durable before the command runs: a replay after a crash is refused.
        await noted
        body = msg.body
        spec = body.get("command")
        params: dict[str, Any] = dict(spec) if isinstance(spec, dict) else dict(body)
        # `"command": "unlock"` with the fields beside it, or `"command": {"name": "unlock", ...}`.
        name = spec if isinstance(spec, str) else params.get("name") or params.get("command")
        actor = Actor(f"cloud:{msg.key_id}")
        try:
            if name == "unlock":
                door, seconds = params.get("door"), params.get("seconds")
                if not isinstance(door, str) or not isinstance(seconds, int):
                    raise GatewayError("bad_request", "unlock needs `door` and integer `seconds`")
                result = await self.doors.unlock_door(door, seconds, actor)
            elif name == "lockdown":
                doors, on = params.get("doors", []), params.get("on")
                if not isinstance(on, bool) or not isinstance(doors, list):
                    raise GatewayError("bad_request", "lockdown needs boolean `on` and `doors`")
                result = await self.doors.set_lockdown(on, [str(d) for d in doors], actor)
            else:
                raise GatewayError("bad_request", f"unknown command {name!r}")
        except GatewayError as exc:
            log.error("sync: pushed command %r refused: %s", name, exc)
            self.recorder.alarm("push_command", f"command {name!r} refused: {exc}")
            await self.recorder.audit(actor, f"push.{name}", params, f"refused: {exc}")
            return
        await self.recorder.audit(actor, f"push.{name}", params, "ok")
        log.warning("sync: pushed command %s executed: %s", name, result)
