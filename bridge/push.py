"""Signed edge-sync/1 pushes from the bridge to a site's gateways.

A change that affects access reaches the gateways in well under a second:
after the site's changes are durable, the bridge publishes a signed envelope
(`edge-sync/1`, section Push) to `edge/<site>/push` on the site's broker,
QoS 1. The gateways verify it against the bridge's public key (their
`[cloud.keys]`), apply the changes at once and then pull, so a lost push costs
no more than one pull interval. A batch too large for one message is pushed as
`sync` (pull now) instead.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from bridge.config import PushSection
from edge.mqtt.link import MqttLink
from edge.secrets import SecretError, read_secret

log = logging.getLogger("bridge.push")

MAX_PUSHED_CHANGES = 200  # beyond this the gateways are told to pull instead


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_signing_key(text: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key: a PEM block, or its 32-byte seed as hex or base64url."""
    stripped = text.strip()
    if stripped.startswith(b"-----BEGIN"):
        key = load_pem_private_key(stripped, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return key
    raw: bytes | None = None
    if len(stripped) == 64:
        try:
            raw = bytes.fromhex(stripped.decode("ascii"))
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
        except ValueError:
            raw = None
    if raw is None or len(raw) != 32:
        raise ValueError("an Ed25519 private key is a PEM block or 32 bytes (hex or base64url)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public key as a gateway's [cloud.keys] entry takes it (base64url)."""
    return _b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def envelope(key: Ed25519PrivateKey, key_id: str, site: str, kind: str, **fields: Any) -> bytes:
    payload = {
        "type": kind,
        "site": site,
        "issued_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "nonce": secrets.token_urlsafe(16),
        **fields,
    }
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(
        {"key_id": key_id, "payload": _b64url(raw), "sig": _b64url(key.sign(raw))},
        separators=(",", ":"),
    ).encode()


class SitePusher:
    """One site's pushes: its broker link and its signing key."""

    def __init__(self, site: str, cfg: PushSection, state_dir: Path) -> None:
        self.site = site
        self.cfg = cfg
        self.state_dir = state_dir
        self.topic = f"edge/{site}/push"
        client_id = cfg.mqtt.client_id or f"edge-bridge-push-{site}"
        self.link = MqttLink(cfg.mqtt, client_id, state_dir)
        self.key: Ed25519PrivateKey | None = None
        self.fault: str | None = None
        self.sent = 0

    async def start(self) -> None:
        try:
            raw = read_secret(self.state_dir, self.cfg.signing_key_secret)
            if raw is None:
                raise SecretError(f"the signing key {self.cfg.signing_key_secret!r} is missing")
            self.key = load_signing_key(raw)
        except (SecretError, ValueError) as exc:
            self.fault = f"pushes are off: {exc}"
            log.error("push %s: %s", self.site, self.fault)
            return
        await self.link.start()

    async def stop(self) -> None:
        await self.link.stop()

    def changes(self, site: str, changes: list[dict[str, Any]]) -> None:
        """A listener of the engine: push a site's durable changes."""
        if site != self.site or self.key is None or not changes:
            return
        if len(changes) > MAX_PUSHED_CHANGES:
            raw = envelope(self.key, self.cfg.key_id, site, "sync")
        else:
            raw = envelope(self.key, self.cfg.key_id, site, "changes", changes=changes)
        self.link.publish(self.topic, raw, qos=1)
        self.sent += 1

    def view(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "key_id": self.cfg.key_id,
            "pushes_sent": self.sent,
            **({"fault": self.fault} if self.fault else self.link.view()),
        }
