"""The gateway's TOML configuration, validated by pydantic.

Unknown keys are errors. Every problem is reported as `file: path.to.key:
problem`, never as a traceback: `load_config` raises `ConfigError`, whose
lines the command line prints before exiting with status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.hvac import ModbusHvacConfig
from drivers.modbus import ModbusRtuBus, ModbusTcpBus
from drivers.mqtt_devices import JsonDevice, TasmotaDevice, Zigbee2MqttDevice
from drivers.osdp import OsdpBusConfig, OsdpReaderConfig

DEFAULT_STATE_DIR = Path("/var/lib/edge-gateway")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_ID = re.compile(r"[^\x00-\x1f]{1,64}\Z")


def _identifier(v: str) -> str:
    if not _ID.match(v):
        raise ValueError("must be a non-empty identifier of at most 64 characters")
    return v


Identifier = Annotated[str, AfterValidator(_identifier)]


def _as_tuple(v: object) -> object:
    # TOML arrays arrive as lists; strict mode wants the tuple the field declares.
    return tuple(v) if isinstance(v, list) else v


ListOf = BeforeValidator(_as_tuple)


def _as_path(v: object) -> object:
    # TOML has no path type: strings become the Path strict mode wants.
    return Path(v) if isinstance(v, str) else v


PathOption = Annotated[Path, BeforeValidator(_as_path)]


class SiteConfig(_Section):
    """The site this gateway serves; a snapshot of another site is refused."""

    id: Identifier


class GatewayConfig(_Section):
    id: Identifier = "gw-1"

    # Default: $STATE_DIRECTORY (set by systemd's StateDirectory=), else /var/lib/edge-gateway.
    state_dir: PathOption | None = None


class AdminConfig(_Section):
    socket: PathOption | None = None  # default: <state_dir>/admin.sock
    socket_mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] = "0660"


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    timestamps: bool = True  # journald adds its own; turn off under systemd if preferred


class EventsConfig(_Section):
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


# Card formats with a facility (or company) code, and the code's width in bits:
# the same widths as edge.site.syncdoc.CARD_FIELD_BITS (a test holds them equal).
FACILITY_CODE_BITS = {"H10301": 8, "H10306": 16, "C1000": 12, "H10304": 16}

# What a door does while the cache cannot be trusted (DoorHardware.offline_policy).
OfflineMethod = Literal["cache", "locked", "facility_code", "unlocked", "deny_stale"]


class AccessConfig(_Section):
    # Holders (member or guest ids) that doors with offline_policy "locked" or
    # "facility_code" still admit, from the cache, while it cannot be trusted
    # (a stale cache, an untrusted clock): staff who must get in.
    offline_exempt: Annotated[tuple[Identifier, ...], ListOf] = ()
    # "FORMAT:FACILITY" codes that doors with offline_policy = "facility_code"
    # admit while the cache cannot be trusted, e.g. ["H10301:17"].
    offline_facility_codes: Annotated[tuple[str, ...], ListOf] = ()
    admin_unlock_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    max_unlock_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600
    # Holders (member or guest ids) whose grants unlock for a door's
    # `extended_unlock_seconds`: people who need longer to get through.
    extended_unlock: Annotated[tuple[Identifier, ...], ListOf] = ()

    @field_validator("offline_facility_codes")
    @classmethod
    def _facility_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            fmt, _, fac = code.partition(":")
            bits = FACILITY_CODE_BITS.get(fmt)
            if bits is None:
                known = ", ".join(FACILITY_CODE_BITS)
                raise ValueError(f"{code!r}: unknown card format {fmt!r} (one of: {known})")
            if not fac.isdigit() or not fac.isascii() or int(fac) >= 1 << bits:
                raise ValueError(
                    f"{code!r}: the facility code must be a number below {1 << bits} "
                    f"({fmt} has {bits} bits for it)"
                )
        return tuple(f"{c.partition(':')[0]}:{int(c.partition(':')[2])}" for c in codes)

    @model_validator(mode="after")
    def _default_within_limit(self) -> AccessConfig:
        if self.admin_unlock_seconds > self.max_unlock_seconds:
            raise ValueError(
                f"admin_unlock_seconds ({self.admin_unlock_seconds}) is above "
                f"max_unlock_seconds ({self.max_unlock_seconds})"
            )
        return self


class CloudConfig(_Section):
    """The operator's cloud platform (`edge-sync/1`): pull, push and event upload."""

    # Allow an http:// url: the bearer token, member data and events then cross
    # the network in clear. For a lab or the simulator on loopback only; the
    # gateway logs a WARNING at every start while it is on. (Declared before
    # url, so that url's check can see it.)
    allow_insecure_http_for_lab: bool = False
    # The API's base URL, e.g. "https://cloud.example/api/edge/v1". Only https://
    # unless allow_insecure_http_for_lab says otherwise.
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    # The bearer token's file name in the secrets directory (systemd credentials first).
    token_secret: Identifier = "cloud_token"  # noqa: S105 - a file name
    # A CA bundle (PEM) to verify the cloud's TLS certificate against instead of
    # the system's; TLS is verified either way.
    ca_bundle: PathOption | None = None
    # Changes are pulled this often; a push makes the gateway pull at once.
    pull_interval_s: Annotated[float, Field(ge=1, le=86400)] = 60
    # Connect and read timeouts of every request (a read timeout is per chunk).
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10
    # Retries back off exponentially with jitter from the first to the last delay.
    backoff_min_s: Annotated[float, Field(gt=0, le=3600)] = 1
    backoff_max_s: Annotated[float, Field(gt=0, le=86400)] = 300
    # How many changes one pull request asks for, and events one upload sends.
    changes_limit: Annotated[int, Field(ge=1, le=1000)] = 500
    upload_batch: Annotated[int, Field(ge=1, le=500)] = 500
    # The cache counts as stale when the last successful sync is older than
    # this; doors then run their offline_policy (`cache_stale`).
    cache_stale_hours: Annotated[float, Field(gt=0, le=8760)] = 72
    # Subscribe to signed pushes on the site broker ([mqtt]).
    push: bool = True
    # The cloud's Ed25519 public keys by key id (several, for rotation): 32
    # bytes in base64url or hex, or a PEM block.
    keys: dict[Identifier, str] = {}

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        from edge.keys import load_public_key

        for key_id, text in v.items():
            try:
                load_public_key(text)
            except ValueError as exc:
                raise ValueError(f"key {key_id!r}: {exc}") from None
        return v

    @field_validator("url")
    @classmethod
    def _https_only(cls, v: str, info: ValidationInfo) -> str:
        if v.startswith("http://") and not info.data.get("allow_insecure_http_for_lab"):
            raise ValueError(
                f"{v!r} is plain HTTP, which sends the cloud token and member data in "
                "clear: use https://, or set allow_insecure_http_for_lab = true for a lab"
            )
        return v

    @model_validator(mode="after")
    def _backoff(self) -> CloudConfig:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s is above backoff_max_s")
        if self.push and not self.keys:
            raise ValueError("push = true needs at least one key in [cloud.keys]")
        return self


class MqttConfig(_Section):
    """The site's MQTT broker (Mosquitto in production)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    # The password's file name in the secrets directory.
    password_secret: Identifier | None = None
    tls: bool = False
    ca_bundle: PathOption | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    # Default: "edge-<site>-<gateway>"; stable, so the broker keeps QoS 1
    # messages for the gateway while it is away.
    client_id: str | None = None
    # Run a pure-Python broker (amqtt) inside the gateway on host:port, for a
    # demo or a box without Mosquitto. Production sites run Mosquitto.
    embedded: bool = False


# --- rooms and their devices -------------------------------------------------------------


class RoomConfig(_Section):
    """How a room of the site (by its id in the cloud's data) follows its bookings.

    Durations are minutes; fractions are allowed (0.5 is 30 s).
    """

    # Devices may be used without a booking: nothing is switched off in a free room.
    free_use: bool = False
    # HVAC goes to comfort this long before a booking starts.
    preconditioning_min: Annotated[float, Field(ge=0, le=240)] = 15
    # The panel warns this long before the end.
    ending_warning_min: Annotated[float, Field(ge=0, le=60)] = 5
    # Devices stay on this long after the end; presence in that time is overtime.
    grace_min: Annotated[float, Field(ge=0, le=60)] = 5
    # Overtime is billed in whole units of this many minutes.
    overtime_unit_min: Annotated[int, Field(ge=1, le=240)] = 15
    # The longest booking the panel takes at once (book now, extend).
    max_panel_booking_min: Annotated[int, Field(ge=5, le=720)] = 240


DeviceConfig = Annotated[
    TasmotaDevice | Zigbee2MqttDevice | JsonDevice | ModbusHvacConfig,
    Field(discriminator="type"),
]


class WifiConfig(_Section):
    """The guest Wi-Fi passphrase, rotated and published for the access point."""

    ssid: Annotated[str, Field(min_length=1, max_length=32)]
    # Rotated every day at this site-local time ("HH:MM").
    rotate_at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "04:00"
    # Every `rotate_days` days (1 = daily).
    rotate_days: Annotated[int, Field(ge=1, le=365)] = 1
    # Groups of four characters; 3 groups is 14 characters and about 62 bits.
    groups: Annotated[int, Field(ge=2, le=8)] = 3
    # Show the passphrase on the room panels.
    on_panels: bool = True


class WebConfig(_Section):
    """The web server on the daemon's loop: `/metrics` (and the pages to come)."""

    enabled: bool = False
    host: str = "0.0.0.0"  # noqa: S104 (listening on the site's network is the point)
    port: Annotated[int, Field(ge=1, le=65535)] = 8443
    # TLS with a self-signed certificate made at first start (<state_dir>/web/),
    # or the operator's own: cert_file and key_file (PEM). Plain HTTP
    # (tls = false) is allowed on a loopback address only.
    tls: bool = True
    cert_file: PathOption | None = None
    key_file: PathOption | None = None
    # Bodies larger than this are refused with 413 before they are read.
    max_body_kb: Annotated[int, Field(ge=1, le=10240)] = 64
    # Console sessions end after this long idle, and after session_hours in any case.
    idle_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 120
    session_hours: Annotated[int, Field(ge=1, le=24 * 7)] = 12
    # A console account is locked for lockout_minutes after this many wrong
    # passwords in a row; a client address gets login_per_minute attempts.
    lockout_after: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    login_per_minute: Annotated[int, Field(ge=1, le=600)] = 10
    # A panel pairing code from `edgectl panel pair` is good for this long.
    pairing_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> WebConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (or neither: self-signed)")
        if not self.tls and not _loopback(self.host):
            raise ValueError(
                f"tls = false is allowed on a loopback address only, not on {self.host!r} "
                "(use 127.0.0.1 or ::1, or keep tls = true)"
            )
        return self


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HomeAssistantConfig(_Section):
    # Publish Home Assistant MQTT discovery for rooms, doors and devices.
    discovery: bool = False
    prefix: Annotated[str, Field(pattern=r"^[^\s#+]+$")] = "homeassistant"
    # Take "UNLOCK"/"LOCK" on edge/<site>/doors/<door>/command (and announce
    # the doors as locks Home Assistant can open). Off: doors are read-only.
    # Only safe with a broker ACL that reserves the topic to admin users
    # (docs/mosquitto-acl.example): MQTT does not tell who published.
    door_commands: bool = False
    # Occupancy: someone granted entry counts as on site for this long (or
    # until an exit reader's grant, or the end of the site's day).
    occupancy_hours: Annotated[float, Field(gt=0, le=24)] = 8


# --- hardware ----------------------------------------------------------------------------


class ModbusRtuBusConfig(ModbusRtuBus):
    # How often the door contacts and exit buttons on this bus are read.
    input_poll_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


class ModbusTcpBusConfig(ModbusTcpBus):
    input_poll_ms: Annotated[int, Field(ge=10, le=60_000)] = 100


class OsdpBusSection(OsdpBusConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 115200


BusConfig = Annotated[
    ModbusRtuBusConfig | ModbusTcpBusConfig | OsdpBusSection, Field(discriminator="type")
]


class OsdpReaderSection(OsdpReaderConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    bus: Identifier


class WiegandReaderSection(_Section):
    type: Literal["wiegand"]
    # Where the D0/D1 edges come from: "gpiod" (a GPIO chip, on a real box) or
    # "socket" (a Unix datagram socket the simulated site sends to).
    edges: Literal["gpiod", "socket"] = "gpiod"
    chip: str = "/dev/gpiochip0"
    d0: Annotated[int, Field(ge=0, le=1023)] | None = None
    d1: Annotated[int, Field(ge=0, le=1023)] | None = None
    socket: PathOption | None = None
    # Reader LED and beeper inputs, driven through GPIO outputs (gpiod only).
    led_line: Annotated[int, Field(ge=0, le=1023)] | None = None
    beeper_line: Annotated[int, Field(ge=0, le=1023)] | None = None
    # Silence that ends a frame.
    frame_gap_ms: Annotated[float, Field(ge=5, le=200)] = 25
    # The card formats of the site's cards. Frames of other lengths are refused,
    # and a frame as long as the longest accepted one is decided at its last bit
    # instead of after the gap: with ["H10301"] only, 26-bit cards open ~25 ms sooner.
    card_formats: Annotated[tuple[Literal["H10301", "H10306", "C1000", "H10304"], ...], ListOf] = (
        "H10301",
        "H10306",
        "C1000",
        "H10304",
    )
    # Frame lengths accepted as raw card numbers beside the known formats.
    raw_lengths: Annotated[tuple[Annotated[int, Field(ge=8, le=128)], ...], ListOf] = ()
    # A PIN being typed is forgotten after this many seconds without a key.
    pin_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5

    @model_validator(mode="after")
    def _source(self) -> WiegandReaderSection:
        if self.edges == "gpiod" and (self.d0 is None or self.d1 is None):
            raise ValueError('edges = "gpiod" needs the line offsets `d0` and `d1`')
        if self.edges == "gpiod" and self.d0 == self.d1:
            raise ValueError("d0 and d1 must be different lines")
        if self.edges == "socket" and self.socket is None:
            raise ValueError('edges = "socket" needs `socket`, the path to bind')
        return self


ReaderConfig = Annotated[OsdpReaderSection | WiegandReaderSection, Field(discriminator="type")]


class ModbusStrike(_Section):
    """A relay on a Modbus board."""

    type: Literal["modbus"]
    bus: Identifier
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    coil: Annotated[int, Field(ge=0, le=65535)]


class OsdpStrike(_Section):
    """A relay output of an OSDP reader."""

    type: Literal["osdp"]
    reader: Identifier
    output: Annotated[int, Field(ge=0, le=255)] = 0


StrikeConfig = Annotated[ModbusStrike | OsdpStrike, Field(discriminator="type")]


class ContactInput(_Section):
    """A door contact on a Modbus board's discrete input."""

    bus: Identifier
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    input: Annotated[int, Field(ge=0, le=65535)]
    # The input's value when the door is open. A normally-closed reed contact
    # (the usual, and what a cut wire reads as "open") reads "off" when open.
    open_when: Literal["on", "off"] = "off"


class ExitInput(_Section):
    """A request-to-exit button or sensor on a Modbus board's discrete input."""

    bus: Identifier
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    input: Annotated[int, Field(ge=0, le=65535)]
    pressed_when: Literal["on", "off"] = "on"


class DoorHardware(_Section):
    """One door's readers, strike and inputs; the key is the cloud's door id."""

    in_readers: Annotated[tuple[Identifier, ...], ListOf] = ()
    out_readers: Annotated[tuple[Identifier, ...], ListOf] = ()
    strike: StrikeConfig | None = None
    # "secure": the strike is energised to unlock (locked when power fails);
    # "safe": energised to lock, as a magnetic lock (unlocked when power fails).
    fail_mode: Literal["secure", "safe"] = "secure"
    contact: ContactInput | None = None
    exit: ExitInput | None = None
    unlock_seconds: Annotated[float, Field(gt=0, le=3600)] = 5
    extended_unlock_seconds: Annotated[float, Field(gt=0, le=3600)] = 15
    exit_unlock_seconds: Annotated[float, Field(gt=0, le=3600)] = 5
    held_open_seconds: Annotated[float, Field(gt=0, le=86400)] = 30
    prealarm_seconds: Annotated[float, Field(ge=0, le=86400)] = 10
    relock_on_close: bool = True
    # What the door does while the cache cannot be trusted: older than [cloud]
    # cache_stale_hours (`cache_stale`), a clock behind what the cloud last said
    # (`clock_untrusted`), a database found corrupt at start and set aside
    # (`database_unreadable`) or no site data yet (`no_site_data`).
    # "cache": decide on the cached data all the same; "locked": admit nobody but
    # [access] offline_exempt; "facility_code": admit cards with one of [access]
    # offline_facility_codes (and offline_exempt); "unlocked": hold the door
    # unlocked. "deny_stale" is the former name of "locked".
    offline_policy: OfflineMethod = "cache"

    @model_validator(mode="after")
    def _times(self) -> DoorHardware:
        if self.prealarm_seconds >= self.held_open_seconds:
            raise ValueError(
                f"prealarm_seconds ({self.prealarm_seconds:g}) must be below "
                f"held_open_seconds ({self.held_open_seconds:g})"
            )
        return self


class Config(_Section):
    site: SiteConfig
    gateway: GatewayConfig = GatewayConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    events: EventsConfig = EventsConfig()
    access: AccessConfig = AccessConfig()
    cloud: CloudConfig | None = None
    mqtt: MqttConfig = MqttConfig()
    buses: dict[Identifier, BusConfig] = {}
    readers: dict[Identifier, ReaderConfig] = {}
    doors: dict[Identifier, DoorHardware] = {}
    rooms: dict[Identifier, RoomConfig] = {}
    devices: dict[Identifier, DeviceConfig] = {}
    wifi: WifiConfig | None = None
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    web: WebConfig = WebConfig()

    @property
    def uses_mqtt(self) -> bool:
        """Whether the gateway connects to the site broker at all."""
        push = self.cloud is not None and self.cloud.push
        ha = self.homeassistant
        users = bool(self.rooms or self.devices or self.wifi) or ha.discovery or ha.door_commands
        return push or users or self.mqtt.embedded

    def state_dir(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        if self.gateway.state_dir is not None:
            return self.gateway.state_dir
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else DEFAULT_STATE_DIR

    def admin_socket(self, state_dir: Path) -> Path:
        return self.admin.socket or state_dir / "admin.sock"


def _cross_check(cfg: Config) -> list[str]:
    """What pydantic cannot see: references between sections, and sharing."""
    problems: list[str] = []

    def bus_of(path: str, name: str, kinds: tuple[str, ...], what: str) -> None:
        bus = cfg.buses.get(name)
        if bus is None:
            known = ", ".join(sorted(cfg.buses)) or "none configured"
            problems.append(f"{path}: no bus {name!r} in [buses] (known: {known})")
        elif bus.type not in kinds:
            problems.append(
                f"{path}: bus {name!r} is {bus.type}; {what} needs {' or '.join(kinds)}"
            )

    addresses: dict[tuple[str, int], str] = {}
    sockets: dict[Path, str] = {}
    for name, reader in cfg.readers.items():
        if isinstance(reader, OsdpReaderSection):
            bus_of(f"readers.{name}.bus", reader.bus, ("osdp",), "an OSDP reader")
            other = addresses.setdefault((reader.bus, reader.address), name)
            if other != name:
                problems.append(
                    f"readers.{name}.address: {reader.address} is already reader {other!r} "
                    f"on bus {reader.bus!r}"
                )
        elif reader.socket is not None and reader.edges == "socket":
            other = sockets.setdefault(reader.socket, name)
            if other != name:
                problems.append(f"readers.{name}.socket: already used by reader {other!r}")
    used: dict[str, str] = {}
    coils: dict[tuple[str, int, int], str] = {}
    modbus = ("modbus_rtu", "modbus_tcp")
    for door_id, door in cfg.doors.items():
        where = f"doors.{door_id}"
        if door.offline_policy == "facility_code" and not cfg.access.offline_facility_codes:
            problems.append(
                f'{where}.offline_policy: "facility_code" needs the codes to admit in '
                "access.offline_facility_codes (none configured)"
            )
        for side in ("in_readers", "out_readers"):
            for i, name in enumerate(getattr(door, side)):
                if name not in cfg.readers:
                    known = ", ".join(sorted(cfg.readers)) or "none configured"
                    problems.append(
                        f"{where}.{side}[{i}]: no reader {name!r} in [readers] (known: {known})"
                    )
                elif name in used:
                    problems.append(
                        f"{where}.{side}[{i}]: reader {name!r} already serves {used[name]}"
                    )
                else:
                    used[name] = f"door {door_id!r}"
        strike = door.strike
        if isinstance(strike, ModbusStrike):
            bus_of(f"{where}.strike.bus", strike.bus, modbus, "a Modbus strike")
            other = coils.setdefault((strike.bus, strike.unit, strike.coil), door_id)
            if other != door_id:
                problems.append(
                    f"{where}.strike: coil {strike.coil} of unit {strike.unit} on {strike.bus!r} "
                    f"already drives door {other!r}"
                )
        elif isinstance(strike, OsdpStrike) and not isinstance(
            cfg.readers.get(strike.reader), OsdpReaderSection
        ):
            problems.append(f"{where}.strike.reader: {strike.reader!r} is not an OSDP reader")
        for key in ("contact", "exit"):
            ref = getattr(door, key)
            if ref is not None:
                bus_of(f"{where}.{key}.bus", ref.bus, modbus, "an input")
    for dev_id, dev in cfg.devices.items():
        if dev.room not in cfg.rooms:
            known = ", ".join(sorted(cfg.rooms)) or "none configured"
            problems.append(
                f"devices.{dev_id}.room: no room {dev.room!r} in [rooms] (known: {known})"
            )
        if isinstance(dev, ModbusHvacConfig):
            bus_of(f"devices.{dev_id}.bus", dev.bus, modbus, "an HVAC unit")
    return problems


def _path(loc: tuple[int | str, ...], raw: object) -> str:
    """`buses.rs.baudrate`: pydantic's location, without the union tags it inserts."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the discriminator pydantic adds for a tagged union
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _problem(err: dict[str, object]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling against config.example.toml)"
    if kind == "missing":
        return "required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def validation_problems(exc: ValidationError, raw: object, source: str) -> list[str]:
    """`source: path.to.key: problem` for each of pydantic's errors."""
    return [
        f"{source}: {_path(e['loc'], raw)}: {_problem(dict(e))}"
        for e in exc.errors(include_url=False)
    ]


M = TypeVar("M", bound=BaseModel)


def parse_toml(text: str, model: type[M], source: str, cross_check: Callable[[M], list[str]]) -> M:
    """A TOML text as `model`, every problem named `source: path: problem`
    (`ConfigError`); shared by the gateway's and the bridge's configurations."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables by recursion.
        raise ConfigError([f"{source}: values nested too deeply"]) from None
    try:
        cfg = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, raw, source)) from None
    problems = cross_check(cfg)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return cfg


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None


def parse_config(text: str, source: str = "config") -> Config:
    return parse_toml(text, Config, source, _cross_check)


def load_config(path: Path) -> Config:
    return parse_config(read_text(path), str(path))
