"""The OfficeRnD Flex API v2, simulated, for the platform bridge's tests, demo and benchmarks.

One organisation's data behind `/api/v2/organizations/{org}/...` and the identity
server's `/oauth/token` (client credentials, `flex.*` scopes recorded per token).
Every shape follows the vendor's reference pages (each cited where it is built) and,
where those say nothing, what a third party observed on OfficeRnD's staging API:
see /work/notes/officernd.md for the sources and /work/notes/officernd-sim-choices.md
for what the simulator chose where the docs were unclear.

Records are kept as the API serves them (v2 field names, instants as ISO UTC with
milliseconds and `Z`) in one table per collection, in ascending `_id` order: ids are
ObjectIds whose leading timestamp never goes back, so the order of creation is the
order of `_id` and a cursor is the last `_id` served (base64 JSON, opaque to clients).
Fields that depend on the clock (a membership's `calculatedStatus`, a pass's `status`)
are computed when a record is served.

Every change an operator makes (`create`, `update`, `delete` and the shortcuts) bumps
the record's `modifiedAt` and fires the matching webhooks, signed with the webhook's
secret in the `officernd-signature` header. The world is guarded by `self.lock`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import hashlib
import hmac
import json
import math
import operator
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from http import HTTPStatus
from itertools import islice
from typing import Any, Literal
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from hwsim.httpserving import Request, Response
from hwsim.platforms.common import PlatformSim, RateLimit, dumps, retry_after_header

API_PREFIX = "/api/v2/organizations/"
# The identity server's https://identity.officernd.com/oauth/token, on the same host here.
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a password
MAX_LIMIT = 50  # https://developer.officernd.com/docs/building-queries
JSON_TYPE = "application/json; charset=utf-8"
OPERATOR = "5f0c1d2e3a4b5c6d7e8f9a0b"  # createdBy / modifiedBy: the admin user who made a change
SignatureStyle = Literal["signature", "v1"]

_ACTIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_OBJECT_ID = re.compile(r"[0-9a-f]{24}\Z")
_PARAM = re.compile(r"([A-Za-z_]+)(?:\[([^\]]*)\])?\Z")
_RANGE_OPS: dict[str, Callable[[str, str], bool]] = {"$gt": operator.gt, "$gte": operator.ge}
_RANGE_OPS |= {"$lt": operator.lt, "$lte": operator.le}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # corrupt(): remove the field instead of setting it


# --- what each collection accepts ------------------------------------------------------


def _f(names: str) -> frozenset[str]:
    return frozenset(names.split())


_AUDIT = _f("createdAt modifiedAt")


@dataclass(frozen=True)
class Collection:
    """What the API does with one collection: its scope (`<scope>.read|create|update|
    delete`), its webhook event prefix, the query parameters a list accepts (anything
    else is a 400), the fields PUT/PATCH may change, and whether DELETE is served."""

    scope: str
    event: str | None = None
    events: tuple[str, ...] = ("created", "updated", "removed")
    equal: frozenset[str] = _f("_id")  # field=value and field[$in]=a,b
    ranges: frozenset[str] = frozenset()  # instants: field[$gt|$gte|$lt|$lte]=ISO, field=ISO
    properties: bool = False  # records carry custom properties; properties[key]=value
    sortable: bool = False  # $sort (documented for members only)
    writable: frozenset[str] = frozenset()
    deletable: bool = False
    audit_by: bool = True  # createdBy / modifiedBy besides createdAt / modifiedAt


# fmt: off
COLLECTIONS: dict[str, Collection] = {
    # https://developer.officernd.com/reference/memberscontroller_getitems (filters, $sort)
    "members": Collection(
        "flex.community.members", "member", equal=_f("_id name email location company status"),
        ranges=_AUDIT, properties=True, sortable=True, deletable=True, audit_by=False,
        writable=_f("name email phone description location company status startDate properties "
                    "tags")),
    "companies": Collection(
        "flex.community.companies", "company", equal=_f("_id name email location status"),
        ranges=_AUDIT, properties=True, deletable=True,
        writable=_f("name email description location status properties tags")),
    # createdAt/modifiedAt filters and $sort are refused on staging (notes §2.2): no ranges;
    # PUT takes only startDate, endDate and price (observed).
    "memberships": Collection(
        "flex.community.memberships", "membership",
        equal=_f("_id member company location plan status"), properties=True, deletable=True,
        writable=_f("startDate endDate price")),
    "plans": Collection(
        "flex.billing.plans", equal=_f("_id name location"), ranges=_AUDIT, properties=True),
    # https://developer.officernd.com/reference/passescontroller_updateitem (PUT body: count);
    # pass.created and pass.updated are the only pass events in the vendor's list.
    "passes": Collection(
        "flex.space.passes", "pass", events=("created", "updated"),
        equal=_f("_id member company membership status"), ranges=_AUDIT, deletable=True,
        writable=_f("count")),
    "bookings": Collection(
        "flex.space.bookings", "booking",
        equal=_f("_id member company resource location isCancelled reference"),
        ranges=_AUDIT | _f("start end"), properties=True, deletable=True,
        writable=_f("start end resource title description isTentative properties")),
    "resources": Collection(
        "flex.space.resources", equal=_f("_id name type location"), ranges=_AUDIT,
        properties=True),
    # Filters as the n8n node sends them (notes §2.2); the events are named invoice.* (§6.2).
    "payments": Collection(
        "flex.billing.payments", "invoice",
        equal=_f("_id member company location number documentType status"),
        ranges=_AUDIT | _f("date dueDate"), properties=True),
    # https://developer.officernd.com/reference/feescontroller_getitems
    "fees": Collection(
        "flex.community.fees", "fee", equal=_f("_id name member company location plan"),
        ranges=_AUDIT | _f("issueDate"), properties=True, deletable=True,
        writable=_f("name price quantity issueDate properties")),
    # https://developer.officernd.com/reference/checkinscontroller_getvisitorcheckins (filters)
    "checkins": Collection(
        "flex.community.checkins", "checkin",
        equal=_f("_id member company location source booking pass"),
        ranges=_f("start end createdAt"), deletable=True, writable=_f("start end")),
    # https://developer.officernd.com/reference/visitorscontroller_getitem
    "visitors": Collection(
        "flex.community.visitors", equal=_f("_id name email member company type"),
        properties=True, deletable=True, audit_by=False),
    "visits": Collection(
        "flex.community.visits", equal=_f("_id visitor member company location"),
        ranges=_f("start end"), deletable=True, audit_by=False),
    # https://developer.officernd.com/reference/locationscontroller_getitems
    "locations": Collection(
        "flex.space.locations", equal=_f("_id name isOpen isPublic"), properties=True,
        audit_by=False),
    # https://developer.officernd.com/reference/webhookscontroller_getitems
    "webhooks": Collection("flex.settings.webhooks", deletable=True),
}

# What a record gets when the operator leaves a field out (the API's documented defaults).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "members": {"status": "active", "properties": {}},
    "companies": {"status": "active", "properties": {}},
    "memberships": {"isPersonal": False, "status": "approved", "type": "month_to_month",
                    "intervalLength": "month", "intervalCount": 1, "isLocked": False, "price": 0,
                    "source": "admin", "properties": {}},
    "plans": {"intervalLength": "month", "price": 0, "properties": {}},
    "passes": {"count": 1, "usedCount": 0, "intervalLength": "once", "isPersonal": True,
               "resourceType": "hotdesk", "shouldGrantActiveStatus": False},
    "bookings": {"timezone": "UTC", "isCancelled": False, "isTentative": False, "isFree": False,
                 "isAccounted": False, "source": "admin", "properties": {}},
    "resources": {"type": "meeting_room", "properties": {}},
    "payments": {"documentType": "invoice", "status": "awaiting_payment", "currency": "EUR",
                 "taxType": "included", "isPaid": False, "isFailed": False, "isSent": True,
                 "paidAmount": 0, "pendingAmount": 0, "allocatedAmount": 0, "properties": {}},
    "fees": {"quantity": 1, "planType": "Plan", "status": "approved", "isRefundable": False,
             "isPersonal": False, "shouldBillInAdvance": False, "shouldUseCoins": False,
             "source": "admin", "properties": {}},
    "checkins": {"end": None, "booking": None, "pass": None, "resourceType": "hotdesk"},
    "visitors": {"type": "preregistration", "properties": {}},
    "visits": {},
    "locations": {"isOpen": True, "isPublic": True, "timezone": "UTC", "properties": {}},
    "webhooks": {"description": "", "isEnabled": True},
}

# Body fields' types, for class-validator style 400 messages (notes §5).
_KINDS: dict[str, str] = {
    **dict.fromkeys(_f("name email phone description location company member plan resource "
                       "status title url visitor"), "str"),
    **dict.fromkeys(_f("startDate endDate issueDate start end"), "date"),
    **dict.fromkeys(_f("price quantity count"), "num"),
    **dict.fromkeys(_f("isPersonal isTentative shouldBillInAdvance isEnabled"), "bool"),
    "properties": "obj", "tags": "list", "eventTypes": "list",
}
# fmt: on

# Scopes a client may ask for: every collection's four, and the other v2 scope names in
# the notes' §1.3 (granted, though nothing here needs them).
ALL_SCOPES = frozenset(
    f"{spec.scope}.{action}"
    for spec in COLLECTIONS.values()
    for action in ("read", "create", "update", "delete")
) | _f(
    "flex.space.bookings.cancel flex.space.bookings.validate flex.space.resourceTypes.read "
    "flex.billing.payments.documents.read flex.billing.payments.methods.read "
    "flex.billing.payments.allocations.create flex.billing.payments.allocations.update "
    "flex.billing.charges.read flex.billing.charges.create flex.billing.charges.update "
    "flex.billing.charges.delete flex.space.credits.read flex.space.coins.read "
    "flex.settings.customProperties.read"
)

_MESSAGES = {
    "str": "{} must be a string",
    "date": "{} must be a valid ISO 8601 date string",
    "num": "{} must be a number conforming to the specified constraints",
    "bool": "{} must be a boolean value",
    "obj": "{} must be an object",
    "list": "{} must be an array",
}
_NULLABLE = _f("endDate end")
_INSTANT_FIELDS = _f(
    "startDate endDate issueDate date dueDate start end validFrom validTo createdAt modifiedAt"
)
# Referenced records a write must name correctly; a wrong one is a 500 (observed texts).
_REFS = {
    "location": ("locations", "Specified office was not found"),
    "plan": ("plans", "Specified plan was not found"),
    "member": ("members", "Specified member was not found"),
    "company": ("companies", "Specified company was not found"),
    "resource": ("resources", "Specified resource was not found"),
}


# --- errors ---------------------------------------------------------------------------


class ApiError(Exception):
    """An answer in the API's NestJS error shape."""

    def __init__(self, status: int, message: str | list[str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotFound(KeyError):
    """No record with this id (404 `Item with Id (<id>)` over HTTP)."""


class BusinessRule(Exception):
    """A write the platform refuses for a business reason: a 500 with the message, as
    observed on staging (400 with `fixed_bugs`)."""


def error_body(status: int, message: str | list[str]) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"statusCode": status, "message": message, "error": phrase}


def _json(status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, dumps(value), tuple(headers), content_type=JSON_TYPE)


def _cannot(request: Request) -> ApiError:
    # What NestJS answers for a route it does not have (observed: POST /{id} is a 404).
    return ApiError(404, f"Cannot {request.method} {request.path}")


# --- time -----------------------------------------------------------------------------


def iso(t: datetime) -> str:
    """An instant as the API writes it: `2024-10-31T13:00:00.000Z` (notes §7)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def midnight(d: date) -> str:
    """A calendar date as the API writes it: midnight UTC."""
    return f"{d.isoformat()}T00:00:00.000Z"


def parse_instant(value: object) -> datetime | None:
    """Any ISO 8601 date or instant (a naive one is UTC); None when it is not one."""
    if not isinstance(value, str) or len(value) < 8:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    """Operator input as stored: dates and datetimes (and ISO strings) in instant fields
    become the API's UTC form; everything else is copied as given."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, datetime):
            value = iso(value if value.tzinfo else value.replace(tzinfo=UTC))
        elif isinstance(value, date):
            value = midnight(value)
        elif key in _INSTANT_FIELDS and (t := parse_instant(value)) is not None:
            value = iso(t)
        else:
            value = copy.deepcopy(value)
        out[key] = value
    return out


def _day_after(instant: str) -> str | None:
    t = parse_instant(instant)
    return iso(t + timedelta(days=1)) if t else None


def membership_status(rec: dict[str, Any], now: str) -> str:
    """`calculatedStatus` from the dates; the end date is the last day of the membership."""
    if rec.get("status") == "not_approved":
        return "not_approved"
    start, end = rec.get("startDate"), rec.get("endDate")
    if isinstance(start, str) and start > now:
        return "not_started"
    if isinstance(end, str) and (after := _day_after(end)) is not None and after <= now:
        return "expired"
    return "active"


def pass_status(rec: dict[str, Any], now: str) -> str:
    count, used = rec.get("count"), rec.get("usedCount")
    if isinstance(count, int | float) and isinstance(used, int | float) and used >= count:
        return "used"
    valid_to, valid_from = rec.get("validTo"), rec.get("validFrom")
    if isinstance(valid_to, str) and (after := _day_after(valid_to)) is not None and after <= now:
        return "expired"
    if isinstance(valid_from, str) and valid_from > now:
        return "pending"
    return "valid"


# --- rate limits ----------------------------------------------------------------------


class _Window(RateLimit):
    def reset_s(self) -> float:
        """Seconds until the oldest request in the window leaves it."""
        now = time.monotonic()
        with self._lock:
            live = [t for t in self._times if t > now - self.window_s]
        return max(0.0, live[0] + self.window_s - now) if live else 0.0


class ReadWriteLimit(RateLimit):
    """Reads (GET) and writes (POST/PUT/PATCH/DELETE) counted apart, as v2 does
    ("Independent read/write tracking", https://developer.officernd.com/docs/api-v2-migration-guide).
    `set()` gives both classes the same limit; `read.set()` / `write.set()` one of them;
    `token` limits the identity server's token endpoint (none unless set). The class of
    the request in hand is per thread: the server answers each connection in its own."""

    def __init__(self) -> None:
        super().__init__()
        self.read = _Window()
        self.write = _Window()
        self.token = _Window()
        self._current = threading.local()

    def use(self, kind: str) -> None:
        self._current.kind = kind

    def bucket(self, kind: str | None = None) -> _Window:
        name = kind if kind is not None else str(getattr(self._current, "kind", "read"))
        window: _Window = getattr(self, name)
        return window

    def set(self, requests: int | None, window_s: float = 1.0) -> None:
        self.read.set(requests, window_s)
        self.write.set(requests, window_s)

    def take(self, now: float | None = None) -> float | None:
        wait = self.bucket().take(now)
        if wait is not None:
            self.refused += 1
        return wait

    def remaining(self, now: float | None = None) -> int | None:
        return self.bucket().remaining(now)

    def headers(self, kind: str) -> tuple[tuple[str, str], ...]:
        """The `x-ratelimit-*-<kind>-minute` headers observed on staging (notes §3)."""
        bucket = self.bucket(kind)
        if kind == "token" or bucket.requests is None:
            return ()
        left = max(0, bucket.remaining() or 0)
        return (
            (f"x-ratelimit-limit-{kind}-minute", str(bucket.requests)),
            (f"x-ratelimit-remaining-{kind}-minute", str(left)),
            (f"x-ratelimit-reset-{kind}-minute", str(math.ceil(bucket.reset_s()))),
        )


# --- webhook signatures -----------------------------------------------------------------


def signature_header(secret: str, body: bytes, t: int, style: SignatureStyle) -> str:
    """`officernd-signature`: "signature" is what the vendor's own webhooks-demo checks
    (HMAC-SHA256 hex over rawBody + "." + t, github.com/officernd/webhooks-demo index.js);
    "v1" is the Stripe-like form some clients expected (over t + "." + rawBody)."""
    if style == "v1":
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"
    mac = hmac.new(secret.encode(), body + f".{t}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},signature={mac}"


# --- paging -----------------------------------------------------------------------------


@dataclass
class _Query:
    limit: int = MAX_LIMIT
    cursor: dict[str, Any] | None = None
    backwards: bool = False
    select: list[str] | None = None
    sort: tuple[str, bool] | None = None  # field, descending
    tests: list[Callable[[dict[str, Any]], bool]] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(text: str) -> dict[str, Any] | None:
    try:
        state = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return None
    ok = isinstance(state, dict) and isinstance(state.get("offset"), int)
    return state if ok and state["offset"] >= 0 else None


def _parse_query(spec: Collection, params: dict[str, list[str]]) -> _Query:
    """The list parameters of https://developer.officernd.com/docs/building-queries and
    the reference pages; anything the collection does not accept is named in a 400."""
    q, errors = _Query(), []
    for key, values in params.items():
        value = values[-1]
        if key == "$limit":
            if not re.fullmatch(r"-?\d+", value):
                errors.append("$limit must be a number conforming to the specified constraints")
            elif int(value) > MAX_LIMIT:
                errors.append(f"$limit must not be greater than {MAX_LIMIT}")
            elif int(value) < 0:
                errors.append("$limit must not be less than 0")
            else:
                q.limit = int(value) or MAX_LIMIT
        elif key in ("$cursorNext", "$cursorPrev"):
            if value in ("", "null"):
                continue
            if q.cursor is not None:
                errors.append("$cursorNext and $cursorPrev cannot be used together")
            elif (state := _decode_cursor(value)) is None:
                errors.append(f"{key} must be a valid cursor")
            else:
                q.cursor, q.backwards = state, key == "$cursorPrev"
        elif key == "$select":
            q.select = [name.strip() for name in value.split(",") if name.strip()]
        elif key == "$sort" and spec.sortable:
            try:
                order = json.loads(value)
                (name, direction), *_ = order.items()
            except (ValueError, AttributeError):
                errors.append("$sort must be a json string")
                continue
            q.sort = (name, direction in ("desc", -1, "-1"))
        else:
            test = _filter(spec, key, value)
            if isinstance(test, str):
                errors.append(test)
            else:
                q.tests.append(test)
    if errors:
        raise ApiError(400, errors)
    return q


def _filter(spec: Collection, key: str, value: str) -> Callable[[dict[str, Any]], bool] | str:
    """A test on a served record, or the error message for the parameter."""
    m = _PARAM.match(key)
    name, op = (m.group(1), m.group(2)) if m else (key, None)
    if name == "properties" and spec.properties and op:
        return lambda r: isinstance(p := r.get("properties"), dict) and _text(p.get(op)) == value
    if name in spec.ranges and op in (None, *_RANGE_OPS):
        t = parse_instant(value)
        if t is None:
            return f"{name} must be a valid ISO 8601 date string"
        bound = iso(t)
        compare: Callable[[str, str], bool] = _RANGE_OPS.get(op or "", operator.eq)
        return lambda r: isinstance(v := r.get(name), str) and compare(v, bound)
    if name in spec.equal and op in (None, "$in"):
        wanted = set(value.split(",")) if op else {value}
        return lambda r: _text(r.get(name)) in wanted
    return f"property {name} should not exist"


# --- the simulator ----------------------------------------------------------------------


class OfficeRndSim(PlatformSim):
    """One OfficeRnD organisation, served over HTTP.

    What tests read and set while it runs (besides `PlatformSim`'s `faults`, `rate`,
    `tokens`, `calls`, `webhooks`): `granted_scopes` (what the client may ask a token
    for), `fixed_bugs` (True: 403 for a missing scope, 404 for an unknown organisation,
    400 for a business rule, where staging answers 401/500/500).
    """

    name = "officernd"
    throttle_status = 429
    rate: ReadWriteLimit

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        organization: str = "mitte-coworking",
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",  # noqa: S107 - the simulator's well-known test secret
        token_lifetime_s: float = 3600,
        scopes: Iterable[str] | None = None,
        fixed_bugs: bool = False,
        memberships_modified_filter: bool = False,
    ) -> None:
        super().__init__(host=host, port=port)
        self.organization = organization
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.granted_scopes: set[str] = set(ALL_SCOPES if scopes is None else scopes)
        self.fixed_bugs = fixed_bugs
        self.collections = dict(COLLECTIONS)
        if memberships_modified_filter:
            spec = self.collections["memberships"]
            self.collections["memberships"] = replace(spec, ranges=_AUDIT)
        self.rate = ReadWriteLimit()
        self._token_scopes: dict[str, frozenset[str]] = {}
        self._data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLLECTIONS}
        self._order: dict[str, list[str]] = {name: [] for name in COLLECTIONS}
        self._corrupted: dict[str, set[str]] = {}  # record id -> fields served as they are
        self._styles: dict[str, SignatureStyle] = {}  # webhook id -> signature style
        self._id_time = 0
        self._id_machine = secrets.randbits(40)
        self._id_count = secrets.randbits(16)
        self._invoice_number = 0

    # --- requests ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == TOKEN_PATH:
            kind = "token"
        else:
            kind = "read" if request.method in ("GET", "HEAD") else "write"
        self.rate.use(kind)
        response = super().handle(request)
        if response.drop:
            return response
        return replace(response, headers=response.headers + self.rate.headers(kind))

    def endpoint(self, path: str) -> str:
        return "/".join("{id}" if _OBJECT_ID.match(p) else p for p in path.split("/"))

    def error_response(
        self, status: int, message: str | list[str], headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return _json(status, error_body(status, message), headers)

    def throttled(self, wait_s: float) -> Response:
        return self.error_response(429, "Too Many Requests", [retry_after_header(wait_s)])

    def route(self, request: Request) -> Response:
        try:
            if request.path == TOKEN_PATH and request.method == "POST":
                return self._token(request)
            return self._api(request)
        except ApiError as exc:
            return self.error_response(exc.status, exc.message)
        except NotFound as exc:
            return self.error_response(404, f"Item with Id ({exc.args[0]})")
        except BusinessRule as exc:
            return self.error_response(400 if self.fixed_bugs else 500, str(exc))

    def _token(self, request: Request) -> Response:
        """https://developer.officernd.com/v2.0-Flex/docs/authentication; the error shapes
        are RFC 6749 §5.2 (the vendor's are not documented)."""
        form = {k: v[-1] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        given_id, given_secret = form.get("client_id", ""), form.get("client_secret", "")
        if not (
            hmac.compare_digest(given_id, self.client_id)
            and hmac.compare_digest(given_secret, self.client_secret)
        ):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials")
        requested = form.get("scope", "").split()
        if not requested:
            return _oauth_error(400, "invalid_scope", "scope: required")
        ungranted = [s for s in requested if s not in self.granted_scopes]
        if ungranted:
            return _oauth_error(400, "invalid_scope", f"not granted: {' '.join(ungranted)}")
        token = self.tokens.issue(self.token_lifetime_s)
        with self.lock:
            self._token_scopes[token] = frozenset(requested)
        return _json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": max(0, int(self.token_lifetime_s) - 1),  # the docs show 3599
                "scope": " ".join(requested),
            },
            [("Cache-Control", "no-store")],
        )

    def _api(self, request: Request) -> Response:
        if not request.path.startswith(API_PREFIX):
            raise _cannot(request)
        authorization = request.headers.get("authorization")
        if self.tokens.check(authorization) != "ok":
            # Missing, invalid and expired tokens all look alike (notes §1.4).
            raise ApiError(401, "Unauthorized access")
        org, _, rest = request.path[len(API_PREFIX) :].partition("/")
        if org != self.organization:
            raise ApiError(404 if self.fixed_bugs else 500, "Organization not found")
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts or parts[0] not in self.collections:
            raise _cannot(request)
        name, spec = parts[0], self.collections[parts[0]]
        action = _ACTIONS.get(method)
        if action is None:
            raise _cannot(request)
        if name == "checkins" and parts[1:2] == ["checkout"]:
            action = "update"
        token = (authorization or "")[len("Bearer ") :].strip()
        with self.lock:
            granted = self._token_scopes.get(token, frozenset())
        if f"{spec.scope}.{action}" not in granted:
            raise ApiError(403 if self.fixed_bugs else 401, "Unauthorized access")
        with self.lock:
            now = iso(self.now())
            shape = (method, len(parts))
            if shape == ("GET", 1):
                return self._list(name, spec, request, now)
            if shape == ("GET", 2) and parts[1] == "count":
                return _json(200, {"total": len(self._data[name])})
            if shape == ("GET", 2):
                return _json(200, self._view(name, self._record(name, parts[1]), now, True))
            if method == "POST" and name == "checkins":
                if len(parts) == 3 and parts[1] == "checkout":
                    return _json(200, self._checkout(parts[2], now))
                if len(parts) <= 2:
                    member = parts[1] if len(parts) == 2 else None
                    return _json(201, self._checkin(_body(request), member, now))
            if shape == ("POST", 1) and name == "fees":
                return _json(201, self._add_fee(_body(request), now))
            if shape == ("POST", 1) and name == "webhooks":
                return _json(201, self._add_webhook_http(_body(request), now))
            if method in ("PUT", "PATCH") and len(parts) == 2 and spec.writable:
                return _json(200, self._put(name, spec, parts[1], _body(request), now))
            if shape == ("DELETE", 2) and spec.deletable:
                return _json(200, self._remove(name, parts[1], now))
        raise _cannot(request)

    # --- reads -------------------------------------------------------------------------

    def _list(self, name: str, spec: Collection, request: Request, now: str) -> Response:
        """One page in the envelope of https://developer.officernd.com/docs/building-queries;
        `cursorNext`/`cursorPrev` are left out when there is no such page (as observed)."""
        q = _parse_query(spec, request.params())
        order, table = self._order[name], self._data[name]

        def matching(ids: Iterable[str]) -> Iterator[dict[str, Any]]:
            for rid in ids:
                view = self._view(name, table[rid], now, False)
                if all(test(view) for test in q.tests):
                    yield view

        offset = q.cursor["offset"] if q.cursor else 0
        if q.sort is not None:
            key, descending = q.sort
            every = sorted(matching(order), key=lambda r: _text(r.get(key)), reverse=descending)
            start = max(0, offset - q.limit) if q.backwards else offset
            page = every[start : start + q.limit]
            more_after, more_before = start + len(page) < len(every), start > 0
        elif q.backwards and q.cursor is not None:
            i = bisect.bisect_left(order, str(q.cursor.get("id", "")))
            got = list(islice(matching(order[j] for j in range(i - 1, -1, -1)), q.limit + 1))
            page = got[: q.limit][::-1]
            start, more_after, more_before = max(0, offset - len(page)), True, len(got) > q.limit
        else:
            i = bisect.bisect_right(order, str(q.cursor.get("id", ""))) if q.cursor else 0
            got = list(islice(matching(islice(order, i, None)), q.limit + 1))
            page = got[: q.limit]
            start, more_after, more_before = offset, len(got) > q.limit, offset > 0
        if q.select is not None:
            page = [{k: r[k] for k in ("_id", *q.select) if k in r} for r in page]
        envelope: dict[str, Any] = {"results": page}
        if page and more_after:
            envelope["cursorNext"] = _encode_cursor(
                {"id": page[-1].get("_id"), "offset": start + len(page)}
            )
        if page and more_before:
            envelope["cursorPrev"] = _encode_cursor({"id": page[0].get("_id"), "offset": start})
        envelope["rangeStart"] = start + 1 if page else 0
        envelope["rangeEnd"] = start + len(page)
        return _json(200, envelope)

    def _record(self, name: str, rid: str) -> dict[str, Any]:
        try:
            return self._data[name][rid]
        except KeyError:
            raise NotFound(rid) from None

    def _view(self, name: str, rec: dict[str, Any], now: str, single: bool) -> dict[str, Any]:
        """A record as served: computed statuses filled in, and `properties` left out of a
        single read when empty but always present in a list (observed on staging)."""
        out = dict(rec)
        kept = self._corrupted.get(rec.get("_id", ""), ())
        if name == "memberships" and "calculatedStatus" not in kept:
            out["calculatedStatus"] = membership_status(rec, now)
        elif name == "passes" and "status" not in kept:
            out["status"] = pass_status(rec, now)
        if self.collections[name].properties and "properties" not in kept:
            if single and not out.get("properties"):
                out.pop("properties", None)
            else:
                out.setdefault("properties", {})
        return out

    # --- writes over HTTP ----------------------------------------------------------------

    def _validate(
        self, body: dict[str, Any], allowed: Sequence[str], required: Iterable[str] = ()
    ) -> None:
        """class-validator's checks: unknown properties, then each field's type."""
        errors = [f"property {k} should not exist" for k in body if k not in allowed]
        for key in allowed:
            if key not in body:
                if key in required:
                    errors.append(_MESSAGES[_KINDS[key]].format(key))
            elif not (body[key] is None and key in _NULLABLE) and not _is_kind(
                body[key], _KINDS[key]
            ):
                errors.append(_MESSAGES[_KINDS[key]].format(key))
        if errors:
            raise ApiError(400, errors)

    def _check_refs(self, fields: dict[str, Any]) -> None:
        for key, (collection, message) in _REFS.items():
            if fields.get(key) is not None and fields[key] not in self._data[collection]:
                raise BusinessRule(message)

    def _put(
        self, name: str, spec: Collection, rid: str, body: dict[str, Any], now: str
    ) -> dict[str, Any]:
        """PUT and PATCH alike, both partial (notes §5: the docs disagree on the verb)."""
        rec = self._record(name, rid)
        self._validate(body, sorted(spec.writable))
        fields = _normalized(body)
        self._check_refs(fields)
        merged = {**rec, **fields}
        start_key = "startDate" if name == "memberships" else "start"
        end = merged.get("endDate" if name == "memberships" else "end")
        if isinstance(end, str) and str(merged.get(start_key)) > end:
            if name == "memberships":
                raise BusinessRule("Membership startDate should be before the endDate")
            raise BusinessRule("The start should be before the end")
        if isinstance(props := fields.get("properties"), dict):
            old = rec.get("properties")
            merged_props = {**(old if isinstance(old, dict) else {}), **props}
            fields["properties"] = {k: v for k, v in merged_props.items() if v is not None}
        self._change(name, rid, fields, now)
        return self._view(name, rec, now, True)

    def _add_fee(self, body: dict[str, Any], now: str) -> dict[str, Any]:
        """https://developer.officernd.com/reference/feescontroller_additem: 201 with the fee."""
        required = ("name", "issueDate", "location", "plan", "price")
        optional = ("member", "company", "quantity", "isPersonal", "properties")
        self._validate(body, (*required, *optional, "shouldBillInAdvance"), required)
        fields = _normalized(body)
        self._check_refs(fields)
        fields.setdefault("isPersonal", "member" in fields)
        fields["source"] = "api"
        rid = self._add("fees", fields, now)
        return self._view("fees", self._data["fees"][rid], now, True)

    def _checkin(self, body: dict[str, Any], member: str | None, now: str) -> dict[str, Any]:
        """`POST /checkins/{memberId}` (the n8n node's form) or `POST /checkins` with
        `member` in the body (notes §4.10): 201 with the check-in. A member's unused pass
        is consumed by their first check-in of the day (the location's day)."""
        allowed = ["location", "start", "end"] + (["member"] if member is None else [])
        self._validate(body, allowed, ("location", "member"))
        fields = _normalized(body)
        member = member or fields.pop("member")
        person = self._record("members", member)
        self._check_refs(fields)
        start = fields.get("start") or now
        end = fields.get("end")
        if isinstance(end, str) and start > end:
            raise BusinessRule("The start should be before the end")
        location = fields["location"]
        record = {
            "start": start,
            "end": end,
            "member": member,
            "company": person.get("company"),
            "location": location,
            "booking": self._booking_at(member, location, start),
            "pass": self._use_pass(member, person.get("company"), location, start, now),
            "resourceType": "hotdesk",
            "source": "api",
        }
        fields = {k: v for k, v in record.items() if k != "company" or v}
        rid = self._add("checkins", fields, now)
        return self._view("checkins", self._data["checkins"][rid], now, True)

    def _checkout(self, member: str, now: str) -> dict[str, Any]:
        """https://developer.officernd.com/reference/checkinscontroller_checkout"""
        self._record("members", member)
        open_ = [r for r in self._data["checkins"].values() if r.get("member") == member]
        open_ = [r for r in open_ if r.get("end") is None]
        if not open_:
            raise BusinessRule("Member is not checked in")
        rec = open_[-1]
        self._change("checkins", rec["_id"], {"end": now}, now)
        return self._view("checkins", rec, now, True)

    def _booking_at(self, member: str, location: str, start: str) -> str | None:
        """The member's booking at the location that `start` falls in (from 15 minutes
        before its start), which the check-in then points at."""
        t = parse_instant(start)
        if t is None:
            return None
        early = iso(t + timedelta(minutes=15))
        for rec in self._data["bookings"].values():
            if rec.get("member") != member or rec.get("location") != location:
                continue
            if rec.get("isCancelled") or not isinstance(rec.get("start"), str):
                continue
            if rec["start"] <= early and start < str(rec.get("end")):
                return str(rec["_id"])
        return None

    def _use_pass(
        self, member: str, company: str | None, location: str, start: str, now: str
    ) -> str | None:
        tz = ZoneInfo(str(self._data["locations"].get(location, {}).get("timezone", "UTC")))
        t = parse_instant(start)
        if t is None:
            return None
        day = t.astimezone(tz).date()
        for rec in self._data["checkins"].values():
            if rec.get("member") == member and rec.get("pass"):
                earlier = parse_instant(rec.get("start"))
                if earlier is not None and earlier.astimezone(tz).date() == day:
                    return str(rec["pass"])  # the day is paid for already
        candidates = []
        for rec in self._data["passes"].values():
            mine = rec.get("member") == member or (
                company and not rec.get("isPersonal") and rec.get("company") == company
            )
            if not mine or rec.get("location", location) != location:
                continue
            if pass_status(rec, start) == "valid":
                candidates.append(rec)
        if not candidates:
            return None
        chosen = min(candidates, key=lambda r: str(r.get("validTo") or "~"))
        self._change("passes", chosen["_id"], {"usedCount": chosen.get("usedCount", 0) + 1}, now)
        return str(chosen["_id"])

    def _add_webhook_http(self, body: dict[str, Any], now: str) -> dict[str, Any]:
        """`POST /webhooks` `{url, eventTypes, description}`; the answer carries `secret`."""
        allowed = ("url", "eventTypes", "description", "isEnabled")
        self._validate(body, allowed, ("url", "eventTypes"))
        rid = self._add("webhooks", {**body, "secret": str(uuid.uuid4())}, now)
        self._styles[rid] = "signature"
        return self._view("webhooks", self._data["webhooks"][rid], now, True)

    # --- the world ---------------------------------------------------------------------

    def _new_id(self) -> str:
        """An ObjectId (time, machine, counter) that sorts after every earlier one."""
        self._id_count = (self._id_count + 1) % 0x1000000
        self._id_time = max(self._id_time + (self._id_count == 0), int(self.now().timestamp()))
        return f"{self._id_time:08x}{self._id_machine:010x}{self._id_count:06x}"

    def _add(
        self, name: str, fields: dict[str, Any], now: str | None = None, fire: bool = True
    ) -> str:
        now = now or iso(self.now())
        rid = self._new_id()
        rec: dict[str, Any] = {"_id": rid, **fields}
        for key, value in _DEFAULTS[name].items():
            rec.setdefault(key, copy.deepcopy(value))
        if name == "memberships" and "isPersonal" not in fields:
            rec["isPersonal"] = "member" in fields and "company" not in fields
        if name == "bookings":
            rec.setdefault("reference", secrets.token_hex(4)[:7].upper())
        rec.setdefault("createdAt", now)
        rec.setdefault("modifiedAt", rec["createdAt"])
        if self.collections[name].audit_by:
            rec.setdefault("createdBy", OPERATOR)
            rec.setdefault("modifiedBy", OPERATOR)
        self._data[name][rid] = rec
        self._order[name].append(rid)
        if fire:
            self._fire(name, "created", self._view(name, rec, now, True), {})
        return rid

    def _change(self, name: str, rid: str, fields: dict[str, Any], now: str) -> None:
        """Set the fields that differ, bump `modifiedAt`, fire `<event>.updated` with the
        old values in `previousAttributes`. No difference: nothing happens (observed)."""
        rec = self._record(name, rid)
        previous = {k: rec.get(k) for k, v in fields.items() if rec.get(k, MISSING) != v}
        if not previous:
            return
        rec.update({k: fields[k] for k in previous})
        if "modifiedAt" not in fields:
            rec["modifiedAt"] = now
        if "modifiedBy" in rec:
            rec["modifiedBy"] = OPERATOR
        self._fire(name, "updated", self._view(name, rec, now, True), previous)

    def _remove(self, name: str, rid: str, now: str) -> dict[str, Any]:
        """Hard delete; 200 with the record as it was (notes §8)."""
        view = self._view(name, self._record(name, rid), now, True)
        del self._data[name][rid]
        order = self._order[name]
        del order[bisect.bisect_left(order, rid)]
        self._corrupted.pop(rid, None)
        self._styles.pop(rid, None)
        self._fire(name, "removed", view, {})
        return view

    def _fire(self, name: str, action: str, obj: dict[str, Any], previous: dict[str, Any]) -> None:
        """POST the event to every enabled webhook that wants it. The payload is the shape
        third-party receivers read (notes §6.3); the body is serialised once and exactly
        those bytes are signed."""
        spec = self.collections[name]
        if spec.event is None or action not in spec.events:
            return
        event_type = f"{spec.event}.{action}"
        hooks = [
            h
            for h in self._data["webhooks"].values()
            if h.get("isEnabled", True) and event_type in (h.get("eventTypes") or ())
        ]
        if not hooks:
            return
        now = self.now()
        body = dumps(
            {
                "event": self._new_id(),
                "eventType": event_type,
                "data": {"object": obj, "previousAttributes": previous},
                "createdAt": iso(now),
            }
        )
        t = int(now.timestamp())
        for hook in hooks:
            style = self._styles.get(hook["_id"], "signature")
            signature = signature_header(str(hook.get("secret", "")), body, t, style)
            headers = {"Content-Type": "application/json", "officernd-signature": signature}
            self.webhooks.send(str(hook["url"]), body, headers)

    # --- the operator's API (thread-safe) -------------------------------------------------

    def _spec(self, entity: str) -> Collection:
        if entity not in self.collections:
            raise ValueError(f"entity: {entity!r} (expected one of: {', '.join(COLLECTIONS)})")
        return self.collections[entity]

    def create(self, entity: str, fields: dict[str, Any]) -> str:
        """A record as the operator makes it in the UI; defaults fill what is left out."""
        self._spec(entity)
        with self.lock:
            return self._add(entity, _normalized(fields))

    def update(self, entity: str, id: str, **fields: Any) -> None:
        self._spec(entity)
        with self.lock:
            self._change(entity, id, _normalized(fields), iso(self.now()))

    def delete(self, entity: str, id: str) -> None:
        self._spec(entity)
        with self.lock:
            self._remove(entity, id, iso(self.now()))

    def get(self, entity: str, id: str) -> dict[str, Any]:
        self._spec(entity)
        with self.lock:
            rec = self._record(entity, id)
            return copy.deepcopy(self._view(entity, rec, iso(self.now()), False))

    def records(self, entity: str) -> list[dict[str, Any]]:
        self._spec(entity)
        with self.lock:
            now = iso(self.now())
            return [
                copy.deepcopy(self._view(entity, self._data[entity][rid], now, False))
                for rid in self._order[entity]
            ]

    def corrupt(self, entity: str, id: str, field: str, value: Any = MISSING) -> None:
        """Serve the record malformed: `field` removed (MISSING) or set to `value`, with no
        validation and no webhook; `modifiedAt` is bumped so an incremental read sees it."""
        self._spec(entity)
        with self.lock:
            rec = self._record(entity, id)
            if value is MISSING:
                rec.pop(field, None)
            else:
                rec[field] = copy.deepcopy(value)
            self._corrupted.setdefault(id, set()).add(field)
            if field != "modifiedAt":
                rec["modifiedAt"] = iso(self.now())

    def add_webhook(
        self,
        url: str,
        events: Iterable[str],
        signature_style: SignatureStyle = "signature",
        description: str = "",
    ) -> str:
        """Subscribe `url` to the event types; returns the webhook's secret."""
        if signature_style not in ("signature", "v1"):
            raise ValueError(f"signature_style: {signature_style!r} (signature or v1)")
        secret = str(uuid.uuid4())
        fields = {"url": url, "description": description, "eventTypes": list(events)}
        with self.lock:
            rid = self._add("webhooks", {**fields, "secret": secret})
            self._styles[rid] = signature_style
        return secret

    def end_membership(self, id: str, on: date) -> None:
        """The operator ends a membership: `on` is its last day."""
        self.update("memberships", id, endDate=on)

    def add_invoice(
        self,
        member: str | None = None,
        company: str | None = None,
        *,
        due: date | datetime,
        amount: float = 100.0,
    ) -> str:
        """An unpaid invoice of a member or a company, issued 14 days before `due`."""
        if (member is None) == (company is None):
            raise ValueError("add_invoice: give a member or a company")
        with self.lock:
            owner = self._record("members" if member else "companies", member or company or "")
            location = owner.get("location") or next(iter(self._data["locations"]), None)
            party = {"member": member} if member else {"company": company}
            return self._add("payments", self._invoice(party, location, due, amount, paid=False))

    def _invoice(
        self, party: dict[str, Any], location: Any, due: date | datetime, amount: float, paid: bool
    ) -> dict[str, Any]:
        """A payment record in the shape of https://developer.officernd.com/reference/
        paymentscontroller_updateallocationaccounting (documentType invoice, one line)."""
        self._invoice_number += 1
        due_day = due.date() if isinstance(due, datetime) else due
        line = {"description": "Membership fees", "quantity": 1, "unitPrice": amount}
        line |= {"price": amount, "subTotal": amount, "total": amount}
        fields = {"number": f"INV-{self._invoice_number:05d}", **party, "location": location}
        fields |= {"date": midnight(due_day - timedelta(days=14))}
        fields |= _normalized({"dueDate": due}) | {"lines": [line]}
        fields |= dict.fromkeys(("subTotal", "amount", "total", "baseTotal"), amount)
        if paid:
            return fields | {
                "status": "paid",
                "isPaid": True,
                "paidAmount": amount,
                "payableAmount": 0,
            }
        return fields | {"payableAmount": amount}

    def pay_invoice(self, id: str) -> None:
        with self.lock:
            total = self._record("payments", id).get("total", 0)
            fields = {"status": "paid", "isPaid": True, "paidAmount": total, "payableAmount": 0}
            self._change("payments", id, fields, iso(self.now()))

    def cancel_booking(self, id: str) -> None:
        self.update("bookings", id, isCancelled=True)

    def sell_day_pass(self, member_id: str) -> str:
        """A set of one day pass, valid from today (UTC) for 90 days."""
        with self.lock:
            company = self._record("members", member_id).get("company")
            today = self.now().date()
            fields = {"member": member_id, **({"company": company} if company else {})}
            fields |= {"startDate": today, "validFrom": today}
            fields |= {"validTo": today + timedelta(days=90)}
            return self._add("passes", _normalized(fields))

    # --- example and large data ----------------------------------------------------------

    def _ensure(self, entity: str, name: str, fields: dict[str, Any]) -> str:
        """The record of this name, made when there is none (shared by both loaders)."""
        for rec in self._data[entity].values():
            if rec.get("name") == name:
                return str(rec["_id"])
        return self._add(entity, _normalized({"name": name, **fields}))

    def _base(self) -> dict[str, str]:
        ids = {"mitte": self._ensure("locations", "Mitte", _MITTE)}
        for key, name, price, interval in _PLANS:
            fields = {"price": price, "intervalLength": interval, "location": ids["mitte"]}
            ids[key] = self._ensure("plans", name, fields)
        room = {"type": "meeting_room", "location": ids["mitte"]}
        ids["ada_room"] = self._ensure("resources", "Ada room", room)
        return ids

    def load_example(self, today: date) -> dict[str, Any]:
        """The example story (the cast of `hwsim.sitegen`), in OfficeRnD's terms; returns
        story key -> `_id`. `today` is the site-local date; dates are midnight UTC."""
        tz = ZoneInfo(_MITTE["timezone"])

        def day(n: int) -> date:
            return today + timedelta(days=n)

        def at(hhmm: str) -> datetime:
            return datetime.combine(today, dtime.fromisoformat(hhmm), tzinfo=tz)

        with self.lock:
            ids: dict[str, Any] = self._base()
            mitte = ids["mitte"]
            for key, name in (("acme", "ACME GmbH"), ("initech", "Initech")):
                fields = {"location": mitte, "startDate": day(-400), "email": f"office@{key}.test"}
                ids[key] = self._ensure("companies", name, fields)
            for key, name, card, pin, company, status, since in _CAST:
                properties = {"cardNumber": card} if card is not None else {}
                properties |= {"doorPin": pin} if pin else {}
                person = {"name": name, "email": f"{key}@example.com", "location": mitte}
                person |= {"company": ids[company]} if company else {}
                person |= {"status": status, "startDate": day(-since), "properties": properties}
                ids[key] = self.create("members", person)
            for key, member, plan_key, start, end in _MEMBERSHIPS:
                plan = self._data["plans"][ids[plan_key]]
                fields = {"name": f"{plan['name']} membership", "plan": plan["_id"]}
                fields |= {"member": ids[member], "isPersonal": True, "location": mitte}
                fields |= {"price": plan["price"], "startDate": day(start)}
                fields |= {"endDate": day(end), "type": "fixed"} if end is not None else {}
                ids[key] = self.create("memberships", fields)
            for key, owner, due, amount in _INVOICES:
                party = {"company": ids[owner]} if owner == "initech" else {"member": ids[owner]}
                ids[key] = self.add_invoice(**party, due=day(due), amount=amount)
            ids["grace_invoice"] = self.add_invoice(ids["grace"], due=day(-10), amount=349.0)
            self.pay_invoice(ids["grace_invoice"])
            for key, member, count, used, first, last in _PASSES:
                fields = {"member": ids[member], "count": count, "usedCount": used}
                fields |= {"startDate": day(first), "validFrom": day(first), "validTo": day(last)}
                ids[key] = self.create("passes", fields)
            booking = {
                "title": "Alan's meeting",
                "resource": ids["ada_room"],
                "member": ids["alan"],
            }
            booking |= {"location": mitte, "timezone": _MITTE["timezone"]}
            booking |= {"start": at("10:00"), "end": at("11:00")}
            ids["alan_booking"] = self.create("bookings", booking)
            host = {"member": ids["ada"], "company": ids["acme"]}
            visitor = {"name": "Grace Hopper", "email": "grace.hopper@example.com", **host}
            visitor |= {"type": "preregistration", "properties": {"doorPin": "1111"}}
            ids["grace_hopper"] = self.create("visitors", visitor)
            visit = {"visitor": ids["grace_hopper"], **host, "location": mitte}
            visit |= {"start": at("09:00"), "end": at("18:00")}
            ids["grace_hopper_visit"] = self.create("visits", visit)
        return ids

    def load_large(
        self,
        members: int = 5000,
        companies: int = 500,
        bookings: int = 20000,
        today: date | None = None,
        seed: int = 1,
    ) -> None:
        """A big organisation in a few seconds: members (most with a card, some with a PIN,
        most in a company) with their memberships, last invoice (one in ten unpaid) or day
        passes; companies, a third with a team membership; 25 rooms with bookings from 30
        days back to 30 days ahead. Loading fires no webhooks."""
        rng = random.Random(seed)
        today = today or self.now().date()
        now = self.now()
        tz = ZoneInfo(_MITTE["timezone"])

        def add(entity: str, fields: dict[str, Any], max_days: int = 700) -> str:
            created = now - timedelta(seconds=rng.randrange(86400, max_days * 86400))
            modified = created + (now - created) * rng.random()
            stamps = {"createdAt": iso(created), "modifiedAt": iso(modified)}
            return self._add(entity, fields | stamps, fire=False)

        def day(n: int) -> str:
            return midnight(today + timedelta(days=n))

        with self.lock:
            base = self._base()
            mitte = base["mitte"]
            rooms = [base["ada_room"]] + [
                add("resources", {"name": f"Room {i + 2}", "type": kind, "location": mitte})
                for i, kind in enumerate(["meeting_room"] * 20 + ["team_room"] * 4)
            ]
            company_ids = []
            for i in range(companies):
                name = f"{rng.choice(_WORDS)} {rng.choice(_FORMS)} {i:04d}"
                company_ids.append(
                    add("companies", {"name": name, "location": mitte, "startDate": day(-800)})
                )
                if rng.random() < 0.3:
                    team = {"name": "Team office", "plan": base["resident"], "isPersonal": False}
                    team |= {"company": company_ids[-1], "location": mitte, "price": 1200}
                    add("memberships", team | {"startDate": day(-300)})
            active = []
            for i in range(members):
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                status = rng.choices(_STATUSES, _STATUS_WEIGHTS)[0]
                roll, properties = rng.random(), {}
                if roll < 0.85:
                    properties["cardNumber"] = f"12:{10000 + i}"
                elif roll < 0.95:
                    properties["cardNumber"] = f"H10301:{100 + i % 150}:{20000 + i}"
                if rng.random() < 0.3:
                    properties["doorPin"] = f"{rng.randrange(10000):04d}"
                since = rng.randrange(1, 900)
                person: dict[str, Any] = {"name": f"{first} {last}", "location": mitte}
                person |= {"status": status}
                person |= {"email": f"{first}.{last}.{i}@example.com".lower()}
                person |= {"startDate": day(-since), "properties": properties}
                if rng.random() < 0.7:
                    person["company"] = rng.choice(company_ids)
                mid = add("members", person)
                if status == "drop-in":
                    count = rng.choice((1, 5, 10))
                    pass_ = {"member": mid, "count": count, "usedCount": rng.randrange(count + 1)}
                    add("passes", pass_ | {"validFrom": day(-30), "validTo": day(60)})
                if status not in ("active", "former"):
                    continue
                active.append(mid)
                key = rng.choices(("hot_desk", "resident", "server_access"), (4, 5, 1))[0]
                membership: dict[str, Any] = {"name": "Membership", "plan": base[key]}
                membership |= {"member": mid}
                membership |= {"isPersonal": True, "location": mitte, "startDate": day(-since)}
                if status == "former":
                    membership["endDate"] = day(-rng.randrange(1, 200))
                add("memberships", membership)
                due = today - timedelta(days=rng.randrange(1, 60))
                price = float(self._data["plans"][base[key]]["price"])
                paid = rng.random() < 0.9
                add("payments", self._invoice({"member": mid}, mitte, due, price, paid), 60)
            for _ in range(bookings if active else 0):
                minute = rng.randrange(8 * 60, 18 * 60, 30)
                start = datetime.combine(
                    today + timedelta(days=rng.randrange(-30, 30)),
                    dtime(minute // 60, minute % 60),
                    tzinfo=tz,
                )
                end = start + timedelta(minutes=rng.choice((30, 60, 60, 90, 120, 180)))
                member = rng.choice(active)
                booking: dict[str, Any] = {"resource": rng.choice(rooms), "member": member}
                booking["location"] = mitte
                if company := self._data["members"][member].get("company"):
                    booking["company"] = company
                booking |= {"timezone": _MITTE["timezone"], "start": iso(start), "end": iso(end)}
                booking |= {"isCancelled": rng.random() < 0.05}
                booking |= {"isTentative": rng.random() < 0.02}
                add("bookings", booking, max_days=40)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _body(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Unexpected token in JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, ["the body must be a JSON object"])
    return value


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "date":
        return parse_instant(value) is not None
    if kind == "num":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "obj":
        return isinstance(value, dict)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# --- the story's data ---------------------------------------------------------------------

# fmt: off
# https://developer.officernd.com/reference/locationscontroller_getitems
_MITTE: dict[str, Any] = {
    "timezone": "Europe/Berlin", "code": "MIT",
    "address": {"street": "Rosenthaler Str. 1", "city": "Berlin", "zip": "10119", "country": "DE"},
}
_PLANS = (  # key, name, price, intervalLength; "Services" is the plan one-off fees name
    ("hot_desk", "Hot Desk", 199, "month"), ("resident", "Resident", 349, "month"),
    ("server_access", "Server Access", 49, "month"), ("day_pass", "Day Pass", 25, "once"),
    ("services", "Services", 0, "once"),
)
_CAST = (  # key, name, card, PIN, company, status, member since (days)
    ("ada", "Ada Lovelace", "12:3456", "1234", "acme", "active", 300),
    ("grace", "Grace Brewster", "H10306:1000:50001", "2468", None, "active", 200),
    ("linus", "Linus Suspended", "12:4000", None, None, "active", 400),
    ("ken", "Ken Ended", "12:4001", None, None, "active", 120),
    ("dennis", "Dennis Soon", "12:4002", None, None, "active", 3),
    ("barbara", "Barbara Overdue", "C1000:100:70001", None, None, "active", 250),
    ("margaret", "Margaret Visitor", "H10304:500:12345", None, None, "drop-in", 30),
    ("alan", "Alan Pay-as-you-go", "0A0B0C0D", None, None, "drop-in", 60),
    ("frances", "Frances Acme", "12:4003", None, "acme", "active", 150),
    ("edsger", "Edsger Lost", "", None, None, "active", 180),
    ("radia", "Radia Ops", "12:4005", "9753", None, "active", 500),
    ("bjarne", "Bjarne Initech", "12:4006", None, "initech", "active", 90),
)
_MEMBERSHIPS = (  # key, member, plan, first day, last day (days from today; None: open-ended)
    ("ada_membership", "ada", "hot_desk", -300, None),
    ("grace_membership", "grace", "resident", -200, None),
    ("linus_membership", "linus", "resident", -400, None),
    ("ken_membership", "ken", "hot_desk", -120, -1),
    ("dennis_membership", "dennis", "hot_desk", 7, None),
    ("barbara_membership", "barbara", "resident", -250, None),
    ("edsger_membership", "edsger", "resident", -180, None),
    ("radia_membership", "radia", "resident", -500, None),
    ("radia_server_access", "radia", "server_access", -60, 30),
)
_INVOICES = (  # key, owner, due (days from today), amount
    ("ada_invoice", "ada", -1, 199.0), ("linus_invoice", "linus", -40, 349.0),
    ("barbara_invoice", "barbara", -5, 349.0), ("initech_invoice", "initech", -20, 500.0),
)
_PASSES = (  # key, member, count, usedCount, validFrom, validTo (days from today)
    ("margaret_pass", "margaret", 1, 1, 0, 0), ("alan_pass", "alan", 2, 0, -10, 80),
)
_STATUSES, _STATUS_WEIGHTS = ("active", "former", "drop-in", "pending", "contact"), (80, 6, 8, 3, 3)
_FIRST = ("Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ivan", "Jonas",
          "Katrin", "Lukas", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sven", "Tara", "Yusuf")
_LAST = ("Becker", "Demir", "Fischer", "Hoffmann", "Jansen", "Kaya", "Lange", "Meyer", "Novak",
         "Peters", "Richter", "Schmidt", "Schulz", "Wagner", "Weber", "Wolf", "Yilmaz", "Zimmer")
_WORDS = ("Blue", "Nord", "Spree", "Kiez", "Pixel", "Linden", "Hafen", "Quant", "Brick", "Atlas")
_FORMS = ("GmbH", "UG", "Labs", "Studio", "AG", "& Partner")
# fmt: on
