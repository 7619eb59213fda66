"""Secrets are files, never config values and never logged.

They are read from `$CREDENTIALS_DIRECTORY` when systemd provides one
(`LoadCredential=`), then from `<state_dir>/secrets/`. Secrets the gateway
makes itself (an OSDP reader's key, enrolled in install mode) are written to
`<state_dir>/secrets/`: the credentials directory is read-only.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from edge.atomicfile import make_directory, write_atomic

log = logging.getLogger("edge.secrets")


class SecretError(Exception):
    pass


def secret_path(state_dir: Path, name: str) -> Path:
    """Where the secret is read from: the credentials directory if it has it."""
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    if env and (Path(env) / name).exists():
        return Path(env) / name
    return state_dir / "secrets" / name


def read_secret(state_dir: Path, name: str) -> bytes | None:
    """The secret's bytes, or None when it is not provisioned."""
    path = secret_path(state_dir, name)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"{path}: cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets: %s is readable by group or others; chmod 600 it", path)
    return data


def load_pin_key(state_dir: Path) -> bytes | None:
    """The site PIN key: 32 bytes, stored as 64 hex characters in `pin_key`."""
    raw = read_secret(state_dir, "pin_key")
    if raw is None:
        return None
    text = raw.decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SecretError(
            f"{secret_path(state_dir, 'pin_key')}: expected 64 hex characters (a 32-byte key)"
        )
    return key


def write_secret(state_dir: Path, name: str, data: bytes) -> Path:
    """Create a secret readable by its owner only, in `<state_dir>/secrets/`."""
    directory = state_dir / "secrets"
    make_directory(directory, 0o700)
    path = directory / name
    # A power cut leaves the old secret or the new one, never an empty file.
    write_atomic(path, data, 0o600)
    return path
