"""The simulated room devices against a real Mosquitto, seen from the gateway's side.

The gateway here is a plain paho client subscribed to `#`: it sends what the
real gateway will send and checks the echoes, the last wills and the
retained topics. Nothing waits on the clock except with a timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hwsim.broker import Mosquitto
from hwsim.devices import (
    SimClient,
    SimDevices,
    SimJsonDevice,
    SimPanel,
    SimTasmotaPlug,
    SimZigbee2Mqtt,
    tasmota_payload,
)

T = TypeVar("T", bound=SimClient)
WAIT = 5.0


class Start(Protocol):
    def __call__(self, device: T) -> T: ...


class Gateway:
    """The gateway's side: sees every message on the broker and sends commands."""

    def __init__(self, broker: Mosquitto, topic: str = "#") -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gateway-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(WAIT), "the gateway client did not subscribe"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(WAIT)

    def mark(self) -> int:
        """Where "since now" starts, once everything the broker has handled arrived.

        A round trip through the broker: it delivers to us in the order it
        handled messages, so a device's announcements (handled before its
        start() returned) are in before the barrier comes back.
        """
        barrier = uuid.uuid4().hex.encode()
        self.send("test/barrier", barrier)
        self.wait("test/barrier", barrier)
        with self._cond:
            return len(self.messages)

    def on(self, topic: str, since: int = 0) -> list[bytes]:
        """What arrived on `topic` since the mark, without waiting."""
        with self._cond:
            return [p for t, p, _ in self.messages[since:] if t == topic]

    def wait(
        self,
        topic: str,
        payload: bytes | None = None,
        *,
        since: int = 0,
        where: Callable[[bytes], bool] | None = None,
        count: int = 1,
    ) -> bytes:
        """The `count`-th message on `topic` since the mark (that equals `payload`)."""

        def matching() -> list[bytes]:
            return [
                p
                for p in self.on(topic, since)
                if (payload is None or p == payload) and (where is None or where(p))
            ]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, WAIT):
                raise AssertionError(
                    f"no {payload!r} on {topic} since {since}; got {self.on(topic, since)}"
                )
            return matching()[count - 1]

    def wait_json(self, topic: str, expected: dict[str, Any], *, since: int = 0) -> bytes:
        """A JSON message on `topic` holding (at least) the `expected` items."""
        return self.wait(
            topic, since=since, where=lambda p: expected.items() <= json.loads(p).items()
        )

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.topic, 1)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()


def retained(broker: Mosquitto, topic: str) -> bytes:
    """What a client that subscribes now is given as the retained message."""
    late = Gateway(broker, topic)
    try:
        with late._cond:
            assert late._cond.wait_for(lambda: bool(late.messages), WAIT), f"nothing on {topic}"
            got_topic, payload, was_retained = late.messages[0]
        assert (got_topic, was_retained) == (topic, True)
        return payload
    finally:
        late.stop()


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[Gateway]:
    gw = Gateway(mosquitto)
    yield gw
    gw.stop()


@pytest.fixture
def started(mosquitto: Mosquitto) -> Iterator[Start]:
    """Start a simulated device; stop it at teardown."""
    devices: list[SimClient] = []

    def start(device: T) -> T:
        devices.append(device)
        device.start()
        return device

    yield start
    for d in reversed(devices):
        d.stop()


# --- Tasmota ------------------------------------------------------------------------------


def plug(mosquitto: Mosquitto, **kwargs: Any) -> SimTasmotaPlug:
    return SimTasmotaPlug(mosquitto.host, mosquitto.port, "plug1", **kwargs)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("", -99),
        ("?", -99),
        ("on", 1),
        ("  ON", 1),
        ("True", 1),
        ("off", 0),
        ("FALSE", 0),
        ("0", 0),
        ("1", 1),
        ("2", 2),
        ("toggle", 2),
        ("0x1", 1),
        ("01", 1),
        ("blink", 3),
        ("7", 7),
        ("maybe", -99),
    ],
)
def test_tasmota_reads_payloads_as_the_firmware_does(text: str, number: int) -> None:
    assert tasmota_payload(text) == number


def test_tasmota_announces_itself_on_connect(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    started(plug(mosquitto, power=True))
    gateway.wait("tele/plug1/LWT", b"Online")
    gateway.wait("cmnd/plug1/POWER", b"")
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"ON"}')
    gateway.wait("stat/plug1/POWER", b"ON")
    state = json.loads(gateway.wait("tele/plug1/STATE"))
    assert state["POWER"] == "ON"
    assert {"Time", "Uptime", "UptimeSec", "Wifi"} <= state.keys()
    assert retained(mosquitto, "tele/plug1/LWT") == b"Online"


@pytest.mark.parametrize(
    ("before", "command", "payload", "after"),
    [
        (False, "POWER", "ON", True),
        (False, "Power", "on", True),
        (False, "power", "1", True),
        (False, "POWER1", "true", True),
        (False, "POWER", "TOGGLE", True),
        (False, "POWER", "2", True),
        (False, "POWER0", "1", True),
        (True, "POWER", "OFF", False),
        (True, "power", "0", False),
        (True, "Power", "false", False),
        (True, "POWER", "Toggle", False),
        (True, "POWER", "ON", True),  # answered even when nothing changes
    ],
)
def test_tasmota_power_commands_apply_and_answer(
    mosquitto: Mosquitto,
    gateway: Gateway,
    started: Start,
    before: bool,
    command: str,
    payload: str,
    after: bool,
) -> None:
    p = started(plug(mosquitto, power=before))
    mark = gateway.mark()
    gateway.send(f"cmnd/plug1/{command}", payload)
    text = b"ON" if after else b"OFF"
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"' + text + b'"}', since=mark)
    gateway.wait("stat/plug1/POWER", text, since=mark)
    assert p.on is after
    assert p.commands == 1
    assert [on for _, on in p.history] == ([after] if after != before else [])


def test_tasmota_empty_and_unknown_payloads_only_answer_the_state(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto, power=True))
    mark = gateway.mark()
    for payload in ("", "maybe", "7"):
        gateway.send("cmnd/plug1/POWER", payload)
    # CmndPower turns a payload out of range into "show state": no error, no change.
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"ON"}', since=mark, count=3)
    gateway.wait("stat/plug1/POWER", b"ON", since=mark, count=3)
    assert p.on
    assert p.history == []
    assert p.commands == 3


def test_tasmota_answers_errors_for_a_missing_relay_and_an_unknown_command(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto))
    mark = gateway.mark()
    gateway.send("cmnd/plug1/POWER2", "ON")
    gateway.wait("stat/plug1/RESULT", b'{"Command":"Error"}', since=mark)
    gateway.send("cmnd/plug1/Dimmer", "50")
    gateway.wait("stat/plug1/RESULT", b'{"Command":"Unknown"}', since=mark)
    gateway.send("cmnd/plug1/State", "")
    gateway.wait_json("stat/plug1/RESULT", {"POWER": "OFF"}, since=mark)
    assert not p.on
    assert gateway.on("stat/plug1/POWER", mark) == []


def test_tasmota_button_toggles_and_reports(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto))
    mark = gateway.mark()
    p.press()
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"ON"}', since=mark)
    gateway.wait("stat/plug1/POWER", b"ON", since=mark)
    assert p.on
    assert [on for _, on in p.history] == [True]
    assert p.commands == 0


def test_tasmota_teleperiod_repeats_the_state(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    started(plug(mosquitto, power=True, teleperiod_s=0.05))
    payload = gateway.wait("tele/plug1/STATE", count=3)
    assert json.loads(payload)["POWER"] == "ON"


def test_a_slow_tasmota_applies_and_answers_after_its_delay(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto))
    p.delay_s = 0.2
    mark = gateway.mark()
    sent = time.monotonic_ns()
    gateway.send("cmnd/plug1/POWER", "ON")
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"ON"}', since=mark)
    assert p.wait_on(True, WAIT)
    # A lower bound the delay guarantees by construction, not a measure of speed.
    assert p.history[0][0] - sent >= 0.2e9


def test_a_mute_tasmota_takes_commands_in_but_neither_applies_nor_answers(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto))
    p.mute = True
    mark = gateway.mark()
    gateway.send("cmnd/plug1/POWER", "ON")
    assert p.wait_commands(1, WAIT)
    p.mute = False
    gateway.send("cmnd/plug1/POWER", "")
    gateway.wait("stat/plug1/RESULT", since=mark)
    # The plug's answers arrive in order: the query's is the only one.
    assert gateway.on("stat/plug1/RESULT", mark) == [b'{"POWER":"OFF"}']
    assert not p.on
    assert p.commands == 2


def test_a_tasmota_that_is_gone_leaves_its_last_will_and_comes_back(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto))
    mark = gateway.mark()
    p.gone()
    gateway.wait("tele/plug1/LWT", b"Offline", since=mark)
    assert retained(mosquitto, "tele/plug1/LWT") == b"Offline"
    assert not p.connected
    gateway.send("cmnd/plug1/POWER", "ON")  # nobody is there to take it

    mark = gateway.mark()
    p.back()
    gateway.wait("tele/plug1/LWT", b"Online", since=mark)
    gateway.wait("stat/plug1/RESULT", b'{"POWER":"OFF"}', since=mark)
    gateway.wait_json("tele/plug1/STATE", {"POWER": "OFF", "MqttCount": 2}, since=mark)
    mark = gateway.mark()
    gateway.send("cmnd/plug1/POWER", "ON")
    gateway.wait("stat/plug1/POWER", b"ON", since=mark)
    assert p.commands == 1


def test_a_stopped_tasmota_says_offline(mosquitto: Mosquitto, gateway: Gateway) -> None:
    p = plug(mosquitto)
    p.start()
    p.stop()
    gateway.wait("tele/plug1/LWT", b"Offline")
    assert retained(mosquitto, "tele/plug1/LWT") == b"Offline"


# --- the JSON device ----------------------------------------------------------------------


def json_device(mosquitto: Mosquitto) -> SimJsonDevice:
    return SimJsonDevice(mosquitto.host, mosquitto.port, "site/room1/fan")


def test_json_device_sets_and_reports(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    d = started(json_device(mosquitto))
    gateway.wait("site/room1/fan/availability", b"online")
    gateway.wait("site/room1/fan/state", b'{"state":"OFF"}')
    assert retained(mosquitto, "site/room1/fan/availability") == b"online"

    mark = gateway.mark()
    gateway.send("site/room1/fan/set", '{"state":"ON"}')
    gateway.wait("site/room1/fan/state", b'{"state":"ON"}', since=mark)
    assert d.on
    assert retained(mosquitto, "site/room1/fan/state") == b'{"state":"ON"}'

    mark = gateway.mark()
    d.press()
    gateway.wait("site/room1/fan/state", b'{"state":"OFF"}', since=mark)
    assert [on for _, on in d.history] == [True, False]

    mark = gateway.mark()
    gateway.send("site/room1/fan/get", "{}")
    gateway.wait("site/room1/fan/state", b'{"state":"OFF"}', since=mark)
    assert d.commands == 2


def test_json_device_ignores_malformed_sets(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    d = started(json_device(mosquitto))
    mark = gateway.mark()
    for bad in (b"ON", b"{}", b'{"state":"DIM"}', b"[1]", b'{"state":true}', b"\xff"):
        gateway.send("site/room1/fan/set", bad)
    gateway.send("site/room1/fan/set", '{"state":"on"}')
    gateway.wait("site/room1/fan/state", b'{"state":"ON"}', since=mark)
    assert gateway.on("site/room1/fan/state", mark) == [b'{"state":"ON"}']
    assert d.commands == 1


def test_json_device_faults(mosquitto: Mosquitto, gateway: Gateway, started: Start) -> None:
    d = started(json_device(mosquitto))
    d.mute = True
    mark = gateway.mark()
    gateway.send("site/room1/fan/set", '{"state":"ON"}')
    assert d.wait_commands(1, WAIT)
    assert not d.on

    d.mute = False
    d.delay_s = 0.1
    gateway.send("site/room1/fan/set", '{"state":"ON"}')
    gateway.wait("site/room1/fan/state", b'{"state":"ON"}', since=mark)
    assert gateway.on("site/room1/fan/state", mark) == [b'{"state":"ON"}']

    mark = gateway.mark()
    d.gone()
    gateway.wait("site/room1/fan/availability", b"offline", since=mark)
    assert retained(mosquitto, "site/room1/fan/availability") == b"offline"
    d.back()
    gateway.wait("site/room1/fan/availability", b"online", since=mark)
    gateway.wait("site/room1/fan/state", b'{"state":"ON"}', since=mark)

    mark = gateway.mark()
    d.stop()
    gateway.wait("site/room1/fan/availability", b"offline", since=mark)


# --- Zigbee2MQTT --------------------------------------------------------------------------


def state_of(payload: bytes) -> tuple[str, int]:
    body = json.loads(payload)
    assert "linkquality" in body
    return body["state"], body["brightness"]


def test_zigbee2mqtt_announces_the_bridge_and_its_lights(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    bridge = SimZigbee2Mqtt(mosquitto.host, mosquitto.port)
    bridge.add_light("room1/desk", on=True, brightness=100)
    started(bridge)
    gateway.wait("zigbee2mqtt/bridge/state", b'{"state":"online"}')
    gateway.wait("zigbee2mqtt/room1/desk/availability", b'{"state":"online"}')
    payload = gateway.wait("zigbee2mqtt/room1/desk")
    assert payload.startswith(b'{"brightness":100,"linkquality":')  # sorted keys, as Z2M does
    assert state_of(payload) == ("ON", 100)
    assert retained(mosquitto, "zigbee2mqtt/bridge/state") == b'{"state":"online"}'
    devices = json.loads(retained(mosquitto, "zigbee2mqtt/bridge/devices"))
    assert [d["friendly_name"] for d in devices] == ["Coordinator", "room1/desk"]

    # A light paired while the bridge runs is announced before add_light returns.
    mark = gateway.mark()
    late = bridge.add_light("room1/wall")
    gateway.wait("zigbee2mqtt/room1/wall/availability", b'{"state":"online"}', since=mark)
    gateway.send("zigbee2mqtt/room1/wall/set", '{"state":"ON"}')
    assert late.wait_on(True, WAIT)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"state":"ON"}', ("ON", 254)),
        (b'{"state":"on"}', ("ON", 254)),
        (b"ON", ("ON", 254)),  # publish.ts takes a bare state value too
        (b'{"state":"TOGGLE"}', ("ON", 254)),
        (b'{"brightness":100}', ("ON", 100)),
        (b'{"state":"ON","brightness":300}', ("ON", 254)),
        (b'{"state":"ON","brightness":0}', ("OFF", 254)),
        (b'{"state":"OFF","brightness":50}', ("OFF", 254)),
    ],
)
def test_zigbee2mqtt_sets_a_light_and_publishes_its_state(
    mosquitto: Mosquitto,
    gateway: Gateway,
    started: Start,
    payload: bytes,
    expected: tuple[str, int],
) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    light = bridge.add_light("desk")
    mark = gateway.mark()
    gateway.send("zigbee2mqtt/desk/set", payload)
    assert state_of(gateway.wait("zigbee2mqtt/desk", since=mark)) == expected
    assert light.on is (expected[0] == "ON")
    assert light.brightness == expected[1]
    assert light.commands == 1


def test_zigbee2mqtt_get_publishes_the_state(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    bridge.add_light("desk", on=True)
    mark = gateway.mark()
    gateway.send("zigbee2mqtt/desk/get", '{"state":""}')
    assert state_of(gateway.wait("zigbee2mqtt/desk", since=mark)) == ("ON", 254)


def test_zigbee2mqtt_ignores_malformed_sets(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    light = bridge.add_light("desk")
    mark = gateway.mark()
    for bad in (
        b"not json",
        b"[]",
        b'"ON"',
        b'{"state":"MAYBE"}',
        b'{"brightness":"high"}',
        b'{"colour":"red"}',
        b"",
    ):
        gateway.send("zigbee2mqtt/desk/set", bad)
    gateway.send("zigbee2mqtt/desk/set", '{"state":"ON"}')
    gateway.wait("zigbee2mqtt/desk", since=mark)
    assert [state_of(p) for p in gateway.on("zigbee2mqtt/desk", mark)] == [("ON", 254)]
    assert light.commands == 1


def test_zigbee2mqtt_wall_switch_changes_the_light(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    light = bridge.add_light("desk")
    mark = gateway.mark()
    bridge.press("desk")
    assert state_of(gateway.wait("zigbee2mqtt/desk", since=mark)) == ("ON", 254)
    assert [on for _, on in light.history] == [True]


def test_zigbee2mqtt_light_faults(mosquitto: Mosquitto, gateway: Gateway, started: Start) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    slow = bridge.add_light("slow")
    mute = bridge.add_light("mute")
    lost = bridge.add_light("lost")
    slow.delay_s = 0.2
    mute.mute = True
    mark = gateway.mark()

    sent = time.monotonic_ns()
    gateway.send("zigbee2mqtt/slow/set", '{"state":"ON"}')
    gateway.send("zigbee2mqtt/mute/set", '{"state":"ON"}')
    assert state_of(gateway.wait("zigbee2mqtt/slow", since=mark)) == ("ON", 254)
    assert slow.history[0][0] - sent >= 0.2e9  # a lower bound the delay guarantees
    assert mute.wait_commands(1, WAIT)
    mute.mute = False
    gateway.send("zigbee2mqtt/mute/get", '{"state":""}')
    gateway.wait("zigbee2mqtt/mute", since=mark)
    assert [state_of(p) for p in gateway.on("zigbee2mqtt/mute", mark)] == [("OFF", 254)]

    lost.gone()
    gateway.wait("zigbee2mqtt/lost/availability", b'{"state":"offline"}', since=mark)
    assert retained(mosquitto, "zigbee2mqtt/lost/availability") == b'{"state":"offline"}'
    gateway.send("zigbee2mqtt/lost/set", '{"state":"ON"}')
    gateway.send("zigbee2mqtt/slow/get", '{"state":""}')  # the bridge has taken the set by now
    gateway.wait("zigbee2mqtt/slow", since=mark, count=2)
    assert not lost.on
    assert lost.commands == 0
    assert gateway.on("zigbee2mqtt/lost", mark) == []

    lost.back()
    gateway.wait("zigbee2mqtt/lost/availability", b'{"state":"online"}', since=mark)
    gateway.wait("zigbee2mqtt/lost", since=mark)
    gateway.send("zigbee2mqtt/lost/set", '{"state":"ON"}')
    assert lost.wait_on(True, WAIT)


def test_zigbee2mqtt_bridge_gone_back_and_stopped(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port, base="z2m"))
    bridge.add_light("desk")
    mark = gateway.mark()
    bridge.gone()
    gateway.wait("z2m/bridge/state", b'{"state":"offline"}', since=mark)
    assert retained(mosquitto, "z2m/bridge/state") == b'{"state":"offline"}'
    bridge.back()
    gateway.wait("z2m/bridge/state", b'{"state":"online"}', since=mark)
    gateway.send("z2m/desk/set", '{"state":"ON"}')
    assert bridge["desk"].wait_on(True, WAIT)

    mark = gateway.mark()
    bridge.stop()
    gateway.wait("z2m/bridge/state", b'{"state":"offline"}', since=mark)


# --- the room panel -----------------------------------------------------------------------

ROOM = "edge/mitte/rooms/r1"


class Responder:
    """A stand-in for the gateway's room service: answers requests, keeps the room state."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="room-service", protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{ROOM}/request/+", 1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(WAIT)
        self.publish_state({"occupied": False, "booking": None})

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_state(self, state: dict[str, Any]) -> None:
        self.client.publish(f"{ROOM}/state", json.dumps(state), qos=1, retain=True)

    def answer(self, op: str, body: dict[str, Any]) -> None:
        self.client.publish(f"{ROOM}/response/{op}", json.dumps(body), qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        op = msg.topic.rsplit("/", 1)[-1]
        self.seen.append((op, bytes(msg.payload)))
        try:
            request = json.loads(msg.payload)
            transaction = request["transaction"]
        except (ValueError, TypeError, KeyError):
            self.answer(op, {"status": "error", "data": {}, "error": "bad_request", "message": "?"})
            return
        if op == "end":
            return  # a service that never answers
        # Someone else's answer first: the panel must not take it.
        self.answer(op, {"transaction": "someone-else", "status": "ok", "data": {}})
        if op == "check_in":
            self.publish_state({"occupied": True, "booking": None})
        data = {k: v for k, v in request.items() if k != "transaction"}
        self.answer(op, {"transaction": transaction, "status": "ok", "data": data})


@pytest.fixture
def responder(mosquitto: Mosquitto) -> Iterator[Responder]:
    r = Responder(mosquitto)
    yield r
    r.stop()


def test_panel_request_returns_the_answer_to_its_transaction(
    mosquitto: Mosquitto, responder: Responder, started: Start
) -> None:
    panel = started(SimPanel(mosquitto.host, mosquitto.port, "mitte", "r1"))
    assert panel.wait_state(lambda s: "occupied" in s) == {"occupied": False, "booking": None}

    answer = panel.request("check_in", card="04a1b2c3", pin="1234")
    assert answer["status"] == "ok"
    assert answer["data"] == {"card": "04a1b2c3", "pin": "1234"}
    sent = json.loads(responder.seen[-1][1])
    assert sent["transaction"] == answer["transaction"]
    assert isinstance(sent["transaction"], str)
    assert panel.wait_state(lambda s: s["occupied"])["occupied"] is True
    # The other caller's answer was left alone.
    assert panel.wait_response("check_in", lambda a: a["transaction"] == "someone-else")

    again = panel.request("extend", transaction="t-42", minutes=30)
    assert (again["transaction"], again["data"]) == ("t-42", {"minutes": 30})


def test_panel_request_times_out_without_an_answer(
    mosquitto: Mosquitto, responder: Responder, started: Start
) -> None:
    panel = started(SimPanel(mosquitto.host, mosquitto.port, "mitte", "r1"))
    with pytest.raises(TimeoutError, match="no answer to end"):
        panel.request("end", timeout=0.3)
    assert responder.seen[-1][0] == "end"


def test_panel_sends_raw_payloads_and_waits_for_the_error(
    mosquitto: Mosquitto, responder: Responder, started: Start
) -> None:
    panel = started(SimPanel(mosquitto.host, mosquitto.port, "mitte", "r1"))
    panel.send_raw("book", b"{not json")
    answer = panel.wait_response("book", lambda a: a["status"] == "error")
    assert answer["error"] == "bad_request"
    assert responder.seen == [("book", b"{not json")]


# --- the broker -----------------------------------------------------------------------------


def test_devices_reconnect_and_announce_again_after_a_broker_restart(
    mosquitto: Mosquitto, gateway: Gateway, started: Start
) -> None:
    p = started(plug(mosquitto, power=True))
    fan = started(json_device(mosquitto))
    bridge = started(SimZigbee2Mqtt(mosquitto.host, mosquitto.port))
    bridge.add_light("desk")
    mark = gateway.mark()
    mosquitto.stop()
    mosquitto.start()
    for device in (p, fan, bridge):
        device.start()  # returns once paho has reconnected and the device announced itself
    gateway.wait("tele/plug1/LWT", b"Online", since=mark)
    gateway.wait("site/room1/fan/availability", b"online", since=mark)
    gateway.wait("zigbee2mqtt/desk/availability", b'{"state":"online"}', since=mark)
    gateway.send("zigbee2mqtt/desk/set", '{"state":"ON"}')
    assert bridge["desk"].wait_on(True, WAIT)


def test_start_gives_up_on_a_broker_that_is_not_there() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = SimTasmotaPlug("127.0.0.1", port, "nowhere")
    with pytest.raises(TimeoutError, match="not connected"):
        p.start(timeout=0.2)
    assert not p.connected


# --- many at once -------------------------------------------------------------------------


def test_sim_devices_start_and_stop_many_at_once(mosquitto: Mosquitto, gateway: Gateway) -> None:
    sims = SimDevices(mosquitto.host, mosquitto.port)
    plugs = sims.plugs(40)
    fans = sims.json_devices(5, prefix="fan")
    bridge = sims.zigbee(10)
    with sims:
        assert all(d.connected for d in sims.devices)
        gateway.send("cmnd/plug40/POWER", "ON")
        gateway.send("fan5/set", '{"state":"ON"}')
        gateway.send("zigbee2mqtt/light10/set", '{"state":"ON"}')
        assert plugs[-1].wait_on(True, WAIT)
        assert fans[-1].wait_on(True, WAIT)
        assert bridge["light10"].wait_on(True, WAIT)
    assert not any(d.connected for d in sims.devices)
    gateway.wait("tele/plug1/LWT", b"Offline")
