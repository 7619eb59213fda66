"""Signed push envelopes from the cloud (`edge-sync/1`, section Push).

The broker is not trusted: a message counts only if its Ed25519 signature
verifies under one of the configured cloud keys, it names this site, it was
issued within `MAX_SKEW_S` of our clock, and its nonce was never seen. Every
refusal is a `PushRejected` with a reason code and words for the alarm.

Pure apart from the nonce set, which the caller persists (`NonceLog`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.keys import b64url_decode
from edge.timeutil import parse_instant

MAX_SKEW_S = 120.0
PUSH_TYPES = ("changes", "sync", "resync", "command")

Reason = Literal[
    "malformed",
    "unknown_key",
    "bad_signature",
    "wrong_site",
    "stale",
    "future",
    "replayed",
]


class PushRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PushMessage:
    key_id: str
    type: str
    site: str
    issued_at: float
    nonce: str
    body: dict[str, Any]  # the whole payload, for the type's own fields


class NonceLog(Protocol):
    """Nonces already accepted (kept at least as long as MAX_SKEW_S makes them valid)."""

    def seen(self, nonce: str) -> bool: ...


def verify(
    raw: bytes,
    keys: Mapping[str, Ed25519PublicKey],
    site: str,
    now: float,
    nonces: NonceLog,
) -> PushMessage:
    """The verified message, or `PushRejected` saying why not."""
    try:
        envelope = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise PushRejected("malformed", "the envelope is not JSON") from None
    if not isinstance(envelope, dict):
        raise PushRejected("malformed", "the envelope is not an object")
    for field in ("key_id", "payload", "sig"):
        if not isinstance(envelope.get(field), str) or not envelope[field]:
            raise PushRejected("malformed", f"envelope.{field}: missing or not a string")
    key_id = envelope["key_id"]
    key = keys.get(key_id)
    if key is None:
        known = ", ".join(sorted(keys)) or "none configured"
        raise PushRejected("unknown_key", f"key {key_id!r} is not a cloud key (known: {known})")
    payload = b64url_decode(envelope["payload"])
    sig = b64url_decode(envelope["sig"])
    if payload is None or sig is None:
        raise PushRejected("malformed", "payload or sig is not base64url")
    try:
        key.verify(sig, payload)
    except InvalidSignature:
        detail = f"the signature does not verify under {key_id!r}"
        raise PushRejected("bad_signature", detail) from None
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise PushRejected("malformed", "the signed payload is not JSON") from None
    if not isinstance(body, dict):
        raise PushRejected("malformed", "the signed payload is not an object")
    for field in ("type", "site", "issued_at", "nonce"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise PushRejected("malformed", f"payload.{field}: missing or not a string")
    if body["type"] not in PUSH_TYPES:
        raise PushRejected(
            "malformed", f"payload.type: {body['type']!r} is not one of {PUSH_TYPES}"
        )
    if body["site"] != site:
        raise PushRejected("wrong_site", f"for site {body['site']!r}, this gateway serves {site!r}")
    try:
        issued = parse_instant(body["issued_at"]).timestamp()
    except ValueError as exc:
        raise PushRejected("malformed", f"payload.issued_at: {exc}") from None
    skew = issued - now
    if skew < -MAX_SKEW_S:
        raise PushRejected("stale", f"issued {-skew:.0f} s ago (at most {MAX_SKEW_S:.0f} s)")
    if skew > MAX_SKEW_S:
        raise PushRejected("future", f"issued {skew:.0f} s ahead of this gateway's clock")
    if nonces.seen(body["nonce"]):
        raise PushRejected("replayed", f"nonce {body['nonce']!r} was already used")
    return PushMessage(key_id, body["type"], body["site"], issued, body["nonce"], body)
