"""The site console: `/` and its JSON API under `/api/`, for signed-in accounts.

Roles: a viewer reads every page; an operator also unlocks doors and sets
lockdowns; an admin also reads the audit log, sends the weekly report and
asks for a sync. Every state-changing request needs the session cookie, the
session's CSRF token in `X-CSRF-Token`, and no foreign Origin; every action,
and every login, goes into the audit log with the account's name.

Live updates (`/api/live`, a WebSocket): `{"type": "door", "door": ...}` when a
door's state changes and `{"type": "event", "event": ...}` for each event. The
socket is closed with code 4401 once its session ends (signed out, idle, password
changed, account removed), so that a page left open stops receiving anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from edge.access.cards import CardSpecError, parse_card_spec
from edge.site.state import Actor, GatewayError
from edge.timeutil import in_zone, iso_instant
from edge.web import views
from edge.web.accounts import AuthError, Role, Session
from edge.web.common import (
    CSRF_HEADER,
    SESSION_COOKIE,
    auth_error,
    check_origin,
    json_body,
    set_cookie,
    static_page,
)
from edge.web.words import reason_text

if TYPE_CHECKING:
    from edge.gateway import Gateway
    from edge.web.accounts import Accounts

log = logging.getLogger("edge.web")

Handler = Callable[[web.Request, Session], Awaitable[Any]]
LIVE_QUEUE = 1000
EVENT_LIMIT = 500
SESSION_ENDED = 4401  # the live socket's close code when its session ends
SESSION_CHECK_S = 2.0


def gateway_error(exc: GatewayError) -> web.HTTPException:
    kinds: dict[str, type[web.HTTPException]] = {
        "bad_request": web.HTTPBadRequest,
        "not_found": web.HTTPNotFound,
        "not_configured": web.HTTPNotFound,
        "exists": web.HTTPConflict,
        "refused": web.HTTPConflict,
    }
    return kinds.get(exc.code, web.HTTPConflict)(reason=str(exc))


class Console:
    def __init__(self, gateway: Gateway, accounts: Accounts) -> None:
        self.gw = gateway
        self.accounts = accounts
        self.live: set[tuple[web.WebSocketResponse, asyncio.Queue[str]]] = set()
        gateway.access.doors.observers.append(self._door_changed)
        gateway.access.reader_observers.append(self._door_changed)
        self._dirty: set[str] = set()
        self._scheduled = False

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.page)
        r.add_post("/api/login", self.login)
        r.add_post("/api/logout", self._for("viewer", self.logout, changes=True))
        r.add_get("/api/session", self._for("viewer", self.session))
        r.add_get("/api/doors", self._for("viewer", self.doors))
        r.add_post("/api/doors/{door}/unlock", self._for("operator", self.unlock, changes=True))
        r.add_post("/api/lockdown", self._for("operator", self.lockdown, changes=True))
        r.add_get("/api/events", self._for("viewer", self.events))
        r.add_get("/api/members", self._for("viewer", self.member_search))
        r.add_get("/api/members/{id}", self._for("viewer", self.member))
        r.add_get("/api/sync", self._for("viewer", self.sync))
        r.add_get("/api/rooms", self._for("viewer", self.rooms))
        r.add_get("/api/audit", self._for("admin", self.audit))
        r.add_get("/api/live", self.live_socket)

    # --- sessions -------------------------------------------------------------------

    def _session(self, request: web.Request, role: Role) -> Session:
        session = self.accounts.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise web.HTTPUnauthorized(reason="sign in first")
        if not session.may(role):
            raise web.HTTPForbidden(
                reason=f"this needs the {role} role ({session.user} is a {session.role})"
            )
        return session

    def _for(
        self, role: Role, handler: Handler, changes: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if changes:
                check_origin(request)
            session = self._session(request, role)
            if changes:
                sent = request.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    raise web.HTTPForbidden(reason=f"missing or wrong {CSRF_HEADER} header")
            try:
                result = await handler(request, session)
            except GatewayError as exc:
                if changes:
                    await self._audit(session, request, "refused: " + str(exc))
                raise gateway_error(exc) from None
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result)

        return wrapped

    async def _audit(
        self, session: Session, request: web.Request, outcome: str, **params: Any
    ) -> None:
        method = f"web {request.method} {request.path}"
        await self.gw.recorder.audit(
            Actor(f"web:{session.user}"), method, {"peer": request.remote, **params}, outcome
        )

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return static_page("console.html")

    async def login(self, request: web.Request) -> web.Response:
        check_origin(request)
        body = await json_body(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise web.HTTPBadRequest(reason="name and password: strings")
        peer = request.remote or "?"
        try:
            session = await self.accounts.login(name, password, peer)
        except AuthError as exc:
            await self.gw.recorder.audit(
                Actor(f"web:{name[:32]}"), "web login", {"peer": peer}, f"refused: {exc}"
            )
            raise auth_error(exc) from None
        await self._audit(session, request, "ok")
        log.info("web: %s signed in from %s (%s)", name, peer, session.role)
        response = web.json_response(_session_view(session))
        max_age = 3600 * self.accounts.config.session_hours
        set_cookie(response, request, SESSION_COOKIE, session.token, max_age)
        return response

    async def logout(self, request: web.Request, session: Session) -> web.Response:
        self.accounts.logout(session.token)
        await self._audit(session, request, "ok")
        response = web.json_response({"signed_out": True})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def session(self, _request: web.Request, session: Session) -> Any:
        return _session_view(session)

    # --- doors ----------------------------------------------------------------------

    def door_list(self) -> list[dict[str, Any]]:
        status = views.status(self.gw)
        out = []
        for d in status["doors"]:
            state = self.gw.access.doors.state_of(d["id"])
            out.append({**d, "state": state})
        return out

    async def doors(self, _request: web.Request, _session: Session) -> Any:
        st = self.gw.site.state
        return {"doors": self.door_list(), "lockdown_site": st.lockdown_site}

    async def unlock(self, request: web.Request, session: Session) -> Any:
        door = request.match_info["door"]
        body = await json_body(request)
        seconds = body.get("seconds", self.gw.config.access.admin_unlock_seconds)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise web.HTTPBadRequest(reason="seconds: a whole number")
        result = await self.gw.access.unlock_door(door, seconds, Actor(f"web:{session.user}"))
        await self._audit(session, request, "ok", door=door, seconds=seconds)
        return result

    async def lockdown(self, request: web.Request, session: Session) -> Any:
        body = await json_body(request)
        on, doors = body.get("on"), body.get("doors", [])
        if not isinstance(on, bool):
            raise web.HTTPBadRequest(reason="on: true or false")
        if not isinstance(doors, list) or not all(isinstance(d, str) for d in doors):
            raise web.HTTPBadRequest(reason="doors: a list of door ids (empty: all doors)")
        if body.get("confirm") is not True:
            raise web.HTTPBadRequest(reason="confirm: a lockdown change must be confirmed")
        result = await self.gw.access.set_lockdown(on, doors, Actor(f"web:{session.user}"))
        await self._audit(session, request, "ok", on=on, doors=doors)
        return result

    def _door_changed(self, door: str) -> None:
        if not self.live:
            return
        self._dirty.add(door)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_doors)

    def _flush_doors(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for door in sorted(dirty):
            try:
                state = self.gw.access.doors.state_of(door)
            except KeyError:
                continue
            self._broadcast(json.dumps({"type": "door", "door": door, "state": state}))

    def _broadcast(self, text: str) -> None:
        for _ws, q in list(self.live):
            if q.qsize() < LIVE_QUEUE:
                q.put_nowait(text)

    # --- events, members, sync, rooms, audit ------------------------------------------

    async def events(self, request: web.Request, _session: Session) -> Any:
        q = request.query
        try:
            limit = min(int(q.get("limit", "100")), EVENT_LIMIT)
        except ValueError:
            raise web.HTTPBadRequest(reason="limit: a whole number") from None
        where, params = [], []
        if q.get("type"):
            where.append("type LIKE ?")
            params.append(q["type"].replace("%", "") + "%")
        for field in ("door", "holder"):
            if q.get(field):
                where.append(f"json_extract(body, '$.{field}') = ?")
                params.append(q[field])
        if q.get("outcome") in ("granted", "denied"):
            where.append("type = ?")
            params.append(f"access.{q['outcome']}")
        sql = "SELECT body FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.gw.site.store.fetchall(
            sql + " ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        events = [json.loads(r[0]) for r in rows]
        for ev in events:
            _explain(ev)
        return {"events": events}

    async def member_search(self, request: web.Request, _session: Session) -> Any:
        text = request.query.get("q", "").strip()
        if not text or len(text) > 100:
            raise web.HTTPBadRequest(reason="q: a member id, a name, or a card like H10301:12:3456")
        ix = self.gw.site.index
        found: list[str] = []
        with contextlib.suppress(CardSpecError):
            cred = ix.cards.get(parse_card_spec(text))
            if cred is not None:
                found.append(cred.holder)
        if text in ix.holders and text not in found:
            found.append(text)
        pattern = "%" + text.replace("%", "").replace("_", "\\_") + "%"
        rows = await self.gw.site.store.fetchall(
            "SELECT id FROM holders WHERE gen = ? AND (json_extract(data, '$.name') LIKE ? "
            "ESCAPE '\\' OR id LIKE ? ESCAPE '\\') ORDER BY id LIMIT 20",
            (ix.generation, pattern, pattern),
        )
        found += [r[0] for r in rows if r[0] not in found]
        names = {}
        for hid in found[:20]:
            row = await self.gw.site.store.fetchone(
                "SELECT json_extract(data, '$.name') FROM holders WHERE gen = ? AND id = ?",
                (ix.generation, hid),
            )
            names[hid] = row[0] if row else ""
        return {
            "members": [
                {"id": h, "name": names[h], "kind": ix.holders[h].kind}
                for h in found[:20]
                if h in ix.holders
            ]
        }

    async def member(self, request: web.Request, _session: Session) -> Any:
        m = await views.member_show(self.gw, request.match_info["id"])
        for d in m["doors"]:
            d["why"] = reason_text(d["reason"])
        return m

    async def sync(self, _request: web.Request, _session: Session) -> Any:
        store = self.gw.site.store
        counts = {
            s: n
            for s, n in await store.fetchall(
                "SELECT state, COUNT(*) FROM outbox WHERE state != 'delivered' GROUP BY state"
            )
        }
        oldest = await store.fetchone("SELECT MIN(created) FROM outbox WHERE state = 'pending'")
        now = time.time()
        outbox = {
            "pending": int(counts.get("pending", 0)),
            "rejected": int(counts.get("rejected", 0)),
            "oldest_pending_s": round(now - oldest[0], 1) if oldest and oldest[0] else None,
        }
        cloud = await self.gw.sync.status() if self.gw.sync is not None else None
        synced = self.gw.site.synced_at
        return {
            "outbox": outbox,
            "cloud": cloud,
            "generation": self.gw.site.index.generation,
            "synced_at": iso_instant(synced, self.gw.site.index.tz) if synced else None,
        }

    async def rooms(self, _request: web.Request, _session: Session) -> Any:
        return {"rooms": self.gw.rooms.view() if self.gw.rooms is not None else []}

    async def audit(self, request: web.Request, _session: Session) -> Any:
        rows = await self.gw.site.store.fetchall(
            "SELECT at, actor, uid, method, params, outcome FROM audit ORDER BY seq DESC LIMIT 200"
        )
        tz = self.gw.site.index.tz
        return {
            "audit": [
                {
                    "at": in_zone(a, tz),  # stored in UTC; shown in the site's zone
                    "actor": who or f"uid {u}",
                    "method": m,
                    "params": json.loads(p),
                    "outcome": o,
                }
                for a, who, u, m, p, o in rows
            ]
        }

    # --- live -----------------------------------------------------------------------

    async def live_socket(self, request: web.Request) -> web.StreamResponse:
        check_origin(request)
        session = self._session(request, "viewer")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024)
        await ws.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue()
        entry = (ws, q)
        self.live.add(entry)
        events = self.gw.recorder.follow()
        log.info("web: console of %s connected (live)", session.user)

        async def pump_events() -> None:
            while True:
                ev = await events.get()
                if not ev:
                    return
                ev = dict(ev)  # the recorder hands every follower the same dict
                _explain(ev)
                if q.qsize() < LIVE_QUEUE:
                    q.put_nowait(json.dumps({"type": "event", "event": ev}))

        async def send() -> None:
            while True:
                await ws.send_str(await q.get())

        async def watch_session() -> None:
            # Not accounts.session(): that counts as activity, and a page that only
            # listens must not keep its session from going idle. Polled: an idle
            # session ends by the clock, and Accounts tells no one when one ends.
            while self._live_session_valid(session):  # noqa: ASYNC110
                await asyncio.sleep(SESSION_CHECK_S)
            log.info("web: console of %s disconnected: the session ended", session.user)
            await ws.close(code=SESSION_ENDED, message=b"session ended")

        tasks = [
            asyncio.create_task(pump_events(), name="web.live.events"),
            asyncio.create_task(send(), name="web.live.send"),
            asyncio.create_task(watch_session(), name="web.live.session"),
        ]
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == '{"type":"ping"}':
                    q.put_nowait('{"type":"pong"}')
                elif msg.type == WSMsgType.ERROR:
                    break
                else:
                    await ws.send_str(
                        json.dumps({"type": "error", "message": "this socket only sends"})
                    )
        finally:
            self.live.discard(entry)
            self.gw.recorder.unfollow(events)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    def _live_session_valid(self, session: Session) -> bool:
        """Whether the session still stands, as `Accounts.session` decides, without
        touching its last-seen time."""
        if self.accounts.sessions.get(session.token) is not session:
            return False
        cfg, now = self.accounts.config, time.time()
        return (
            now - session.seen <= 60 * cfg.idle_minutes
            and now - session.created <= 3600 * cfg.session_hours
        )

    async def close_all(self) -> None:
        for ws, _q in list(self.live):
            await ws.close(code=1001, message=b"gateway stopping")


def _session_view(s: Session) -> dict[str, Any]:
    return {"user": s.user, "role": s.role, "csrf": s.csrf}


def _explain(ev: dict[str, Any]) -> None:
    """An access event's reason in words, for the event list."""
    if ev.get("type", "").startswith("access."):
        ev["why"] = reason_text(ev.get("reason"))
