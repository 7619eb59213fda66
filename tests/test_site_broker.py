"""The site broker as shipped (issue 15, item 6): a real Mosquitto started with
docs/mosquitto-site.conf and docs/mosquitto-acl.example (ports, certificates and
paths of the test's own; the bridge to the cloud's broker left out), clients
over TLS with paho as each user of the ACL. Checks that allowed publishes and
subscriptions get through and denied ones do not: a device writes only its own
topics, a panel cannot command a door, only the gateway publishes state or
reads the cloud's pushes, and nobody on site publishes a push. About 5 s."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from hwsim.broker import Mosquitto
from tests.conftest import REPO

SITE_CONF = REPO / "docs" / "mosquitto-site.conf"
ACL = REPO / "docs" / "mosquitto-acl.example"
USERS = (
    "edge-gateway",
    "homeassistant",
    "edge-admin",
    "panel-ada",
    "wifi-adapter",
    "ada_tv",
    "zigbee2mqtt",
    "dashboard",
)
# The test's own observer, added to its copy of the ACL: it reads and writes
# everything, to see what the broker let through and to publish what nobody
# on site may (a push).
SPY = "test-spy"
TIMEOUT = 10


def password(user: str) -> str:
    return f"{user}-pw"


# --- certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certs(directory: Path) -> Certs:
    """A site CA and the broker's certificate for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test site CA"))
        .issuer_name(_name("test site CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("site broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = Certs(directory / "site-ca.pem", directory / "broker.crt", directory / "broker.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out.key.chmod(0o600)
    return out


# --- the broker -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def site_config(work: Path, plain: int, tls: int, certs: Certs, passwd: Path, acl: Path) -> str:
    """docs/mosquitto-site.conf with the test's ports and files, without its bridge."""
    text = SITE_CONF.read_text()
    # The bridge needs the cloud's broker; everything before it is the site's own.
    text = text[: text.index("\nconnection cloud")] + "\n"
    for pattern, line in {
        r"^listener 1883 127\.0\.0\.1$": f"listener {plain} 127.0.0.1",
        r"^listener 8883 \S+$": f"listener {tls} 127.0.0.1",
        r"^cafile .*$": f"cafile {certs.ca}",
        r"^certfile .*$": f"certfile {certs.cert}",
        r"^keyfile .*$": f"keyfile {certs.key}",
        r"^password_file .*$": f"password_file {passwd}",
        r"^acl_file .*$": f"acl_file {acl}",
        r"^persistence_location .*$": f"persistence_location {work}/",
    }.items():
        text, n = re.subn(pattern, line, text, flags=re.MULTILINE)
        assert n == 1, f"{SITE_CONF.name} no longer has one line matching {pattern}"
    # Started as root, Mosquitto reads its files as its own user after dropping
    # privileges, who cannot enter the test's private directory: stay root then.
    return text + ("user root\n" if os.geteuid() == 0 else "")


@dataclass
class SiteBroker:
    broker: Mosquitto
    plain: int
    tls: int
    certs: Certs


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[SiteBroker]:
    work = tmp_path / "broker"
    work.mkdir()
    certs = make_certs(work)
    passwd = work / "passwd"
    for i, user in enumerate((*USERS, SPY)):
        flags = ["-c"] if i == 0 else []
        cmd = ["mosquitto_passwd", *flags, "-b", str(passwd), user, password(user)]
        subprocess.run(cmd, check=True, capture_output=True)
    acl = work / "acl"
    acl.write_text(ACL.read_text() + f"\nuser {SPY}\ntopic readwrite #\n")
    broker = Mosquitto(work)  # its start/stop and log; the config is the site's
    plain, tls = broker.port, free_port()
    broker.config.write_text(site_config(work, plain, tls, certs, passwd, acl))
    broker.port = tls  # Mosquitto.start waits until this port accepts
    broker.start()
    try:
        yield SiteBroker(broker, plain, tls, certs)
    finally:
        broker.stop()


# --- clients --------------------------------------------------------------------------


@dataclass
class Client:
    """A paho client logged in as one user, over TLS unless told otherwise."""

    site: SiteBroker
    user: str
    secret: str | None = None
    tls: bool = True
    received: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.connected = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.subacks: dict[int, list[int]] = {}
        self.suback_seen = threading.Condition()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.user}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(self.user, self.secret or password(self.user))
        if self.tls:
            c.tls_set(ca_certs=str(self.site.certs.ca))
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, msg: self.received.append((msg.topic, msg.payload))
        c.on_subscribe = self._on_subscribe
        self.client = c
        c.connect("127.0.0.1", self.site.tls if self.tls else self.site.plain)
        c.loop_start()
        assert self.connected.wait(TIMEOUT), f"{self.user}: no CONNACK"

    def _on_connect(
        self, _c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object
    ) -> None:
        self.reason = rc
        self.connected.set()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, codes: list[mqtt.ReasonCode], _p: object
    ) -> None:
        with self.suback_seen:
            self.subacks[mid] = [code.value for code in codes]
            self.suback_seen.notify_all()

    def subscribe(self, topic: str) -> int:
        """The broker's answer: the granted QoS, or 0x80 when refused."""
        rc, mid = self.client.subscribe(topic, 1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        with self.suback_seen:
            assert self.suback_seen.wait_for(lambda: mid in self.subacks, TIMEOUT)
            return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)

    def has(self, topic: str, payload: bytes) -> bool:
        return (topic, payload) in self.received

    def wait_for(self, topic: str, payload: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.has(topic, payload):
            assert time.monotonic() < deadline, f"{self.user}: {topic} never arrived"
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- publishes ------------------------------------------------------------------------

# (user, topic, allowed). Each user's first allowed topic is its mark below.
PUBLISHES = [
    # Only the gateway publishes state; it may not publish a push or a door command.
    ("edge-gateway", "edge/mitte/rooms/ada/state", True),
    ("edge-gateway", "edge/mitte/doors/front/state", True),
    ("edge-gateway", "edge/mitte/rooms/ada/response/check_in", True),
    ("edge-gateway", "cmnd/ada_tv/POWER", True),
    ("edge-gateway", "edge/mitte/push", False),
    ("edge-gateway", "edge/mitte/doors/front/command", False),
    # A panel: its own room's requests only; never state, answers, doors or pushes.
    ("panel-ada", "edge/mitte/rooms/ada/request/check_in", True),
    ("panel-ada", "edge/mitte/rooms/ada/state", False),
    ("panel-ada", "edge/mitte/rooms/ada/response/check_in", False),
    ("panel-ada", "edge/mitte/rooms/babbage/request/check_in", False),
    ("panel-ada", "edge/mitte/doors/front/command", False),
    ("panel-ada", "edge/mitte/push", False),
    # A plug: its own state and telemetry only; not another's, not commands.
    ("ada_tv", "stat/ada_tv/POWER", True),
    ("ada_tv", "tele/ada_tv/STATE", True),
    ("ada_tv", "stat/babbage_tv/POWER", False),
    ("ada_tv", "cmnd/babbage_tv/POWER", False),
    ("ada_tv", "cmnd/ada_tv/POWER", False),
    ("ada_tv", "edge/mitte/devices/ada_tv/state", False),
    ("ada_tv", "edge/mitte/doors/front/command", False),
    ("ada_tv", "edge/mitte/push", False),
    # The Zigbee2MQTT bridge: its own tree.
    ("zigbee2mqtt", "zigbee2mqtt/ada_light", True),
    ("zigbee2mqtt", "stat/ada_tv/POWER", False),
    ("zigbee2mqtt", "edge/mitte/doors/front/command", False),
    # Admin users may command doors, and nothing else of the gateway's.
    ("homeassistant", "edge/mitte/doors/front/command", True),
    ("homeassistant", "edge/mitte/doors/front/state", False),
    ("homeassistant", "edge/mitte/push", False),
    ("edge-admin", "edge/mitte/doors/front/command", True),
    ("edge-admin", "edge/mitte/rooms/ada/state", False),
    ("edge-admin", "edge/mitte/push", False),
]


@pytest.mark.parametrize("user", sorted({u for u, _, _ in PUBLISHES}))
def test_each_user_publishes_only_its_own_topics(site_broker: SiteBroker, user: str) -> None:
    publisher, spy = Client(site_broker, user), Client(site_broker, SPY)
    try:
        assert spy.subscribe("#") == 1
        cases = [(topic, allowed) for u, topic, allowed in PUBLISHES if u == user]
        sent = []
        for topic, allowed in cases:
            payload = uuid.uuid4().hex.encode()
            publisher.publish(topic, payload)
            sent.append((topic, payload, allowed))
        # The broker handles one connection's messages in order: once this last
        # allowed one reached the spy, every earlier one that was let through has.
        mark = (next(t for t, allowed in cases if allowed), b"mark")
        publisher.publish(*mark)
        spy.wait_for(*mark)
        got = {(t, allowed): spy.has(t, p) for t, p, allowed in sent}
        assert got == {(t, allowed): allowed for t, _, allowed in sent}
    finally:
        publisher.close()
        spy.close()


# --- subscriptions --------------------------------------------------------------------

# (user, filter, allowed, a topic under the filter, a topic the user may read).
SUBSCRIPTIONS = [
    ("edge-gateway", "edge/mitte/push", True, "edge/mitte/push", "stat/ada_tv/POWER"),
    (
        "edge-gateway",
        "edge/mitte/doors/+/command",
        True,
        "edge/mitte/doors/front/command",
        "stat/ada_tv/POWER",
    ),
    (
        "panel-ada",
        "edge/mitte/rooms/ada/state",
        True,
        "edge/mitte/rooms/ada/state",
        "edge/mitte/rooms/ada/response/book",
    ),
    ("panel-ada", "edge/mitte/push", False, "edge/mitte/push", "edge/mitte/rooms/ada/state"),
    (
        "panel-ada",
        "edge/mitte/rooms/babbage/state",
        False,
        "edge/mitte/rooms/babbage/state",
        "edge/mitte/rooms/ada/state",
    ),
    (
        "panel-ada",
        "edge/mitte/rooms/+/request/#",
        False,
        "edge/mitte/rooms/babbage/request/end",
        "edge/mitte/rooms/ada/state",
    ),
    ("ada_tv", "cmnd/ada_tv/#", True, "cmnd/ada_tv/POWER", "cmnd/ada_tv/POWER1"),
    ("ada_tv", "cmnd/babbage_tv/#", False, "cmnd/babbage_tv/POWER", "cmnd/ada_tv/POWER"),
    ("ada_tv", "edge/mitte/push", False, "edge/mitte/push", "cmnd/ada_tv/POWER"),
    (
        "dashboard",
        "edge/mitte/doors/+/state",
        True,
        "edge/mitte/doors/front/state",
        "edge/mitte/occupancy",
    ),
    (
        "dashboard",
        "edge/mitte/doors/+/command",
        False,
        "edge/mitte/doors/front/command",
        "edge/mitte/occupancy",
    ),
    ("dashboard", "edge/mitte/push", False, "edge/mitte/push", "edge/mitte/occupancy"),
    ("homeassistant", "edge/mitte/push", False, "edge/mitte/push", "edge/mitte/occupancy"),
    (
        "wifi-adapter",
        "edge/mitte/wifi/guest",
        True,
        "edge/mitte/wifi/guest",
        "edge/mitte/wifi/guest",
    ),
    (
        "wifi-adapter",
        "edge/mitte/rooms/+/state",
        False,
        "edge/mitte/rooms/ada/state",
        "edge/mitte/wifi/guest",
    ),
]


@pytest.mark.parametrize(
    ("user", "sub", "allowed", "topic", "readable"),
    SUBSCRIPTIONS,
    ids=[f"{u}:{s}" for u, s, *_ in SUBSCRIPTIONS],
)
def test_each_user_reads_only_what_it_needs(
    site_broker: SiteBroker,
    user: str,
    sub: str,
    allowed: bool,
    topic: str,
    readable: str,
) -> None:
    reader, spy = Client(site_broker, user), Client(site_broker, SPY)
    try:
        # Mosquitto 2.0 (MQTT 3.1.1) grants a denied subscription in its SUBACK
        # and then delivers nothing under it: what counts is what arrives.
        reader.subscribe(sub)
        reader.subscribe(readable)
        payload = uuid.uuid4().hex.encode()
        spy.publish(topic, payload)
        # The spy's messages reach the reader in order: the mark comes after.
        spy.publish(readable, b"mark")
        reader.wait_for(readable, b"mark")
        assert reader.has(topic, payload) == allowed
    finally:
        reader.close()
        spy.close()


# --- logging in -------------------------------------------------------------------------


def test_tls_with_a_password_and_nothing_else(site_broker: SiteBroker) -> None:
    # The gateway on loopback, in clear, with its password.
    gw = Client(site_broker, "edge-gateway", tls=False)
    try:
        assert gw.reason is not None
        assert not gw.reason.is_failure
    finally:
        gw.close()
    # A wrong password is refused over TLS, and so is a user not in the file.
    for user, secret in (("panel-ada", "wrong"), ("stranger", "whatever")):
        c = Client(site_broker, user, secret)
        try:
            assert c.reason is not None
            assert c.reason.is_failure
        finally:
            c.close()
    # The device network's port speaks TLS only: an MQTT CONNECT in clear is
    # dropped without a CONNACK.
    connect = bytes.fromhex("101000044d5154540402003c0004") + b"anon"
    with socket.create_connection(("127.0.0.1", site_broker.tls), timeout=TIMEOUT) as s:
        s.sendall(connect)
        try:
            answer = s.recv(16)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer[:1] != b"\x20"
    # And the broker proves who it is: without the site's CA the handshake fails.
    ctx = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", site_broker.tls), timeout=TIMEOUT) as s,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(s, server_hostname="localhost")
    ctx = ssl.create_default_context(cafile=str(site_broker.certs.ca))
    with (
        socket.create_connection(("127.0.0.1", site_broker.tls), timeout=TIMEOUT) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
