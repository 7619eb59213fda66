"""Push envelopes from the broker: `edge.sync.push.verify`, which refuses with
`PushRejected` only. The first byte picks what the rest is: the raw envelope
(JSON, base64url, the signature check), or a payload that the harness signs
with a cloud key the gateway trusts, so that the fuzzer gets past the
signature to the signed payload's own checks (fields, site, instant, nonce).
A verified push of changes goes on as `edge.sync.pushes` sends it: its
`changes` checked against the example site (`check_batch`, `DocError`)."""

from __future__ import annotations

import base64
import functools
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.site.changes import check_batch
from edge.site.syncdoc import DocError
from edge.sync.push import PushRejected, verify
from faults.fuzz.harness import Harness
from faults.fuzz.harnesses.changes import _index

SITE = "mitte"
NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC, what the seeds' issued_at are near
KEY_ID = "cloud-1"
# A fixed test key (not a secret): the seeds are signed with it.
SEED = bytes(range(32))


class _Nonces:
    def seen(self, nonce: str) -> bool:
        return nonce == "used"


@functools.cache
def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def envelope(payload: bytes) -> bytes:
    """`payload` signed as the cloud signs a push."""
    sig = _key().sign(payload)
    return json.dumps({"key_id": KEY_ID, "payload": b64(payload), "sig": b64(sig)}).encode()


def run(data: bytes) -> None:
    if not data:
        return
    raw = data[1:] if data[0] & 1 else envelope(data[1:])
    keys = {KEY_ID: _key().public_key()}
    msg = verify(raw, keys, SITE, NOW, _Nonces())
    if msg.type == "changes":
        check_batch(_index(), msg.body.get("changes"), "push.changes")


def prepare() -> None:
    _key()
    _index()


HARNESS = Harness("push", run, (PushRejected, DocError), max_len=8192, prepare=prepare)
