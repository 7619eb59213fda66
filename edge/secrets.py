"""Secrets are files, never config values and never logged.

They are read from `$CREDENTIALS_DIRECTORY` when systemd provides one
(`LoadCredential=`), then from `<state_dir>/secrets/` (the fallback for
development and for secrets the gateway makes itself: an OSDP reader's key,
enrolled in install mode, is written there since the credentials directory is
read-only). An empty file counts as absent: the unit loads every secret it
knows as a credential, and an operator who does not use one (no broker
password, say) leaves its source file empty rather than editing the unit.
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


def _provided(path: Path) -> bool:
    """A file with something in it (whitespace alone is nothing)."""
    try:
        return bool(path.read_bytes().strip())
    except OSError:
        # Unreadable but present: reading it again reports the error with its path.
        return path.exists()


def secret_path(state_dir: Path, name: str) -> Path:
    """Where the secret is read from: the credentials directory if it has it
    (an empty credential counts as absent), else `<state_dir>/secrets/`."""
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    if env and _provided(Path(env) / name):
        return Path(env) / name
    return state_dir / "secrets" / name


def read_secret(state_dir: Path, name: str) -> bytes | None:
    """The secret's bytes, or None when it is not provisioned (no file, or an
    empty one in either place)."""
    path = secret_path(state_dir, name)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"{path}: cannot read: {exc.strerror}") from None
    if not data.strip():
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets: %s is readable by group or others; chmod 600 it", path)
    return data


def describe_missing(state_dir: Path, name: str) -> str:
    """Where an absent secret may be put, for the error that says it is missing."""
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    fallback = state_dir / "secrets" / name
    if env:
        return f"{Path(env) / name} (LoadCredential={name}:...) or {fallback}"
    return f"{fallback} (or a systemd credential named {name!r})"


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
