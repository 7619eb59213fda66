"""The room panel on a tablet: `/panel/<room>`, paired once, updated by WebSocket.

Pairing: `POST /api/pair {"code": "ABCD-EFGH"}` trades a code from `edgectl
panel pair <room>` for a token scoped to that room, set as an HttpOnly cookie
(`edge_panel`); the page then opens `/api/panel/<room>/ws`. The token opens
that room's socket and nothing else: no console API, no other room, no door.

On the socket the gateway sends `{"type": "state", "state": {...}, "panel":
{...}}` (the room's panel state, as on MQTT, and what the page needs beside it:
the site's time zone, the longest booking it may offer, credits per hour,
whether the room has a reader) when it changes, and answers requests:

    {"type": "request", "id": 7, "op": "check_in", "pin": "1234"}
    {"type": "request", "id": 8, "op": "book", "minutes": 30, "badge": true}
    -> {"type": "result", "id": 7, "ok": true, "data": {...}}
    -> {"type": "result", "id": 8, "ok": false, "error": "room_busy", "message": "..."}

`badge: true` waits (up to BADGE_WAIT_S) for a card at the room's own reader
as the identity; the gateway says `{"type": "badge", "id": 8, "waiting": true,
"seconds": 30}`. `{"type": "cancel", "id": 8}` ends the wait (answered with
the error `cancelled`), and so does the socket closing: a badge shown after
the person at the panel gave up is not taken as theirs.
`{"type": "ping"}` gets `{"type": "pong"}`: the page shows "offline" when
pongs stop. A malformed message is answered with `{"type": "error", ...}`,
logged, and changes nothing; one over MAX_MESSAGE bytes closes the socket.

`GET /api/panel/<room>` answers the same token with the room's state (200) or
why not (401, 403): a browser does not tell a page why its WebSocket was
refused, so the page asks here to tell "not paired" from "offline".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from edge.rooms.panels import PanelError
from edge.web.accounts import RECEPTION, AuthError
from edge.web.common import (
    PANEL_COOKIE,
    auth_error,
    check_origin,
    json_body,
    set_cookie,
    static_page,
)

if TYPE_CHECKING:
    from edge.rooms.controller import Rooms
    from edge.rooms.panels import Panels
    from edge.web.accounts import Accounts

log = logging.getLogger("edge.web")

MAX_MESSAGE = 4096
BADGE_WAIT_S = 30.0
MAX_BAD_MESSAGES = 20
WEB_OPS = ("check_in", "book", "extend", "end")


def parse_ws_message(text: str) -> dict[str, Any] | str:
    """A panel's WebSocket message, checked (`type`, and `id` and `op` where it needs
    them), or the reason it is refused."""
    try:
        body = json.loads(text)
    except RecursionError:
        # json's C scanner gives up on deep nesting with RecursionError, not ValueError.
        return "not JSON: nested too deeply"
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(body, dict):
        return "a message is a JSON object"
    kind = body.get("type")
    if kind == "ping":
        return body
    if kind not in ("request", "cancel"):
        return f"unknown message type {kind!r} (expected request, cancel or ping)"
    rid = body.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool):
        return f"id: a {kind} needs a whole-number id"
    if kind == "request" and body.get("op") not in WEB_OPS:
        return f"op: one of {', '.join(WEB_OPS)}, not {body.get('op')!r}"
    return body


class PanelSockets:
    """The open panel sockets, by room; what the rooms publish goes to them."""

    def __init__(self, accounts: Accounts, rooms: Rooms | None, panels: Panels | None) -> None:
        self.accounts = accounts
        self.rooms = rooms
        self.panels = panels
        self.sockets: dict[str, set[tuple[str, web.WebSocketResponse]]] = {}
        # Requests waiting for a badge, by (socket, request id): (door, how to end it).
        self._waits: dict[
            tuple[web.WebSocketResponse, int], tuple[str, Callable[[PanelError | None], None]]
        ] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        if rooms is not None:
            rooms.observers.append(self.room_changed)
        accounts.on_revoke.append(self.revoked)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/panel/{room}", self.page)
        app.router.add_get("/panel/{room}/manifest.webmanifest", self.manifest)
        app.router.add_get("/pair", self.pair_page)
        app.router.add_post("/api/pair", self.pair)
        app.router.add_get("/api/panel/{room}", self.status)
        app.router.add_get("/api/panel/{room}/ws", self.socket)

    # --- pushes -----------------------------------------------------------------------

    def room_changed(self, room: str, state: dict[str, Any]) -> None:
        entries = list(self.sockets.get(room, ()))
        if not entries:
            return
        text = self._state_message(room, state)
        for _pid, ws in entries:
            self._send(ws, text)

    def _state_message(self, room: str, state: dict[str, Any]) -> str:
        return json.dumps({"type": "state", "state": state, "panel": self._settings(room)})

    def _settings(self, room: str) -> dict[str, Any]:
        """What the page needs beside the state: the site's clock for times and
        night, the choices it may offer, and whether a badge can be asked for."""
        assert self.rooms is not None
        rt = self.rooms.rooms[room]
        tz = self.rooms.site.index.tz
        return {
            "tz": getattr(tz, "key", None),
            "max_minutes": rt.rc.max_panel_booking_min,
            "credits_per_hour": rt.room.credits_per_hour,
            "badge": rt.room.door is not None and hasattr(self.rooms.access, "taps"),
        }

    def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        if ws.closed:
            return
        task = asyncio.create_task(_send_quietly(ws, text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def revoked(self, pid: str) -> None:
        for entries in self.sockets.values():
            for p, ws in list(entries):
                if p == pid:
                    self._send(ws, json.dumps({"type": "revoked"}))
                    task = asyncio.create_task(ws.close(code=4001, message=b"pairing revoked"))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        for _door, end in list(self._waits.values()):
            end(None)
        # All at once: a close waits (up to aiohttp's 10 s) for each peer's answer,
        # and a tablet that hangs must not hold up the others or the daemon's stop.
        await asyncio.gather(
            *(
                ws.close(code=1001, message=b"gateway stopping")
                for entries in list(self.sockets.values())
                for _p, ws in list(entries)
            ),
            return_exceptions=True,
        )
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- handlers ---------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        if self.rooms is None or room not in self.rooms.rooms:
            raise web.HTTPNotFound(reason=f"no room {room!r} on this gateway")
        return static_page("panel.html")

    async def pair_page(self, _request: web.Request) -> web.StreamResponse:
        return static_page("pair.html")

    async def manifest(self, request: web.Request) -> web.Response:
        """The installed app's manifest: it opens this room's panel, full screen."""
        room = request.match_info["room"]
        if self.rooms is None or room not in self.rooms.rooms:
            raise web.HTTPNotFound(reason=f"no room {room!r} on this gateway")
        name = self.rooms.rooms[room].room.name
        body = {
            "name": f"{name} panel",
            "short_name": name[:12],
            "start_url": f"/panel/{room}",
            "scope": "/",
            "display": "fullscreen",
            "orientation": "landscape",
            "background_color": "#101418",
            "theme_color": "#101418",
            "icons": [{"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml"}],
        }
        return web.json_response(body, content_type="application/manifest+json")

    async def status(self, request: web.Request) -> web.Response:
        """The socket's check over plain HTTP: this room's state for its token."""
        room = request.match_info["room"]
        try:
            pairing = self.accounts.panel(request.cookies.get(PANEL_COOKIE), room)
        except AuthError as exc:
            raise auth_error(exc) from None
        if self.rooms is None or room not in self.rooms.rooms:
            raise web.HTTPNotFound(reason=f"no room {room!r} on this gateway")
        body = {
            "room": room,
            "pairing": pairing.id,
            "state": self.rooms.room_state(self.rooms.rooms[room]),
            "panel": self._settings(room),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def pair(self, request: web.Request) -> web.Response:
        check_origin(request)
        body = await json_body(request)
        code = body.get("code")
        if not isinstance(code, str) or not 4 <= len(code) <= 32:
            raise web.HTTPBadRequest(reason="code: the pairing code, like ABCD-EFGH")
        try:
            token, pairing = await self.accounts.redeem(code, request.remote or "?")
        except AuthError as exc:
            raise auth_error(exc) from None
        where = "/reception" if pairing.room == RECEPTION else f"/panel/{pairing.room}"
        response = web.json_response({"room": pairing.room, "page": where})
        set_cookie(response, request, PANEL_COOKIE, token, max_age=10 * 365 * 86400)
        return response

    async def socket(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        check_origin(request)
        try:
            pairing = self.accounts.panel(request.cookies.get(PANEL_COOKIE), room)
        except AuthError as exc:
            raise auth_error(exc) from None
        if self.rooms is None or self.panels is None or room not in self.rooms.rooms:
            raise web.HTTPNotFound(reason=f"no room {room!r} on this gateway")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        entry = (pairing.id, ws)
        self.sockets.setdefault(room, set()).add(entry)
        log.info("web: panel %s connected from %s", room, request.remote)
        try:
            rt = self.rooms.rooms[room]
            await ws.send_str(self._state_message(room, self.rooms.room_state(rt)))
            await self._serve(room, ws, request.remote or "?")
        finally:
            self.sockets.get(room, set()).discard(entry)
            for key in [k for k in self._waits if k[0] is ws]:
                self._waits[key][1](None)  # nobody is there to badge for any more
            log.info("web: panel %s disconnected", room)
        return ws

    async def _serve(self, room: str, ws: web.WebSocketResponse, peer: str) -> None:
        bad = 0
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.warning("web: panel %s from %s: socket error: %s", room, peer, ws.exception())
                return
            error: str | None = "send JSON text messages"
            if msg.type == WSMsgType.TEXT:
                error = self._message(room, ws, msg.data)
            if error is not None:
                bad += 1
                log.warning("web: panel %s from %s: refused message: %s", room, peer, error)
                await ws.send_str(
                    json.dumps({"type": "error", "error": "bad_request", "message": error})
                )
                if bad >= MAX_BAD_MESSAGES:
                    await ws.close(code=1008, message=b"too many bad messages")
                    return

    def _message(self, room: str, ws: web.WebSocketResponse, text: str) -> str | None:
        """Handle one message; the reason it is refused, or None."""
        body = parse_ws_message(text)
        if isinstance(body, str):
            return body
        if body["type"] == "ping":
            self._send(ws, '{"type":"pong"}')
            return None
        rid: int = body["id"]  # parse_ws_message checked it, and `op` of a request
        if body["type"] == "cancel":
            wait = self._waits.get((ws, rid))
            if wait is not None:  # else it has finished already: nothing to cancel
                wait[1](PanelError("cancelled", "cancelled at the panel"))
            return None
        op: str = body["op"]
        request: dict[str, Any] = {k: body[k] for k in ("pin", "minutes") if k in body}
        if body.get("badge") is True and "pin" not in request:
            self._await_badge(room, ws, rid, op, request)
            return None
        self._run(room, ws, rid, op, request, ())
        return None

    def _await_badge(
        self, room: str, ws: web.WebSocketResponse, rid: int, op: str, request: dict[str, Any]
    ) -> None:
        assert self.rooms is not None
        door = self.rooms.rooms[room].room.door
        access = self.rooms.access
        taps = getattr(access, "taps", None)
        if door is None or taps is None:
            self._result(ws, rid, error=PanelError("no_reader", "this room has no reader"))
            return

        key = (ws, rid)
        done = json.dumps({"type": "badge", "id": rid, "waiting": False})

        def release() -> None:
            timer.cancel()
            self._waits.pop(key, None)
            if taps.get(door) is tapped:
                del taps[door]

        def tapped(cards: tuple[str, ...], pin: str | None) -> None:
            release()
            body = dict(request)
            if pin is not None and not cards:
                body["pin"] = pin
            self._send(ws, done)
            self._run(room, ws, rid, op, body, cards)

        def end(error: PanelError | None) -> None:
            release()
            if error is not None:
                self._send(ws, done)
                self._result(ws, rid, error=error)

        # One wait per reader: an earlier one (another tablet of this room, or this
        # one asking again) ends now rather than taking the next badge.
        for k, (d, stop) in list(self._waits.items()):
            if d == door or k == key:
                stop(PanelError("cancelled", "another request is waiting for a badge"))
        timer = asyncio.get_running_loop().call_later(
            BADGE_WAIT_S, end, PanelError("timeout", "no badge was shown")
        )
        taps[door] = tapped
        self._waits[key] = (door, end)
        self._send(
            ws, json.dumps({"type": "badge", "id": rid, "waiting": True, "seconds": BADGE_WAIT_S})
        )

    def _run(
        self,
        room: str,
        ws: web.WebSocketResponse,
        rid: int,
        op: str,
        body: dict[str, Any],
        cards: tuple[str, ...],
    ) -> None:
        assert self.panels is not None
        try:
            result = self.panels.request(room, op, body, cards)
        except PanelError as exc:
            log.warning("web: panel %s: %s refused: %s: %s", room, op, exc.code, exc)
            self._result(ws, rid, error=exc)
            return
        if not isinstance(result, asyncio.Future):
            self._result(ws, rid, data=result)
            return

        def done(f: asyncio.Future[dict[str, Any]]) -> None:
            exc = f.exception()
            if isinstance(exc, PanelError):
                self._result(ws, rid, error=exc)
            elif exc is not None:
                log.error("web: panel %s: %s failed: %s", room, op, exc)
                self._result(ws, rid, error=PanelError("internal", "the gateway failed"))
            else:
                self._result(ws, rid, data=f.result())

        result.add_done_callback(done)

    def _result(
        self,
        ws: web.WebSocketResponse,
        rid: int,
        data: dict[str, Any] | None = None,
        error: PanelError | None = None,
    ) -> None:
        msg: dict[str, Any] = {"type": "result", "id": rid, "ok": error is None}
        if error is None:
            msg["data"] = data or {}
        else:
            msg["error"] = error.code
            msg["message"] = str(error)
        self._send(ws, json.dumps(msg))


async def _send_quietly(ws: web.WebSocketResponse, text: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):  # gone: its handler cleans up
        await ws.send_str(text)
