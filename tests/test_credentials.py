"""Secrets as systemd credentials (issue 15, item 6): the daemon, as a real
process, reads the PIN key, the cloud token and the broker password from
$CREDENTIALS_DIRECTORY; an empty credential counts as absent; `cloud.url` must be
https:// unless the lab flag says otherwise. Runs in about 15 s."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hwsim.broker import Mosquitto
from hwsim.cloud import CloudSim
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site
from tests.conftest import DAY, REPO
from tests.test_sync import synced, wait_for

MQTT_PASSWORD = "broker-pw-0b5e"
# Started as root, Mosquitto drops to the mosquitto user after reading its
# configuration, and could then not open the test's files under a 0700 tmp dir.
STAY_ROOT = "user root\n" if os.geteuid() == 0 else ""


@pytest.fixture
def cloud() -> Iterator[CloudSim]:
    doc, _ = example_site(DAY)
    sim = CloudSim(doc, token="token-from-credentials").start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto that admits only edge-gateway with its password."""
    broker = Mosquitto(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge-gateway", MQTT_PASSWORD],
        check=True,
        capture_output=True,
    )
    broker.config.write_text(
        f"listener {broker.port} {broker.host}\nallow_anonymous false\n"
        f"password_file {passwd}\npersistence false\n{STAY_ROOT}"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def credentials(tmp_path: Path, **secrets: str) -> Path:
    """A directory laid out as systemd's: one read-only file per credential."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, value in secrets.items():
        path = directory / name
        path.write_text(value)
        path.chmod(0o400)
    return directory


def config(cloud: CloudSim, broker: Mosquitto) -> str:
    return (
        '[site]\nid = "mitte"\n[log]\nlevel = "info"\n'
        f'[cloud]\nurl = "{cloud.url}"\nallow_insecure_http_for_lab = true\n'
        "backoff_min_s = 0.2\nbackoff_max_s = 1\ntimeout_s = 5\n"
        f'push = true\n[cloud.keys]\n{cloud.key_id} = "{cloud.public_key_b64}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        'username = "edge-gateway"\npassword_secret = "mqtt_password"\n'
    )


def test_the_daemon_reads_every_secret_from_the_credentials_directory(
    daemon_factory: Any, cloud: CloudSim, locked_broker: Mosquitto, tmp_path: Path
) -> None:
    creds = credentials(
        tmp_path,
        pin_key=EXAMPLE_PIN_KEY.hex() + "\n",
        cloud_token="token-from-credentials\n",
        mqtt_password=MQTT_PASSWORD,
    )
    # Nothing in <state_dir>/secrets/: whatever the daemon knows came from creds.
    d = daemon_factory(
        config(cloud, locked_broker), env={"CREDENTIALS_DIRECTORY": str(creds)}, pin_key=False
    )
    d.start()
    assert not (d.state_dir / "secrets").exists()
    assert d.ctl_json("status")["pin_key"] is True
    status = synced(d, cloud)  # the simulator answers 401 to any other token
    assert not status["stopped"]
    wait_for("the broker to admit the gateway", lambda: status_push(d)["connected"])
    log = d.output()
    assert "INSECURE" in log
    assert "token-from-credentials" not in log
    assert MQTT_PASSWORD not in log


def status_push(d: Any) -> dict[str, Any]:
    push: dict[str, Any] = d.ctl_json("sync", "status")["push"]
    return push


def test_empty_credentials_are_absent_and_said_so(
    daemon_factory: Any, cloud: CloudSim, locked_broker: Mosquitto, tmp_path: Path
) -> None:
    """What a unit listing every credential gives a gateway that uses only some:
    empty files. The PIN key then comes from the development fallback
    (<state_dir>/secrets/, written by daemon_factory); the token and the broker
    password are missing, with errors that say where to put them."""
    creds = credentials(tmp_path, pin_key="", cloud_token="\n", mqtt_password="")
    d = daemon_factory(config(cloud, locked_broker), env={"CREDENTIALS_DIRECTORY": str(creds)})
    d.start()
    assert d.ctl_json("status")["pin_key"] is True
    stopped = wait_for("sync to stop", lambda: d.ctl_json("sync", "status")["stopped"])
    assert f"no cloud token: put it in {creds / 'cloud_token'}" in stopped
    assert str(d.state_dir / "secrets" / "cloud_token") in stopped
    wait_for(
        "the password error",
        lambda: "mqtt.password_secret 'mqtt_password' is not provisioned" in d.output(),
    )
    assert not status_push(d)["connected"]


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "edge.ops.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))},
    )


CLOUD = '[site]\nid = "mitte"\n[cloud]\npush = false\nurl = "{url}"\n{extra}'


@pytest.mark.parametrize(
    ("url", "extra", "ok"),
    [
        ("https://cloud.example/api/edge/v1", "", True),
        ("http://cloud.example/api/edge/v1", "", False),
        ("http://127.0.0.1:8080/api/edge/v1", "", False),  # loopback is no exception
        ("http://127.0.0.1:8080/api/edge/v1", "allow_insecure_http_for_lab = true\n", True),
        ("https://cloud.example/api/edge/v1", "allow_insecure_http_for_lab = true\n", True),
    ],
)
def test_cloud_url_must_be_https_unless_the_lab_flag(
    tmp_path: Path, url: str, extra: str, ok: bool
) -> None:
    r = check_config(tmp_path, CLOUD.format(url=url, extra=extra))
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2
        assert f"config.toml: cloud.url: '{url}' is plain HTTP" in r.stderr
        assert "allow_insecure_http_for_lab = true" in r.stderr


def test_the_example_config_and_unit_name_the_same_credentials() -> None:
    """config.example.toml's secret names are those the unit loads."""
    unit = (REPO / "systemd" / "edge-gateway.service").read_text()
    example = (REPO / "config.example.toml").read_text()
    for name in ("pin_key", "cloud_token", "mqtt_password"):
        assert f"LoadCredential={name}:/etc/edge-gateway/credentials/{name}\n" in unit
    assert 'password_secret = "mqtt_password"' in example
    assert 'token_secret = "cloud_token"' in example


# --- the bridge: its platforms' URLs get the same treatment ---------------------------

BRIDGE = (
    '[platforms.nx]\ntype = "nexudus"\nusername = "ops@example.com"\nurl = "{url}"\n{extra}'
    '[sites.s]\nplatform = "nx"\nlocations = ["1"]\n'
)
OFFICERND = (
    '[platforms.o]\ntype = "officernd"\norganization = "o"\nclient_id = "c"\n'
    'token_url = "{url}"\n{extra}[sites.s]\nplatform = "o"\nlocations = ["1"]\n'
)


@pytest.mark.parametrize(
    ("template", "url", "extra", "ok"),
    [
        (BRIDGE, "https://spaces.nexudus.com", "", True),
        (BRIDGE, "http://127.0.0.1:9000", "", False),
        (BRIDGE, "http://127.0.0.1:9000", "allow_insecure_http_for_lab = true\n", True),
        (OFFICERND, "http://idp.example/oauth/token", "", False),
        (OFFICERND, "http://idp.example/oauth/token", "allow_insecure_http_for_lab = true\n", True),
    ],
)
def test_bridge_platform_urls_must_be_https_unless_the_lab_flag(
    template: str, url: str, extra: str, ok: bool
) -> None:
    from bridge.config import parse_config
    from edge.config import ConfigError

    text = template.format(url=url, extra=extra)
    if ok:
        parse_config(text, "bridge.toml")
        return
    with pytest.raises(ConfigError) as err:
        parse_config(text, "bridge.toml")
    assert any(f"'{url}' is plain HTTP" in p and "platforms." in p for p in err.value.problems), (
        err.value.problems
    )


def test_the_bridge_warns_at_start_when_the_lab_flag_is_on(tmp_path: Path) -> None:
    from hwsim.platforms.nexudus import NexudusSim
    from hwsim.platforms.rig import BridgeProcess, bridge_config, provision

    sim = NexudusSim().start()
    b = None
    try:
        ids = sim.load_example(DAY)
        state = tmp_path / "bridge"
        provision(state)
        text = bridge_config("nexudus", sim.base_url, str(ids["mitte"]), port=0)
        b = BridgeProcess(state, text).start()
        b.wait_ready()
        assert (
            f"nexudus: INSECURE: allow_insecure_http_for_lab is on; credentials and member "
            f"data go to {sim.base_url} in clear"
        ) in b.output()
    finally:
        if b is not None:
            b.stop()
        sim.stop()
