"""The Nexudus admin REST API, simulated, for the platform bridge's tests, demo and benchmarks.

`NexudusSim` holds one operator's world (locations, plans, passes, customers, contracts,
invoices, bookings, visitors, check-ins, charges, webhooks) and serves it the way the admin
REST API documents it (https://developers.nexudus.com/rest-api/): searches at
`/api/<group>/<entities>` with the 11-field paging envelope, `<Entity>_<Field>` filters and
`from_`/`to_` ranges; bare records by id; `?id=[..]` batches; POST, PUT (to the collection
URL, a full replace) and DELETE answered with the `WasSuccessful` envelope; the password and
refresh grants at `/api/token`; throttling as 409 with Retry-After and an empty body; and
webhooks signed with the app's shared secret. Where the documentation is silent the
simulator follows the research notes' proposals; each choice is listed in the team's
`nexudus-sim-choices` notes.

Instants are stored and served in UTC as `YYYY-MM-DDTHH:MM:SSZ`; each `…Local` twin is the
location's wall clock, without an offset. The simulator shares no code with the bridge, so a
misreading of the docs on one side is not silently mirrored on the other.

Threads: the serving thread, one per open connection, and the webhook sender. The world is
guarded by `self.lock`; webhook deliveries are queued under it, in the order of the changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hwsim.httpserving import Request, Response
from hwsim.platforms.common import Delivery, PlatformSim, dumps, json_response, retry_after_header

SITE_ZONE = "Europe/Berlin"
DENIED = {"Message": "Authorization has been denied for this request."}
Record = dict[str, Any]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # corrupt(): remove the field


class WorldError(ValueError):
    """An operator's change the simulator refuses; the message names the field."""


# eWebhookAction 1-90 in order (https://developers.nexudus.com/rest-api/sys/post-webhooks);
# the spellings HelDesk…, VisitorCheckedin and …UnSubscribed are the vendor's.
ACTIONS: dict[str, int] = {
    name: code
    for code, name in enumerate(
        """None CoworkerUpdate CoworkerCreate BlogPostCreate BlogPostUpdate BookingCreate
        BookingUpdate BookingDelete SendWelcomeEmail CoworkerContractActivate
        CoworkerContractCancel CoworkerContractRenew CoworkerContractUpgradeDowngrade
        CoworkerContractActivateFirst CoworkerInvoiceCreateFirst CoworkerInvoiceCreate
        CoworkerInvoiceDelete CoworkerInvoiceUpdate CoworkerInvoiceRefund
        CoworkerInvoiceCreditNote CoworkerInvoicePaid CoworkerInvoiceFailedPayment
        CoworkerInvoiceReceivedPayment CoworkerInvoiceAwaitingPayment CalendarEventCreate
        CalendarEventUpdate CalendarEventAttendeeDelete CalendarEventAttendeeCreate
        CalendarEventAttendeeUpdate GlobalChatMessageCreate NewsLetterSubscriberCreate
        NewsLetterSubscriberSubscribed NewsLetterSubscriberUnSubscribed
        NewsLetterSubscriberRemovedFromGroup CoworkerCheckout CoworkerCheckin
        CoworkerCheckinFailed VisitorNotification CommunityBoardNewThread
        CommunityBoardNewReply VisitorCheckedin VisitorRegistered BlogPostDelete
        CalendarEventDelete HelDeskMessageCreated HelpDeskCommentCreated CheckinCreated
        CheckinUpdated CheckinDeleted CoworkerDelete CoworkerMessageCreate DeliveryCreated
        DeliveryAssigned ProposalCreated ProposalUpdated ProposalDeleted TeamCreated
        TeamUpdated TeamDeleted CoworkerContractUpdate AccessControlUpdate
        CoworkerContractCreate FailedCheckin VisitorDeleted CoworkerInvoiceLedgerEntryCreate
        CoworkerInvoiceLedgerEntryDelete CoworkerInvoiceLedgerEntryUpdate CoworkerProductCreate
        CoworkerProductUpdate CoworkerProductDelete FloorPlanDeskCreate FloorPlanDeskDelete
        FloorPlanDeskUpdate TariffCreate TariffDelete TariffUpdate CoworkerContractDelete
        FloorPlanCreate FloorPlanDelete FloorPlanUpdate ProductCreate ProductDelete
        ProductUpdate BusinessUpdate CommunityGroupCreate CommunityGroupDelete
        CommunityGroupUpdate CoworkerPaymentMethodCreate CoworkerPaymentMethodDelete
        CoworkerPaymentMethodUpdate""".split(),  # noqa: SIM905 - the vendor's list, as listed
        start=1,
    )
}


# --- the entities -----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str  # the collection in the URL: "coworkers"
    entity: str  # the type: the filter prefix and the envelope's messages ("Coworker")
    path: str  # the collection URL
    fields: dict[str, Any]  # every field but the base ones, with its default
    http: str  # writes over HTTP: C = POST, U = PUT, D = DELETE
    required: tuple[str, ...]  # on POST and PUT
    list_nulls: tuple[str, ...]  # "not populated" in list and batch records
    read_only: tuple[str, ...]  # kept by a PUT, ignored on POST
    local: tuple[str, ...]  # instants with a …Local twin (the location's wall clock)
    actions: tuple[str | None, ...]  # the Actions of a create, an update, a delete
    zone_via: str  # the field that leads to the record's location


def _kind(path: str, entity: str, fields: str, http: str = "CUD", required: str = "",
          nulls: str = "", read_only: str = "", local: str = "", actions: str = "- - -",
          zone_via: str = "BusinessId") -> Kind:  # fmt: skip
    """A Kind from the table's strings: `fields` are names (default null) and name=JSON."""
    defaults: dict[str, Any] = {}
    for word in fields.split():
        name, _, value = word.partition("=")
        defaults[name] = json.loads(value) if value else None
    names = tuple(None if a == "-" else a for a in actions.split())
    return Kind(
        path.rsplit("/", 1)[1], entity, path, defaults, http, tuple(required.split()),
        tuple(nulls.split()), tuple(read_only.split()), tuple(local.split()), names, zone_via,
    )  # fmt: skip


BASE = ("Id", "UniqueId", "CreatedOn", "UpdatedOn", "UpdatedBy", "IsNew", "SystemId")
_BOOKING = (
    "ResourceId ResourceName CoworkerId CoworkerFullName CoworkerCompanyName FromTime ToTime "
    "Notes InternalNotes PurchaseOrder InvoiceDate BookingNumber CoworkerInvoiceId "
    "RepeatSeriesUniqueId ChargeNow=false InvoiceNow=false Tentative=false Online=false "
    "Invoiced=false"
)

# Field lists from the "Get one" pages (developers.nexudus.com/rest-api/<group>/get-<e>-by-id),
# the part a bridge can use; "nulls" from the Search and batch pages ("not populated").
# fmt: off
KINDS: dict[str, Kind] = {k.name: k for k in (
    _kind("/api/sys/businesses", "Business",  # sys/get-businesses-by-id
          "Name WebAddress Address TownCity PostalCode CountryId CountryName CurrencyId "
          "CurrencyCode SimpleTimeZoneId SimpleTimeZoneName RootLocationId Suspended=false",
          http="U", required="Name", actions="- BusinessUpdate -", zone_via="Id"),
    _kind("/api/spaces/coworkers", "Coworker",  # spaces/get-coworkers-batch; "no Delete via API"
          "FullName Email Salutation GuessedFirstName GuessedLastName CompanyName BillingName "
          "BillingEmail MobilePhone CountryId SimpleTimeZoneId InvoicingBusinessId "
          "InvoicingBusinessName AccessCardId KeyFobNumber AccessPincode UserId RegistrationDate "
          "Notes CoworkerType=1 Businesses=[] Teams=[] AllowNetworkCheckin=true Active=true "
          "Archived=false",
          http="CU", required="FullName Email CountryId SimpleTimeZoneId",
          nulls="AccessPincode KeyFobNumber AllowNetworkCheckin Teams Businesses",
          local="RegistrationDate", actions="CoworkerCreate CoworkerUpdate CoworkerDelete",
          zone_via="InvoicingBusinessId"),
    _kind("/api/billing/coworkercontracts", "CoworkerContract",  # billing/put-coworkercontracts
          "IssuedById IssuedByName CoworkerId CoworkerFullName CoworkerEmail TariffId TariffName "
          "TariffPrice NextTariffId Notes StartDate RenewalDate InvoicedPeriod ContractTerm Price "
          "CancellationDate CancellationReason CancellationNotes PurchaseOrder BillingDay=1 "
          "Quantity=1 Active=true MainContract=true Cancelled=false",
          required="IssuedById CoworkerId TariffId BillingDay Quantity",
          read_only="Active Cancelled MainContract",
          local="StartDate RenewalDate CancellationDate InvoicedPeriod",
          actions="CoworkerContractCreate CoworkerContractUpdate CoworkerContractDelete",
          zone_via="IssuedById"),
    _kind("/api/billing/tariffs", "Tariff",  # billing/get-tariffs-by-id
          "BusinessId BusinessName Name Description InvoiceEveryWeeks CheckinMonthLimit "
          'SystemTariffType=0 Price=0.0 CurrencyCode="EUR" Visible=true Archived=false '
          "UseTimePasses=false InvoiceEvery=1",
          required="BusinessId Name", actions="TariffCreate TariffUpdate TariffDelete"),
    _kind("/api/billing/timepasses", "TimePass",  # get-timepasses-by-id; a Day Pass: Minutes… null
          "BusinessId BusinessName Name InvoiceLineDisplayAs MinutesIncluded Price=0.0 "
          'CurrencyCode="EUR" CountsTowardsPlanLimits=false UseAsPayAsYouGoForMembers=false '
          "UseAsPayAsYouGoForContacts=false OnlyForContacts=false OnlyForMembers=false "
          "Archived=false",
          required="BusinessId Name"),
    _kind("/api/billing/coworkertimepasses", "CoworkerTimePass",  # get-coworkertimepasses-by-id
          "CoworkerId CoworkerFullName BusinessId BusinessName TimePassId TimePassName Notes "
          "UsedDate Price ExpireDate InvoiceDate Used=false CheckedIn=false RemainingUses=1 "
          "TotalUses=1 Free=false Invoiced=false IsPayAsYouGo=false",
          required="CoworkerId BusinessId TimePassId"),
    _kind("/api/billing/coworkerinvoices", "CoworkerInvoice",  # "not create or delete" by API
          "CoworkerId CoworkerFullName CoworkerCompanyName BusinessId BusinessName InvoiceNumber "
          "Description DueDate InvoiceFromDate InvoiceToDate PaidAmount PaidOn TotalAmount=0.0 "
          'TaxAmount=0.0 CurrencyCode="EUR" Draft=false Void=false Paid=false Sent=true '
          "CreditNote=false Refunded=false",
          http="U", required="CoworkerId BusinessId", read_only="InvoiceNumber",
          local="CreatedOn DueDate PaidOn",
          actions="CoworkerInvoiceCreate CoworkerInvoiceUpdate CoworkerInvoiceDelete"),
    _kind("/api/spaces/bookings", "Booking", _BOOKING,  # spaces/get-bookings-by-id
          required="ResourceId FromTime ToTime", read_only="BookingNumber",
          local="FromTime ToTime", actions="BookingCreate BookingUpdate BookingDelete",
          zone_via="ResourceId"),
    _kind("/api/spaces/cancelledbookings", "CancelledBooking",  # read-only snapshots
          _BOOKING + " CancelledOn CancellationReason=0",
          http="", local="FromTime ToTime", zone_via="ResourceId"),
    _kind("/api/spaces/resourcetypes", "ResourceType", "BusinessId BusinessName Name"),
    _kind("/api/spaces/resources", "Resource",  # spaces/get-resources-by-id
          "BusinessId BusinessName Name ResourceTypeId ResourceTypeName Description "
          "AccessControlGroupId Visible=true Allocation=1 Archived=false Tariffs=[] Teams=[] "
          "LinkedResources=[]",
          required="BusinessId Name ResourceTypeId", nulls="Tariffs Teams LinkedResources"),
    _kind("/api/spaces/teams", "Team",  # spaces/get-teams-by-id
          "BusinessId BusinessName Name Description CoworkerIds PayingMemberId "
          "PayingMemberFullName DefaultMemberTariffId MaxTeamMemberCount TeamMembers=[] "
          "TeamAdministrators=[] CreateSingleInvoiceForTeam=false ShareTimePasses=false "
          "ShareExtraServices=false ShareBookingCredit=false",
          required="BusinessId Name", nulls="TeamMembers TeamAdministrators CoworkerIds",
          actions="TeamCreated TeamUpdated TeamDeleted"),
    _kind("/api/spaces/visitors", "Visitor",  # spaces/get-visitors-by-id
          "BusinessId BusinessName FullName Email CoworkerId CoworkerFullName CoworkerCompanyName "
          "VisitorCode CheckedInAt Notes VisitReason CompanyName PhoneNumber ExpectedArrival "
          "ArrivalDate DepartureDate VisitorSource=1 HostApprovalStatus=1 Arrived=false "
          "Internal=false IsTour=false",
          required="BusinessId Email ExpectedArrival FullName",
          actions="VisitorRegistered - VisitorDeleted"),
    _kind("/api/spaces/checkins", "Checkin",  # spaces/post-checkins; Source is read-only
          "CoworkerId CoworkerFullName BusinessId BusinessName FromTime ToTime "
          "CoworkerTimePassGuid LastActivity MacAddresses TeamsAtTheTimeOfCheckin "
          "TariffAtTheTimeOfCheckin ValidateCheckinJobId Source=1 CountsTowardsPlanLimits=true "
          "AutoCheckout=false",
          required="BusinessId FromTime", read_only="Source", local="FromTime ToTime",
          actions="CheckinCreated CheckinUpdated CheckinDeleted"),
    _kind("/api/billing/charges", "Charge",  # billing/post-charges; list omits three fields
          "CoworkerId CoworkerFullName BusinessId BusinessName Description InvoiceLineDisplayAs "
          "DueDate PurchaseOrder TaxRateId FinancialAccountId SaleDate InvoicedOn ChargeNumber "
          "CoworkerTimePassName CoworkerProductName BookingUniqueId Quantity=1 "
          "DiscountAmount=0.0 CreditAmount=0.0 TotalAmount=0.0 RegularCharge=false Invoiced=false",
          required="CoworkerId BusinessId Quantity DiscountAmount CreditAmount TotalAmount",
          nulls="DiscountAmount CreditAmount PurchaseOrder", read_only="ChargeNumber"),
    _kind("/api/sys/webhooks", "WebHook",  # sys/post-webhooks; list leaves Description out
          "BusinessId BusinessName Name Description URL LastTrigger LastError Action=1 "
          "Active=true ErrorCount=0",
          required="BusinessId Name Action URL", nulls="Description"),
)}
# fmt: on

ROUTES = {kind.path: kind.name for kind in KINDS.values()}
ROUTES["/api/sys/coworkers"] = "coworkers"  # the path in rest-api/authentication's examples

# Foreign keys, and the names copied from the record each points at.
REFS: dict[str, tuple[str, dict[str, str]]] = {
    "BusinessId": ("businesses", {"BusinessName": "Name"}),
    "IssuedById": ("businesses", {"IssuedByName": "Name"}),
    "InvoicingBusinessId": ("businesses", {"InvoicingBusinessName": "Name"}),
    "CoworkerId": (
        "coworkers",
        {
            "CoworkerFullName": "FullName",
            "CoworkerEmail": "Email",
            "CoworkerCompanyName": "CompanyName",
        },
    ),
    "PayingMemberId": ("coworkers", {"PayingMemberFullName": "FullName"}),
    "TariffId": ("tariffs", {"TariffName": "Name", "TariffPrice": "Price"}),
    "TimePassId": ("timepasses", {"TimePassName": "Name"}),
    "ResourceId": ("resources", {"ResourceName": "Name"}),
    "ResourceTypeId": ("resourcetypes", {"ResourceTypeName": "Name"}),
}
INSTANTS = frozenset(
    """CreatedOn UpdatedOn FromTime ToTime StartDate RenewalDate InvoicedPeriod ContractTerm
    CancellationDate DueDate PaidOn InvoiceDate InvoiceFromDate InvoiceToDate ExpireDate UsedDate
    ExpectedArrival ArrivalDate DepartureDate SaleDate InvoicedOn CancelledOn RegistrationDate
    LastActivity LastTrigger""".split()  # noqa: SIM905 - a table, easier to read as words
)
AUTO_NUMBERS = {
    "bookings": "BookingNumber",
    "coworkerinvoices": "InvoiceNumber",
    "charges": "ChargeNumber",
}


# --- small helpers ------------------------------------------------------------------------


def parse_instant(value: object) -> datetime | None:
    """An instant as the API takes it (ISO 8601, minutes or seconds, `Z`, an offset or
    none); without a zone it is UTC. None when it is not one."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_text(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=64)
def _zoneinfo(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def hook_signature(secret: str, body: bytes) -> str:
    """X-Nexudus-Hook-Signature: upper-case hex HMAC-SHA256 with the app's shared secret, key
    and body both as .NET's ASCIIEncoding makes them (a non-ASCII character becomes '?'), as
    the vendor's sample does (help.nexudus.com/docs/verifying-webhooks-created-via-the-api)."""
    message = body.decode("utf-8").encode("ascii", "replace")
    return hmac.new(secret.encode("ascii", "replace"), message, hashlib.sha256).hexdigest().upper()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(value: object) -> list[int]:
    return [v for v in value if _is_int(v)] if isinstance(value, list) else []


def _fresh(kind: Kind) -> Record:
    """A record of defaults (lists of its own)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in kind.fields.items()}


class _Refused(Exception):
    """A request answered with `response` instead of going on."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _bad_request(message: str = "The request is invalid.") -> _Refused:
    return _Refused(json_response(400, {"Message": message}))


def _not_found(kind: Kind, rid: object) -> Response:
    return json_response(404, {"Message": f"{kind.entity} {rid} was not found."})


def _not_allowed(method: str) -> Response:
    message = f"The requested resource does not support http method '{method}'."
    return json_response(405, {"Message": message})


def _param(params: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, its name matched case-insensitively."""
    found = [v[-1] for k, v in params.items() if k.lower() == name]
    return found[-1] if found else None


def _int_param(params: dict[str, list[str]], name: str, default: int) -> int:
    text = _param(params, name)
    try:
        return default if not text else int(text)
    except ValueError:
        raise _bad_request(f"{name}: '{text}' is not an integer") from None


def _equals(field: str, text: str) -> Callable[[Record], bool]:
    """`<Entity>_<Field>=text`: strings contain it (case-insensitive), the rest are equal."""
    low = text.lower()

    def test(rec: Record) -> bool:
        v = rec.get(field)
        if low == "null" or v is None:
            return low == "null" and v is None
        if isinstance(v, bool):
            return low == str(v).lower()
        if isinstance(v, list):
            return any(str(x) == text for x in v)
        if isinstance(v, str):
            return low in v.lower()
        try:
            return bool(float(text) == v)
        except (TypeError, ValueError):
            return False

    return test


def _within(field: str, bound: str, text: str) -> Callable[[Record], bool]:
    """`from_`/`to_`, inclusive: instants (`YYYY-MM-DDTHH:mm`, UTC) or numbers."""
    instant: Any = parse_instant(text)
    try:
        number = float(text) if instant is None else None
    except ValueError:
        raise _bad_request(f"{bound}_…_{field}: '{text}' is not YYYY-MM-DDTHH:mm") from None

    def test(rec: Record) -> bool:
        v = rec.get(field)
        if number is not None:
            value: Any = v if _is_int(v) or isinstance(v, float) else None
            limit: Any = number
        else:
            value, limit = parse_instant(v), instant
        if value is None:
            return False
        return bool(value >= limit if bound == "from" else value <= limit)

    return test


def _sorted(rows: list[Record], field: str, descending: bool) -> list[Record]:
    def key(rec: Record) -> tuple[bool, Any]:
        v = rec.get(field)
        return (v is None, v.lower() if isinstance(v, str) else (0 if v is None else v))

    try:
        return sorted(rows, key=key, reverse=descending)
    except TypeError:  # a corrupted record mixes types
        return sorted(rows, key=lambda r: str(r.get(field)), reverse=descending)


# --- the simulator ------------------------------------------------------------------------


class NexudusSim(PlatformSim):
    """One Nexudus account's admin API, its data and its webhooks.

    Besides `PlatformSim`'s knobs, tests may set `checkin_source` (the Source an API
    check-in stores), `local_suffix` ("Z" or "+00:00" after …Local values, as other Nexudus
    APIs write them) and `webhook_disable_after` (failures in a row that disable a hook).
    """

    name = "nexudus"
    throttle_status = 409

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "ops@example.com",
        password: str = "sim-password",  # noqa: S107 - the simulator's well-known test password
        app_secret: str | None = "sim-app-secret",  # noqa: S107
        token_lifetime_s: float = 604799,
        refresh_lifetime_s: float = 15 * 86400,
        max_page_size: int = 1000,
        checkin_source: int = 1,
        local_suffix: str = "",
        webhook_disable_after: int = 10,
    ) -> None:
        super().__init__(host=host, port=port)
        self.username = username
        self.password = password
        self.app_secret = app_secret
        self.token_lifetime_s = token_lifetime_s
        self.refresh_lifetime_s = refresh_lifetime_s
        self.max_page_size = max_page_size
        self.checkin_source = checkin_source
        self.local_suffix = local_suffix
        self.webhook_disable_after = webhook_disable_after
        self.operator = "operator@example.com"  # UpdatedBy of the operator's changes
        self._data: dict[str, dict[int, Record]] = {name: {} for name in KINDS}
        self._next_id = 1000
        self._refresh: dict[str, tuple[str, float]] = {}  # client_id -> (token, expiry)
        self._pending: list[tuple[int, Delivery]] = []  # deliveries not accounted for yet
        self._failures: dict[int, int] = {}  # webhook Id -> failed deliveries in a row
        self._loading = False

    # --- the operator's data ----------------------------------------------------------

    def create(self, entity: str, fields: Record) -> int:
        """A record as the operator makes it in the admin UI; its Id. Instants may be
        datetimes (naive: UTC), dates (midnight at the location) or ISO strings."""
        with self.lock:
            rec = self._insert(entity, self._operator_fields(entity, fields), self.operator)
            self._after_create(entity, rec)
            return int(rec["Id"])

    def update(self, entity: str, id: int, **fields: Any) -> None:
        with self.lock:
            old = self._record(entity, id)
            new = {**old, **self._operator_fields(entity, fields, old)}
            if entity == "coworkercontracts":
                self._contract_flags(new, fields)
            self._replace(entity, id, old, new, self.operator)

    def delete(self, entity: str, id: int) -> None:
        """A hard delete: the record's GET answers 404 afterwards."""
        with self.lock:
            self._remove(entity, id, self._record(entity, id))

    def get(self, entity: str, id: int) -> Record:
        with self.lock:
            value: Record = json.loads(dumps(self._record(entity, id)))
            return value

    def records(self, entity: str) -> list[Record]:
        with self.lock:
            value: list[Record] = json.loads(dumps(list(self._table(entity).values())))
            return value

    def corrupt(self, entity: str, id: int, field: str, value: Any = MISSING) -> None:
        """Serve a malformed record: `field` removed (MISSING) or set to any JSON value,
        unvalidated, with the modification time bumped for incremental reads."""
        with self.lock:
            rec = self._record(entity, id)
            rec["UpdatedOn"] = utc_text(self.now())
            if value is MISSING:
                rec.pop(field, None)
            else:
                rec[field] = json.loads(dumps(value))
            if KINDS[entity].actions[1]:
                self._fire(str(KINDS[entity].actions[1]), entity, rec)

    # --- operator shortcuts -------------------------------------------------------------

    def cancel_contract(self, contract_id: int, on: date) -> None:
        """Cancel a plan; `on` is its last day, and the contract stays Active until then."""
        self.update("coworkercontracts", contract_id, CancellationDate=on)

    def add_invoice(
        self, coworker_id: int, due: datetime, amount: float = 100.0, paid: bool = False
    ) -> int:
        with self.lock:
            business = self._record("coworkers", coworker_id).get("InvoicingBusinessId")
            paid_on = self.now() if paid else None
            return self._make(
                "coworkerinvoices", CoworkerId=coworker_id, BusinessId=business, DueDate=due,
                Description="Membership", TotalAmount=amount, PaidAmount=amount if paid else 0.0,
                Paid=paid, PaidOn=paid_on,
            )  # fmt: skip

    def pay_invoice(self, id: int) -> None:
        with self.lock:
            total = self._record("coworkerinvoices", id).get("TotalAmount")
            self.update("coworkerinvoices", id, Paid=True, PaidOn=self.now(), PaidAmount=total)

    def cancel_booking(self, id: int, reason: int = 0) -> int:
        """The booking leaves the calendar and becomes a CancelledBooking with an Id of its
        own, keeping UniqueId and BookingNumber; the new Id."""
        with self.lock:
            booking = self._record("bookings", id)
            del self._data["bookings"][id]
            fields = {k: v for k, v in booking.items() if k in KINDS["cancelledbookings"].fields}
            fields.update(CancelledOn=utc_text(self.now()), CancellationReason=reason)
            cancelled = self._insert("cancelledbookings", fields, self.operator, trusted=True)
            cancelled["UniqueId"] = booking["UniqueId"]
            self._fire("BookingDelete", "bookings", booking)
            return int(cancelled["Id"])

    def sell_day_pass(self, coworker_id: int) -> int:
        """One Day Pass (a TimePass with MinutesIncluded null) at the coworker's location."""
        with self.lock:
            business = self._record("coworkers", coworker_id).get("InvoicingBusinessId")
            for product in self._data["timepasses"].values():
                if product.get("MinutesIncluded") is None and product["BusinessId"] == business:
                    return self._make(
                        "coworkertimepasses", CoworkerId=coworker_id, BusinessId=business,
                        TimePassId=product["Id"], Price=product.get("Price"),
                    )  # fmt: skip
            raise WorldError(f"coworker {coworker_id}: its location sells no Day Pass")

    def add_webhook(
        self, url: str, events: Iterable[str], business_id: int | None = None
    ) -> dict[str, int]:
        """One WebHook record per Action ("only one action can be assigned per webhook
        record"); Action name -> webhook Id. business_id None: every location."""
        with self.lock:
            made = {}
            for event in events:
                if event not in ACTIONS:
                    raise WorldError(f"events: unknown Action {event!r}")
                made[event] = self._make(
                    "webhooks", BusinessId=business_id, Name=event, Action=ACTIONS[event], URL=url
                )
            return made

    # --- the world's insides (the caller holds self.lock) -----------------------------

    def _make(self, entity: str, **fields: Any) -> int:
        return self.create(entity, fields)

    def _table(self, entity: str) -> dict[int, Record]:
        if entity not in self._data:
            raise WorldError(f"entity: {entity!r} (one of {', '.join(KINDS)})")
        return self._data[entity]

    def _record(self, entity: str, id: int) -> Record:
        rec = self._table(entity).get(id)
        if rec is None:
            raise WorldError(f"{entity}: no record with Id {id}")
        return rec

    def _lookup(self, entity: str, id: object) -> Record | None:
        if not isinstance(id, int) or isinstance(id, bool):
            return None
        return self._data[entity].get(id)

    def _business_id(self, entity: str, rec: Record) -> Any:
        via = KINDS[entity].zone_via
        if via == "ResourceId":
            resource = self._lookup("resources", rec.get("ResourceId"))
            return resource.get("BusinessId") if resource else None
        return rec.get(via)

    def _zone(self, entity: str, rec: Record) -> ZoneInfo:
        business = self._lookup("businesses", self._business_id(entity, rec)) or {}
        name = business.get("SimpleTimeZoneName")
        return _zoneinfo(name if isinstance(name, str) else None)

    def _normalized(self, entity: str, fields: Record, base: Record) -> Record:
        """Instants as stored (UTC text): a date is midnight at the record's location."""
        zone = self._zone(entity, {**base, **fields})
        out = dict(fields)
        for field, value in fields.items():
            if field not in INSTANTS or value is None:
                continue
            if isinstance(value, date) and not isinstance(value, datetime):
                value = datetime.combine(value, dtime(), tzinfo=zone)
            dt = parse_instant(value)
            if dt is None:
                raise WorldError(f"{field}: {value!r} is not an instant")
            out[field] = utc_text(dt)
        return out

    def _operator_fields(self, entity: str, fields: Record, base: Record | None = None) -> Record:
        kind = KINDS.get(entity)
        if kind is None:
            raise WorldError(f"entity: {entity!r} (one of {', '.join(KINDS)})")
        for field, value in fields.items():
            if field not in kind.fields and field != "SystemId":
                raise WorldError(f"{field}: not a field of {kind.entity}")
            if field in REFS and value is not None and self._lookup(REFS[field][0], value) is None:
                raise WorldError(f"{field}: no {REFS[field][0]} record with Id {value!r}")
        return self._normalized(entity, fields, base or {})

    def _insert(self, entity: str, fields: Record, by: str, trusted: bool = False) -> Record:
        """Store a new record: defaults, then `fields` (`trusted`: already normalized)."""
        kind = KINDS[entity]
        now = utc_text(self.now())
        self._next_id += 1
        rec = _fresh(kind)
        rec.update(fields if trusted else self._normalized(entity, fields, {}))
        rec.update(Id=self._next_id, UniqueId=str(uuid.uuid4()), CreatedOn=now, UpdatedOn=now)
        rec.update(UpdatedBy=by, IsNew=False, SystemId=fields.get("SystemId"))
        if entity in AUTO_NUMBERS and rec.get(AUTO_NUMBERS[entity]) is None:
            rec[AUTO_NUMBERS[entity]] = f"{self._next_id:08d}"
        if entity == "checkins" and "Source" not in fields:
            rec["Source"] = self.checkin_source
        if entity == "coworkercontracts":
            self._contract_flags(rec, fields)
        self._derive(entity, rec)
        self._data[entity][rec["Id"]] = rec
        self._link(entity, rec["Id"], (), rec)
        return rec

    def _contract_flags(self, rec: Record, given: Record) -> None:
        """Cancelled once a cancellation date is set; Active until that date has passed."""
        if "Cancelled" not in given:
            rec["Cancelled"] = rec.get("CancellationDate") is not None
        if "Active" not in given:
            zone = self._zone("coworkercontracts", rec)
            ends = parse_instant(rec.get("CancellationDate"))
            today = self.now().astimezone(zone).date()
            rec["Active"] = ends is None or ends.astimezone(zone).date() >= today

    def _derive(self, entity: str, rec: Record) -> None:
        """Names copied from the records referred to, and the …Local twins."""
        kind = KINDS[entity]
        for key, (target_entity, names) in REFS.items():
            if key in rec:
                target = self._lookup(target_entity, rec[key]) or {}
                for out, src in names.items():
                    if out in kind.fields:
                        rec[out] = target.get(src)
        if entity == "teams":
            rec["CoworkerIds"] = ",".join(map(str, _ids(rec.get("TeamMembers")))) or None
        if kind.local:
            zone = self._zone(entity, rec)
            for field in kind.local:
                dt = parse_instant(rec.get(field))
                wall = dt.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") if dt else None
                rec[field + "Local"] = wall + self.local_suffix if wall else None

    def _link(self, entity: str, rec_id: int, old: object, new: object) -> None:
        """One membership relation kept on both sides, Coworker.Teams and Team.TeamMembers
        (old and new are the record before and after, or () when there is none)."""
        if entity not in ("teams", "coworkers"):
            return
        mine, other, theirs = (
            ("TeamMembers", "coworkers", "Teams")
            if entity == "teams"
            else ("Teams", "teams", "TeamMembers")
        )
        was = set(_ids(old.get(mine) if isinstance(old, dict) else None))
        now_in = set(_ids(new.get(mine) if isinstance(new, dict) else None))
        for oid in was ^ now_in:
            rec = self._data[other].get(oid)
            if rec is not None:
                ids = [i for i in _ids(rec.get(theirs)) if i != rec_id]
                rec[theirs] = [*ids, rec_id] if oid in now_in else ids
                rec["UpdatedOn"] = utc_text(self.now())
                self._derive(other, rec)

    def _replace(self, entity: str, id: int, old: Record, new: Record, by: str) -> None:
        new.update(UpdatedOn=utc_text(self.now()), UpdatedBy=by)
        self._derive(entity, new)
        self._data[entity][id] = new
        self._link(entity, id, old, new)
        specific = {
            "coworkercontracts": ("CancellationDate", "CoworkerContractCancel"),
            "coworkerinvoices": ("Paid", "CoworkerInvoicePaid"),
            "checkins": ("ToTime", "CoworkerCheckout"),
            "visitors": ("Arrived", "VisitorCheckedin"),
        }.get(entity)
        if specific and new.get(specific[0]) and not old.get(specific[0]):
            self._fire(specific[1], entity, new)
        if KINDS[entity].actions[1]:
            self._fire(str(KINDS[entity].actions[1]), entity, new)

    def _remove(self, entity: str, id: int, rec: Record) -> None:
        del self._data[entity][id]
        self._link(entity, id, rec, ())
        if KINDS[entity].actions[2]:
            self._fire(str(KINDS[entity].actions[2]), entity, rec)

    def _after_create(self, entity: str, rec: Record) -> None:
        actions = [KINDS[entity].actions[0]]
        if entity == "checkins":
            self._use_pass(rec)
            actions.append("CoworkerCheckin" if rec.get("CoworkerId") is not None else None)
        for action in actions:
            if action:
                self._fire(action, entity, rec)

    # --- day passes -----------------------------------------------------------------------

    def _use_pass(self, checkin: Record) -> None:
        """A check-in consumes a pass: the one named by CoworkerTimePassGuid; else, for a
        coworker without a running plan, a Day Pass already used that day, else the oldest
        unused, unexpired one at that location. None left: the check-in stands without."""
        when = parse_instant(checkin.get("FromTime"))
        coworker, business = checkin.get("CoworkerId"), checkin.get("BusinessId")
        if when is None:
            return
        zone = self._zone("checkins", checkin)
        day = when.astimezone(zone).date()

        def local_day(value: Any) -> date | None:
            dt = parse_instant(value)
            return dt.astimezone(zone).date() if dt else None

        def day_pass(p: Record) -> bool:
            product = self._lookup("timepasses", p.get("TimePassId")) or {}
            return product.get("MinutesIncluded") is None

        def usable(p: Record) -> bool:
            left = p.get("RemainingUses")
            expires = local_day(p.get("ExpireDate"))
            unexpired = expires is None or expires >= day
            return not p.get("Used") and (not isinstance(left, int) or left > 0) and unexpired

        passes = self._data["coworkertimepasses"].values()
        chosen: Record | None = None
        if checkin.get("CoworkerTimePassGuid"):
            guid = checkin["CoworkerTimePassGuid"]
            chosen = next((p for p in passes if p.get("UniqueId") == guid), None)
        elif coworker is not None and not self._on_plan(coworker, day):
            mine = [
                p
                for p in passes
                if p.get("CoworkerId") == coworker and p.get("BusinessId") == business
                and day_pass(p)
            ]  # fmt: skip
            today = [p for p in mine if p.get("Used") and local_day(p.get("UsedDate")) == day]
            unused = sorted((p for p in mine if usable(p)), key=lambda p: p["Id"])
            chosen = today[0] if today else unused[0] if unused else None
        if chosen is None:
            return
        if not (chosen.get("Used") and local_day(chosen.get("UsedDate")) == day):
            chosen.update(Used=True, UsedDate=checkin["FromTime"])
            if _is_int(chosen.get("RemainingUses")):
                chosen["RemainingUses"] = max(0, chosen["RemainingUses"] - 1)
        chosen.update(CheckedIn=checkin.get("ToTime") is None, UpdatedOn=utc_text(self.now()))
        checkin["CoworkerTimePassGuid"] = chosen["UniqueId"]

    def _on_plan(self, coworker: int, day: date) -> bool:
        """Whether one of the coworker's contracts runs on `day`: a member checks in on the plan."""
        for contract in self._data["coworkercontracts"].values():
            if contract.get("CoworkerId") != coworker:
                continue
            zone = self._zone("coworkercontracts", contract)
            start = parse_instant(contract.get("StartDate"))
            end = parse_instant(contract.get("CancellationDate"))
            if (start is None or start.astimezone(zone).date() <= day) and (
                end is None or end.astimezone(zone).date() >= day
            ):
                return True
        return False

    # --- webhooks ---------------------------------------------------------------------------

    def _fire(self, action: str, entity: str, rec: Record) -> None:
        """POST `[record]` to every active hook for this Action at the record's location."""
        if self._loading:
            return
        self._settle_hooks()
        business = self._business_id(entity, rec)
        hooks = [
            h
            for h in self._data["webhooks"].values()
            if h.get("Action") == ACTIONS[action] and h.get("Active")
            and (business is None or h.get("BusinessId") in (None, business))
        ]  # fmt: skip
        if not hooks:
            return
        body = dumps([rec])  # JsonConvert.SerializeObject(new[] { dto })
        headers = {"Content-Type": "application/json"}
        if self.app_secret is not None:
            headers["X-Nexudus-Hook-Signature"] = hook_signature(self.app_secret, body)
        for hook in hooks:
            delivery = self.webhooks.send(str(hook.get("URL")), body, headers)
            self._pending.append((hook["Id"], delivery))

    def _settle_hooks(self) -> None:
        """Account for finished deliveries (LastTrigger, LastError, ErrorCount); a hook that
        failed `webhook_disable_after` times in a row is disabled ("after repeated failures")."""
        pending = []
        for hook_id, delivery in self._pending:
            hook = self._data["webhooks"].get(hook_id)
            if delivery.status is None:
                pending.append((hook_id, delivery))
            elif hook is not None:
                sent = datetime.fromtimestamp(delivery.sent_at or time.time(), UTC)
                hook["LastTrigger"] = utc_text(sent)
                if 200 <= delivery.status < 300:
                    self._failures[hook_id] = 0
                    continue
                self._failures[hook_id] = self._failures.get(hook_id, 0) + 1
                hook["ErrorCount"] = int(hook.get("ErrorCount") or 0) + 1
                hook["LastError"] = f"HTTP {delivery.status}" if delivery.status else "unreachable"
                if self._failures[hook_id] >= self.webhook_disable_after:
                    hook["Active"] = False
        self._pending = pending

    # --- HTTP -------------------------------------------------------------------------------

    def throttled(self, wait_s: float) -> Response:
        """409, Retry-After and no body (developers.nexudus.com/reference/api-limitations)."""
        headers = (retry_after_header(wait_s), ("Cache-Control", "no-cache"), ("Expires", "-1"))
        return Response(self.throttle_status, b"", headers, content_type="text/plain")

    def error_response(
        self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return json_response(status, {"Message": message}, headers)

    def route(self, request: Request) -> Response:
        path = request.path.rstrip("/").lower()
        if path == "/api/token":
            if request.method != "POST":
                return _not_allowed(request.method)
            return self._token(request)
        if not self._authorized(request.headers.get("authorization", "")):
            return json_response(401, DENIED)
        entity, rid = ROUTES.get(path), None
        head, _, tail = path.rpartition("/")
        if entity is None and head in ROUTES and tail.isdigit():
            entity, rid = ROUTES[head], int(tail)
        if entity is None:
            message = f"No HTTP resource was found that matches the request URI '{request.path}'."
            return json_response(404, {"Message": message})
        try:
            with self.lock:
                return self._dispatch(request, KINDS[entity], rid)
        except _Refused as refused:
            return refused.response

    def _dispatch(self, request: Request, kind: Kind, rid: int | None) -> Response:
        method, table = request.method, self._data[kind.name]
        if method == "GET" and rid is not None:
            rec = table.get(rid)
            return json_response(200, rec) if rec is not None else _not_found(kind, rid)
        if method == "GET":
            params = request.params()
            ids = _param(params, "id")
            if ids is not None and ids.strip().startswith("["):
                return self._batch(kind, ids)
            return self._search(kind, params)
        letter = {"POST": "C", "PUT": "U", "DELETE": "D"}.get(method, "-")
        # POST and PUT go to the collection URL, DELETE to the record's.
        if letter not in kind.http or (rid is not None) != (method == "DELETE"):
            return _not_allowed(method)
        if rid is not None:
            rec = table.get(rid)
            if rec is None:
                return _not_found(kind, rid)
            if kind.name == "bookings":  # it leaves a CancelledBooking, reason 6 Integration
                self.cancel_booking(rid, reason=6)
            else:
                self._remove(kind.name, rid, rec)
            return self._ok(kind, "deleted", rec)
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise _bad_request() from None
        if not isinstance(body, dict):
            raise _bad_request()
        return self._http_create(kind, body) if method == "POST" else self._http_update(kind, body)

    def _authorized(self, header: str) -> bool:
        """A bearer token from /api/token, or HTTP Basic with the user's own credentials
        (developers.nexudus.com/rest-api/authentication)."""
        if header[:6].lower() != "basic ":
            return self.tokens.check(header) == "ok"
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user.lower() == self.username.lower() and password == self.password

    def _token(self, request: Request) -> Response:
        """The password and refresh grants: rest-api/authentication, the legacy
        reference/token-authentication-oauth, learn.nexudus.com/…/refresh-bearer-token."""
        content_type = request.headers.get("content-type", "").lower()
        if "application/x-www-form-urlencoded" not in content_type:
            return json_response(400, {"error": "unsupported_grant_type"})
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        grant, client = form.get("grant_type"), request.headers.get("client_id")
        if grant == "password":
            user, password = form.get("username", ""), form.get("password", "")
            if user.lower() == self.username.lower() and password == self.password:
                return self._issue(client or user)
            wrong = "The user name or password is incorrect."
            return json_response(401, {"error": "invalid_grant", "error_description": wrong})
        if grant != "refresh_token":
            return json_response(400, {"error": "unsupported_grant_type"})
        held = self._refresh.get(client or "")
        if not client:
            why = "The client_id header is required to refresh a token."
        elif held is None or held[0] != form.get("refresh_token"):
            why = "The refresh token is invalid or has already been used."
        elif held[1] < time.time():
            why = "The refresh token has expired."
        else:
            return self._issue(client)
        return json_response(400, {"error": "invalid_grant", "error_description": why})

    def _issue(self, client: str) -> Response:
        """A new access token, and a refresh token that replaces the client's previous one."""
        access = self.tokens.issue(self.token_lifetime_s)
        refresh = secrets.token_urlsafe(12)
        with self.lock:
            self._refresh[client] = (refresh, time.time() + self.refresh_lifetime_s)
        lifetime = int(self.token_lifetime_s)
        return json_response(200, {
            "access_token": access, "token_type": "bearer", "expires_in": lifetime,
            "refresh_token": refresh,
        })  # fmt: skip

    def _listed(self, kind: Kind, rec: Record) -> Record:
        return {**rec, **dict.fromkeys(kind.list_nulls)} if kind.list_nulls else rec

    def _batch(self, kind: Kind, text: str) -> Response:
        """`?id=[1,2,3]`: a JSON array of the (partial) records that exist."""
        try:
            ids = json.loads(text)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
            raise _bad_request(f"id: '{text}' is not a list of Ids like [123,456]")
        table = self._data[kind.name]
        return json_response(200, [self._listed(kind, table[i]) for i in ids if i in table])

    def _search(self, kind: Kind, params: dict[str, list[str]]) -> Response:
        """A search page: filters, order, paging and the 11-field envelope
        (rest-api/spaces/get-coworkers, and every other Search page)."""
        names = {f.lower(): f for f in (*kind.fields, *BASE, *(f + "Local" for f in kind.local))}
        prefix = kind.entity.lower() + "_"
        tests = []
        for key, values in params.items():
            low, bound = key.lower(), ""
            if low.startswith(("from_", "to_")):
                bound, _, low = low.partition("_")
            if not low.startswith(prefix):
                continue  # unknown parameters are ignored, as ASP.NET model binding does
            name = low[len(prefix) :].replace("_", "")  # Checkin_Coworker_FullName
            field = names.get(name) or names.get(name + "id")  # foreign keys lose their Id
            if field is not None:
                text = values[-1]
                tests.append(_within(field, bound, text) if bound else _equals(field, text))
        if _param(params, "id"):
            tests.append(_equals("Id", str(_param(params, "id"))))
        rows = [r for r in self._data[kind.name].values() if all(t(r) for t in tests)]
        order = names.get((_param(params, "orderby") or "id").lower(), "Id")
        direction = (_param(params, "dir") or "1").strip().lower()
        descending = direction in ("-1", "0", "desc", "descending")
        if order != "Id" or descending:  # the table is in Id order already
            rows = _sorted(rows, order, descending)
        page = max(1, _int_param(params, "page", 1))
        size = min(max(1, _int_param(params, "size", 25)), self.max_page_size)
        first = (page - 1) * size
        shown, pages = rows[first : first + size], math.ceil(len(rows) / size)
        return json_response(200, {
            "Records": [self._listed(kind, r) for r in shown],
            "CurrentPage": page, "CurrentPageSize": size, "CurrentOrderField": order,
            "CurrentSortDirection": -1 if descending else 1,
            "FirstItem": first + 1 if shown else 0,
            "LastItem": first + len(shown) if shown else 0,
            "TotalItems": len(rows), "TotalPages": pages,
            "HasNextPage": page < pages, "HasPreviousPage": page > 1,
        })  # fmt: skip

    def _invalid(self, kind: Kind, body: Record) -> list[tuple[str, Any, str]]:
        """Validation errors as (PropertyName, AttemptedValue, Message)."""
        missing = [f for f in kind.required if body.get(f) in (None, "")]
        errors = [(f, body.get(f), "is a required field") for f in missing]
        for field, value in body.items():
            if value is None or field not in kind.fields or field in (*kind.read_only, *missing):
                continue
            default = kind.fields[field]
            if field in INSTANTS:
                ok = isinstance(value, str) and parse_instant(value) is not None
            elif field in REFS:
                ok = self._lookup(REFS[field][0], value) is not None
            elif field == "Action":
                ok = value in ACTIONS.values()
            elif field == "CoworkerTimePassGuid":
                passes = self._data["coworkertimepasses"].values()
                ok = any(p.get("UniqueId") == value for p in passes)
            elif isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int | float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            else:
                ok = not isinstance(default, list) or len(_ids(value)) == len(value)
            if not ok:
                errors.append((field, value, "is not a valid value"))
        return errors

    def _validated(self, kind: Kind, body: Record, keep: Record) -> Record:
        """The body's writable fields, checked and normalized; a `…Local` value alone stands
        for its UTC field, read in the location's zone."""
        body = dict(body)
        for field in kind.local:
            wall = parse_instant(body.get(field + "Local"))
            if body.get(field) is None and wall is not None:
                zone = self._zone(kind.name, {**keep, **body})
                body[field] = utc_text(wall.replace(tzinfo=zone))
        errors = self._invalid(kind, body)
        if errors:  # the validation envelope of rest-api/sys/post-platformchangemessages
            raise _Refused(json_response(400, {
                "Status": 400, "Message": ", ".join(f"{p}: {m}" for p, _, m in errors),
                "Value": None, "WasSuccessful": False,
                "Errors": [{"AttemptedValue": v, "Message": m, "PropertyName": p}
                           for p, v, m in errors],
            }))  # fmt: skip
        fields = {k: body[k] for k in kind.fields if k in body and k not in kind.read_only}
        fields["SystemId"] = body.get("SystemId")
        return self._normalized(kind.name, fields, keep)

    def _http_create(self, kind: Kind, body: Record) -> Response:
        rec = self._insert(kind.name, self._validated(kind, body, {}), self.username, trusted=True)
        self._after_create(kind.name, rec)
        return self._ok(kind, "created", rec)

    def _http_update(self, kind: Kind, body: Record) -> Response:
        """PUT to the collection URL with the Id in the body, a full replace: what the body
        leaves out is cleared (rest-api/spaces/put-coworkers)."""
        old = self._lookup(kind.name, body.get("Id"))
        if old is None:
            return _not_found(kind, body.get("Id"))
        new = _fresh(kind)
        new.update(self._validated(kind, body, old))
        new.update({k: old[k] for k in (*BASE[:4], *kind.read_only) if k in old})
        if kind.name == "coworkercontracts":
            self._contract_flags(new, {})  # Cancelled and Active follow CancellationDate
        self._replace(kind.name, old["Id"], old, new, self.username)
        guid = new.get("CoworkerTimePassGuid")
        if kind.name == "checkins" and new.get("ToTime") and guid:
            for held in self._data["coworkertimepasses"].values():
                if held.get("UniqueId") == guid and held.get("CheckedIn"):
                    held.update(CheckedIn=False, UpdatedOn=utc_text(self.now()))
        return self._ok(kind, "updated", new)

    def _ok(self, kind: Kind, verb: str, rec: Record) -> Response:
        """The success envelope (rest-api/spaces/put-coworkersettings)."""
        return json_response(200, {
            "Status": 200, "Message": f"{kind.entity} was successfully {verb}.",
            "Value": {"Id": rec["Id"]}, "OpenInDialog": False, "OpenInWindow": False,
            "RedirectURL": None, "JavaScript": None, "UpdatedOn": rec.get("UpdatedOn"),
            "UpdatedBy": rec.get("UpdatedBy"), "Errors": None, "WasSuccessful": True,
        })  # fmt: skip

    # --- example and large data -------------------------------------------------------------

    @contextmanager
    def _bulk(self) -> Iterator[None]:
        """Loading data: no webhooks (an import sends none)."""
        with self.lock:
            self._loading = True
            try:
                yield
            finally:
                self._loading = False

    def _catalogue(self) -> dict[str, int]:
        """The location Mitte, its plans, its Day Pass and the meeting-room type, made once."""

        def once(entity: str, **fields: Any) -> int:
            for rec in self._data[entity].values():
                if rec.get("Name") == fields["Name"]:
                    return int(rec["Id"])
            return self.create(entity, fields)

        mitte = once(
            "businesses", Name="Mitte", WebAddress="mitte", Address="Invalidenstraße 1",
            TownCity="Berlin", PostalCode="10115", CountryId=276, CountryName="Germany",
            CurrencyId=978, CurrencyCode="EUR", SimpleTimeZoneId=37, SimpleTimeZoneName=SITE_ZONE,
        )  # fmt: skip
        ids = {"mitte": mitte}
        for key, name, kind, price in (
            ("hot_desk", "Hot Desk", 5, 199.0),  # SystemTariffType 5 FullTimeHotDesk
            ("resident", "Resident", 3, 349.0),  # 3 FullTimeDedicatedDesk
            ("server_access", "Server Access", 99, 25.0),  # 99 Other
        ):
            ids[key] = once(
                "tariffs", BusinessId=mitte, Name=name, SystemTariffType=kind, Price=price
            )
        ids["day_pass"] = once(
            "timepasses", BusinessId=mitte, Name="Day Pass", InvoiceLineDisplayAs="Day Pass",
            Price=25.0, MinutesIncluded=None,
        )  # fmt: skip
        ids["meeting_room"] = once("resourcetypes", BusinessId=mitte, Name="Meeting Room")
        return ids

    def load_example(self, today: date) -> dict[str, Any]:
        """The example site's cast around `today` (the site-local date); story key -> Id."""
        tz = _zoneinfo(SITE_ZONE)

        def at(days: int, hhmm: str = "00:00") -> datetime:
            h, m = (int(x) for x in hhmm.split(":"))
            return datetime.combine(today + timedelta(days=days), dtime(h, m), tzinfo=tz)

        def first_of_next_month(d: date) -> date:
            return (d.replace(day=1) + timedelta(days=32)).replace(day=1)

        with self._bulk():
            ids: dict[str, Any] = self._catalogue()
            make, mitte = self._make, ids["mitte"]
            ids["ada_room"] = make(
                "resources", BusinessId=mitte, Name="Ada room", Allocation=6,
                ResourceTypeId=ids["meeting_room"],
            )  # fmt: skip
            cast = (  # key, name, AccessCardId, AccessPincode, company
                ("ada", "Ada Lovelace", "12:3456", "1234", "ACME GmbH"),
                ("grace", "Grace Brewster", "H10306:1000:50001", "2468", None),
                ("linus", "Linus Suspended", "12:4000", None, None),
                ("ken", "Ken Ended", "12:4001", None, None),
                ("dennis", "Dennis Soon", "12:4002", None, None),
                ("barbara", "Barbara Overdue", "C1000:100:70001", None, None),
                ("margaret", "Margaret Visitor", "H10304:500:12345", None, None),
                ("alan", "Alan Pay-as-you-go", "0A0B0C0D", None, None),
                ("frances", "Frances Acme", "12:4003", None, "ACME GmbH"),
                ("edsger", "Edsger Lost", "", None, None),  # the card was removed
                ("radia", "Radia Ops", "12:4005", "9753", None),
                ("bjarne", "Bjarne Initech", "12:4006", None, "Initech"),
                ("initech_accounts", "Initech Accounts", None, None, "Initech"),  # a contact
            )
            for n, (key, name, card, pin, company) in enumerate(cast):
                first, _, last = name.partition(" ")
                contact = key == "initech_accounts"
                ids[key] = make(
                    "coworkers", FullName=name, GuessedFirstName=first, GuessedLastName=last,
                    Email=f"{key}@example.com", CompanyName=company, AccessCardId=card,
                    AccessPincode=pin, CoworkerType=2 if contact else 1, CountryId=276,
                    SimpleTimeZoneId=37, InvoicingBusinessId=mitte, Businesses=[mitte],
                    UserId=None if contact else 5001 + n, RegistrationDate=at(-400),
                )  # fmt: skip
            acme = [ids["ada"], ids["frances"]]
            ids["acme"] = make(
                "teams", BusinessId=mitte, Name="ACME GmbH", TeamMembers=acme, ShareTimePasses=True
            )
            ids["initech"] = make(
                "teams", BusinessId=mitte, Name="Initech", TeamMembers=[ids["bjarne"]],
                PayingMemberId=ids["initech_accounts"], CreateSingleInvoiceForTeam=True,
            )  # fmt: skip
            for who, plan, start, last_day in (
                ("ada", "hot_desk", -300, None),
                ("grace", "resident", -300, None),
                ("linus", "resident", -300, None),
                ("ken", "hot_desk", -300, -1),
                ("dennis", "hot_desk", 7, None),
                ("barbara", "resident", -300, None),
                ("edsger", "resident", -300, None),
                ("radia", "resident", -300, None),
                ("radia", "server_access", -300, 30),
            ):
                key = f"{who}_server_access" if plan == "server_access" else f"{who}_contract"
                ends = None if last_day is None else at(last_day).date()
                ids[key] = make(
                    "coworkercontracts", IssuedById=mitte, CoworkerId=ids[who],
                    TariffId=ids[plan], StartDate=at(start).date(), CancellationDate=ends,
                    RenewalDate=first_of_next_month(at(max(start, 0)).date()),
                    MainContract=plan != "server_access",
                )  # fmt: skip
            for key, who, due, paid in (
                ("ada_invoice", "ada", -1, False),  # due yesterday: inside a 3-day grace
                ("linus_invoice", "linus", -40, False),
                ("barbara_invoice", "barbara", -5, False),
                ("initech_invoice", "initech_accounts", -20, False),
                ("grace_invoice", "grace", -30, True),
            ):
                ids[key] = self.add_invoice(ids[who], at(due), 100.0, paid=paid)
            ids["margaret_pass"] = self.sell_day_pass(ids["margaret"])
            self.update(
                "coworkertimepasses", ids["margaret_pass"], Used=True, UsedDate=at(0, "08:30"),
                RemainingUses=0,
            )  # fmt: skip
            ids["alan_pass_1"] = self.sell_day_pass(ids["alan"])
            ids["alan_pass_2"] = self.sell_day_pass(ids["alan"])
            ids["alan_booking"] = make(
                "bookings", ResourceId=ids["ada_room"], CoworkerId=ids["alan"],
                FromTime=at(0, "10:00"), ToTime=at(0, "11:00"),
            )  # fmt: skip
            ids["grace_hopper"] = make(
                "visitors", BusinessId=mitte, FullName="Grace Hopper", CoworkerId=ids["ada"],
                Email="grace.hopper@example.com", ExpectedArrival=at(0, "09:00"),
                VisitorCode="1111",
            )  # fmt: skip
        return ids

    def load_large(
        self,
        members: int = 5000,
        companies: int = 500,
        bookings: int = 20000,
        today: date | None = None,
        seed: int = 1,
    ) -> None:
        """A big operator in a few seconds: `members` customers (most on a plan with a card
        and a PIN; ~10% with an unpaid invoice, some overdue; some contacts with Day Passes),
        `companies` teams of about members/companies, `bookings` over ±30 days on 50 rooms."""
        rng = random.Random(seed)
        zone = _zoneinfo(SITE_ZONE)
        today = today or self.now().astimezone(zone).date()
        midnights: dict[int, str] = {}

        def day(n: int) -> str:
            if n not in midnights:
                local = datetime.combine(today + timedelta(days=n), dtime(), tzinfo=zone)
                midnights[n] = utc_text(local)
            return midnights[n]

        now, stamps = self.now(), random.Random(seed + 1)  # the data stays as it was

        def insert(entity: str, **fields: Any) -> Record:
            rec = self._insert(entity, fields, self.operator, trusted=True)
            # An operator's records were made and last changed over the years, not
            # in this second (a poll's "updated since" would read them all again).
            created = now - timedelta(seconds=stamps.randrange(86400, 700 * 86400))
            modified = created + (now - created) * stamps.random()
            rec.update(CreatedOn=utc_text(created), UpdatedOn=utc_text(modified))
            return rec

        with self._bulk():
            cat = self._catalogue()
            mitte, plans = cat["mitte"], (cat["hot_desk"], cat["resident"])
            rooms = [
                insert("resources", BusinessId=mitte, Name=f"Room {i + 1:02d}",
                       Allocation=4 + i % 8, ResourceTypeId=cat["meeting_room"])["Id"]
                for i in range(50)
            ]  # fmt: skip
            teams = [
                insert("teams", BusinessId=mitte, Name=f"Company {i + 1:04d}")
                for i in range(companies)
            ]
            people = []
            for i in range(members):
                team = rng.choice(teams) if teams and rng.random() < 0.9 else None
                r = rng.random()  # 92% with a card, 75% with a PIN too
                card = f"{rng.randrange(1, 256)}:{rng.randrange(1, 65536)}" if r < 0.92 else None
                pin = f"{rng.randrange(10000):04d}" if r < 0.75 else None
                person = insert(
                    "coworkers", FullName=f"Member {i + 1:05d}", Email=f"member{i + 1}@example.com",
                    AccessCardId=card, AccessPincode=pin, CountryId=276, SimpleTimeZoneId=37,
                    InvoicingBusinessId=mitte, Businesses=[mitte], UserId=100000 + i,
                    RegistrationDate=day(-rng.randrange(30, 900)),
                    CompanyName=team["Name"] if team else None,
                )  # fmt: skip
                people.append(person["Id"])
                if team:  # both sides of the membership, without a bump each
                    person["Teams"].append(team["Id"])
                    team["TeamMembers"].append(person["Id"])
                p = rng.random()  # 85% running plans, 3% ended, 2% ending, 3% future; contacts
                if p < 0.88:
                    tariff = rng.choice(plans)
                    start = day(rng.randrange(-700, 0) if p < 0.85 else rng.randrange(1, 30))
                    ends = (
                        day(rng.randrange(-200, -1)) if 0.80 <= p < 0.83 else
                        day(rng.randrange(1, 60)) if 0.83 <= p < 0.85 else None
                    )  # fmt: skip
                    insert(
                        "coworkercontracts", IssuedById=mitte, CoworkerId=person["Id"],
                        TariffId=tariff, StartDate=start, CancellationDate=ends,
                        RenewalDate=day(rng.randrange(1, 31)),
                    )  # fmt: skip
                    if tariff == cat["resident"] and rng.random() < 0.05:
                        insert(
                            "coworkercontracts", IssuedById=mitte, CoworkerId=person["Id"],
                            TariffId=cat["server_access"], StartDate=start, MainContract=False,
                        )  # fmt: skip
                else:
                    for _ in range(rng.randrange(4)):
                        used = rng.random() < 0.3
                        insert(
                            "coworkertimepasses", CoworkerId=person["Id"], BusinessId=mitte,
                            TimePassId=cat["day_pass"], Price=25.0, Used=used,
                            RemainingUses=0 if used else 1,
                            UsedDate=day(-rng.randrange(1, 60)) if used else None,
                        )  # fmt: skip
                if rng.random() < 0.1:
                    insert(
                        "coworkerinvoices", CoworkerId=person["Id"], BusinessId=mitte,
                        Description="Membership", DueDate=day(rng.randrange(-45, 10)),
                        TotalAmount=199.0, PaidAmount=0.0,
                    )  # fmt: skip
            for team in teams:
                first = team["TeamMembers"][:1]
                team.update(PayingMemberId=first[0] if first else None, TeamAdministrators=first)
                self._derive("teams", team)
            for _ in range(bookings):
                start_at = datetime.combine(
                    today + timedelta(days=rng.randrange(-30, 31)),
                    dtime(rng.randrange(8, 19), rng.choice((0, 30))),
                    tzinfo=zone,
                )
                end_at = start_at + timedelta(minutes=rng.choice((30, 60, 90, 120)))
                insert(
                    "bookings", ResourceId=rng.choice(rooms), FromTime=utc_text(start_at),
                    ToTime=utc_text(end_at), CoworkerId=rng.choice(people or [None]),
                )  # fmt: skip
