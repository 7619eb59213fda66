"""OfficeRnD Flex (API v2) as an edge-sync/1 site.

Sources (docs/bridge.md has the field-by-field table and what the
documentation left unclear):
- https://developer.officernd.com/v2.0-Flex/docs/authentication: OAuth2
  client credentials at https://identity.officernd.com/oauth/token, form
  fields client_id, client_secret, grant_type, scope; tokens last an hour.
- https://developer.officernd.com/docs/building-queries: `$limit` (at most
  50), `$cursorNext`, the envelope `results`, `cursorNext`, `rangeStart`,
  `rangeEnd`; `field[$gte]=` comparisons, `modifiedAt` on the collections
  that document it (memberships reject it: they are read whole).
- https://developer.officernd.com/reference/memberscontroller_getitem:
  members with `properties` (custom properties: the card and PIN live there).
- https://developer.officernd.com/reference/paymentscontroller_...: payments
  (`documentType`, `status`, `dueDate`, `payableAmount`) for billing status.
- https://developer.officernd.com/reference/feescontroller_additem: one-off
  fees (`name`, `issueDate`, `location`, `plan`, `price`) for charges.
- Webhooks: `officernd-signature: t=<unix s>,signature=<hex HMAC-SHA256 of
  rawBody + "." + t>` (the vendor's webhooks-demo); the Stripe-like
  `t=..,v1=..` over `t + "." + rawBody` is accepted too (docs/bridge.md).

Instants are UTC with `Z`. A date field at exactly UTC midnight is read as
that calendar date; any other instant as the location's local date.

Size: over 600 lines, because there is one module per platform by design
(`bridge/platforms/__init__.py`). It holds one vendor's client, mapping and
webhooks, each citing that vendor's pages, and they are read together.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from bridge.config import OfficeRndPlatform, SiteSection
from bridge.http import BadReply, Refused
from bridge.platforms.base import (
    Built,
    Credentials,
    Entity,
    Hint,
    Key,
    Mapper,
    Platform,
    ReadError,
    RecordError,
    SiteMapper,
    Span,
    WebhookRefused,
    Write,
    billing_status,
    day_start,
    iso,
    next_day_start,
    parse_instant,
    plans_of,
)
from bridge.world import Record, World
from edge.secrets import SecretError, read_secret

log = logging.getLogger("bridge.officernd")

# Read in this order: in each poll, paced by the rate budget, what decides most
# door answers (cards, unpaid invoices) comes first.
ENTITIES = (
    Entity("plans", "plan", access=False, incremental=False),
    Entity("resources", "resource", access=False, incremental=False),
    Entity("members", "member"),
    Entity("payments", "payment"),
    Entity("memberships", "membership", incremental=False),
    Entity("companies", "company"),
    Entity("passes", "pass"),
    Entity("bookings", "booking"),
    Entity("visitors", "visitor", incremental=False),
    Entity("visits", "visit", incremental=False),
)
SCOPES = (
    "flex.community.members.read",
    "flex.community.companies.read",
    "flex.community.memberships.read",
    "flex.billing.plans.read",
    "flex.space.passes.read",
    "flex.billing.payments.read",
    "flex.space.bookings.read",
    "flex.space.resources.read",
    "flex.community.visitors.read",
    "flex.community.visits.read",
    "flex.community.checkins.read",
    "flex.community.checkins.create",
    "flex.community.fees.read",
    "flex.community.fees.create",
)
EVENTS = {  # eventType prefix -> entity to re-read
    "member": "members",
    "company": "companies",
    "membership": "memberships",
    "invoice": "payments",
    "booking": "bookings",
    "pass": "passes",
    "visit": "visits",
    "visitor": "visitors",
}
NOT_OWED = ("voided", "paid", "draft", "refunded")
OWED = ("pending", "awaiting_payment", "partially_paid", "failed")
BOOKING_WINDOW_S = 86400
SIGNATURE_TOLERANCE_S = 300
EDGE_TAG = "edge"


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check(rec: Record, name: str, kind: str, required: bool = False) -> None:
    v = rec.get(name)
    if v is None:
        if required:
            raise RecordError(name, "missing")
        return
    if kind == "str" and not isinstance(v, str):
        raise RecordError(name, f"expected text, got {v!r}")
    if kind == "bool" and not isinstance(v, bool):
        raise RecordError(name, f"expected true or false, got {v!r}")
    if kind == "num" and (not isinstance(v, int | float) or isinstance(v, bool)):
        raise RecordError(name, f"expected a number, got {v!r}")
    if kind == "instant":
        try:
            parse_instant(v)
        except ValueError as exc:
            raise RecordError(name, str(exc)) from None
    if kind == "obj" and not isinstance(v, dict):
        raise RecordError(name, f"expected an object, got {v!r}")


CHECKS: dict[str, list[tuple[str, str, bool]]] = {
    "plans": [("name", "str", False)],
    "resources": [("name", "str", False), ("location", "str", False)],
    "companies": [("name", "str", False), ("location", "str", False)],
    "members": [
        ("name", "str", False),
        ("location", "str", False),
        ("company", "str", False),
        ("status", "str", False),
        ("properties", "obj", False),
    ],
    "memberships": [
        ("plan", "str", True),
        ("member", "str", False),
        ("company", "str", False),
        ("startDate", "instant", True),
        ("endDate", "instant", False),
    ],
    "passes": [
        ("count", "num", True),
        ("usedCount", "num", False),
        ("member", "str", False),
        ("company", "str", False),
        ("validFrom", "instant", False),
        ("validTo", "instant", False),
    ],
    "payments": [
        ("status", "str", False),
        ("dueDate", "instant", True),
        ("member", "str", False),
        ("company", "str", False),
        ("payableAmount", "num", False),
    ],
    "bookings": [
        ("resource", "str", True),
        ("member", "str", False),
        ("start", "instant", True),
        ("end", "instant", True),
        ("isCancelled", "bool", False),
        ("isTentative", "bool", False),
    ],
    "visitors": [("name", "str", False), ("properties", "obj", False)],
    "visits": [
        ("visitor", "str", True),
        ("member", "str", False),
        ("start", "instant", True),
        ("end", "instant", False),
    ],
}


class OfficeRnd(Platform):
    entities = ENTITIES
    indexes: ClassVar[dict[str, tuple[str, ...]]] = {
        "members": ("company",),
        "memberships": ("member", "company", "plan"),
        "passes": ("member", "company"),
        "payments": ("member", "company"),
        "bookings": ("member", "resource"),
        "visits": ("member", "visitor"),
    }
    throttle_statuses = (429, 503)
    cfg: OfficeRndPlatform

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._token: str | None = None
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None

    def _api(self, path: str) -> str:
        return f"{self.cfg.url.rstrip('/')}/api/v2/organizations/{self.cfg.organization}{path}"

    # --- auth -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        row = await self.store.fetchone(
            "SELECT data, expires FROM tokens WHERE platform = ?", (self.name,)
        )
        if row is not None:
            self._token, self._expires = json.loads(row[0]).get("access_token"), row[1]

    async def _authorize(self) -> dict[str, str]:
        assert self._lock is not None
        async with self._lock:
            if self._token is None or self._expires - time.time() < 300:
                await self._new_token()
        return {"Authorization": f"Bearer {self._token}"}

    async def _reauthorize(self) -> None:
        assert self._lock is not None
        async with self._lock:
            await self._new_token()

    async def _new_token(self) -> None:
        try:
            secret = read_secret(self.state_dir, self.cfg.client_secret_secret)
        except SecretError as exc:
            raise ReadError(str(exc)) from None
        if secret is None or not secret.strip():
            raise ReadError(f"the client secret {self.cfg.client_secret_secret!r} is missing")
        try:
            reply = await self.http.request(
                "POST",
                self.cfg.token_url,
                form={
                    "grant_type": "client_credentials",
                    "client_id": self.cfg.client_id,
                    "client_secret": secret.decode("utf-8").strip(),
                    "scope": " ".join(SCOPES),
                },
            )
        except Refused as exc:
            raise ReadError(f"OfficeRnD refused the client {self.cfg.client_id}: {exc}") from None
        body = reply.json()
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise BadReply("the token answer has no access_token")
        lifetime = body.get("expires_in")
        self._token = body["access_token"]
        self._expires = time.time() + (
            float(lifetime) if isinstance(lifetime, int | float) else 3600
        )
        await self.store.write(
            [
                (
                    "INSERT OR REPLACE INTO tokens (platform, data, expires) VALUES (?,?,?)",
                    (self.name, json.dumps({"access_token": self._token}), self._expires),
                )
            ]
        )

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        reply = await self.http.request(
            "GET",
            self._api(path),
            params=params,
            authorize=self._authorize,
            reauthorize=self._reauthorize,
        )
        return reply.json()

    # --- reads -------------------------------------------------------------------------------

    def _filters(self, entity: Entity, since: datetime | None) -> dict[str, str]:
        if since is not None:
            return {"modifiedAt[$gte]": _iso_z(since)}
        if entity.name == "bookings":
            return {"end[$gte]": _iso_z(datetime.now(UTC) - timedelta(seconds=BOOKING_WINDOW_S))}
        if entity.name == "payments":
            return {"status[$in]": ",".join(OWED)}  # only what is owed
        return {}

    async def read(
        self, entity: Entity, since: datetime | None, world: World
    ) -> AsyncIterator[list[Record]]:
        params = {**self._filters(entity, since), "$limit": "50"}
        cursors: set[str] = set()
        while True:
            body = await self._get(f"/{entity.name}", params)
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ReadError(f"{entity.name}: no results in the answer")
            yield [r for r in body["results"] if isinstance(r, dict)]
            cursor = body.get("cursorNext")
            if not cursor or not body["results"]:
                return
            if cursor in cursors:
                raise ReadError(f"{entity.name}: the same cursorNext twice")
            cursors.add(cursor)
            params = {**params, "$cursorNext": str(cursor)}

    async def read_one(self, entity: str, rid: str) -> Record | None:
        try:
            body = await self._get(f"/{entity}/{rid}")
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, dict):
            raise ReadError(f"{entity} {rid}: the answer is not a record")
        return body

    def record_id(self, entity: str, record: Record) -> str:
        rid = record.get("_id")
        if not isinstance(rid, str) or not rid:
            raise RecordError("_id", f"expected an id, got {rid!r}")
        return rid

    def modified_at(self, entity: str, record: Record) -> datetime | None:
        try:
            return parse_instant(record.get("modifiedAt"))
        except ValueError:
            return None

    def check(self, entity: str, record: Record) -> None:
        for name, kind, required in CHECKS.get(entity, []):
            _check(record, name, kind, required)
        props = record.get("properties") or {}
        if entity == "members":
            for prop in (self.cfg.card_property, self.cfg.pin_property):
                v = props.get(prop) if prop else None
                if v is not None and not isinstance(v, str | int):
                    raise RecordError(f"properties.{prop}", f"expected text, got {v!r}")

    def keep(self, entity: str, record: Record, now: float) -> bool:
        if entity == "payments":
            doc = record.get("documentType") or "invoice"
            owed = record.get("payableAmount")
            return (
                doc == "invoice"
                and record.get("status") not in NOT_OWED
                and not record.get("isPaid")
                and (owed is None or owed > 0)
            )
        if entity == "bookings":
            return parse_instant(record["end"]).timestamp() > now - BOOKING_WINDOW_S
        if entity == "visits":
            end = record.get("end") or record.get("start")
            return parse_instant(end).timestamp() > now - 2 * 86400
        return True

    # --- webhooks -------------------------------------------------------------------------

    def webhook(self, headers: Mapping[str, str], body: bytes, event: str | None) -> list[Hint]:
        if self.cfg.webhook_secret is not None:
            self._verify(headers, body)
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise WebhookRefused(400, "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookRefused(400, "expected a JSON object")
        kind = payload.get("eventType") or event or ""
        data = payload.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if (
            not isinstance(kind, str)
            or not isinstance(obj, dict)
            or not isinstance(obj.get("_id"), str)
        ):
            raise WebhookRefused(400, "expected eventType and data.object with an _id")
        entity = EVENTS.get(kind.split(".", 1)[0])
        if entity is None:
            return []
        return [Hint(entity, obj["_id"])]

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        assert self.cfg.webhook_secret is not None
        header = headers.get("officernd-signature")
        if not header:
            raise WebhookRefused(401, "officernd-signature is missing")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        stamp = parts.get("t", "").strip()
        given = (parts.get("signature") or parts.get("v1") or "").strip().lower()
        if not stamp.isdigit() or not given:
            raise WebhookRefused(401, "officernd-signature: expected t=<seconds>,signature=<hex>")
        if abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE_S:
            raise WebhookRefused(401, f"officernd-signature: t={stamp} is more than 5 min away")
        try:
            raw = read_secret(self.state_dir, self.cfg.webhook_secret)
        except SecretError as exc:
            raise WebhookRefused(503, str(exc)) from None
        if raw is None:
            raise WebhookRefused(503, f"the webhook secret {self.cfg.webhook_secret!r} is missing")
        key = raw.strip()
        # The vendor's demo signs rawBody + "." + t; the Stripe-like order is accepted too.
        for message in (body + b"." + stamp.encode(), stamp.encode() + b"." + body):
            if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(), given):
                return
        raise WebhookRefused(401, "officernd-signature does not match the body")

    # --- mapping ----------------------------------------------------------------------------

    def mapper(
        self, world: World, site_id: str, site: SiteSection, pin_key: bytes | None
    ) -> Mapper:
        return OfficeRndMapper(world, site, pin_key, self.cfg)

    def person_ref(self, holder: str) -> str | None:
        rest = holder.removeprefix("m-")
        return rest if rest != holder and rest else None

    # --- writes -------------------------------------------------------------------------------

    async def write(self, w: Write, site: SiteSection, world: World) -> str:
        member = self.person_ref(w.person)
        if member is None:
            raise Refused(400, f"{w.person!r} is not an OfficeRnD member")
        if w.kind == "checkin":
            path = f"/checkins/{member}"
            body: dict[str, Any] = {"location": site.locations[0], "start": _iso_z(w.at)}
        else:
            if self.cfg.fee_plan is None:
                raise Refused(400, "platforms fee_plan is not configured (fees need a plan)")
            path = "/fees"
            body = {
                "name": f"{w.description} [{EDGE_TAG} {w.event_id}]",
                "issueDate": f"{w.day.isoformat()}T00:00:00.000Z",
                "location": site.locations[0],
                "plan": self.cfg.fee_plan,
                "price": w.amount,
                "quantity": 1,
            }
            company = w.company.removeprefix("co-") if w.company else None
            if company:
                body.update({"company": company, "isPersonal": False})
            else:
                body.update({"member": member, "isPersonal": True})
        reply = await self.http.request(
            "POST",
            self._api(path),
            json_body=body,
            authorize=self._authorize,
            reauthorize=self._reauthorize,
        )
        answer = reply.json()
        if not isinstance(answer, dict):
            raise BadReply("the answer to a write is not an object")
        return str(answer.get("_id") or "?")

    async def find(self, w: Write, site: SiteSection, world: World) -> str | None:
        member = self.person_ref(w.person)
        if w.kind == "checkin":
            params = {
                "member": str(member),
                "start[$gte]": _iso_z(w.at.replace(second=0, microsecond=0)),
                "start[$lt]": _iso_z(w.at.replace(second=0, microsecond=0) + timedelta(minutes=1)),
                "$limit": "50",
            }
            path, field, marker = "/checkins", None, None
        else:
            company = w.company.removeprefix("co-") if w.company else None
            params = {"company": company} if company else {"member": str(member)}
            params["$limit"] = "50"
            path, field, marker = "/fees", "name", f"[{EDGE_TAG} {w.event_id}]"
        while True:
            body = await self._get(path, params)
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ReadError(f"{path}: no results in the answer")
            for rec in body["results"]:
                if not isinstance(rec, dict):
                    continue
                if field is None or (marker is not None and marker in str(rec.get(field) or "")):
                    return str(rec.get("_id"))
            cursor = body.get("cursorNext")
            if not cursor or not body["results"]:
                return None
            params = {**params, "$cursorNext": str(cursor)}

    def status(self) -> dict[str, Any]:
        return {"token_expires": iso(self._expires, ZoneInfo("UTC")) if self._token else None}


# --- the pure mapping -----------------------------------------------------------------------


def _matches(match: tuple[str, ...], rec: Record | None, rid: object) -> bool:
    if "*" in match or str(rid) in match:
        return True
    return rec is not None and rec.get("name") in match


class OfficeRndMapper(SiteMapper):
    """member -> member, company -> company, visit -> guest, booking -> booking."""

    label = "OfficeRnD"
    resource_id = "_id"
    resource_name = "name"
    cfg: OfficeRndPlatform

    def keys(self) -> set[Key]:
        w = self.w
        return (
            {("member", f"m-{i}") for i in w.ids("members")}
            | {("company", f"co-{i}") for i in w.ids("companies")}
            | {("guest", f"g-{v.get('visitor')}") for v in w.all("visits")}
            | {("booking", f"b-{i}") for i in w.ids("bookings")}
            | {("room", r) for r in self.site.rooms}
        )

    def affected(self, entity: str, old: Record | None, new: Record | None) -> set[Key]:
        out: set[Key] = set()
        w = self.w
        for rec in (old, new):
            if rec is None:
                continue
            rid = rec.get("_id")
            member, company = rec.get("member"), rec.get("company")
            if entity == "members":
                out.add(("member", f"m-{rid}"))
                out |= {("guest", f"g-{v.get('visitor')}") for v in w.by("visits", "member", rid)}
                if company:  # whether a company is the site's depends on its members
                    out.add(("company", f"co-{company}"))
                out |= {("booking", f"b-{b['_id']}") for b in w.by("bookings", "member", rid)}
            elif entity == "companies":
                out.add(("company", f"co-{rid}"))
                out |= {("member", f"m-{m['_id']}") for m in w.by("members", "company", rid)}
            elif entity in ("memberships", "passes", "payments"):
                if member:
                    out.add(("member", f"m-{member}"))
                if company:
                    out.add(("company", f"co-{company}"))
                    out |= {
                        ("member", f"m-{m['_id']}") for m in w.by("members", "company", company)
                    }
            elif entity == "plans":
                for ms in w.by("memberships", "plan", rid):
                    if ms.get("member"):
                        out.add(("member", f"m-{ms['member']}"))
                    if ms.get("company"):
                        out |= {
                            ("member", f"m-{m['_id']}")
                            for m in w.by("members", "company", ms["company"])
                        }
            elif entity == "bookings":
                out.add(("booking", f"b-{rid}"))
            elif entity == "resources":
                out |= {("room", r) for r in self.site.rooms}
                out |= {("booking", f"b-{b['_id']}") for b in w.by("bookings", "resource", rid)}
            elif entity == "visits":
                out.add(("guest", f"g-{rec.get('visitor')}"))
            elif entity == "visitors":
                out.add(("guest", f"g-{rid}"))
        return out

    # --- helpers ------------------------------------------------------------------------------

    def _date(self, value: object) -> date | None:
        if value is None:
            return None
        dt = parse_instant(value)
        utc = dt.astimezone(UTC)
        if (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0):
            return utc.date()  # a calendar date stored as UTC midnight
        return dt.astimezone(self.tz).date()

    def _instant(self, value: object) -> float:
        """An instant; a calendar date (UTC midnight) is the start of that local day."""
        dt = parse_instant(value)
        utc = dt.astimezone(UTC)
        if (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0):
            return day_start(utc.date(), self.tz)
        return dt.timestamp()

    def _plan_of(self, plan_id: object) -> str | None:
        plan = self.w.get("plans", str(plan_id))
        for pid, section in self.site.plans.items():
            if str(plan_id) in section.match or (
                plan is not None and plan.get("name") in section.match
            ):
                return pid
        return None

    def _unpaid_due(self, field: str, rid: object) -> list[float]:
        out = []
        for p in self.w.by("payments", field, rid):
            if field == "company" and p.get("member"):
                continue  # a member's own invoice, not the company's
            if p.get("location") and p.get("location") not in self.locations:
                continue
            if p.get("status") in NOT_OWED or p.get("isPaid"):
                continue
            out.append(self._instant(p["dueDate"]))
        return out

    def _pass_counts(
        self, passes: list[Record], today: date, now: float
    ) -> tuple[int, list[dict[str, Any]], list[float]]:
        balance = 0
        explicit = []
        recheck = []
        for p in passes:
            if p.get("status") == "expired":
                continue
            # validFrom and validTo are calendar days, validTo the last one included.
            valid_to = self._date(p.get("validTo") or p.get("endDate"))
            if valid_to is not None and valid_to < today:
                continue
            valid_from = self._date(p.get("validFrom") or p.get("startDate"))
            count = int(p.get("count") or 0)
            used = int(p.get("usedCount") or 0)
            if used > 0 and valid_from == today:
                explicit.append(
                    {"id": f"dp-{p['_id']}", "valid_from": today.isoformat(), "valid_to": None}
                )
                recheck.append(next_day_start(today, self.tz))
            if valid_from is not None and valid_from > today:
                recheck.append(day_start(valid_from, self.tz))
                continue
            balance += max(0, count - used)
            if valid_to is not None:
                recheck.append(next_day_start(valid_to, self.tz))
        return balance, explicit, recheck

    # --- objects --------------------------------------------------------------------------------

    def _member(self, mid: str, now: float) -> Built:
        m = self.w.get("members", mid)
        source = f"members {mid}"
        if m is None or m.get("status") in ("lead", "not_approved"):
            return Built(None, source)
        holder = f"m-{mid}"
        today = datetime.fromtimestamp(now, self.tz).date()
        company = m.get("company")
        personal = [
            x for x in self.w.by("memberships", "member", mid) if x.get("status") != "not_approved"
        ]
        shared = [
            x
            for x in (self.w.by("memberships", "company", company) if company else [])
            if not x.get("member") and x.get("status") != "not_approved"
        ]
        passes = [p for p in self.w.by("passes", "member", mid) if p.get("isPersonal", True)]
        here = m.get("location") in self.locations or any(
            x.get("location") in self.locations for x in personal + shared
        )
        if not here:
            return Built(None, source)
        recheck: list[float] = []
        spans = []
        for x in personal + shared:
            plan = self._plan_of(x.get("plan"))
            if plan is not None:
                start, end = self._date(x.get("startDate")), self._date(x.get("endDate"))
                spans.append(Span(plan, start, end, primary=x in personal))
        plans = plans_of(spans, today, self.site, self.tz)
        recheck += plans.rechecks
        billing, at = billing_status(
            self._unpaid_due("member", mid), self.site.grace_days, now, self.tz
        )
        if at is not None:
            recheck.append(at)
        props = m.get("properties") or {}
        creds = Credentials(holder)
        creds.card(
            "card",
            props.get(self.cfg.card_property),
            self.site.card_format,
            f"properties.{self.cfg.card_property}",
        )
        if self.cfg.pin_property:
            creds.pin(
                "pin",
                props.get(self.cfg.pin_property),
                self.pin_key,
                f"properties.{self.cfg.pin_property}",
            )
        balance, explicit, more = self._pass_counts(passes, today, now)
        recheck += more
        has_membership = bool(personal or shared)
        obj_company = f"co-{company}" if company and self.w.get("companies", company) else None
        obj = {
            "id": holder,
            "name": m.get("name") or "",
            "kind": "member" if has_membership or obj_company else "nonmember",
            "company": obj_company,
            "company_manager": bool(m.get("isContactPerson")),
            "plan": plans.plan,
            "contract": plans.contract,
            "billing": billing,
            "access": plans.grants,
            "credentials": creds.items,
            "day_passes": explicit,
            "day_pass_balance": balance,
            "credits": 0,
        }
        future_checks = [t for t in recheck if t > now]
        return Built(
            obj,
            source,
            tuple((f"members[{holder}].credentials ({source} {f})", r) for f, r in creds.problems),
            min(future_checks) if future_checks else None,
        )

    def _company(self, cid: str, now: float) -> Built:
        c = self.w.get("companies", cid)
        source = f"companies {cid}"
        if c is None:
            return Built(None, source)
        members_here = any(
            m.get("location") in self.locations for m in self.w.by("members", "company", cid)
        )
        if c.get("location") not in self.locations and not members_here:
            return Built(None, source)
        billing, at = billing_status(
            self._unpaid_due("company", cid), self.site.grace_days, now, self.tz
        )
        access = []
        for section in self.site.companies.values():
            if _matches(section.match, c, cid):
                access += [{"group": g.group, "schedule": g.schedule} for g in section.access]
        today = datetime.fromtimestamp(now, self.tz).date()
        shared = [p for p in self.w.by("passes", "company", cid) if not p.get("member")]
        balance, _, recheck = self._pass_counts(shared, today, now)
        if at is not None:
            recheck.append(at)
        obj = {
            "id": f"co-{cid}",
            "name": c.get("name") or "",
            "billing": billing,
            "access": access,
            "day_passes": balance,
            "credits": 0,
        }
        future = [t for t in recheck if t > now]
        return Built(obj, source, (), min(future) if future else None)

    def _guest(self, visitor_id: str, now: float) -> Built:
        """One guest per visitor (one PIN, one person): their current visit, else the
        next one, else the last one of the past day."""
        source = f"visitors {visitor_id}"
        visits = []
        for v in self.w.by("visits", "visitor", visitor_id):
            if not v.get("member") or (v.get("location") and v["location"] not in self.locations):
                continue
            start = parse_instant(v["start"]).timestamp()
            end = (
                parse_instant(v["end"]).timestamp()
                if v.get("end")
                else next_day_start(datetime.fromtimestamp(start, self.tz).date(), self.tz)
            )
            if end >= now - 86400:
                visits.append((start, end, v))
        if not visits:
            return Built(None, source)
        current = [x for x in visits if x[0] - 3600 <= now < x[1]]
        upcoming = sorted((x for x in visits if x[0] - 3600 > now), key=lambda x: x[0])
        start, end, visit = (current or upcoming or sorted(visits, key=lambda x: -x[1]))[0]
        visitor = self.w.get("visitors", visitor_id) or {}
        holder = f"g-{visitor_id}"
        creds = Credentials(holder)
        if self.cfg.pin_property:
            props = visitor.get("properties") or {}
            field = f"properties.{self.cfg.pin_property}"
            creds.pin("code", props.get(self.cfg.pin_property), self.pin_key, field)
        obj = {
            "id": holder,
            "name": visitor.get("name") or "",
            "host": f"m-{visit['member']}",
            "valid_from": iso(start - 3600, self.tz),
            "valid_to": iso(end, self.tz),
            "access": [{"group": g.group, "schedule": g.schedule} for g in self.site.guest_access],
            "credentials": creds.items,
        }
        # The next visit becomes the guest's window once this one ends.
        later = [t for t in [x[0] - 3600 for x in upcoming] + [end] if t > now]
        return Built(
            obj,
            source,
            tuple((f"guests[{holder}].credentials ({source} {f})", r) for f, r in creds.problems),
            min(later) if later else None,
        )

    def _resource_here(self, resource: Record) -> bool:
        return not resource.get("location") or resource.get("location") in self.locations

    def _booking(self, bid: str, now: float) -> Built:
        b = self.w.get("bookings", bid)
        source = f"bookings {bid}"
        if b is None or not b.get("member") or b.get("isCancelled") or b.get("isTentative"):
            return Built(None, source)
        room = self._room_of(b.get("resource"))
        end = parse_instant(b["end"])
        if room is None or end.timestamp() < now - BOOKING_WINDOW_S:
            return Built(None, source)
        start = parse_instant(b["start"])
        obj = self._booking_object(
            bid, room, str(b["member"]), start, end, bool(b.get("isAccounted"))
        )
        return Built(obj, source)
