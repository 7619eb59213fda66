"""Nexudus (admin REST API) as an edge-sync/1 site.

Sources (the pages are cited where a shape is used; docs/bridge.md has the
field-by-field table and what the documentation left unclear):
- https://developers.nexudus.com/rest-api/authentication: `POST /api/token`,
  password grant, form-encoded; `expires_in` 604799 (7 days); refresh grant
  with the `client_id` header.
- https://developers.nexudus.com/rest-api/spaces/get-coworkers (and every
  search page): `page`/`size`, `orderBy`/`dir`, `<Entity>_<Field>` filters,
  `from_<Entity>_UpdatedOn` as `YYYY-MM-DDTHH:mm`, the envelope `Records` ...
  `HasNextPage`. List and batch records leave out `AccessPincode`,
  `KeyFobNumber` and list fields (`Teams`): those need a GET by id.
- https://developers.nexudus.com/reference/api-limitations: throttling is 409
  with Retry-After and an empty body.
- https://help.nexudus.com/docs/verifying-webhooks-created-via-the-api:
  `X-Nexudus-Hook-Signature` = uppercase hex HMAC-SHA256 of the body with the
  app's shared secret; the body is a JSON array of one record.
- https://developers.nexudus.com/rest-api/spaces/post-checkins and
  .../billing/post-charges: the writes, and their `WasSuccessful` envelope.

Times: plain fields (`FromTime`, `DueDate`, `UpdatedOn`) are read as UTC and
the `...Local` twins as the location's wall clock; calendar dates (a contract's
start and cancellation) come from the `...Local` twin when present.

Size: over 600 lines, because there is one module per platform by design
(`bridge/platforms/__init__.py`). It holds one vendor's client, mapping and
webhooks, each citing that vendor's pages, and they are read together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from bridge.config import NexudusPlatform, SiteSection
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
    iso,
    next_day_start,
    parse_instant,
    plans_of,
)
from bridge.world import Record, World
from edge.secrets import SecretError, read_secret

log = logging.getLogger("bridge.nexudus")

# Read in this order. A poll is paced by the rate budget, so what decides most
# door answers (plans, unpaid invoices, cards) is read first in each one;
# coworkers after, as a changed coworker costs a second request (its full record).
ENTITIES = (
    Entity("tariffs", "Tariff", access=False),
    Entity("timepasses", "TimePass", access=False),
    Entity("resources", "Resource", access=False),
    Entity("coworkercontracts", "CoworkerContract"),
    Entity("coworkerinvoices", "CoworkerInvoice"),
    Entity("coworkers", "Coworker"),
    Entity("coworkertimepasses", "CoworkerTimePass"),
    Entity("teams", "Team"),
    Entity("bookings", "Booking"),
    Entity("cancelledbookings", "CancelledBooking"),
    Entity("visitors", "Visitor"),
)
PATHS = {
    "tariffs": "/api/billing/tariffs",
    "timepasses": "/api/billing/timepasses",
    "resources": "/api/spaces/resources",
    "teams": "/api/spaces/teams",
    "coworkers": "/api/spaces/coworkers",
    "coworkercontracts": "/api/billing/coworkercontracts",
    "coworkertimepasses": "/api/billing/coworkertimepasses",
    "coworkerinvoices": "/api/billing/coworkerinvoices",
    "bookings": "/api/spaces/bookings",
    "cancelledbookings": "/api/spaces/cancelledbookings",
    "visitors": "/api/spaces/visitors",
    "checkins": "/api/spaces/checkins",
    "charges": "/api/billing/charges",
}
# Webhook actions (eWebhookAction names) -> the entity to re-read.
ACTIONS = {
    "Coworker": "coworkers",
    "AccessControl": "coworkers",
    "CoworkerContract": "coworkercontracts",
    "CoworkerInvoice": "coworkerinvoices",
    "Booking": "bookings",
    "Team": "teams",
    "Visitor": "visitors",
    "Tariff": "tariffs",
    "CoworkerTimePass": "coworkertimepasses",
}
BOOKING_WINDOW_S = 86400  # bookings that ended longer ago than this are not the site's
VISITOR_PAST_S = 2 * 86400
TOKEN_REFRESH_S = 86400  # a token is renewed when it has less than a day left
EDGE_TAG = "edge"


def _minute(dt: datetime) -> str:
    """A range filter's value: minute precision, UTC (the docs' `YYYY-MM-DDTHH:mm`)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- record checks ---------------------------------------------------------------------


def _int(rec: Record, name: str, required: bool = True) -> None:
    v = rec.get(name)
    if v is None and not required:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise RecordError(name, f"expected a number, got {v!r}")


def _str(rec: Record, name: str, required: bool = False) -> None:
    v = rec.get(name)
    if v is None and not required:
        return
    if not isinstance(v, str):
        raise RecordError(name, f"expected text, got {v!r}")


def _bool(rec: Record, name: str, required: bool = False) -> None:
    v = rec.get(name)
    if v is not None and not isinstance(v, bool):
        raise RecordError(name, f"expected true or false, got {v!r}")


def _instant(rec: Record, name: str, required: bool = True) -> None:
    v = rec.get(name)
    if v is None and not required:
        return
    try:
        parse_instant(v)
    except ValueError as exc:
        raise RecordError(name, str(exc)) from None


CHECKS: dict[str, list[tuple[Any, str, bool]]] = {
    "tariffs": [(_str, "Name", True), (_int, "BusinessId", False)],
    "timepasses": [(_str, "Name", True), (_int, "MinutesIncluded", False)],
    "resources": [(_str, "Name", True), (_int, "BusinessId", False)],
    "teams": [(_str, "Name", True), (_int, "BusinessId", False), (_int, "PayingMemberId", False)],
    "coworkers": [
        (_str, "FullName", False),
        (_bool, "Active", False),
        (_bool, "Archived", False),
        (_int, "InvoicingBusinessId", False),
    ],
    "coworkercontracts": [
        (_int, "CoworkerId", True),
        (_int, "TariffId", True),
        (_instant, "StartDate", True),
        (_instant, "CancellationDate", False),
        (_bool, "Cancelled", False),
    ],
    "coworkertimepasses": [
        (_int, "CoworkerId", True),
        (_int, "TimePassId", True),
        (_bool, "Used", False),
        (_int, "RemainingUses", False),
        (_instant, "ExpireDate", False),
        (_instant, "UsedDate", False),
    ],
    "coworkerinvoices": [
        (_int, "CoworkerId", True),
        (_instant, "DueDate", True),
        (_bool, "Paid", False),
        (_bool, "Void", False),
    ],
    "bookings": [
        (_int, "ResourceId", True),
        (_int, "CoworkerId", False),
        (_instant, "FromTime", True),
        (_instant, "ToTime", True),
        (_bool, "Tentative", False),
        (_bool, "Invoiced", False),
    ],
    "cancelledbookings": [(_str, "UniqueId", False)],
    "visitors": [
        (_int, "CoworkerId", False),
        (_instant, "ExpectedArrival", True),
        (_str, "FullName", False),
    ],
}


def _check_credential_field(rec: Record, name: str) -> None:
    v = rec.get(name)
    if v is not None and not isinstance(v, str | int):
        raise RecordError(name, f"expected text, got {v!r}")


# --- the platform ----------------------------------------------------------------------


class Nexudus(Platform):
    entities = ENTITIES
    indexes: ClassVar[dict[str, tuple[str, ...]]] = {
        "coworkers": ("Teams",),
        "coworkercontracts": ("CoworkerId", "TariffId"),
        "coworkertimepasses": ("CoworkerId", "TimePassId"),
        "coworkerinvoices": ("CoworkerId",),
        "teams": ("TeamMembers", "PayingMemberId"),
        "bookings": ("CoworkerId", "ResourceId", "UniqueId"),
        "visitors": ("CoworkerId",),
    }
    throttle_statuses = (409, 429, 503)
    cfg: NexudusPlatform

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._token: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0
        self._token_lock: Any = None
        self.details_read = 0
        # Full records read while their UpdatedOn second was still open: read again.
        self._open_second: set[tuple[str, str]] = set()

    @property
    def _details(self) -> bool:
        """Whether every coworker is read whole (PINs and fobs are not in list records)."""
        return self.cfg.read_pins or self.cfg.read_key_fobs

    def _url(self, path: str) -> str:
        return self.cfg.url.rstrip("/") + path

    # --- auth ---------------------------------------------------------------------------

    async def start(self) -> None:
        import asyncio

        self._token_lock = asyncio.Lock()
        row = await self.store.fetchone(
            "SELECT data, expires FROM tokens WHERE platform = ?", (self.name,)
        )
        if row is not None:
            data = json.loads(row[0])
            self._token, self._refresh, self._expires = (
                data.get("access_token"),
                data.get("refresh_token"),
                row[1],
            )

    def _password(self) -> str:
        try:
            raw = read_secret(self.state_dir, self.cfg.password_secret)
        except SecretError as exc:
            raise ReadError(str(exc)) from None
        if raw is None or not raw.strip():
            raise ReadError(f"the password secret {self.cfg.password_secret!r} is missing")
        return raw.decode("utf-8").strip()

    async def _authorize(self) -> dict[str, str]:
        assert self._token_lock is not None
        async with self._token_lock:
            if self._token is None or self._expires - time.time() < TOKEN_REFRESH_S:
                await self._new_token()
        return {"Authorization": f"Bearer {self._token}"}

    async def _reauthorize(self) -> None:
        assert self._token_lock is not None
        async with self._token_lock:
            self._token = None
            await self._new_token(refresh=False)

    async def _new_token(self, refresh: bool = True) -> None:
        reply = None
        if refresh and self._refresh is not None:
            try:
                # https://learn.nexudus.com/api/endpoints/auth/refresh-bearer-token
                reply = await self.http.request(
                    "POST",
                    self._url("/api/token"),
                    form={"grant_type": "refresh_token", "refresh_token": self._refresh},
                    headers={"client_id": self.cfg.username},
                )
            except Refused as exc:
                log.info("%s: token refresh refused (%s); signing in again", self.name, exc)
        if reply is None:
            try:
                reply = await self.http.request(
                    "POST",
                    self._url("/api/token"),
                    form={
                        "grant_type": "password",
                        "username": self.cfg.username,
                        "password": self._password(),
                    },
                    headers={"client_id": self.cfg.username},
                )
            except Refused as exc:
                raise ReadError(
                    f"Nexudus refused the sign-in of {self.cfg.username}: {exc}"
                ) from None
        body = reply.json()
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise BadReply("the token answer has no access_token")
        lifetime = body.get("expires_in")
        self._token = body["access_token"]
        self._refresh = (
            body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
        )
        self._expires = time.time() + (
            float(lifetime) if isinstance(lifetime, int | float) else 3600
        )
        await self.store.write(
            [
                (
                    "INSERT OR REPLACE INTO tokens (platform, data, expires) VALUES (?,?,?)",
                    (
                        self.name,
                        json.dumps({"access_token": self._token, "refresh_token": self._refresh}),
                        self._expires,
                    ),
                )
            ]
        )

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        reply = await self.http.request(
            "GET",
            self._url(path),
            params=params,
            authorize=self._authorize,
            reauthorize=self._reauthorize,
        )
        return reply.json()

    # --- reads ----------------------------------------------------------------------------

    def _filters(self, entity: Entity, since: datetime | None) -> dict[str, str]:
        now = datetime.now(UTC)
        label = entity.label
        if since is not None:
            return {f"from_{label}_UpdatedOn": _minute(since), "orderBy": "UpdatedOn", "dir": "1"}
        params = {"orderBy": "Id", "dir": "1"}
        if entity.name == "coworkerinvoices":
            params["CoworkerInvoice_Paid"] = "false"  # only what is owed
        elif entity.name in ("bookings", "cancelledbookings"):
            params[f"from_{label}_ToTime"] = _minute(now - timedelta(seconds=BOOKING_WINDOW_S))
        elif entity.name == "visitors":
            params["from_Visitor_ExpectedArrival"] = _minute(
                now - timedelta(seconds=VISITOR_PAST_S)
            )
        return params

    async def read(
        self, entity: Entity, since: datetime | None, world: World
    ) -> AsyncIterator[list[Record]]:
        params = self._filters(entity, since)
        page = 1
        total_pages: int | None = None
        while True:
            body = await self._get(
                PATHS[entity.name], {**params, "page": str(page), "size": str(self.cfg.page_size)}
            )
            if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
                raise ReadError(f"{entity.name} page {page}: no Records in the answer")
            records = [r for r in body["Records"] if isinstance(r, dict)]
            if isinstance(body.get("TotalPages"), int):
                total_pages = body["TotalPages"]
            partial = entity.name == ("coworkers" if self._details else "teams")
            if partial:
                records = await self._whole(entity, records, world)
            yield records
            if not body.get("HasNextPage") or not body["Records"]:
                return
            page += 1
            if total_pages is not None and page > total_pages + 1:
                raise ReadError(f"{entity.name}: HasNextPage past TotalPages ({total_pages})")

    async def _whole(self, entity: Entity, listed: list[Record], world: World) -> list[Record]:
        """Full records for list records that changed (list records are partial).

        The full record already held is reused when the list record has the same
        `UpdatedOn` and agrees with it on every field the list carries, and it was
        not read within the second of its own `UpdatedOn` (whole seconds: a
        second change in that same second would keep the same stamp)."""
        out = []
        for rec in listed:
            rid = str(rec.get("Id"))
            stored = world.get(entity.name, rid)
            if (
                stored is not None
                and (entity.name, rid) not in self._open_second
                and stored.get("UpdatedOn") == rec.get("UpdatedOn")
                and all(stored.get(k) == v for k, v in rec.items() if v is not None)
            ):
                out.append(stored)
                continue
            full = await self.read_one(entity.name, rid)
            self.details_read += 1
            if full is None:
                continue
            out.append(full)
            stamp = self.modified_at(entity.name, full)
            if stamp is not None and time.time() - stamp.timestamp() < 2:
                self._open_second.add((entity.name, rid))
            else:
                self._open_second.discard((entity.name, rid))
        return out

    async def read_one(self, entity: str, rid: str) -> Record | None:
        try:
            body = await self._get(f"{PATHS[entity]}/{rid}")
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, dict):
            raise ReadError(f"{entity} {rid}: the answer is not a record")
        return body

    def record_id(self, entity: str, record: Record) -> str:
        rid = record.get("Id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise RecordError("Id", f"expected a number, got {rid!r}")
        return str(rid)

    def modified_at(self, entity: str, record: Record) -> datetime | None:
        try:
            return parse_instant(record.get("UpdatedOn"))
        except ValueError:
            return None

    def check(self, entity: str, record: Record) -> None:
        for fn, name, required in CHECKS.get(entity, []):
            fn(record, name, required)
        if entity == "coworkers":
            for name in ("AccessCardId", "KeyFobNumber", "AccessPincode"):
                _check_credential_field(record, name)
            teams = record.get("Teams")
            if teams is not None and not (
                isinstance(teams, list) and all(isinstance(t, int) for t in teams)
            ):
                raise RecordError("Teams", f"expected a list of team ids, got {teams!r}")
        if entity == "teams":
            members = record.get("TeamMembers")
            if members is not None and not (
                isinstance(members, list) and all(isinstance(t, int) for t in members)
            ):
                raise RecordError(
                    "TeamMembers", f"expected a list of coworker ids, got {members!r}"
                )

    def keep(self, entity: str, record: Record, now: float) -> bool:
        if entity == "coworkerinvoices":
            return not (
                record.get("Paid")
                or record.get("Void")
                or record.get("Draft")
                or record.get("CreditNote")
            )
        if entity == "bookings":
            return parse_instant(record["ToTime"]).timestamp() > now - BOOKING_WINDOW_S
        if entity == "visitors":
            return parse_instant(record["ExpectedArrival"]).timestamp() > now - VISITOR_PAST_S
        return entity != "cancelledbookings"  # read only to end their bookings

    def removes(self, entity: str, record: Record, world: World) -> list[tuple[str, str]]:
        # A cancelled booking leaves /bookings and appears in /cancelledbookings
        # with an Id of its own; UniqueId is the booking's.
        # https://developers.nexudus.com/rest-api/spaces/get-cancelledbookings
        if entity != "cancelledbookings" or not record.get("UniqueId"):
            return []
        return [
            ("bookings", str(b["Id"])) for b in world.by("bookings", "UniqueId", record["UniqueId"])
        ]

    # --- webhooks ----------------------------------------------------------------------

    def webhook(self, headers: Mapping[str, str], body: bytes, event: str | None) -> list[Hint]:
        if self.cfg.webhook_secret is not None:
            self._verify(headers, body)
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise WebhookRefused(400, "the body is not JSON") from None
        records = payload if isinstance(payload, list) else [payload]
        hints = []
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get("Id"), int):
                raise WebhookRefused(400, "expected a JSON array of records with an Id")
            entity = _entity_of_action(event) if event else None
            entity = entity or _entity_of_record(rec)
            if entity is None:
                log.info("%s: webhook for %s ignored (nothing the doors need)", self.name, event)
                continue
            hints.append(Hint(entity, str(rec["Id"])))
        return hints

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        assert self.cfg.webhook_secret is not None
        given = headers.get("X-Nexudus-Hook-Signature")
        if not given:
            raise WebhookRefused(401, "X-Nexudus-Hook-Signature is missing")
        try:
            raw = read_secret(self.state_dir, self.cfg.webhook_secret)
        except SecretError as exc:
            raise WebhookRefused(503, str(exc)) from None
        if raw is None:
            raise WebhookRefused(503, f"the webhook secret {self.cfg.webhook_secret!r} is missing")
        key = raw.strip()
        # The vendor's sample hashes ASCII bytes: a non-ASCII character becomes '?'.
        ascii_body = body.decode("utf-8", "replace").encode("ascii", "replace")
        for message in (body, ascii_body):
            expected = hmac.new(key, message, hashlib.sha256).hexdigest().upper()
            if hmac.compare_digest(expected, given.strip().upper()):
                return
        raise WebhookRefused(401, "X-Nexudus-Hook-Signature does not match the body")

    # --- mapping -------------------------------------------------------------------------

    def mapper(
        self, world: World, site_id: str, site: SiteSection, pin_key: bytes | None
    ) -> Mapper:
        return NexudusMapper(world, site, pin_key, self.cfg)

    def person_ref(self, holder: str) -> str | None:
        rest = holder.removeprefix("m-")
        return rest if rest != holder and rest.isdigit() else None

    # --- writes ---------------------------------------------------------------------------

    def _tag(self, w: Write) -> str:
        return f"[{EDGE_TAG} {w.event_id}]"

    def _payer(self, w: Write, world: World) -> int:
        if w.company is not None and w.company.startswith("co-"):
            team = world.get("teams", w.company[3:])
            if team is not None and isinstance(team.get("PayingMemberId"), int):
                return int(team["PayingMemberId"])
        ref = self.person_ref(w.person)
        if ref is None:
            raise Refused(400, f"{w.person!r} is not a Nexudus coworker")
        return int(ref)

    async def write(self, w: Write, site: SiteSection, world: World) -> str:
        business = int(site.locations[0])
        if w.kind == "checkin":
            # https://developers.nexudus.com/rest-api/spaces/post-checkins: Source is not
            # writable; SystemId ("only seen and updated through the API") carries our id.
            body: dict[str, Any] = {
                "BusinessId": business,
                "CoworkerId": self._payer(w, world)
                if w.company
                else int(self.person_ref(w.person) or 0),
                "FromTime": _utc(w.at),
                "SystemId": f"{EDGE_TAG}:{w.event_id}",
            }
            path = PATHS["checkins"]
        else:
            # https://developers.nexudus.com/rest-api/billing/post-charges
            body = {
                "BusinessId": business,
                "CoworkerId": self._payer(w, world),
                "Quantity": 1,
                "DiscountAmount": 0,
                "CreditAmount": 0,
                "TotalAmount": w.amount,
                "Description": f"{w.description} {self._tag(w)}",
                "SaleDate": _utc(w.at),
            }
            path = PATHS["charges"]
        reply = await self.http.request(
            "POST",
            self._url(path),
            json_body=body,
            authorize=self._authorize,
            reauthorize=self._reauthorize,
        )
        answer = reply.json()
        if not isinstance(answer, dict):
            raise BadReply("the answer to a write is not an object")
        if answer.get("WasSuccessful") is False:
            raise Refused(reply.status, str(answer.get("Message") or "WasSuccessful is false"))
        value = answer.get("Value")
        if isinstance(value, dict) and value.get("Id") is not None:
            return str(value["Id"])
        return "?"

    async def find(self, w: Write, site: SiteSection, world: World) -> str | None:
        if w.kind == "checkin":
            params = {
                "Checkin_Coworker": str(self.person_ref(w.person)),
                "from_Checkin_FromTime": _minute(w.at),
                "to_Checkin_FromTime": _minute(w.at + timedelta(minutes=1)),
            }
            path = PATHS["checkins"]
            marker = f"{EDGE_TAG}:{w.event_id}"
            field = "SystemId"
        else:
            # By payer and sale minute (our own SaleDate), whatever the description
            # filter's matching rule; the tag in the description decides.
            params = {
                "Charge_Coworker": str(self._payer(w, world)),
                "from_Charge_SaleDate": _minute(w.at),
                "to_Charge_SaleDate": _minute(w.at + timedelta(minutes=1)),
            }
            path = PATHS["charges"]
            marker = self._tag(w)
            field = "Description"
        page = 1
        while True:
            body = await self._get(path, {**params, "page": str(page), "size": "100"})
            if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
                raise ReadError(f"{path}: no Records in the answer")
            for rec in body["Records"]:
                if isinstance(rec, dict) and marker in str(rec.get(field) or ""):
                    return str(rec.get("Id"))
            if not body.get("HasNextPage") or not body["Records"]:
                return None
            page += 1

    def status(self) -> dict[str, Any]:
        return {
            "token_expires": iso(self._expires, ZoneInfo("UTC")) if self._token else None,
            "coworkers_read_whole": self.details_read,
        }


def _entity_of_action(action: str) -> str | None:
    # Longest prefix first: CoworkerContract* before Coworker*.
    for prefix in sorted(ACTIONS, key=len, reverse=True):
        if action.startswith(prefix):
            return ACTIONS[prefix]
    return None


def _entity_of_record(rec: Record) -> str | None:
    """The entity of a webhook record without its action, from the fields it carries."""
    if "TariffId" in rec and "CoworkerId" in rec:
        return "coworkercontracts"
    if "DueDate" in rec and "CoworkerId" in rec:
        return "coworkerinvoices"
    if "TimePassId" in rec and "CoworkerId" in rec:
        return "coworkertimepasses"
    if "ResourceId" in rec and "FromTime" in rec:
        return "bookings"
    if "TeamMembers" in rec or "PayingMemberId" in rec:
        return "teams"
    if "ExpectedArrival" in rec:
        return "visitors"
    if "AccessCardId" in rec or "CoworkerType" in rec or "Email" in rec:
        return "coworkers"
    return None


# --- the pure mapping ----------------------------------------------------------------------


def _matches(match: tuple[str, ...], rec: Record | None) -> bool:
    if rec is None:
        return False
    return "*" in match or str(rec.get("Id")) in match or rec.get("Name") in match


class NexudusMapper(SiteMapper):
    """Coworker -> member, Team -> company, Visitor -> guest, Booking -> booking."""

    label = "Nexudus"
    resource_id = "Id"
    resource_name = "Name"
    cfg: NexudusPlatform

    # --- keys --------------------------------------------------------------------------

    def keys(self) -> set[Key]:
        w = self.w
        return (
            {("member", f"m-{i}") for i in w.ids("coworkers")}
            | {("company", f"co-{i}") for i in w.ids("teams")}
            | {("guest", f"g-{i}") for i in w.ids("visitors")}
            | {("booking", f"b-{i}") for i in w.ids("bookings")}
            | {("room", r) for r in self.site.rooms}
        )

    def affected(self, entity: str, old: Record | None, new: Record | None) -> set[Key]:
        out: set[Key] = set()
        w = self.w
        for rec in (old, new):
            if rec is None:
                continue
            rid = rec.get("Id")
            if entity == "coworkers":
                out.add(("member", f"m-{rid}"))
                out |= {("guest", f"g-{v['Id']}") for v in w.by("visitors", "CoworkerId", rid)}
                out |= {("booking", f"b-{b['Id']}") for b in w.by("bookings", "CoworkerId", rid)}
                out |= {("company", f"co-{t['Id']}") for t in w.by("teams", "PayingMemberId", rid)}
            elif entity in ("coworkercontracts", "coworkertimepasses"):
                out.add(("member", f"m-{rec.get('CoworkerId')}"))
            elif entity == "coworkerinvoices":
                cid = rec.get("CoworkerId")
                out.add(("member", f"m-{cid}"))
                out |= {("company", f"co-{t['Id']}") for t in w.by("teams", "PayingMemberId", cid)}
            elif entity == "teams":
                out.add(("company", f"co-{rid}"))
                out |= {("member", f"m-{m}") for m in rec.get("TeamMembers") or []}
                out |= {("member", f"m-{c['Id']}") for c in w.by("coworkers", "Teams", rid)}
            elif entity == "tariffs":
                out |= {
                    ("member", f"m-{c.get('CoworkerId')}")
                    for c in w.by("coworkercontracts", "TariffId", rid)
                }
            elif entity == "timepasses":
                out |= {
                    ("member", f"m-{p.get('CoworkerId')}")
                    for p in w.by("coworkertimepasses", "TimePassId", rid)
                }
            elif entity == "bookings":
                out.add(("booking", f"b-{rid}"))
            elif entity == "resources":
                out |= {("room", r) for r in self.site.rooms}
                out |= {("booking", f"b-{b['Id']}") for b in w.by("bookings", "ResourceId", rid)}
            elif entity == "visitors":
                out.add(("guest", f"g-{rid}"))
        return out

    # --- helpers -----------------------------------------------------------------------

    def _here(self, business: object) -> bool:
        return str(business) in self.locations

    def _local_date(self, rec: Record, name: str) -> date | None:
        local = rec.get(f"{name}Local")
        if isinstance(local, str):
            try:
                return parse_instant(local, self.tz).replace(tzinfo=None).date()
            except ValueError:
                pass
        value = rec.get(name)
        if value is None:
            return None
        return parse_instant(value).astimezone(self.tz).date()

    def _plan_of(self, tariff_id: object) -> str | None:
        tariff = self.w.get("tariffs", str(tariff_id))
        for pid, plan in self.site.plans.items():
            if _matches(plan.match, tariff) or str(tariff_id) in plan.match:
                return pid
        return None

    def _teams_of(self, coworker: Record) -> list[str]:
        cid = coworker["Id"]
        ids = {str(t) for t in coworker.get("Teams") or []}
        ids |= {str(t["Id"]) for t in self.w.by("teams", "TeamMembers", cid)}
        return sorted(
            (
                t
                for t in ids
                if (team := self.w.get("teams", t)) is not None
                and self._here(team.get("BusinessId"))
            ),
            key=int,
        )

    def _unpaid_due(self, coworker_id: object) -> list[float]:
        out = []
        for inv in self.w.by("coworkerinvoices", "CoworkerId", coworker_id):
            if inv.get("Paid") or inv.get("Void") or inv.get("Draft") or inv.get("CreditNote"):
                continue
            if inv.get("BusinessId") is not None and not self._here(inv.get("BusinessId")):
                continue
            out.append(parse_instant(inv["DueDate"]).timestamp())
        return out

    def _is_day_pass(self, product: Record | None, product_id: object) -> bool:
        wanted = self.site.day_pass_products
        if wanted:
            return str(product_id) in wanted or (
                product is not None and product.get("Name") in wanted
            )
        return product is not None and product.get("MinutesIncluded") is None

    # --- objects -----------------------------------------------------------------------

    def _member(self, cid: str, now: float) -> Built:
        c = self.w.get("coworkers", cid)
        source = f"coworkers {cid}"
        if c is None or c.get("Active") is False or c.get("Archived") is True:
            return Built(None, source)
        holder = f"m-{cid}"
        today = datetime.fromtimestamp(now, self.tz).date()
        contracts = self.w.by("coworkercontracts", "CoworkerId", cid)
        passes = self.w.by("coworkertimepasses", "CoworkerId", cid)
        teams = self._teams_of(c)
        here = (
            self._here(c.get("InvoicingBusinessId"))
            or any(
                self._here((self.w.get("tariffs", str(k.get("TariffId"))) or {}).get("BusinessId"))
                for k in contracts
            )
            or any(self._here(p.get("BusinessId")) for p in passes)
            or bool(teams)
        )
        if not here:
            return Built(None, source)
        recheck: list[float] = []

        spans = []
        for k in contracts:
            plan = self._plan_of(k.get("TariffId"))
            if plan is None:
                continue
            start = self._local_date(k, "StartDate")
            end = self._local_date(k, "CancellationDate")
            if k.get("Cancelled") and end is None:
                continue  # cancelled without a date: it gives nothing
            spans.append(Span(plan, start, end, preferred=bool(k.get("MainContract"))))
        plans = plans_of(spans, today, self.site, self.tz)
        recheck += plans.rechecks

        billing, at = billing_status(self._unpaid_due(cid), self.site.grace_days, now, self.tz)
        if at is not None:
            recheck.append(at)

        creds = Credentials(holder)
        creds.card("card", c.get("AccessCardId"), self.site.card_format, "AccessCardId")
        if self.cfg.read_key_fobs:
            creds.card("fob", c.get("KeyFobNumber"), self.site.card_format, "KeyFobNumber")
        if self.cfg.read_pins:
            creds.pin("pin", c.get("AccessPincode"), self.pin_key, "AccessPincode")

        balance = 0
        day_passes = []
        for p in passes:
            if not self._here(p.get("BusinessId")) and p.get("BusinessId") is not None:
                continue
            product = self.w.get("timepasses", str(p.get("TimePassId")))
            if not self._is_day_pass(product, p.get("TimePassId")):
                continue
            used_on = self._local_date(p, "UsedDate") if p.get("UsedDate") else None
            if used_on == today:
                day_passes.append(
                    {"id": f"dp-{p['Id']}", "valid_from": today.isoformat(), "valid_to": None}
                )
                recheck.append(next_day_start(today, self.tz))
            expires = p.get("ExpireDate")
            if expires is not None and parse_instant(expires).timestamp() < now:
                continue
            remaining = p.get("RemainingUses")
            if p.get("Used") and not remaining:
                continue
            balance += remaining if isinstance(remaining, int) and remaining > 0 else 1
            if expires is not None:
                recheck.append(parse_instant(expires).timestamp())

        obj = {
            "id": holder,
            "name": c.get("FullName") or "",
            # A contact in no team and with no contract enters only with a pass,
            # a booking or a grant (the contract's nonmember); a team member is
            # a member whose access comes from the company.
            "kind": "member" if contracts or teams else "nonmember",
            "company": f"co-{teams[0]}" if teams else None,
            "company_manager": False,
            "plan": plans.plan,
            "contract": plans.contract,
            "billing": billing,
            "access": plans.grants,
            "credentials": creds.items,
            "day_passes": day_passes,
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

    def _company(self, tid: str, now: float) -> Built:
        t = self.w.get("teams", tid)
        source = f"teams {tid}"
        if t is None or not self._here(t.get("BusinessId")):
            return Built(None, source)
        billing, at = billing_status(
            self._unpaid_due(t.get("PayingMemberId")) if t.get("PayingMemberId") else [],
            self.site.grace_days,
            now,
            self.tz,
        )
        access = []
        for c in self.site.companies.values():
            if _matches(c.match, t):
                access += [{"group": g.group, "schedule": g.schedule} for g in c.access]
        obj = {
            "id": f"co-{tid}",
            "name": t.get("Name") or "",
            "billing": billing,
            "access": access,
            "day_passes": 0,
            "credits": 0,
        }
        return Built(obj, source, (), at)

    def _guest(self, vid: str, now: float) -> Built:
        v = self.w.get("visitors", vid)
        source = f"visitors {vid}"
        if v is None or not self._here(v.get("BusinessId")) or v.get("CoworkerId") is None:
            return Built(None, source)
        arrival = parse_instant(v["ExpectedArrival"])
        start = arrival - timedelta(hours=1)
        end = next_day_start(arrival.astimezone(self.tz).date(), self.tz)
        if end < now - 86400:
            return Built(None, source)
        holder = f"g-{vid}"
        creds = Credentials(holder)
        creds.pin("code", v.get("VisitorCode"), self.pin_key, "VisitorCode")
        obj = {
            "id": holder,
            "name": v.get("FullName") or "",
            "host": f"m-{v['CoworkerId']}",
            "valid_from": iso(start.timestamp(), self.tz),
            "valid_to": iso(end, self.tz),
            "access": [{"group": g.group, "schedule": g.schedule} for g in self.site.guest_access],
            "credentials": creds.items,
        }
        return Built(
            obj,
            source,
            tuple((f"guests[{holder}].credentials ({source} {f})", r) for f, r in creds.problems),
        )

    def _resource_here(self, resource: Record) -> bool:
        business = resource.get("BusinessId")
        return business is None or self._here(business)

    def _booking(self, bid: str, now: float) -> Built:
        b = self.w.get("bookings", bid)
        source = f"bookings {bid}"
        if b is None or b.get("CoworkerId") is None or b.get("Tentative"):
            return Built(None, source)
        room = self._room_of(b.get("ResourceId"))
        end = parse_instant(b["ToTime"])
        if room is None or end.timestamp() < now - BOOKING_WINDOW_S:
            return Built(None, source)
        start = parse_instant(b["FromTime"])
        obj = self._booking_object(
            bid, room, str(b["CoworkerId"]), start, end, bool(b.get("Invoiced"))
        )
        return Built(obj, source)
