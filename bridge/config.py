"""The bridge's TOML configuration, validated like the gateway's.

Unknown keys are errors; every problem is reported as `file: path.to.key:
problem` and the command line exits with status 2. What the operator decides
lives here: which platform plans, passes, companies and resources give which
access groups and schedules, which resources are which rooms, the grace after
an invoice's due date, where cards and PINs are kept. The site's own structure
(schedules, doors, access groups, holidays) is written here too: no platform
knows it. Credentials are file names in the secrets directory, never values.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config import Identifier, ListOf, MqttConfig, PathOption, parse_toml, read_text
from edge.site.syncdoc import DocError, References, validate_object

DEFAULT_STATE_DIR = Path("/var/lib/edge-bridge")
CARD_FORMATS = ("H10301", "H10306", "C1000", "H10304")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Seconds = Annotated[float, Field(gt=0, le=86400)]


class BridgeSection(_Section):
    # Default: $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/edge-bridge.
    state_dir: PathOption | None = None
    # Where gateways pull edge-sync/1 and platforms deliver webhooks.
    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8470
    # PEM certificate chain and key: with both, the listener speaks HTTPS only
    # (an operator's server receiving webhooks from the internet).
    tls_cert: PathOption | None = None
    tls_key: PathOption | None = None
    # Events kept after delivery (and non-billable events) for `status` and audits.
    event_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # Changes kept for gateways that pull by cursor; an older cursor gets 410.
    keep_changes: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000

    @model_validator(mode="after")
    def _tls_pair(self) -> BridgeSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class AdminSection(_Section):
    socket: PathOption | None = None  # default: <state_dir>/admin.sock
    socket_mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] = "0660"


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    timestamps: bool = True


class _PlatformBase(_Section):
    # The platform's API base URL (the simulator's in tests and the demo).
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    # Access-relevant entities are read by "updated since" this often.
    poll_interval_s: Seconds = 60
    # Reference entities (plans, resources, pass products, locations) this often.
    slow_poll_interval_s: Seconds = 900
    # A full read of everything, the only way deletions the filters miss are seen.
    sweep_interval_s: Seconds = 3600
    # The bridge's own budget of API calls; the platform's limit answers anyway.
    requests_per_s: Annotated[float, Field(gt=0, le=1000)] = 5
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 15
    # "Updated since" reads start this far before the previous good read of the
    # entity started (minute-precision filters, clocks that disagree).
    overlap_s: Annotated[float, Field(ge=0, le=86400)] = 120
    # A complete sweep that would delete more than this share of an entity's
    # records is held (a platform bug must not look like "everyone left") until
    # `edge-bridge sync now --allow-deletes`.
    max_delete_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2
    # Unsigned webhooks are only hints either way; with a secret, a webhook
    # whose signature does not verify is refused (401).
    webhook_secret: Identifier | None = None
    backoff_min_s: Seconds = 1
    backoff_max_s: Seconds = 300
    # Allow http:// for url (and OfficeRnD's token_url): the platform password
    # or client secret, its tokens and every member record then cross the
    # network in clear. For a lab or a simulated platform on loopback only; the
    # bridge logs a WARNING at every start while it is on.
    allow_insecure_http_for_lab: bool = False

    def insecure_urls(self) -> list[str]:
        """The URLs of this platform that are plain HTTP."""
        urls = [self.url, getattr(self, "token_url", "")]
        return [u for u in urls if u.startswith("http://")]

    @model_validator(mode="after")
    def _https_only(self) -> _PlatformBase:
        plain = self.insecure_urls()
        if plain and not self.allow_insecure_http_for_lab:
            raise ValueError(
                f"{plain[0]!r} is plain HTTP, which sends the platform's credentials and "
                "member data in clear: use https://, or set allow_insecure_http_for_lab = "
                "true for a lab"
            )
        return self


class NexudusPlatform(_PlatformBase):
    type: Literal["nexudus"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://spaces.nexudus.com"
    username: Annotated[str, Field(min_length=1)]
    password_secret: Identifier = "nexudus_password"  # noqa: S105 - a file name
    page_size: Annotated[int, Field(ge=1, le=1000)] = 1000
    # PINs and key fobs are only in a coworker's full record (one GET each):
    # with neither used, the list reads alone are enough.
    read_pins: bool = True
    read_key_fobs: bool = False


class OfficeRndPlatform(_PlatformBase):
    type: Literal["officernd"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://app.officernd.com"
    token_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = (
        "https://identity.officernd.com/oauth/token"  # noqa: S105 - a URL
    )
    organization: Identifier
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_secret: Identifier = "officernd_client_secret"  # noqa: S105 - a file name
    # Member custom properties (their keys) holding the card number and the PIN.
    card_property: Identifier = "cardNumber"
    pin_property: Identifier | None = "doorPin"
    # One-off fees need a plan (OfficeRnD "fees": plan required): the plan's id.
    fee_plan: Identifier | None = None
    # Collections without a usable modifiedAt filter (memberships) are read whole this often.
    full_read_interval_s: Seconds = 600


PlatformConfig = Annotated[NexudusPlatform | OfficeRndPlatform, Field(discriminator="type")]


# --- the site ------------------------------------------------------------------


class Grant(_Section):
    group: Identifier
    schedule: Identifier


class Window(_Section):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    days: str
    from_: str = Field(alias="from")
    to: str


class ScheduleSection(_Section):
    windows: Annotated[tuple[Window, ...], ListOf]
    closed_on_holidays: bool = False


class DoorSection(_Section):
    name: str = ""
    mode: Literal["card", "pin", "card_or_pin", "card_and_pin"] = "card"
    unlock_schedule: Identifier | None = None
    first_person_in: bool = False


class PlanSection(_Section):
    # Platform plans (Nexudus tariffs, OfficeRnD plans) by name or id.
    match: Annotated[tuple[str, ...], ListOf, Field(min_length=1)]
    access: Annotated[tuple[Grant, ...], ListOf] = ()


class CompanySection(_Section):
    # Platform companies (Nexudus teams, OfficeRnD companies) by name or id;
    # "*" matches every company.
    match: Annotated[tuple[str, ...], ListOf, Field(min_length=1)]
    access: Annotated[tuple[Grant, ...], ListOf] = ()


class RoomSection(_Section):
    # The platform resource (by name or id) whose bookings are this room's.
    resource: Annotated[str, Field(min_length=1)]
    name: str | None = None  # default: the resource's name
    door: Identifier | None = None
    capacity: Annotated[int, Field(ge=0)] | None = None
    no_show_release_min: Annotated[int, Field(ge=0, le=1440)] = 15
    checkin_early_min: Annotated[int, Field(ge=0, le=1440)] = 10
    credits_per_hour: Annotated[int, Field(ge=0, le=1000)] = 0
    # Overtime is charged to the booker at this price per hour, in whole units
    # as the gateway reports them.
    overtime_price_per_hour: Annotated[float, Field(ge=0)] = 0


class UsageSection(_Section):
    # A granted entry at one of these doors is a check-in on the platform.
    checkin_doors: Annotated[tuple[Identifier, ...], ListOf] = ()
    checkins: Literal["first_per_day", "every_entry", "off"] = "first_per_day"
    # Charged to the host, once a day per guest (the gateway reports it once).
    guest_entry_price: Annotated[float, Field(ge=0)] = 0
    # Credits spent at a room panel, charged at this price each (0: not charged).
    credit_price: Annotated[float, Field(ge=0)] = 0


class PushSection(_Section):
    """Signed edge-sync/1 pushes to the site's gateways through a broker."""

    mqtt: MqttConfig = MqttConfig()
    key_id: Identifier = "bridge-1"
    # The Ed25519 private key: a PEM file, or 32 bytes as hex or base64url
    # (`edge-bridge keygen` makes one and prints the public key for the gateway).
    signing_key_secret: Identifier = "push_signing_key"  # noqa: S105 - a file name


class SiteSection(_Section):
    platform: Identifier
    # The platform's locations this site is (Nexudus business ids, OfficeRnD
    # location ids); records of other locations are not the site's.
    locations: Annotated[tuple[str, ...], ListOf, Field(min_length=1)]
    name: str = ""
    timezone: str = "UTC"
    # The gateways' bearer token and the site PIN key (64 hex characters), as files.
    gateway_token_secret: Identifier = "gateway_token"  # noqa: S105 - a file name
    pin_key_secret: Identifier = "pin_key"  # noqa: S105 - a file name
    # Days after an unpaid invoice's due date before billing is `suspended`;
    # in between it is `past_due` with grace until then.
    grace_days: Annotated[int, Field(ge=0, le=365)] = 3
    # Card numbers written "FC:NUMBER" are read in this format; "FORMAT:FC:NUMBER"
    # names its own; hex digits alone are a raw card (a UID).
    card_format: Literal["H10301", "H10306", "C1000", "H10304"] = "H10301"
    day_pass_access: Annotated[tuple[Grant, ...], ListOf] = ()
    # Nexudus TimePass products (names or ids) that are day passes; empty: every
    # one without included minutes. (On OfficeRnD every pass set is day passes.)
    day_pass_products: Annotated[tuple[str, ...], ListOf] = ()
    # What a visitor's code (PIN) opens on the day of the visit.
    guest_access: Annotated[tuple[Grant, ...], ListOf] = ()
    schedules: dict[Identifier, ScheduleSection] = {}
    holidays: dict[str, str] = {}
    doors: dict[Identifier, DoorSection] = {}
    access_groups: dict[Identifier, Annotated[tuple[Identifier, ...], ListOf]] = {}
    plans: dict[Identifier, PlanSection] = {}
    companies: dict[Identifier, CompanySection] = {}
    rooms: dict[Identifier, RoomSection] = {}
    usage: UsageSection = UsageSection()
    push: PushSection | None = None


class Config(_Section):
    bridge: BridgeSection = BridgeSection()
    admin: AdminSection = AdminSection()
    log: LogSection = LogSection()
    platforms: dict[Identifier, PlatformConfig]
    sites: dict[Identifier, SiteSection]

    def state_dir(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        if self.bridge.state_dir is not None:
            return self.bridge.state_dir
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else DEFAULT_STATE_DIR

    def admin_socket(self, state_dir: Path) -> Path:
        return self.admin.socket or state_dir / "admin.sock"

    def sites_of(self, platform: str) -> dict[str, SiteSection]:
        return {sid: s for sid, s in self.sites.items() if s.platform == platform}


# --- the site's fixed objects, as edge-sync/1 objects ------------------------------


def _grants(grants: tuple[Grant, ...]) -> list[dict[str, Any]]:
    return [{"group": g.group, "schedule": g.schedule} for g in grants]


def fixed_objects(site_id: str, site: SiteSection) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects of the site that come from this file, not from the platform:
    the site, schedules, holidays, doors, access groups, plans, rooms."""
    out: dict[tuple[str, str], dict[str, Any]] = {
        ("site", site_id): {
            "id": site_id,
            "name": site.name or site_id,
            "timezone": site.timezone,
            "day_pass_access": _grants(site.day_pass_access),
        }
    }
    for sid, s in site.schedules.items():
        out["schedule", sid] = {
            "id": sid,
            "closed_on_holidays": s.closed_on_holidays,
            "windows": [{"days": w.days, "from": w.from_, "to": w.to} for w in s.windows],
        }
    for day, name in site.holidays.items():
        out["holiday", day] = {"date": day, "name": name}
    for did, d in site.doors.items():
        out["door", did] = {
            "id": did,
            "name": d.name or did,
            "mode": d.mode,
            "unlock_schedule": d.unlock_schedule,
            "first_person_in": d.first_person_in,
        }
    for gid, doors in site.access_groups.items():
        out["access_group", gid] = {"id": gid, "doors": list(doors)}
    for pid, p in site.plans.items():
        out["plan", pid] = {"id": pid, "access": _grants(p.access)}
    return out


def _check_site(site_id: str, site: SiteSection, platforms: dict[str, Any]) -> list[str]:
    where = f"sites.{site_id}"
    problems: list[str] = []
    if site.platform not in platforms:
        known = ", ".join(sorted(platforms)) or "none"
        problems.append(f"{where}.platform: unknown platform {site.platform!r} (known: {known})")
    for day in site.holidays:
        try:
            date.fromisoformat(day)
        except ValueError:
            problems.append(f"{where}.holidays.{day}: not a date (YYYY-MM-DD)")
    if problems:
        return problems
    # Everything that becomes an edge-sync/1 object is checked by the same
    # validation the gateway applies, so a gateway never refuses this part.
    sections = {
        "site": "",
        "schedule": "schedules",
        "holiday": "holidays",
        "door": "doors",
        "access_group": "access_groups",
        "plan": "plans",
    }
    refs = References()
    for (kind, oid), obj in fixed_objects(site_id, site).items():
        path = where if kind == "site" else f"{where}.{sections[kind]}.{oid}"
        try:
            refs.add(kind, validate_object(kind, obj, path), path)
        except DocError as exc:
            problems.append(str(exc))
    extra: list[tuple[str, str, str]] = []
    for rid, room in site.rooms.items():
        extra.append((f"{where}.rooms.{rid}.door", "door", room.door or ""))
    for cid, company in site.companies.items():
        for i, g in enumerate(company.access):
            extra.append((f"{where}.companies.{cid}.access[{i}].group", "access_group", g.group))
            extra.append((f"{where}.companies.{cid}.access[{i}].schedule", "schedule", g.schedule))
    for i, g in enumerate(site.guest_access):
        extra.append((f"{where}.guest_access[{i}].group", "access_group", g.group))
        extra.append((f"{where}.guest_access[{i}].schedule", "schedule", g.schedule))
    for i, door in enumerate(site.usage.checkin_doors):
        extra.append((f"{where}.usage.checkin_doors[{i}]", "door", door))
    refs.wanted.extend(e for e in extra if e[2])
    try:
        refs.check()
    except DocError as exc:
        problems.append(str(exc))
    if site.push is not None and site.push.mqtt.embedded:
        problems.append(f"{where}.push.mqtt.embedded: the bridge pushes to a site's broker")
    return problems


def _cross_check(cfg: Config) -> list[str]:
    problems: list[str] = []
    for site_id, site in cfg.sites.items():
        problems += _check_site(site_id, site, cfg.platforms)
    return problems


def parse_config(text: str, source: str = "config") -> Config:
    return parse_toml(text, Config, source, _cross_check)


def load_config(path: Path) -> Config:
    return parse_config(read_text(path), str(path))
