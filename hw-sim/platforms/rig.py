"""The platform bridge as a process beside a simulated platform, for the tests,
the demo and the benchmarks: its configuration for the example site, its
secrets, and `edge-bridge` driven the way an operator drives it.

`BridgeProcess` runs `edge-bridge run` in a subprocess and talks to it with
the real command line (`status --json`, `sync now`). `bridge_config` writes a
configuration whose site is the example site (`hwsim.sitegen`) expressed as
the operator's mapping: the same doors, groups, schedules and plans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.secrets import write_secret
from hwsim.sitegen import EXAMPLE_PIN_KEY

GATEWAY_TOKEN = "bridge-gateway-token"  # noqa: S105 - the rig's well-known test token
PUSH_KEY_ID = "bridge-2026"

SITE_STRUCTURE = """
[sites.mitte.schedules.always]
windows = [{ days = "mon-sun", from = "00:00", to = "24:00" }]
[sites.mitte.schedules.staffed]
closed_on_holidays = true
windows = [
    { days = "mon-fri", from = "08:00", to = "19:00" },
    { days = "sat", from = "10:00", to = "16:00" },
]
[sites.mitte.schedules.lunch]
windows = [{ days = "mon-fri", from = "12:00", to = "13:00" }]
[sites.mitte.doors.front]
name = "Front entrance"
mode = "card_or_pin"
[sites.mitte.doors.office-12]
name = "Office 12"
mode = "card_or_pin"
[sites.mitte.doors.server-room]
name = "Server room"
mode = "card_and_pin"
[sites.mitte.doors.room-ada]
name = "Ada room"
mode = "card"
[sites.mitte.access_groups]
members = ["front"]
office-12 = ["front", "office-12"]
server = ["server-room"]
[sites.mitte.plans.hot-desk]
match = ["Hot Desk"]
access = [{ group = "members", schedule = "HOT_DESK_SCHEDULE" }]
[sites.mitte.plans.resident]
match = ["Resident"]
access = [{ group = "members", schedule = "always" }]
[sites.mitte.plans.server-access]
match = ["Server Access"]
access = [{ group = "server", schedule = "always" }]
[sites.mitte.companies.offices]
match = ["ACME GmbH", "Initech"]
access = [{ group = "office-12", schedule = "always" }]
[sites.mitte.rooms.ada]
resource = "Ada room"
door = "room-ada"
capacity = 6
credits_per_hour = 2
overtime_price_per_hour = 20.0
[sites.mitte.usage]
checkin_doors = ["front"]
guest_entry_price = 10.0
credit_price = 5.0
"""


def bridge_config(
    platform: str,
    url: str,
    location: str,
    *,
    port: int,
    platform_extra: str = "",
    site_extra: str = "",
    broker: tuple[str, int] | None = None,
    poll_interval_s: float = 60,
    slow_poll_interval_s: float | None = None,
    requests_per_s: float = 1000,
    level: str = "debug",
    hot_desk_schedule: str = "staffed",
    timeout_s: float = 5,
    bridge_extra: str = "",
) -> str:
    """A bridge configuration for the example site on a simulated platform."""
    if platform == "nexudus":
        account = (
            'type = "nexudus"\nusername = "ops@example.com"\npassword_secret = "nexudus_password"\n'
            'webhook_secret = "nexudus_app_secret"\n'
        )
    else:
        account = (
            'type = "officernd"\norganization = "mitte-coworking"\nclient_id = "sim-client"\n'
            f'token_url = "{url}/oauth/token"\nwebhook_secret = "officernd_webhook_secret"\n'
            'client_secret_secret = "officernd_client_secret"\n'
        )
    text = (
        f'[bridge]\nlisten_port = {port}\n{bridge_extra}[log]\nlevel = "{level}"\n'
        f"[platforms.{platform}]\n{account}"
        f'url = "{url}"\nallow_insecure_http_for_lab = true\npoll_interval_s = {poll_interval_s}\n'
        f"slow_poll_interval_s = {slow_poll_interval_s or max(poll_interval_s, 900)}\n"
        f"requests_per_s = {requests_per_s}\n"
        f"timeout_s = {timeout_s}\nbackoff_min_s = 0.2\nbackoff_max_s = 2\n"
        f"{platform_extra}"
        f'[sites.mitte]\nplatform = "{platform}"\nlocations = ["{location}"]\nname = "Mitte"\n'
        'timezone = "Europe/Berlin"\ngateway_token_secret = "gateway_token"\n'
        'pin_key_secret = "pin_key"\ngrace_days = 3\n'
        'day_pass_access = [{ group = "members", schedule = "always" }]\n'
        'guest_access = [{ group = "members", schedule = "always" }]\n'
        f"{site_extra}{SITE_STRUCTURE.replace('HOT_DESK_SCHEDULE', hot_desk_schedule)}"
    )
    if broker is not None:
        text += (
            f'[sites.mitte.push]\nkey_id = "{PUSH_KEY_ID}"\n'
            f'[sites.mitte.push.mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\n'
        )
    return text


def provision(state_dir: Path, platform_secret: str = "sim-password") -> str:  # noqa: S107
    """The bridge's secrets for the simulators' well-known credentials; the push
    key's public half (for the gateway's [cloud.keys])."""
    state_dir.mkdir(parents=True, exist_ok=True)
    write_secret(state_dir, "gateway_token", GATEWAY_TOKEN.encode())
    write_secret(state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    write_secret(state_dir, "nexudus_password", platform_secret.encode())
    write_secret(state_dir, "nexudus_app_secret", b"sim-app-secret")
    write_secret(state_dir, "officernd_client_secret", b"sim-secret")
    key = Ed25519PrivateKey.generate()
    write_secret(state_dir, "push_signing_key", key.private_bytes_raw().hex().encode())
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class BridgeProcess:
    """`edge-bridge run` in a subprocess, driven with the real `edge-bridge`."""

    def __init__(self, state_dir: Path, config_text: str, env: dict[str, str] | None = None):
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config = state_dir.parent / f"{state_dir.name}.toml"
        self.config.write_text(config_text)
        self.scheme = "https" if "tls_cert" in config_text else "http"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    def start(self) -> BridgeProcess:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "run",
                "--config",
                str(self.config),
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "--config",
                str(self.config),
                "--state-dir",
                str(self.state_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"edge-bridge {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def status(self) -> dict[str, Any] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the bridge exited with {self.proc.returncode}:\n{self.output()}")
        r = self.ctl("status", "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_ready(self, site: str = "mitte", timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and status["sites"].get(site, {}).get("ready"):
                return status
            time.sleep(0.05)
        raise AssertionError(f"site {site} not ready in {timeout} s:\n{self.output()[-5000:]}")

    @property
    def url(self) -> str:
        status = self.status()
        assert status is not None
        return f"{self.scheme}://{status['listening']}/api/edge/v1"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code
