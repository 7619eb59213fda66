"""The embedded broker (amqtt) against real paho clients, MQTT 3.1.1 on loopback.

The broker runs in an event loop of its own in a background thread, as it would
in the gateway's loop; each paho client runs its network loop in its own thread.
"""

from __future__ import annotations

import asyncio
import gc
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.broker import EmbeddedBroker
from tests.conftest import run_async

HOST = "127.0.0.1"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class LoopThread:
    """An event loop in a background thread, as the gateway's loop would be."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="broker-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def tasks(self) -> list[str]:
        """Names of the tasks still pending on the loop, other than the one asking."""

        async def pending() -> list[str]:
            me = asyncio.current_task()
            return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done())

        return self.run(pending())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Running:
    """An EmbeddedBroker started in a LoopThread."""

    def __init__(self, loop: LoopThread, port: int) -> None:
        self.loop = loop
        self.broker = EmbeddedBroker(HOST, port)
        self.port = port
        loop.run(self.broker.start())

    def clients(self) -> int:
        async def count() -> int:
            clients = self.broker.view()["clients"]
            assert isinstance(clients, int)
            return clients

        return self.loop.run(count())

    def stop(self) -> None:
        self.loop.run(self.broker.stop())


class Client:
    """A paho v2 client, MQTT 3.1.1, that keeps what it receives."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self._inbox: list[mqtt.MQTTMessage] = []
        self._arrived = threading.Condition()
        self._sync_topic = f"sync/{id(self)}"
        self._synced = False
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        c.on_message = self._on_message
        self.client = c
        c.connect(HOST, port, keepalive=30)
        c.loop_start()
        assert self.connected.wait(10), "no CONNACK from the broker"

    def _on_connect(
        self, _c: mqtt.Client, _u: object, flags: Any, reason: Any, _props: object
    ) -> None:
        assert not reason.is_failure, reason
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self._inbox.append(msg)
            self._arrived.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        result, _ = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        codes = self.subacks.get(timeout=10)
        assert not any(code.is_failure for code in codes), codes

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)  # the PUBACK, for QoS 1
        assert info.is_published()

    def next(self, timeout: float = 10) -> mqtt.MQTTMessage:
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._inbox, timeout):
                raise AssertionError("no message arrived")
            return self._inbox.pop(0)

    def received(self, count: int) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in (self.next() for _ in range(count))]

    def sync(self) -> None:
        """A round trip of this client's own through the broker.

        amqtt sends the PUBACK before it broadcasts a message, so a PUBACK
        says nothing about delivery; a message of this client's that came
        back says that what it published before has been broadcast, and that
        what the broker sent it before has arrived.
        """
        if not self._synced:
            self.subscribe(self._sync_topic, qos=1)
            self._synced = True
        marker = f"{time.monotonic_ns()}".encode()
        self.publish(self._sync_topic, marker, qos=1)
        with self._arrived:
            ok = self._arrived.wait_for(
                lambda: any(
                    m.topic == self._sync_topic and m.payload == marker for m in self._inbox
                ),
                10,
            )
            assert ok, "the sync message did not come back"

    def rest(self) -> list[tuple[str, bytes]]:
        """Everything received and not yet taken, less the sync messages."""
        with self._arrived:
            out = [(m.topic, m.payload) for m in self._inbox if m.topic != self._sync_topic]
            self._inbox.clear()
        return out

    def close(self) -> None:
        """A clean DISCONNECT."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT: stop paho's thread and reset the connection."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def broker(loop: LoopThread) -> Iterator[Running]:
    running = Running(loop, free_port())
    try:
        yield running
    finally:
        running.stop()
    assert loop.tasks() == [], "the broker left tasks behind"


@pytest.fixture
def clients(broker: Running) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**kwargs: Any) -> Client:
        c = Client(broker.port, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --- QoS 1 ----------------------------------------------------------------------------


def test_qos1_round_trip(clients: Callable[..., Client]) -> None:
    sub = clients()
    sub.subscribe("edge/mitte/door/front/state", qos=1)
    pub = clients()
    pub.publish("edge/mitte/door/front/state", b'{"state":"locked"}', qos=1)
    msg = sub.next()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (
        "edge/mitte/door/front/state",
        b'{"state":"locked"}',
        1,
        False,
    )


def test_view_counts_connected_clients(broker: Running, clients: Callable[..., Client]) -> None:
    assert broker.broker.view() == {
        "url": f"mqtt://{HOST}:{broker.port}",
        "running": True,
        "clients": 0,
    }
    clients()
    clients()
    wait_for("two clients", lambda: broker.clients() == 2)


# --- retained messages ----------------------------------------------------------------


def test_a_retained_message_reaches_a_later_subscriber_until_cleared(
    clients: Callable[..., Client],
) -> None:
    pub = clients()
    pub.publish("edge/mitte/gateway/state", b"online", qos=1, retain=True)
    pub.sync()

    late = clients()
    late.subscribe("edge/mitte/gateway/state", qos=1)
    msg = late.next()
    assert (msg.topic, msg.payload, msg.retain) == ("edge/mitte/gateway/state", b"online", True)

    pub.publish("edge/mitte/gateway/state", b"", qos=1, retain=True)
    cleared = late.next()  # live subscribers see the empty message itself
    assert (cleared.payload, cleared.retain) == (b"", False)
    pub.sync()

    later = clients()
    later.subscribe("edge/mitte/gateway/state", qos=1)
    later.sync()
    assert later.rest() == []


def test_a_client_gets_only_the_retained_messages_of_its_own_subscriptions(
    clients: Callable[..., Client],
) -> None:
    # amqtt 0.12 alone sends a new client the retained messages of every
    # client's subscriptions; edge.mqtt.broker keeps them to the client's own.
    door = clients()
    door.subscribe("edge/mitte/door/#", qos=1)
    door.publish("edge/mitte/door/front/state", b"locked", qos=1, retain=True)
    door.sync()
    assert door.rest() == [("edge/mitte/door/front/state", b"locked")]

    other = clients()
    other.subscribe("edge/mitte/room/#", qos=1)
    other.sync()
    assert other.rest() == []

    reconnected = clients()  # connects while "edge/mitte/door/#" is held by `door`
    reconnected.sync()
    assert reconnected.rest() == []


# --- last will ------------------------------------------------------------------------


def test_the_will_is_published_and_retained_when_a_client_vanishes(
    broker: Running, clients: Callable[..., Client]
) -> None:
    watcher = clients()
    watcher.subscribe("edge/mitte/gateway/state", qos=1)
    gateway = Client(
        broker.port, client_id="gateway-mitte", will=("edge/mitte/gateway/state", b"offline")
    )
    gateway.publish("edge/mitte/gateway/state", b"online", qos=1, retain=True)
    assert watcher.next().payload == b"online"

    gateway.drop()
    will = watcher.next()
    assert (will.topic, will.payload) == ("edge/mitte/gateway/state", b"offline")

    late = clients()
    late.subscribe("edge/mitte/gateway/state", qos=1)
    msg = late.next()
    assert (msg.payload, msg.retain) == (b"offline", True)


def test_no_will_after_a_clean_disconnect(broker: Running, clients: Callable[..., Client]) -> None:
    watcher = clients()
    watcher.subscribe("edge/mitte/gateway/state", qos=1)
    gateway = Client(
        broker.port, client_id="gateway-mitte", will=("edge/mitte/gateway/state", b"offline")
    )
    gateway.close()
    wait_for("the disconnect", lambda: broker.clients() == 1)
    watcher.sync()
    assert watcher.rest() == []


# --- persistent sessions --------------------------------------------------------------


def test_a_persistent_session_gets_what_was_published_while_it_was_away(
    broker: Running, clients: Callable[..., Client]
) -> None:
    gw = Client(broker.port, client_id="gateway-mitte", clean_session=False)
    gw.subscribe("edge/mitte/push", qos=1)
    gw.close()
    wait_for("the disconnect", lambda: broker.clients() == 0)

    cloud = clients()
    for n in range(3):
        cloud.publish("edge/mitte/push", f"push {n}".encode(), qos=1)
    cloud.sync()

    back = Client(broker.port, client_id="gateway-mitte", clean_session=False)
    try:
        assert back.session_present is True
        got = back.received(3)
        assert got == [("edge/mitte/push", f"push {n}".encode()) for n in range(3)]
        # and the subscription is still there, without subscribing again
        cloud.publish("edge/mitte/push", b"live", qos=1)
        assert back.next().payload == b"live"
    finally:
        back.close()


def test_a_clean_session_forgets_the_subscription(
    broker: Running, clients: Callable[..., Client]
) -> None:
    gw = Client(broker.port, client_id="gateway-mitte", clean_session=False)
    gw.subscribe("edge/mitte/push", qos=1)
    gw.close()
    wait_for("the disconnect", lambda: broker.clients() == 0)

    fresh = Client(broker.port, client_id="gateway-mitte", clean_session=True)
    try:
        assert fresh.session_present is False
        cloud = clients()
        cloud.publish("edge/mitte/push", b"nobody", qos=1)
        cloud.sync()
        fresh.sync()
        assert fresh.rest() == []
    finally:
        fresh.close()


# --- wildcards ------------------------------------------------------------------------


def test_wildcard_subscriptions(clients: Callable[..., Client]) -> None:
    plus = clients()
    plus.subscribe("edge/mitte/door/+/state", qos=1)
    hash_ = clients()
    hash_.subscribe("edge/mitte/#", qos=1)
    pub = clients()
    for topic in (
        "edge/mitte/door/front/state",
        "edge/mitte/door/front/set",
        "edge/mitte/door/front/lock/state",
        "edge/mitte",
        "edge/other/door/front/state",
    ):
        pub.publish(topic, topic.encode(), qos=1)
    pub.sync()
    plus.sync()
    hash_.sync()
    assert plus.rest() == [("edge/mitte/door/front/state", b"edge/mitte/door/front/state")]
    assert [t for t, _ in hash_.rest()] == [
        "edge/mitte/door/front/state",
        "edge/mitte/door/front/set",
        "edge/mitte/door/front/lock/state",
        "edge/mitte",  # "#" also matches the parent level [MQTT-4.7.1-2]
    ]


# --- stop -----------------------------------------------------------------------------


def test_stop_releases_the_port_and_leaves_nothing_running(loop: LoopThread) -> None:
    port = free_port()
    first = Running(loop, port)
    c = Client(port)
    c.subscribe("a/b", qos=1)
    first.stop()  # with a client still connected
    c.client.loop_stop()
    assert loop.tasks() == []

    second = Running(loop, port)
    try:
        again = Client(port)
        again.subscribe("a/b", qos=1)
        again.publish("a/b", b"again", qos=1)
        assert again.next().payload == b"again"
        again.close()
    finally:
        second.stop()
    assert loop.tasks() == []
    assert second.broker.view()["running"] is False


# --- sockets --------------------------------------------------------------------------


def test_the_brokers_side_of_a_connection_has_nagle_off(
    broker: Running, clients: Callable[..., Client]
) -> None:
    """asyncio sets TCP_NODELAY on the sockets it accepts; QoS 1 took 44 ms a
    message through a broker whose sockets had Nagle on."""
    clients()
    accepted = [
        s
        for s in gc.get_objects()
        if isinstance(s, socket.socket)
        and s.family == socket.AF_INET
        and s.fileno() != -1
        and s.getsockname()[1] == broker.port
        and _peer(s) is not None
    ]
    assert accepted
    for s in accepted:
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def _peer(s: socket.socket) -> Any:
    try:
        return s.getpeername()
    except OSError:  # the listening socket
        return None


def test_a_port_in_use_is_an_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(HOST, port)
        with pytest.raises(
            OSError, match=f"cannot listen on mqtt://{HOST}:{port}: Address already in use"
        ):
            run_async(broker.start())
        assert broker.view()["running"] is False
