"""Signed push envelopes: what verifies, and every way one is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.keys import load_public_key
from edge.sync.push import PushRejected, verify

NOW = 1_795_000_000.0  # 2026-11-17T...Z
CLOUD = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
KEYS = {"cloud-2026": CLOUD.public_key()}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def envelope(key: Ed25519PrivateKey = CLOUD, key_id: str = "cloud-2026", **payload: Any) -> bytes:
    body = {"type": "sync", "site": "mitte", "issued_at": iso(NOW), "nonce": "n-1", **payload}
    data = json.dumps(body).encode()
    return json.dumps({"key_id": key_id, "payload": b64(data), "sig": b64(key.sign(data))}).encode()


class Seen:
    def __init__(self, *nonces: str) -> None:
        self.nonces = set(nonces)

    def seen(self, nonce: str) -> bool:
        return nonce in self.nonces


def test_a_good_envelope_verifies() -> None:
    msg = verify(envelope(type="command", command={"unlock": 1}), KEYS, "mitte", NOW, Seen())
    assert (msg.type, msg.site, msg.nonce, msg.key_id) == ("command", "mitte", "n-1", "cloud-2026")
    assert msg.body["command"] == {"unlock": 1}
    assert msg.issued_at == NOW


def test_either_of_two_keys_verifies_during_a_rotation() -> None:
    keys = {**KEYS, "cloud-2027": OTHER.public_key()}
    assert verify(envelope(OTHER, "cloud-2027"), keys, "mitte", NOW, Seen()).key_id == "cloud-2027"


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (b"not json", "malformed", "not JSON"),
        (b"[]", "malformed", "not an object"),
        (json.dumps({"key_id": "cloud-2026", "payload": "eA"}).encode(), "malformed", "sig"),
        (envelope(key_id="cloud-1999"), "unknown_key", "'cloud-1999' is not a cloud key"),
        (envelope(OTHER), "bad_signature", "does not verify"),
        (envelope(site="kreuzberg"), "wrong_site", "for site 'kreuzberg'"),
        (envelope(issued_at=iso(NOW - 121)), "stale", "issued 121 s ago"),
        (envelope(issued_at=iso(NOW + 121)), "future", "ahead"),
        (envelope(issued_at="yesterday"), "malformed", "payload.issued_at"),
        (envelope(type="reboot"), "malformed", "payload.type"),
        (envelope(nonce=""), "malformed", "payload.nonce"),
        (envelope(nonce="n-seen"), "replayed", "'n-seen' was already used"),
    ],
)
def test_refusals_say_why(raw: bytes, reason: str, words: str) -> None:
    with pytest.raises(PushRejected) as err:
        verify(raw, KEYS, "mitte", NOW, Seen("n-seen"))
    assert err.value.reason == reason
    assert words in str(err.value)


def test_a_tampered_payload_is_a_bad_signature() -> None:
    env = json.loads(envelope())
    data = base64.urlsafe_b64decode(env["payload"] + "==").replace(b"sync", b"resync")
    env["payload"] = b64(data)
    with pytest.raises(PushRejected) as err:
        verify(json.dumps(env).encode(), KEYS, "mitte", NOW, Seen())
    assert err.value.reason == "bad_signature"


def test_public_keys_load_from_base64url_hex_and_pem() -> None:
    raw = CLOUD.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = CLOUD.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for text in (b64(raw), raw.hex(), pem.decode()):
        assert load_public_key(text).public_bytes(Encoding.Raw, PublicFormat.Raw) == raw
    with pytest.raises(ValueError, match="32 bytes"):
        load_public_key("c2hvcnQ")
