"""The systemd units' exposure (issue 15, item 6): `systemd-analyze security
--offline=true` at most 1.5 and `systemd-analyze verify` clean for every unit in
systemd/, and the daemon still at work under the gateway unit's system call
filter and ProcSubset=pid (faults/exposure/sandbox.py). About 10 s; skipped
only where systemd-analyze is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.secrets import write_secret
from faults.exposure import MAX_SCORE, score, units, verify
from hwsim.sitegen import EXAMPLE_PIN_KEY
from tests.conftest import DAY, Daemon

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


# --- the daemon under the unit's system call filter and ProcSubset=pid -----------------


class SandboxedDaemon(Daemon):
    """The daemon started through `python -m faults.exposure.sandbox`."""

    wrapper = (sys.executable, "-m", "faults.exposure.sandbox", "--")


def test_the_sandbox_refuses_what_the_unit_refuses() -> None:
    code = (
        "import os\n"
        "for call in (lambda: os.nice(1), lambda: os.setgroups([])):\n"
        "    try:\n"
        "        call()\n"
        "        print('allowed')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "faults.exposure.sandbox", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["refused", "refused"]
    assert "system calls refused (@privileged @resources)" in out.stderr


def test_the_daemon_imports_and_decides_under_the_units_filter(
    tmp_path: Path, example_doc: dict[str, Any]
) -> None:
    """The hardening still lets the daemon do its job: start, import a snapshot
    (in a child process whose os.nice is refused), decide cards and PINs, stop
    cleanly. About 5 s."""
    state = tmp_path / "state"
    state.mkdir()
    write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    config = tmp_path / "config.toml"
    config.write_text('[site]\nid = "mitte"\n[log]\nlevel = "debug"\n')
    d = SandboxedDaemon(state, config)
    try:
        d.start()
        snapshot = tmp_path / "site.json"
        snapshot.write_text(json.dumps(example_doc))
        d.ctl("import", str(snapshot))
        ten = ["--at", f"{DAY}T10:00:00+01:00"]
        card = ["--door", "front", "--card", "H10301:12:3456", *ten]
        plan = d.ctl_json("decide", *card, check=False)
        assert (plan["granted"], plan["reason"]) == (True, "plan")
        pin = ["--door", "server-room", "--card", "H10301:12:4005", "--pin", "9753", *ten]
        assert d.ctl_json("decide", *pin, check=False)["reason"] == "grant"
        assert d.stop() == 0
    finally:
        d.stop(sig=9)
    log = d.output()
    assert "system calls refused (@privileged @resources)" in log
    assert "Traceback" not in log
    assert "Operation not permitted" not in log
