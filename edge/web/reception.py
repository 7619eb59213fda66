"""The lobby reception screen: `/reception` on a tablet paired to the pseudo-room
"reception" (`edgectl panel pair reception`, the same pairing and cookie as a
room panel; a room's token is refused here with 403, and a console session is
no reception screen).

A guest announced by a host finds themselves among today's expected guests, by
a name prefix or by the PIN their invitation gave them (the contract has no
other code for a guest: `guests[].credentials` holds PINs), and checks in:

    GET  /api/reception -> {"site", "pairing", "wifi"}: this screen's token is good
    GET  /api/reception/guests?q=Gra
      -> {"guests": [{"guest", "name", "host", "company"}], "more"}
    POST /api/reception/checkin {"guest": "g-9"}
      -> {"guest", "first_name", "host", "company", "first_today", "host_notified",
          "welcome", "detail", "wifi": {"ssid", "passphrase"} | null}
    POST /api/reception/walkin {"name", "company", "email", "phone", "visiting", "note"}
      -> {"recorded": true, "message"}

A search answers only guests expected today (their visit overlaps the
site-local day and is not over), at most MAX_RESULTS of them, with the guest's
first name and last initial and the host's first name and company: nothing
else of any member. It needs MIN_QUERY characters and is rate-limited per
screen (SEARCH_PER_MINUTE, and CODE_PER_MINUTE for codes), and a check-in
takes only a guest that this screen's own searches offered in the last
OFFER_S seconds, so the screen cannot be used to list, or check in, guests by
trying ids.

A check-in is billed by the rule of a door (`AccessService.guest_arrived`):
the first arrival of a guest in a site-local day, at this screen or at a door,
is the one `usage.guest_entry` of that day, answered once it is durable; a
later check-in that day is accepted and not billed again. Every check-in tells
the host on MQTT (`edge/{site}/guests/{host}/arrived`), is logged, and has an
audit row. A walk-in's contact details are recorded as a `reception.walk_in`
event for the operator (the contract has no type for them: a cloud that refuses
the type leaves the event `rejected` in the outbox, never lost; docs/sync.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
from collections import deque
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge.access.cards import pin_hmac
from edge.mqtt.topics import topic
from edge.site.state import Actor, GatewayError, SiteChange
from edge.timeutil import iso_instant
from edge.web.accounts import RECEPTION, AuthError, Pairing
from edge.web.common import PANEL_COOKIE, auth_error, check_origin, json_body, static_page
from edge.web.words import reason_text

if TYPE_CHECKING:
    from edge.gateway import Gateway
    from edge.site.model import Holder
    from edge.web.accounts import Accounts

log = logging.getLogger("edge.web")

MIN_QUERY = 2
MAX_QUERY = 64
MAX_RESULTS = 8
SEARCH_PER_MINUTE = 30
# A code is a door PIN: tried here no faster than at a keypad (and each try is
# logged), so the screen is no better an oracle for PINs than a door is.
CODE_PER_MINUTE = 10
CHECKIN_PER_MINUTE = 20
WALKIN_PER_MINUTE = 6
OFFER_S = 600.0  # a guest shown by a search may be checked in for this long
VIA = "reception"
WALK_IN_EVENT = "reception.walk_in"
PIN_CODE = re.compile(r"[0-9]{4,12}")
# Walk-in fields: (longest, required). Anything else in the body is refused.
WALK_IN_FIELDS: dict[str, tuple[int, bool]] = {
    "name": (100, True),
    "company": (100, False),
    "email": (254, False),
    "phone": (32, False),
    "visiting": (100, False),
    "note": (500, False),
}
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+?[0-9][0-9 ()./-]{2,31}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NOT_IN_TOPIC = re.compile(r"[/+#\x00]")


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class PerMinute:
    """At most `limit` uses a minute per key (a sliding window)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._uses: dict[str, deque[float]] = {}

    def take(self, key: str, now: float) -> None:
        q = self._uses.setdefault(key, deque())
        while q and q[0] <= now - 60:
            q.popleft()
        if len(q) >= self.limit:
            raise RateLimited(int(q[0] + 60 - now) + 1)
        q.append(now)


class Reception:
    def __init__(self, gateway: Gateway, accounts: Accounts) -> None:
        self.gw = gateway
        self.accounts = accounts
        self._limits = {
            "search": PerMinute(SEARCH_PER_MINUTE),
            "code": PerMinute(CODE_PER_MINUTE),
            "checkin": PerMinute(CHECKIN_PER_MINUTE),
            "walkin": PerMinute(WALKIN_PER_MINUTE),
        }
        # What each screen's searches showed: pairing id -> guest id -> until when.
        self._offered: dict[str, dict[str, float]] = {}
        self._guests: list[str] | None = None  # every guest's id, until the site changes
        gateway.site.subscribe(self._site_changed)

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/reception", self.page)
        r.add_get("/api/reception", self.status)
        r.add_get("/api/reception/guests", self.search)
        r.add_post("/api/reception/checkin", self.checkin)
        r.add_post("/api/reception/walkin", self.walkin)

    def _site_changed(self, change: SiteChange) -> None:
        if change.index or change.entitlements:
            self._guests = None

    # --- the screen --------------------------------------------------------------------

    def _screen(self, request: web.Request) -> Pairing:
        """This request's reception pairing: 401 none or unknown, 403 a room's."""
        try:
            return self.accounts.panel(request.cookies.get(PANEL_COOKIE), RECEPTION)
        except AuthError as exc:
            raise auth_error(exc) from None

    def _take(self, pairing: Pairing, limit: str) -> None:
        """One use of `limit` for this screen (429 over it)."""
        try:
            self._limits[limit].take(pairing.id, time.time())
        except RateLimited as exc:
            raise web.HTTPTooManyRequests(
                reason=f"too many {limit} requests from this screen; wait {exc.retry_after} s",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return static_page("reception.html")

    async def status(self, request: web.Request) -> web.Response:
        """The page's first question: is this screen paired here, and to what site."""
        pairing = self._screen(request)
        body = {
            "site": self.gw.site.index.site_name or self.gw.config.site.id,
            "pairing": pairing.id,
            "wifi": self.gw.wifi is not None,
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    # --- search -----------------------------------------------------------------------

    def _expected(self, now: float) -> list[Holder]:
        """Guests whose visit overlaps today (site-local) and is not over."""
        ix = self.gw.site.index
        if self._guests is None:
            self._guests = [h.id for h in ix.holders.values() if h.kind == "guest"]
        day_end = self._day_end(now)
        out = []
        for gid in self._guests:
            h = ix.holders.get(gid)
            if h is None or h.kind != "guest":
                continue
            if h.valid_from is not None and h.valid_from >= day_end:
                continue
            if h.valid_to is not None and h.valid_to <= now:
                continue
            out.append(h)
        return out

    def _day_end(self, now: float) -> float:
        """The end of the site-local day of `now` (midnight, across DST changes)."""
        tz = self.gw.site.index.tz
        today = datetime.fromtimestamp(now, tz).date()
        return datetime.combine(today + timedelta(days=1), dtime(), tzinfo=tz).timestamp()

    def _refusal(self, h: Holder, now: float) -> str | None:
        """Why this guest cannot check in now (None: they can)."""
        if h.valid_to is not None and h.valid_to <= now:
            return "guest_expired"
        if h.valid_from is not None and h.valid_from >= self._day_end(now):
            return "guest_not_started"
        return None

    async def _names(self, ids: list[str]) -> dict[str, str]:
        """The names of these holders (the index holds none), from the store."""
        ix, store = self.gw.site.index, self.gw.site.store
        names: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await store.fetchall(
                f"SELECT id, name FROM holders WHERE gen = ? AND id IN ({marks})",  # noqa: S608 (marks only)
                (ix.generation, *chunk),
            )
            names.update((r[0], r[1] or "") for r in rows)
        return names

    async def _company_name(self, company: str | None) -> str | None:
        if company is None:
            return None
        row = await self.gw.site.store.fetchone(
            "SELECT json_extract(data, '$.name') FROM objects "
            "WHERE gen = ? AND kind = 'company' AND id = ?",
            (self.gw.site.index.generation, company),
        )
        return (row[0] or None) if row else None

    async def _host_view(self, host: str | None) -> tuple[str | None, str | None]:
        """The host's first name and company name: all a guest is told of them."""
        if host is None:
            return None, None
        h = self.gw.site.index.holders.get(host)
        names = await self._names([host])
        company = await self._company_name(h.company if h is not None else None)
        return first_name(names.get(host, "")) or None, company

    async def search(self, request: web.Request) -> web.Response:
        pairing = self._screen(request)
        text = request.query.get("q", "").strip()
        if not MIN_QUERY <= len(text) <= MAX_QUERY:
            raise web.HTTPBadRequest(
                reason=f"q: {MIN_QUERY} to {MAX_QUERY} characters of a name, or a code"
            )
        self._take(pairing, "search")
        now = time.time()
        expected = {h.id: h for h in self._expected(now)}
        found: list[str] = []
        code = text.replace(" ", "").replace("-", "")
        pin_key = self.gw.access.pin_key
        by_code = PIN_CODE.fullmatch(code) is not None
        if by_code and pin_key is not None:
            self._take(pairing, "code")
            for cred in self.gw.site.index.pins.get(pin_hmac(pin_key, code), ()):
                if cred.active and cred.holder in expected and cred.holder not in found:
                    found.append(cred.holder)
        names = await self._names(list(expected))
        wanted = words_of(text)
        by_name = []
        if len(wanted) >= MIN_QUERY:  # a name's start: "gra", "hop", "grace h"
            by_name = [g for g, name in names.items() if f" {wanted}" in f" {words_of(name)}"]
        found += sorted((g for g in by_name if g not in found), key=lambda g: names[g].casefold())
        shown = found[:MAX_RESULTS]
        offered = self._offered.setdefault(pairing.id, {})
        for gid in [g for g, until in offered.items() if until <= now]:
            del offered[gid]
        guests = []
        for gid in shown:
            offered[gid] = now + OFFER_S
            host, company = await self._host_view(expected[gid].host)
            guests.append(
                {
                    "guest": gid,
                    "name": short_name(names.get(gid, "")),
                    "host": host,
                    "company": company,
                }
            )
        log.info(
            "web: reception %s: search by %s (%d characters) found %d guest(s)",
            pairing.id,
            "code" if by_code else "name",
            len(text),
            len(found),
        )
        return web.json_response(
            {"guests": guests, "more": len(found) > len(shown)},
            headers={"Cache-Control": "no-store"},
        )

    # --- check-in ---------------------------------------------------------------------

    async def checkin(self, request: web.Request) -> web.Response:
        check_origin(request)
        pairing = self._screen(request)
        body = await json_body(request)
        gid = body.get("guest")
        if not isinstance(gid, str) or not 1 <= len(gid) <= 64:
            raise web.HTTPBadRequest(reason="guest: the id of a guest from the search")
        self._take(pairing, "checkin")
        now = time.time()
        offered = self._offered.get(pairing.id, {})
        h = self.gw.site.index.holders.get(gid)
        if offered.get(gid, 0.0) <= now or h is None or h.kind != "guest":
            raise web.HTTPNotFound(
                reason=f"no guest {gid[:64]!a} expected here today (search for them first)"
            )
        refusal = self._refusal(h, now)
        if refusal is not None:
            text = reason_text(refusal)
            raise web.HTTPConflict(
                reason=f"guest {gid} cannot check in: {refusal} ({text})",
                text=json.dumps({"error": refusal, "message": text}),
                content_type="application/json",
            )
        try:
            durable = self.gw.access.guest_arrived(gid, now, VIA)
        except GatewayError as exc:  # gone from the site since the search
            raise web.HTTPNotFound(reason=str(exc)) from None
        if durable is not None:
            await asyncio.shield(durable)  # billed and durable before the guest is told
        first = durable is not None
        names = await self._names([gid])
        guest_first = first_name(names.get(gid, ""))
        host, company = await self._host_view(h.host)
        notified = self._notify(h, guest_first, now)
        log.info(
            "web: reception %s: guest %s checked in for host %s (%s; host %s)",
            pairing.id,
            gid,
            h.host,
            "first today, billed" if first else "again today, not billed",
            "notified" if notified else "NOT notified",
        )
        await self.gw.recorder.audit(
            Actor(f"web:reception:{pairing.id}"),
            "web POST /api/reception/checkin",
            {"peer": request.remote, "guest": gid, "host": h.host},
            "ok: billed" if first else "ok: already billed today",
        )
        who = host or "Your host"
        if notified:
            detail = f"{who} has been told you're here."
        else:
            detail = "Please tell the front desk who you are visiting."
        return web.json_response(
            {
                "guest": gid,
                "first_name": guest_first,
                "host": host,
                "company": company,
                "first_today": first,
                "host_notified": notified,
                "welcome": f"Welcome, {guest_first}!" if guest_first else "Welcome!",
                "detail": detail,
                "wifi": self._wifi(),
            }
        )

    def _notify(self, h: Holder, guest_first: str, now: float) -> bool:
        """Tell the host (QoS 1, not retained); False when there is no way to."""
        link, host = self.gw.mqtt, h.host
        if link is None or host is None:
            return False
        if NOT_IN_TOPIC.search(host):
            log.warning("web: reception: host id %r cannot be an MQTT topic level", host[:64])
            return False
        payload = {
            "guest": h.id,
            "first_name": guest_first,
            "at": iso_instant(now, self.gw.site.index.tz),
            "via": VIA,
        }
        name = topic("guest_arrived", site=self.gw.config.site.id, host=host)
        link.publish(name, json.dumps(payload).encode(), qos=1, retain=False)
        return True

    def _wifi(self) -> dict[str, str] | None:
        if self.gw.wifi is None:
            return None
        view = self.gw.wifi.view()
        if not view.get("passphrase"):
            return None
        return {"ssid": view["ssid"], "passphrase": view["passphrase"]}

    # --- walk-ins ---------------------------------------------------------------------

    async def walkin(self, request: web.Request) -> web.Response:
        check_origin(request)
        pairing = self._screen(request)
        details = walk_in_details(await json_body(request))
        self._take(pairing, "walkin")
        details["screen"] = pairing.id
        ev = self.gw.recorder.event(WALK_IN_EVENT, time.time(), details=details)
        await asyncio.shield(self.gw.recorder.record([ev], []))
        log.info("web: reception %s: walk-in recorded (event %s)", pairing.id, ev["id"])
        first = first_name(details["name"])
        return web.json_response(
            {
                "recorded": True,
                "message": f"Thank you, {first}. Someone will be with you shortly.",
            }
        )


def walk_in_details(body: dict[str, Any]) -> dict[str, Any]:
    """A walk-in's fields, checked: strings within their lengths, no control
    characters (but new lines in the note), a plausible email and phone."""
    unknown = sorted(set(body) - set(WALK_IN_FIELDS))
    if unknown:
        raise web.HTTPBadRequest(
            reason=f"{unknown[0][:32]!r}: unknown field (expected {', '.join(WALK_IN_FIELDS)})"
        )
    out: dict[str, Any] = {}
    for field, (longest, required) in WALK_IN_FIELDS.items():
        value = body.get(field)
        if value is None or value == "":
            if required:
                raise web.HTTPBadRequest(reason=f"{field}: required")
            continue
        if not isinstance(value, str):
            raise web.HTTPBadRequest(reason=f"{field}: a string")
        value = value.strip()
        if len(value) > longest:
            raise web.HTTPBadRequest(reason=f"{field}: at most {longest} characters")
        if CONTROL.search(value.replace("\n", " ") if field == "note" else value):
            raise web.HTTPBadRequest(reason=f"{field}: no control characters")
        if field == "email" and not EMAIL.fullmatch(value):
            raise web.HTTPBadRequest(reason="email: not an email address")
        if field == "phone" and not PHONE.fullmatch(value):
            raise web.HTTPBadRequest(reason="phone: digits, spaces and + ( ) . / - only")
        if value:
            out[field] = value
    if "name" not in out:
        raise web.HTTPBadRequest(reason="name: required")
    return out


def words_of(text: str) -> str:
    """A name for matching: accents off, case folded, words split by single spaces."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[-'’.,]", " ", plain).split())


def first_name(name: str) -> str:
    parts = name.split()
    return parts[0] if parts else ""


def short_name(name: str) -> str:
    """ "Grace Hopper" -> "Grace H.": what the lobby may see of a guest."""
    parts = name.split()
    if not parts:
        return "Guest"
    if len(parts) == 1:
        return parts[0]
    return f"{parts[0]} {parts[-1][0]}."
