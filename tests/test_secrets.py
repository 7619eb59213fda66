"""Secrets: read from systemd's credentials first, written to the state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.secrets import read_secret, secret_path, write_secret


def test_credentials_directory_wins_and_own_secrets_go_to_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pin_key").write_bytes(b"from systemd")
    state = tmp_path / "state"
    write_secret(state, "pin_key", b"from the state dir")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret(state, "pin_key") == b"from systemd"
    # A key the gateway enrolled itself lives in the state dir, found there too.
    path = write_secret(state, "osdp-front-in", b"00" * 16)
    assert path == state / "secrets" / "osdp-front-in"
    assert path.stat().st_mode & 0o777 == 0o600
    assert secret_path(state, "osdp-front-in") == path
    assert read_secret(state, "osdp-front-in") == b"00" * 16
    assert read_secret(state, "osdp-nobody") is None


def test_an_empty_credential_is_absent_and_the_state_dir_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit lists every credential; one not used is an empty source file."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cloud_token").write_bytes(b"")
    (creds / "mqtt_password").write_bytes(b" \n")
    state = tmp_path / "state"
    write_secret(state, "cloud_token", b"from the state dir")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret(state, "cloud_token") == b"from the state dir"
    assert secret_path(state, "cloud_token") == state / "secrets" / "cloud_token"
    assert read_secret(state, "mqtt_password") is None
    # Empty in the state dir too: still absent, not an empty password.
    write_secret(state, "mqtt_password", b"")
    assert read_secret(state, "mqtt_password") is None
