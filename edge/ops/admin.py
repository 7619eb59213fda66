"""The admin socket: one JSON envelope per line, shared by edgectl and any front end.

Request `{"id": 1, "method": "status", "params": {}}`; reply `{"id": 1,
"result": ...}` or `{"id": 1, "error": {"code": ..., "message": ...}}`.
`list_methods` names them all. A request whose params carry
`payload_bytes: N` is followed by N raw bytes (a snapshot for `import`), so a
file the daemon's user cannot read can still be imported by an operator who
can. `events.follow` keeps the connection and streams `{"id", "event"}` lines.

The socket is created with mode 0660: the daemon's group are its admins. The
peer's uid (SO_PEERCRED) goes into the audit log for every change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.access.cards import CardSpecError, parse_card_spec
from edge.access.policy import Decision
from edge.gateway import Gateway
from edge.ops.lineserver import LineServer, send
from edge.site.sqlite import describe, storage_error
from edge.site.state import Actor, GatewayError
from edge.timeutil import in_zone, iso_instant, parse_instant
from edge.web import views
from edge.web.accounts import Accounts

log = logging.getLogger("edge.admin")

MAX_PAYLOAD = 2 << 30


@dataclass
class Call:
    params: dict[str, Any]
    actor: Actor
    payload: Path | None
    writer: asyncio.StreamWriter
    request_id: Any


Handler = Callable[["AdminServer", Call], Awaitable[Any]]
METHODS: dict[str, tuple[Handler, bool, str]] = {}  # name: (handler, changes state, help)


def method(name: str, changes: bool, help_: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name] = (fn, changes, help_)
        return fn

    return register


class BadRequest(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


def _param(call: Call, name: str, kind: type, required: bool = True) -> Any:
    value = call.params.get(name)
    if value is None:
        if required:
            raise BadRequest(f"params.{name}: required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"params.{name}: expected {kind.__name__}")
    return value


def _instant_param(call: Call, name: str) -> float | None:
    text = _param(call, name, str, required=False)
    if text is None:
        return None
    try:
        return parse_instant(text).timestamp()
    except ValueError as exc:
        raise BadRequest(f"params.{name}: {exc}") from None


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as its JSON object; BadRequest when it is not one."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        # RecursionError: json's C scanner refuses deep nesting that way, not as ValueError.
        raise BadRequest("not a JSON object") from None
    if not isinstance(request, dict):
        raise BadRequest("not a JSON object")
    return request


def request_params(request: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """A request's params and the size of the payload that follows it (None: none)."""
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("params: expected an object")
    size = params.get("payload_bytes")
    if size is not None and (not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD):
        raise BadRequest("params.payload_bytes: expected a size in bytes")
    return params, size


def decision_dict(gw: Gateway, d: Decision) -> dict[str, Any]:
    return {
        "granted": d.granted,
        "reason": d.reason,
        "door": d.door,
        "holder": d.holder,
        "credential": d.credential,
        "at": iso_instant(d.at, gw.site.index.tz),
        "details": {
            k: (
                iso_instant(v, gw.site.index.tz)
                if k.endswith("_until") and isinstance(v, float)
                else v
            )
            for k, v in d.details.items()
        },
    }


def _presentation_params(
    call: Call, gw: Gateway
) -> tuple[str, tuple[str, ...], str | None, float | None]:
    door = _param(call, "door", str)
    card = _param(call, "card", str, required=False)
    pin = _param(call, "pin", str, required=False)
    if card is None and pin is None:
        raise BadRequest("give a card, a PIN, or both")
    try:
        cards = (parse_card_spec(card),) if card is not None else ()
    except CardSpecError as exc:
        raise BadRequest(f"params.card: {exc}") from None
    if pin is not None and (not pin.isdigit() or not pin.isascii() or len(pin) > 16):
        raise BadRequest("params.pin: a PIN is 1 to 16 digits")
    return door, cards, pin, _instant_param(call, "at")


@method("list_methods", False, "the methods of this socket")
async def _list_methods(server: AdminServer, call: Call) -> Any:
    return [
        {"method": name, "changes": changes, "help": help_}
        for name, (_, changes, help_) in sorted(METHODS.items())
    ]


@method("status", False, "readiness, site, counts, doors")
async def _status(server: AdminServer, call: Call) -> Any:
    return views.status(server.gateway)


@method("decide", False, "dry run: what would happen if this credential were presented")
async def _decide(server: AdminServer, call: Call) -> Any:
    gw = server.gateway
    door, cards, pin, at = _presentation_params(call, gw)
    # A card with a PIN models card-then-PIN: the PIN is checked against the card's holder.
    return decision_dict(gw, gw.access.dry_run(gw.access.presentation(door, cards, pin, at)))


@method("present", True, "a real presentation at a door (as a reader would), recorded")
async def _present(server: AdminServer, call: Call) -> Any:
    gw = server.gateway
    door, cards, pin, at = _presentation_params(call, gw)
    if at is not None:
        raise BadRequest("params.at: a real presentation happens now; use decide for a dry run")
    decision, recorded = await gw.access.present_recorded(gw.access.presentation(door, cards, pin))
    # Whether its events are durable: a disk fault never turns a decision around,
    # but what was not written must not be taken as recorded.
    return {
        **decision_dict(gw, decision),
        "events": recorded.ids,
        "recorded": recorded.error is None,
        "record_error": recorded.error,
    }


@method("import", True, "import an edge-sync/1 snapshot (sent as the payload)")
async def _import(server: AdminServer, call: Call) -> Any:
    if call.payload is None:
        raise BadRequest("the snapshot must follow the request as payload_bytes")
    return await server.gateway.updates.import_snapshot(call.payload)


@method("member.show", False, "a member's or guest's entitlements and why")
async def _member_show(server: AdminServer, call: Call) -> Any:
    return await views.member_show(
        server.gateway, _param(call, "id", str), _instant_param(call, "at")
    )


def _limit(call: Call) -> int:
    limit = _param(call, "limit", int, required=False)
    if limit is None:
        return 50
    if not 1 <= limit <= 10_000:
        raise BadRequest("params.limit: between 1 and 10000")
    return int(limit)


@method("events", False, "recent events, oldest first")
async def _events(server: AdminServer, call: Call) -> Any:
    limit = _limit(call)
    return await server.gateway.recorder.recent_events(
        limit, _param(call, "type", str, required=False)
    )


@method("events.follow", False, "stream events as they happen (the connection stays open)")
async def _follow(server: AdminServer, call: Call) -> Any:
    gw = server.gateway
    q = gw.recorder.follow()
    try:
        await send(call.writer, {"id": call.request_id, "result": {"following": True}})
        while True:
            event = await q.get()
            if not event:
                return None
            await send(call.writer, {"id": call.request_id, "event": event})
    finally:
        gw.recorder.unfollow(q)


@method("lockdown", True, "lockdown on or off, for some doors or the whole site")
async def _lockdown(server: AdminServer, call: Call) -> Any:
    on = _param(call, "on", bool)
    doors = call.params.get("doors") or []
    if not isinstance(doors, list) or not all(isinstance(d, str) for d in doors):
        raise BadRequest("params.doors: expected a list of door ids")
    return await server.gateway.access.set_lockdown(on, doors, call.actor)


@method("door.unlock", True, "unlock a door for some seconds (audited)")
async def _unlock(server: AdminServer, call: Call) -> Any:
    gw = server.gateway
    seconds = _param(call, "seconds", int, required=False)
    if seconds is None:
        seconds = gw.config.access.admin_unlock_seconds
    return await gw.access.unlock_door(_param(call, "door", str), seconds, call.actor)


@method("audit", False, "the admin audit log, newest last")
async def _audit(server: AdminServer, call: Call) -> Any:
    limit = _limit(call)
    rows = await server.gateway.site.store.fetchall(
        "SELECT seq, at, actor, uid, pid, method, params, outcome FROM audit "
        "ORDER BY seq DESC LIMIT ?",
        (limit,),
    )
    tz = server.gateway.site.index.tz
    return [
        {
            "seq": s,
            "at": in_zone(a, tz),  # stored in UTC; shown in the site's zone like the rest
            "actor": who,
            "uid": u,
            "pid": p,
            "method": m,
            "params": json.loads(pa),
            "outcome": o,
        }
        for s, a, who, u, p, m, pa, o in reversed(rows)
    ]


def _sync(server: AdminServer) -> Any:
    sync = server.gateway.sync
    if sync is None:
        raise GatewayError("not_configured", "cloud sync is not configured ([cloud] in the config)")
    return sync


@method("sync.now", True, "pull from the cloud and upload events now (lifts an auth stop)")
async def _sync_now(server: AdminServer, call: Call) -> Any:
    snapshot = _param(call, "snapshot", bool, required=False) or False
    return await _sync(server).sync_now(snapshot=snapshot)


@method("sync.status", False, "cursor, last success, last error, backlog by type, push")
async def _sync_status(server: AdminServer, call: Call) -> Any:
    return await _sync(server).status()


@method("rooms", False, "every room: phase, booking, next bookings, devices")
async def _rooms(server: AdminServer, call: Call) -> Any:
    rooms = server.gateway.rooms
    if rooms is None:
        raise GatewayError("not_configured", "rooms need the site broker ([mqtt], [rooms])")
    return rooms.view()


@method("wifi.rotate", True, "rotate the guest Wi-Fi passphrase now")
async def _wifi_rotate(server: AdminServer, call: Call) -> Any:
    wifi = server.gateway.wifi
    if wifi is None:
        raise GatewayError("not_configured", "guest Wi-Fi is not configured ([wifi])")
    return await wifi.rotate("edgectl")


@method("wifi", False, "the guest Wi-Fi passphrase and its next rotation")
async def _wifi(server: AdminServer, call: Call) -> Any:
    wifi = server.gateway.wifi
    if wifi is None:
        raise GatewayError("not_configured", "guest Wi-Fi is not configured ([wifi])")
    return wifi.view()


@method("outbox", False, "events not delivered to the cloud: pending and rejected")
async def _outbox(server: AdminServer, call: Call) -> Any:
    limit = _limit(call)
    state = _param(call, "state", str, required=False)
    if state not in (None, "pending", "rejected"):
        raise BadRequest("params.state: 'pending' or 'rejected'")
    store = server.gateway.site.store
    counts: dict[str, int] = {
        s: n
        for s, n in await store.fetchall(
            "SELECT state, COUNT(*) FROM outbox WHERE state != 'delivered' GROUP BY state"
        )
    }
    states = (state,) if state else ("rejected", "pending")
    events = []
    for s in states:
        rows = await store.fetchall(
            "SELECT seq, state, error, body FROM outbox WHERE state = ? ORDER BY seq LIMIT ?",
            (s, limit),
        )
        events += [
            {"seq": seq, "state": st, "error": err, "event": json.loads(body)}
            for seq, st, err, body in rows
        ]
    return {
        "pending": int(counts.get("pending", 0)),
        "rejected": int(counts.get("rejected", 0)),
        "events": events,
    }


# --- web console accounts and panels ---------------------------------------------------


def _accounts(server: AdminServer) -> Accounts:
    if server.accounts is None:
        raise GatewayError("not_configured", "web accounts are not available")
    return server.accounts


@method("user.list", False, "the web console's accounts, their roles and lockouts")
async def _user_list(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).users()


@method("user.add", True, "add a web console account (params: name, role, password)")
async def _user_add(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).add_user(
        _param(call, "name", str),
        _param(call, "role", str),
        _param(call, "password", str),
        call.actor,
    )


@method("user.passwd", True, "set a console account's password; ends its sessions")
async def _user_passwd(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).set_password(
        _param(call, "name", str), _param(call, "password", str), call.actor
    )


@method("user.role", True, "set a console account's role (viewer, operator, admin)")
async def _user_role(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).set_role(
        _param(call, "name", str), _param(call, "role", str), call.actor
    )


@method("user.remove", True, "remove a console account; ends its sessions")
async def _user_remove(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).remove_user(_param(call, "name", str), call.actor)


@method("panel.pair", True, "a one-time code that pairs a tablet to a room (or 'reception')")
async def _panel_pair(server: AdminServer, call: Call) -> Any:
    result = await _accounts(server).pair(_param(call, "room", str), call.actor)
    result["web"] = views.web_view(server.gateway)
    return result


@method("panel.list", False, "paired panels and pending pairing codes")
async def _panel_list(server: AdminServer, call: Call) -> Any:
    return _accounts(server).pairing_list()


@method("panel.revoke", True, "revoke a panel's pairing; its screen disconnects at once")
async def _panel_revoke(server: AdminServer, call: Call) -> Any:
    return await _accounts(server).revoke(_param(call, "id", str), call.actor)


def _peer(writer: asyncio.StreamWriter) -> Actor:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None:
        return Actor("admin")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except OSError:
        return Actor("admin")
    return Actor(f"uid {uid}", uid=uid, pid=pid)


def _audit_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k != "payload_bytes"}
    if "pin" in out:
        out["pin"] = "***"  # PIN digits are never stored or logged
    if "password" in out:
        out["password"] = "***"  # noqa: S105 - nor passwords
    return out


class AdminServer(LineServer):
    def __init__(self, gateway: Gateway, path: Path, mode: int) -> None:
        super().__init__(path, mode)
        self.gateway = gateway
        self.accounts: Accounts | None = None

    async def start(self) -> None:
        for leftover in (self.gateway.state_dir / "spool").glob("import-*.json"):
            log.info("admin: removing %s, left by a request a crash interrupted", leftover)
            leftover.unlink(missing_ok=True)
        await super().start()
        log.info("admin: listening on %s", self.path)

    def client_name(self, writer: asyncio.StreamWriter) -> str:
        return f"admin.client[pid {_peer(writer).pid}]"

    async def handle(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        return await self._handle(line, reader, writer, _peer(writer))

    async def _handle(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, actor: Actor
    ) -> bool:
        """Serve one request; False when the connection cannot go on."""
        request_id = None
        payload: Path | None = None
        try:
            request = parse_request(line)
            request_id = request.get("id")
            name = request.get("method")
            params, size = request_params(request)
            if size is not None:
                payload = await self._receive(reader, size)
            if name not in METHODS:
                raise GatewayError(
                    "unknown_method", f"unknown method {name!r} (list_methods names them)"
                )
            handler, changes, _ = METHODS[name]
            # A dry run with a PIN tells whether the PIN is right: the audit log says who asked.
            audited = changes or (name == "decide" and "pin" in params)
            call = Call(params, actor, payload, writer, request_id)
            try:
                result = await handler(self, call)
            except GatewayError as exc:
                if audited:
                    await self._audit(actor, name, params, f"refused: {exc}")
                raise
            if audited:
                unrecorded = await self._audit(actor, name, params, "ok")
                if unrecorded is not None and isinstance(result, dict):
                    result = {**result, "audit": f"NOT RECORDED ({unrecorded})"}
            if name != "events.follow":
                await send(writer, {"id": request_id, "result": result})
            return bool(name != "events.follow")
        except GatewayError as exc:
            log.warning("admin: %s: %s", actor.name, exc)
            await send(writer, {"id": request_id, "error": {"code": exc.code, "message": str(exc)}})
            return True
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as exc:
            log.exception("admin: request failed")
            await send(
                writer, {"id": request_id, "error": {"code": "internal", "message": str(exc)}}
            )
            return True
        finally:
            if payload is not None:
                await asyncio.to_thread(payload.unlink, True)

    async def _audit(
        self, actor: Actor, name: str, params: dict[str, Any], outcome: str
    ) -> str | None:
        """Write the audit row; None once durable, else why not. What was done is
        done: a disk that refuses the row (the store logs that once) does not turn
        the answer into an error, it says the row is NOT RECORDED."""
        try:
            await self.gateway.recorder.audit(actor, name, _audit_params(name, params), outcome)
        except sqlite3.Error as exc:
            if not storage_error(exc):
                raise
            return describe(exc)
        return None

    async def _receive(self, reader: asyncio.StreamReader, size: int) -> Path:
        # The spool holds a request's payload only while the request runs; it
        # need not survive a power cut (the request was never answered), and
        # what a crash leaves is removed at start.
        spool = self.gateway.state_dir / "spool"
        spool.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="import-", suffix=".json", dir=spool)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                remaining = size
                while remaining:
                    chunk = await reader.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise BadRequest(f"payload ended after {size - remaining} of {size} bytes")
                    # A write can block on the page cache's writeback: not on the loop.
                    await asyncio.to_thread(f.write, chunk)
                    remaining -= len(chunk)
        except BaseException:
            await asyncio.to_thread(path.unlink, True)
            raise
        return path
