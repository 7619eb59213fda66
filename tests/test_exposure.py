"""The systemd units' exposure (issue 15, item 6): `systemd-analyze security
--offline=true` at most 1.5 and `systemd-analyze verify` clean for every unit in
systemd/. About a second; skipped only where systemd-analyze is not installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faults.exposure import MAX_SCORE, score, units, verify

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (scripts/bootstrap installs Debian's systemd)",
)


def test_both_units_are_checked() -> None:
    assert {u.name for u in units()} == {"edge-gateway.service", "edge-bridge.service"}


@pytest.mark.parametrize("unit", units(), ids=lambda u: u.name)
def test_exposure_at_most_the_bar(unit: Path) -> None:
    assert score(unit) <= MAX_SCORE


@pytest.mark.parametrize("unit", units(), ids=lambda u: u.name)
def test_verify_is_clean(unit: Path) -> None:
    assert verify(unit) == ""


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A unit without the hardening scores high, and a typo is reported."""
    loose = tmp_path / "loose.service"
    loose.write_text("[Service]\nExecStart=/bin/true\n")
    assert score(loose) > 5
    typo = tmp_path / "typo.service"
    typo.write_text("[Service]\nExecStart=/bin/true\nProtectSystem=strikt\n")
    assert "strikt" in verify(typo)


def test_hardening_keeps_what_the_daemon_needs() -> None:
    """The settings that would break the gateway's job stay out of its unit:
    its devices (serial, GPIO), its state directory, its network and secrets."""
    text = next(u for u in units() if u.name == "edge-gateway.service").read_text()
    lines = {line.strip() for line in text.splitlines() if not line.startswith("#")}
    for needed in (
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-gpiochip rw",
        "SupplementaryGroups=dialout gpio",
        "StateDirectory=edge-gateway",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "LoadCredential=pin_key:/etc/edge-gateway/credentials/pin_key",
        "LoadCredential=cloud_token:/etc/edge-gateway/credentials/cloud_token",
        "LoadCredential=mqtt_password:/etc/edge-gateway/credentials/mqtt_password",
        # Defaults the gateway reads as "not provisioned", so that a missing
        # file does not keep the door controller from starting.
        "SetCredential=pin_key:\\n",
        "SetCredential=cloud_token:\\n",
        "SetCredential=mqtt_password:\\n",
    ):
        assert needed in lines
    for breaking in ("PrivateDevices=yes", "PrivateNetwork=yes", "PrivateUsers=yes"):
        assert breaking not in lines
