"""The cloud side of `edge-sync/1`, simulated: its HTTP API, signed pushes and an operator.

`CloudSim` holds one site's world, a change log and the events it received.
Every object of the world is kept as its JSON text, so a snapshot of 100,000
members is a join and an operator's change replaces one entry. Cursors are
`c-` and a zero-padded sequence number; each change gets the next one.

It serves the contract's three endpoints with `hwsim.httpserving` (HTTP/1.1,
keep-alive, one thread per connection), publishes signed push envelopes with
paho-mqtt, and misbehaves on request (`Faults`): errors, rate limits, dropped
connections, truncated or malformed bodies, slow snapshots, and events stored
but never acknowledged. A small admin API under `/admin/` (loopback only, no
token) lets a person or a script act as the operator while it runs:

    python -m hwsim.cloud --port 8080 [--members N] [--mqtt HOST:PORT] [--token T]

Threads: the serving thread (`cloud-sim:PORT`), one per open connection, and
paho's network thread when a broker is configured. `stop()` ends them all, and
`start()` binds the same port again, so a test can take the cloud away and
bring it back.

The simulator does not validate objects against the contract beyond what keeps
its world consistent: a test may hand the gateway a broken object on purpose.
It shares no code with the gateway, so a misreading of the contract on one side
is not silently mirrored on the other.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import io
import ipaddress
import json
import logging
import re
import secrets
import signal
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any, Literal
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.client import Client as MqttClient
from paho.mqtt.enums import CallbackAPIVersion

from hwsim.httpserving import HttpSimServer, Request, Response
from hwsim.sitegen import example_site, reference_monday, write_large_site

log = logging.getLogger("hwsim.cloud")

SCHEMA = "edge-sync/1"
API_PREFIX = "/api/edge/v1"
ADMIN_PREFIX = "/admin/"
MAX_EVENTS = 500
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
MAX_BODY = 16 * 1024 * 1024

# Every kind of the contract with its snapshot section, in the snapshot's order.
SECTIONS: dict[str, str] = {
    "schedule": "schedules",
    "holiday": "holidays",
    "door": "doors",
    "access_group": "access_groups",
    "plan": "plans",
    "company": "companies",
    "member": "members",
    "guest": "guests",
    "room": "rooms",
    "booking": "bookings",
}
KINDS = ("site", *SECTIONS)
BILLING_STATUSES = ("ok", "past_due", "suspended")

_CURSOR_RE = re.compile(r"c-(\d{6,})\Z")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_INSTANT_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


class WorldError(ValueError):
    """An operator's change the simulator refuses; the message names the field."""


class PushFailed(RuntimeError):
    """A push that did not reach the broker (none configured, not connected, no PUBACK)."""


# --- small helpers --------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def now_rfc3339() -> str:
    """Now, as the contract's instant in UTC with a `Z` (millisecond precision)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_cursor(seq: int) -> str:
    return f"c-{seq:06d}"


def parse_cursor(text: object) -> int | None:
    """The sequence number of one of our cursors, or None for anything else."""
    m = _CURSOR_RE.match(text) if isinstance(text, str) else None
    return int(m.group(1)) if m else None


def _is_instant(value: object) -> bool:
    if not isinstance(value, str) or not _INSTANT_RE.match(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _required_str(obj: dict[str, Any], field: str, where: str = "") -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value:
        raise WorldError(f"{where}{field}: required (a non-empty string)")
    return value


def _required_object(obj: dict[str, Any], field: str) -> dict[str, Any]:
    value = obj.get(field)
    if not isinstance(value, dict):
        raise WorldError(f"{field}: required (an object)")
    return value


def _object_key(kind: str, data: object, where: str) -> str:
    """The id of an object: its `id`, or for a holiday its `date`."""
    if not isinstance(data, dict):
        raise WorldError(f"{where}: not an object")
    return _required_str(data, "date" if kind == "holiday" else "id", f"{where}.")


# --- faults ---------------------------------------------------------------------

FaultKind = Literal["fail", "rate_limit", "drop", "truncate", "malformed", "after_store"]


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int
    path: str | None = None  # a substring of the request path, None for any
    status: int = 500
    retry_after: int | None = None
    drop: bool = False  # for after_store: drop the connection instead of a 500


class Faults:
    """Misbehaviour on request, for the edge API only (not `/admin/`).

    Each `*_next(n, ...)` call queues a fault for the next `n` API requests
    whose path contains `path` (any request when None); the oldest queued
    fault that matches a request is the one it consumes. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: list[_Fault] = []
        self.latency_s = 0.0  # added to every API request
        self.stall_snapshot_s = 0.0  # when > 0, a snapshot body is spread over this long

    def fail_next(self, n: int = 1, status: int = 500, path: str | None = None) -> None:
        """Answer `status` (a JSON error) without doing anything."""
        if status < 400:
            raise ValueError(f"status: {status} is not an error")
        self._queue(_Fault("fail", n, path, status=status))

    def rate_limit_next(
        self, n: int = 1, retry_after: int = 2, path: str | None = None, status: int = 429
    ) -> None:
        """Answer 429 or 503 with `Retry-After: retry_after`."""
        if status not in (429, 503):
            raise ValueError(f"status: {status} (a rate limit is 429 or 503)")
        self._queue(_Fault("rate_limit", n, path, status=status, retry_after=retry_after))

    def drop_next(self, n: int = 1, path: str | None = None) -> None:
        """Close the connection without any response (nothing is done)."""
        self._queue(_Fault("drop", n, path))

    def truncate_next(self, n: int = 1, path: str | None = None) -> None:
        """Do the request, send the status and headers (the full Content-Length)
        but only half of the body, then close the connection."""
        self._queue(_Fault("truncate", n, path))

    def malformed_next(self, n: int = 1, path: str | None = None) -> None:
        """Do the request, then answer 200 with a body that starts like the real
        one and turns into bytes that are not JSON."""
        self._queue(_Fault("malformed", n, path))

    def fail_after_store_next(self, n: int = 1, drop: bool = False) -> None:
        """Store (and count) the next posted events, then answer 500, or with
        `drop` close the connection: the gateway must send them again."""
        self._queue(_Fault("after_store", n, "/events", drop=drop))

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self.latency_s = 0.0
            self.stall_snapshot_s = 0.0

    def _queue(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError(f"n: {fault.remaining} (at least 1)")
        with self._lock:
            self._queued.append(fault)

    def take(self, method: str, path: str) -> _Fault | None:
        """The fault this request meets, consuming one of its count."""
        with self._lock:
            for fault in self._queued:
                if fault.kind == "after_store" and method != "POST":
                    continue
                if fault.path is not None and fault.path not in path:
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._queued.remove(fault)
                return fault
        return None


# --- responses ------------------------------------------------------------------


def _json(status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, _dumps(value).encode(), tuple(headers))


def _error(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return _json(status, {"error": message}, headers)


def _malformed(body: bytes) -> bytes:
    """A body that begins like `body` and then stops being JSON (a proper
    prefix of an object plus bytes that are not UTF-8 can never parse)."""
    return body[: max(1, len(body) // 2)] + b"\xff\x00<garbage>"


# --- push -----------------------------------------------------------------------


class _Publisher:
    """One paho client kept connected to the broker; paho reconnects it."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.host = host
        self.port = port
        self._connected = threading.Event()
        self._client = MqttClient(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)

    def start(self, timeout_s: float) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            log.warning("push: broker %s:%s not reachable yet, retrying", self.host, self.port)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def publish(self, topic: str, raw: bytes, timeout_s: float) -> None:
        if not self._connected.wait(timeout_s):
            raise PushFailed(f"not connected to the broker at {self.host}:{self.port}")
        info = self._client.publish(topic, raw, qos=1)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise PushFailed(f"publish to {topic}: {exc}") from None
        if not info.is_published():
            raise PushFailed(f"publish to {topic}: no PUBACK within {timeout_s} s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("push: broker refused the connection: %s", reason)
        else:
            self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()


# --- the simulator ----------------------------------------------------------------


class CloudSim:
    """One site's cloud: world, change log, events, HTTP API, pushes and faults.

    What tests read and set while it runs:
      `token` (another one gets 401), `forbidden` (True: 403 for every API request),
      `push_enabled` (False: changes are logged but their pushes are lost),
      `faults`, `reject_types` (event types answered with a rejection),
      `events` (accepted events by id), `duplicates` (repeated ids acknowledged),
      `received` (how many times each event id arrived, duplicates included),
      `requests` ((method, path, status) of every request; 0 when dropped).
    """

    push_timeout_s = 5.0  # waiting for the broker's connection, then for its PUBACK

    def __init__(
        self,
        doc: dict[str, Any] | None = None,
        *,
        token: str = "sim-token",  # noqa: S107 - the simulator's well-known test token
        host: str = "127.0.0.1",
        port: int = 0,
        key_id: str = "cloud-2026",
        signing_key: Ed25519PrivateKey | None = None,
        mqtt: tuple[str, int] | None = None,
        keep_changes: int = 100_000,
    ) -> None:
        if doc is None:
            doc, _ = example_site(reference_monday(date.today()))
        self.token = token
        self.forbidden = False
        self.http = HttpSimServer(self.handle, host, port, name="cloud-sim")
        self.key_id = key_id
        self._signing_key = signing_key or Ed25519PrivateKey.generate()
        raw_public = self._signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key_b64 = _b64url(raw_public)
        self.mqtt = mqtt
        self.push_enabled = True
        self.faults = Faults()
        self.reject_types: set[str] = set()
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        # Every arrival of an id, counted here at the cloud (a resend after a
        # lost answer too), so a campaign counts duplicates where they land.
        self.received: Counter[str] = Counter()

        # `_lock` guards the world, the log and the events, held briefly by
        # requests; `_operator` serialises operator changes with their pushes,
        # so pushes leave in cursor order.
        self._lock = threading.Lock()
        self._operator = threading.Lock()
        self._site_text = ""
        self._site_id = ""
        self._objects: dict[str, dict[str, str]] = {}
        self._load(doc)
        self._seq = parse_cursor(doc.get("cursor")) or 1
        # The log holds the changes after `floor`; floor = _seq - len(_log).
        self._log: deque[str] = deque(maxlen=keep_changes)
        self._last_push: bytes | None = None
        self._publisher: _Publisher | None = None

    @classmethod
    def large(
        cls,
        members: int,
        *,
        day: date | None = None,
        credentials_per_member: int = 2,
        **kw: Any,
    ) -> CloudSim:
        """A world from `hwsim.sitegen.write_large_site` (100,000 members in seconds)."""
        out = io.StringIO()
        write_large_site(out, members, credentials_per_member, day=day)
        return cls(json.loads(out.getvalue()), **kw)

    def _load(self, doc: dict[str, Any]) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("site"), dict):
            raise WorldError("site: required (an object)")
        self._site_id = _required_str(doc["site"], "id", "site.")
        self._site_text = _dumps(doc["site"])
        for kind, section in SECTIONS.items():
            items = doc.get(section) or []
            if not isinstance(items, list):
                raise WorldError(f"{section}: not an array")
            table: dict[str, str] = {}
            for i, item in enumerate(items):
                table[_object_key(kind, item, f"{section}[{i}]")] = _dumps(item)
            self._objects[kind] = table

    # --- lifecycle --------------------------------------------------------------

    @property
    def site(self) -> str:
        return self._site_id

    @property
    def host(self) -> str:
        return self.http.host

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return self.http.base_url + API_PREFIX

    @property
    def admin_url(self) -> str:
        return self.http.base_url + ADMIN_PREFIX.rstrip("/")

    @property
    def running(self) -> bool:
        return self.http.running

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request; 0 when dropped."""
        return self.http.requests.entries

    def start(self) -> CloudSim:
        """Serve (on the same port as last time, after a stop) and connect to the broker."""
        self.http.start()
        if self.mqtt is not None and self._publisher is None:
            self._start_publisher(*self.mqtt)
        return self

    def connect_mqtt(self, host: str, port: int) -> None:
        """Push through this broker from now on (for a broker started after the simulator)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()
        self.mqtt = (host, port)
        if self.running:
            self._start_publisher(host, port)

    def _start_publisher(self, host: str, port: int) -> None:
        client_id = f"cloud-sim-{self.site}-{secrets.token_hex(4)}"
        self._publisher = _Publisher(host, port, client_id)
        self._publisher.start(min(self.push_timeout_s, 2.0))

    def stop(self) -> None:
        """Stop serving (open connections are cut) and disconnect from the broker."""
        self.http.stop()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()

    def __enter__(self) -> CloudSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the operator's changes ---------------------------------------------------

    @property
    def cursor(self) -> str:
        with self._lock:
            return format_cursor(self._seq)

    def upsert(self, kind: str, data: dict[str, Any]) -> str:
        """Create or replace one object (the site: replace it, same id); the new cursor."""
        copy = json.loads(_dumps(data))
        return self._operate(lambda: self._put(kind, copy))

    def delete(self, kind: str, id: str) -> str:
        def apply() -> dict[str, Any]:
            if kind not in SECTIONS:
                raise WorldError(f"kind: {kind!r} cannot be deleted (one of {', '.join(SECTIONS)})")
            if self._objects[kind].pop(id, None) is None:
                raise WorldError(f"id: unknown {kind} {id!r}")
            return {"op": "delete", "kind": kind, "id": id}

        return self._operate(apply)

    def suspend_member(self, member_id: str) -> str:
        return self.set_billing(member_id, "suspended")

    def set_billing(self, member_id: str, status: str, grace_until: str | None = None) -> str:
        if status not in BILLING_STATUSES:
            raise WorldError(f"status: {status!r} (one of {', '.join(BILLING_STATUSES)})")
        if grace_until is not None and not _is_instant(grace_until):
            raise WorldError(f"grace_until: {grace_until!r} is not an instant (RFC 3339)")

        def edit(member: dict[str, Any]) -> None:
            member["billing"] = {"status": status, "grace_until": grace_until}

        return self._edit_member(member_id, edit)

    def end_contract(self, member_id: str, end: str) -> str:
        """End a member's contract on a date (last day included) or at an instant."""
        if not (_is_date(end) or _is_instant(end)):
            raise WorldError(f"end: {end!r} is not a date (YYYY-MM-DD) or an instant")

        def edit(member: dict[str, Any]) -> None:
            contract = member.get("contract") or {}
            member["contract"] = {**contract, "end": end}

        return self._edit_member(member_id, edit)

    def add_booking(self, booking: dict[str, Any]) -> str:
        """A booking for an existing room, booker and attendees (defaults filled in)."""
        data = json.loads(_dumps(booking))
        if not isinstance(data, dict):
            raise WorldError("booking: not an object")
        data.setdefault("attendees", [])
        data.setdefault("status", "confirmed")
        data.setdefault("invoiced", False)
        data.setdefault("recurrence_id", None)

        def apply() -> dict[str, Any]:
            _required_str(data, "id")
            if _required_str(data, "room") not in self._objects["room"]:
                raise WorldError(f"room: unknown room {data['room']!r}")
            if _required_str(data, "member") not in self._objects["member"]:
                raise WorldError(f"member: unknown member {data['member']!r}")
            attendees = data["attendees"]
            if not isinstance(attendees, list):
                raise WorldError("attendees: not an array")
            for i, holder in enumerate(attendees):
                if holder not in self._objects["member"] and holder not in self._objects["guest"]:
                    raise WorldError(f"attendees[{i}]: unknown member or guest {holder!r}")
            for field in ("start", "end"):
                if not _is_instant(data.get(field)):
                    raise WorldError(f"{field}: required (an instant, RFC 3339)")
            return self._put("booking", data)

        return self._operate(apply)

    def sell_day_pass(
        self,
        member_id: str,
        pass_id: str | None = None,
        valid_from: str | None = None,
        valid_to: str | None = None,
    ) -> str:
        """A day pass for a member, from today (in the site's zone) unless told."""
        for field, value in (("valid_from", valid_from), ("valid_to", valid_to)):
            if value is not None and not (_is_date(value) or _is_instant(value)):
                raise WorldError(f"{field}: {value!r} is not a date or an instant")

        def edit(member: dict[str, Any]) -> None:
            passes = member.get("day_passes") or []
            pid = pass_id or f"dp-{self._seq + 1:06d}"  # the change's own number: unique
            if any(isinstance(p, dict) and p.get("id") == pid for p in passes):
                raise WorldError(f"pass_id: {member_id!r} already has a day pass {pid!r}")
            start = valid_from or datetime.now(self._site_zone()).date().isoformat()
            passes.append({"id": pid, "valid_from": start, "valid_to": valid_to})
            member["day_passes"] = passes

        return self._edit_member(member_id, edit)

    def member(self, member_id: str) -> dict[str, Any]:
        """The member's current object (a copy)."""
        with self._lock:
            text = self._objects["member"].get(member_id)
        if text is None:
            raise WorldError(f"member: unknown member {member_id!r}")
        value: dict[str, Any] = json.loads(text)
        return value

    def compact(self) -> None:
        """Forget the change log: any cursor but the current one now gets 410."""
        with self._lock:
            self._log.clear()

    def _site_zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(json.loads(self._site_text).get("timezone") or "UTC")
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            return ZoneInfo("UTC")

    def _put(self, kind: str, data: object) -> dict[str, Any]:
        """Store one object (caller holds `_lock`); the change that says so."""
        if kind not in KINDS:
            raise WorldError(f"kind: {kind!r} (one of {', '.join(KINDS)})")
        key = _object_key(kind, data, "data")
        text = _dumps(data)
        if kind == "site":
            if key != self._site_id:
                raise WorldError(f"data.id: the site is {self._site_id!r}, not {key!r}")
            self._site_text = text
        else:
            self._objects[kind][key] = text
        return {"op": "upsert", "kind": kind, "data": json.loads(text)}

    def _edit_member(self, member_id: str, edit: Callable[[dict[str, Any]], None]) -> str:
        def apply() -> dict[str, Any]:
            text = self._objects["member"].get(member_id)
            if text is None:
                raise WorldError(f"member: unknown member {member_id!r}")
            member = json.loads(text)
            edit(member)
            return self._put("member", member)

        return self._operate(apply)

    def _operate(self, apply: Callable[[], dict[str, Any]]) -> str:
        """Apply one change to the world, log it and push it; the new cursor.

        `apply` runs under the world lock and raises `WorldError` before it
        changes anything.
        """
        with self._operator:
            with self._lock:
                change = apply()
                self._seq += 1
                self._log.append(_dumps(change))
                cursor = format_cursor(self._seq)
            if self.mqtt is not None and self.push_enabled:
                try:
                    self.push({"type": "changes", "changes": [change]})
                except PushFailed as exc:
                    log.warning("push of the change at %s lost: %s", cursor, exc)
        return cursor

    # --- pushes -------------------------------------------------------------------

    def envelope(
        self,
        payload: dict[str, Any],
        *,
        key_id: str | None = None,
        bad_signature: bool = False,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> dict[str, str]:
        """A signed envelope, without publishing it. Missing `type` (`changes`
        when the payload has changes, `command` with a command, else `sync`),
        `site`, `issued_at` (now) and `nonce` (random) are filled in."""
        body = dict(payload)
        default_type = (
            "changes" if "changes" in body else "command" if "command" in body else "sync"
        )
        body.setdefault("type", default_type)
        body.setdefault("site", self.site)
        body.setdefault("issued_at", now_rfc3339())
        body.setdefault("nonce", secrets.token_hex(16))
        data = _dumps(body).encode()
        sig = (signing_key or self._signing_key).sign(data)
        if bad_signature:
            sig = bytes([sig[0] ^ 0x01]) + sig[1:]
        return {"key_id": key_id or self.key_id, "payload": _b64url(data), "sig": _b64url(sig)}

    def push(
        self,
        payload: dict[str, Any],
        *,
        key_id: str | None = None,
        bad_signature: bool = False,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> dict[str, str]:
        """Sign and publish (QoS 1) to `edge/{site}/push`; the envelope. `PushFailed`
        when it could not be published."""
        envelope = self.envelope(
            payload, key_id=key_id, bad_signature=bad_signature, signing_key=signing_key
        )
        raw = _dumps(envelope).encode()
        self._publish(raw)
        self._last_push = raw
        return envelope

    def push_sync(self) -> dict[str, str]:
        return self.push({"type": "sync"})

    def push_resync(self) -> dict[str, str]:
        return self.push({"type": "resync"})

    def push_command(self, command: dict[str, Any]) -> dict[str, str]:
        return self.push({"type": "command", "command": command})

    def replay_last_push(self) -> None:
        """Publish the last envelope again, byte for byte (a replay attack)."""
        if self._last_push is None:
            raise PushFailed("nothing was pushed yet")
        self._publish(self._last_push)

    @property
    def push_topic(self) -> str:
        return f"edge/{self.site}/push"

    def _publish(self, raw: bytes) -> None:
        if self.mqtt is None:
            raise PushFailed("no broker: construct with mqtt=(host, port)")
        if self._publisher is None:
            raise PushFailed("not started: call start() first")
        self._publisher.publish(self.push_topic, raw, self.push_timeout_s)

    # --- events received ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Accepted events per type, each id once."""
        with self._lock:
            return dict(Counter(event["type"] for event in self.events.values()))

    def _receive_events(self, body: bytes) -> Response:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "body: not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            return _error(400, "body.events: missing or not an array")
        events = doc["events"]
        if len(events) > MAX_EVENTS:
            return _error(
                400, f"body.events: {len(events)} events, at most {MAX_EVENTS} per request"
            )
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                return _error(400, f"body.events[{i}]: not an object")
            if not isinstance(event.get("id"), str) or not event["id"]:
                return _error(400, f"body.events[{i}].id: required (a non-empty string)")
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
        billed: list[dict[str, Any]] = []
        with self._lock:
            for event in events:
                self.received[event["id"]] += 1
                if event["id"] in self.events:
                    self.duplicates += 1
                    accepted.append(event["id"])
                    continue
                problem = self._event_problem(event)
                if problem is not None:
                    rejected.append({"id": event["id"], "error": problem})
                    continue
                self.events[event["id"]] = event
                accepted.append(event["id"])
                if event.get("type") in ("usage.day_pass", "usage.credits"):
                    billed.append(event)
        for event in billed:
            if event["type"] == "usage.credits":
                self._bill_credits(event)
            else:
                self._bill_day_pass(event)
        return _json(200, {"accepted": accepted, "rejected": rejected})

    def _bill_day_pass(self, event: dict[str, Any]) -> None:
        """As a real cloud does: a pass used from a balance lowers that balance (a change)."""
        details = event.get("details") or {}
        source = details.get("source")

        def lower(kind: str, oid: object, field: str) -> dict[str, Any]:
            text = self._objects[kind].get(str(oid))
            if text is None:
                raise WorldError(f"{kind}: unknown {kind} {oid!r}")
            doc = json.loads(text)
            doc[field] = max(0, int(doc.get(field) or 0) - 1)
            return self._put(kind, doc)

        try:
            if source == "balance":
                self._operate(lambda: lower("member", event.get("holder"), "day_pass_balance"))
            elif source == "company":
                self._operate(lambda: lower("company", details.get("company"), "day_passes"))
        except WorldError as exc:
            log.warning("day pass of event %s not billed: %s", event.get("id"), exc)

    def _bill_credits(self, event: dict[str, Any]) -> None:
        """Credits spent at a room panel lower the member's or the company's balance."""
        details = event.get("details") or {}
        credits = details.get("credits")
        if not isinstance(credits, int) or credits <= 0:
            return
        kind, oid = (
            ("company", details.get("company"))
            if details.get("source") == "company"
            else ("member", event.get("holder"))
        )

        def lower() -> dict[str, Any]:
            text = self._objects[kind].get(str(oid))
            if text is None:
                raise WorldError(f"{kind}: unknown {kind} {oid!r}")
            doc = json.loads(text)
            doc["credits"] = max(0, int(doc.get("credits") or 0) - credits)
            return self._put(kind, doc)

        try:
            self._operate(lower)
        except WorldError as exc:
            log.warning("credits of event %s not billed: %s", event.get("id"), exc)

    def _event_problem(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind:
            return "type: required (a non-empty string)"
        if not _is_instant(event.get("at")):
            return "at: required (an instant, RFC 3339 with an offset)"
        if "site" in event and event["site"] != self.site:
            return f"site: {event['site']!r} is not this site ({self.site!r})"
        if kind in self.reject_types:
            return f"type: {kind!r} is not accepted by this cloud"
        return None

    # --- the edge API -------------------------------------------------------------------

    def handle_api(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes
    ) -> Response:
        """One request to the edge API, faults aside."""
        expected = f"Bearer {self.token}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            return _error(
                401, "unauthorized: missing or wrong bearer token", [("WWW-Authenticate", "Bearer")]
            )
        if self.forbidden:
            return _error(403, "forbidden: this gateway may not sync this site")
        parts = path[len(API_PREFIX) :].split("/")
        routes = {"snapshot": "GET", "changes": "GET", "events": "POST"}
        if len(parts) != 4 or parts[0] != "" or parts[1] != "sites" or parts[3] not in routes:
            return _error(404, f"no such endpoint: {path}")
        site, endpoint = unquote(parts[2]), parts[3]
        if site != self.site:
            return _error(404, f"unknown site {site!r}")
        if method != routes[endpoint]:
            allow = routes[endpoint]
            return _error(405, f"{endpoint}: use {allow}", [("Allow", allow)])
        if endpoint == "snapshot":
            return Response(200, self.snapshot_bytes())
        if endpoint == "changes":
            return self._changes(query)
        return self._receive_events(body)

    def snapshot_bytes(self) -> bytes:
        """The whole world now, as the snapshot endpoint sends it."""
        with self._lock:
            head = {"schema": SCHEMA, "cursor": format_cursor(self._seq)}
            site = self._site_text
            sections = [(SECTIONS[k], list(table.values())) for k, table in self._objects.items()]
        head["generated_at"] = now_rfc3339()
        parts = [_dumps(head)[:-1], ',"site":', site]
        for section, texts in sections:
            parts += [f',"{section}":[', ",".join(texts), "]"]
        parts.append("}")
        return "".join(parts).encode()

    def _changes(self, query: str) -> Response:
        params = parse_qs(query, keep_blank_values=True)
        since = params.get("since", [None])[0]
        if since is None:
            return _error(400, "since: required (a cursor)")
        try:
            limit = int(params.get("limit", [str(DEFAULT_LIMIT)])[0])
        except ValueError:
            return _error(400, "limit: not an integer")
        if limit < 1:
            return _error(400, f"limit: {limit} (at least 1)")
        limit = min(limit, MAX_LIMIT)
        seq = parse_cursor(since)
        with self._lock:
            current = self._seq
            floor = current - len(self._log)
            if seq is None:
                return _error(
                    410, f"since: {since!r} is not a cursor of this cloud; take a snapshot"
                )
            if seq > current:
                return _error(
                    410, f"since: {since!r} is ahead of this cloud ({format_cursor(current)})"
                )
            if seq < floor:
                return _error(
                    410,
                    f"since: {since!r} is too old (changes are kept after "
                    f"{format_cursor(floor)}); take a snapshot",
                )
            start = seq - floor
            texts = list(islice(self._log, start, start + limit))
        end = seq + len(texts)
        more = "true" if end < current else "false"
        body = f'{{"changes":[{",".join(texts)}],"cursor":"{format_cursor(end)}","more":{more}}}'
        return Response(200, body.encode())

    # --- the admin API ------------------------------------------------------------------

    def handle_admin(self, method: str, path: str, body: bytes) -> Response:
        """An operator's request under /admin/ (the caller checked it is from loopback)."""
        op = path[len(ADMIN_PREFIX) :]
        if op == "counts":
            if method != "GET":
                return _error(405, "counts: use GET", [("Allow", "GET")])
            with self._lock:
                duplicates = self.duplicates
            return _json(
                200, {"counts": self.counts(), "duplicates": duplicates, "cursor": self.cursor}
            )
        actions: dict[str, Callable[[dict[str, Any]], str]] = {
            "suspend": lambda r: self.suspend_member(_required_str(r, "member")),
            "billing": lambda r: self.set_billing(
                _required_str(r, "member"), _required_str(r, "status"), r.get("grace_until")
            ),
            "end_contract": lambda r: self.end_contract(
                _required_str(r, "member"), _required_str(r, "end")
            ),
            "booking": self.add_booking,
            "day_pass": lambda r: self.sell_day_pass(
                _required_str(r, "member"), r.get("id"), r.get("valid_from"), r.get("valid_to")
            ),
            "upsert": lambda r: self.upsert(_required_str(r, "kind"), _required_object(r, "data")),
            "delete": lambda r: self.delete(_required_str(r, "kind"), _required_str(r, "id")),
        }
        action = actions.get(op)
        if action is None:
            known = ", ".join(["counts", *actions])
            return _error(404, f"no such admin operation {op!r} (one of: {known})")
        if method != "POST":
            return _error(405, f"{op}: use POST", [("Allow", "POST")])
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "body: not JSON")
        if not isinstance(request, dict):
            return _error(400, "body: not a JSON object")
        try:
            cursor = action(request)
        except WorldError as exc:
            return _error(400, str(exc))
        return _json(200, {"cursor": cursor})

    # --- HTTP ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Every HTTP request: the admin API for loopback clients, the edge API with faults."""
        path = request.path
        if path.startswith(ADMIN_PREFIX):
            if not ipaddress.ip_address(request.client).is_loopback:
                return _error(403, "the admin API answers loopback clients only")
            return self.handle_admin(request.method, path, request.body)
        if not path.startswith(API_PREFIX + "/"):
            return _error(404, f"no such path: {path}")
        faults = self.faults
        if faults.latency_s > 0 and request.stopping.wait(faults.latency_s):
            return Response(0, drop=True)
        fault = faults.take(request.method, path)
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "fail":
            return _error(fault.status, "simulated server error")
        if fault is not None and kind == "rate_limit":
            headers = [("Retry-After", str(fault.retry_after))]
            return _error(fault.status, "simulated rate limit", headers)
        if kind == "drop":
            return Response(0, drop=True)
        auth = request.headers.get("authorization")
        response = self.handle_api(request.method, path, request.query, auth, request.body)
        if fault is not None and kind == "after_store":
            if fault.drop:
                return Response(0, drop=True)
            return _error(500, "simulated failure after the events were stored")
        if kind == "malformed":
            return Response(200, _malformed(response.body))
        stall = faults.stall_snapshot_s if path.endswith("/snapshot") else 0.0
        return replace(response, truncate=kind == "truncate", stall_s=stall)


# --- command line ----------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwsim.cloud",
        description="Serve a simulated edge-sync/1 cloud until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--members", type=int, default=0, help="a large site of N members")
    parser.add_argument("--mqtt", type=_host_port, help="broker for pushes, HOST:PORT")
    parser.add_argument("--token", default="sim-token", help="the gateway's bearer token")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    options: dict[str, Any] = {
        "token": args.token,
        "host": args.host,
        "port": args.port,
        "mqtt": args.mqtt,
    }
    sim = CloudSim.large(args.members, **options) if args.members else CloudSim(**options)
    try:
        sim.start()
    except OSError as exc:
        print(f"hwsim.cloud: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    push = f"mqtt {args.mqtt[0]}:{args.mqtt[1]} {sim.push_topic}" if args.mqtt else "off"
    print(
        f"site:       {sim.site}\n"
        f"url:        {sim.url}\n"
        f"token:      {sim.token}\n"
        f"key_id:     {sim.key_id}\n"
        f"public_key: {sim.public_key_b64}\n"
        f"admin:      {sim.admin_url}/\n"
        f"push:       {push}",
        flush=True,
    )
    done = threading.Event()
    # Both set explicitly: a shell starting us in the background ignores SIGINT for us.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
