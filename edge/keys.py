"""Ed25519 public keys as an operator configures them (the cloud's push keys).

Here, below everything, because the configuration checks them when it loads
and cloud sync verifies pushes with them.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load_public_key(text: str) -> Ed25519PublicKey:
    """A key as configured: 32 raw bytes in base64url or hex, or a PEM block."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 key")
        return key
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        raw = b64url_decode(text)
    if raw is None or len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes (base64url or hex) or a PEM block")
    return Ed25519PublicKey.from_public_bytes(raw)


def b64url_decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
