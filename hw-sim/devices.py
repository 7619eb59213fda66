"""Simulated MQTT room devices that answer as their real firmware does.

For tests, benchmarks and the demo: each device (or the Zigbee2MQTT bridge,
for all of its lights) holds its own paho connection to the broker and keeps
the same topics, payloads, retained flags and last wills as the real thing.

Tasmota (https://tasmota.github.io/docs/Commands/ and
tasmota/tasmota_support/support_command.ino, xdrv_02_mqtt.ino):
  - last will `tele/<topic>/LWT` = `Offline`, retained; `Online` retained on
    connect, then an empty `cmnd/<topic>/POWER` (the firmware does this for
    ioBroker) and the relay state; subscribes `cmnd/<topic>/#`.
  - The command is the last topic level, case-insensitive, with an optional
    index: `POWER`, `Power`, `power1`. Payloads `0/off/false`, `1/on/true`,
    `2/toggle` (case-insensitive, numbers as C's strtol reads them); every
    POWER command, even one that changes nothing, answers
    `stat/<topic>/RESULT` `{"POWER":"ON"}` and `stat/<topic>/POWER` `ON`.
  - An empty or unknown payload is a query: CmndPower turns any payload
    outside 0..4 into POWER_SHOW_STATE, so the firmware answers the current
    state; it does NOT answer an error. `{"Command":"Error"}` is what a POWER
    index the plug does not have gets (`POWER2` on a one-relay plug), and
    `{"Command":"Unknown"}` what an unknown command gets, both on
    `stat/<topic>/RESULT`. Blink (3, 4) is answered like a query here.
  - `tele/<topic>/STATE` carries `"POWER"` with Time, Uptime, Wifi...; the
    simulator sends it on connect and every `teleperiod_s` if set.
  - The local button toggles the relay and publishes the stat messages.

Zigbee2MQTT 2.x (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html,
guide/configuration/device-availability.md, lib/extension/publish.ts):
  - `<base>/bridge/state` `{"state":"online"}` retained, and the last will
    `{"state":"offline"}` retained (JSON availability payloads, the default
    since 2.0); `<base>/<name>/availability` `{"state":"online"|"offline"}`
    retained; `<base>/bridge/devices` retained.
  - `<base>/<name>/set` takes a JSON object (`state` ON/OFF/TOGGLE in any
    case, `brightness` 0..254) or a bare `ON`/`off`/`toggle`; anything else
    is logged as invalid and skipped, with nothing published. After a set the
    bridge publishes the light's whole state on `<base>/<name>`, keys sorted
    (json-stable-stringify), not retained: `{"brightness":254,
    "linkquality":..,"state":"ON"}`. `<base>/<name>/get` `{"state":""}`
    makes it publish the state.

The generic JSON device follows the house convention (zigbee2mqtt's manner): `<base>/set`
`{"state":"ON"|"OFF"}`, `<base>/get` (any payload) for the state, `<base>/state`
retained, `<base>/availability` `online`/`offline` retained and as last will.

Faults: `delay_s` (the device applies and answers that much later, in a
thread of its own so it holds up nothing else), `mute` (takes commands in,
counts them, neither applies nor answers), `gone()` (a Tasmota or JSON device
sends a FIN without DISCONNECT, so the broker publishes its last will; a
Zigbee light is reported offline by the bridge, which then drops its
commands) and `back()`.

`stop()` is a clean shutdown: the device publishes its own offline first
(Zigbee2MQTT documents that it does; the Tasmota and JSON simulators do it so
a retained topic never calls a stopped simulator online), then DISCONNECT.

Threads: one paho network thread per connection (`paho-mqtt-client-<id>`),
and one `sim-later:<name>` per device once it has a delayed command or a
teleperiod. `stop()` joins both.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("hwsim.devices")

Subscriptions = list[tuple[str, int]]
D = TypeVar("D", bound="SimClient")


def _json(obj: object, *, sort: bool = False) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=sort).encode()


# --- a delayed-call thread ----------------------------------------------------------------


class _Later:
    """Runs callbacks at their due time, in that order, in one thread started on first use.

    A slow device answers later without holding paho's thread, which would hold
    up every other light of a Zigbee2MQTT bridge.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._gen = 0
        self._mine = threading.local()  # the generation a sim-later thread runs for

    def call(self, delay_s: float, fn: Callable[[], None]) -> None:
        with self._cond:
            if getattr(self._mine, "gen", self._gen) != self._gen:
                # A callback that was running while `close` ran (a teleperiod
                # rescheduling itself): starting a thread for it would outlive
                # the close that just joined this one.
                return
            heapq.heappush(self._queue, (time.monotonic() + delay_s, next(self._seq), fn))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._gen,), name=f"sim-later:{self.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Drop what is pending and join the thread; a later `call` starts a new one."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._gen += 1
            self._queue.clear()
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self, gen: int) -> None:
        self._mine.gen = gen
        while True:
            with self._cond:
                while True:
                    if self._gen != gen:
                        return
                    if self._queue:
                        wait = self._queue[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                _, _, fn = heapq.heappop(self._queue)
            try:
                fn()
            except Exception:
                log.exception("%s: a delayed call failed", self.name)


# --- one MQTT connection ------------------------------------------------------------------


class _Link:
    """One paho client per connection; a new one after each `drop`.

    `on_connected` runs in paho's thread on every (re)connect: it publishes what
    the device announces and returns the subscriptions, which go out last. The
    broker handles one connection's packets in order, so their SUBACK means the
    announcements are stored too: that is when `wait_ready` returns.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        client_id: str,
        *,
        will: tuple[str, bytes] | None,
        on_connected: Callable[[], Subscriptions],
        on_message: Callable[[str, bytes], None],
        keepalive: int = 30,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self.will = will
        self.keepalive = keepalive
        self._on_connected = on_connected
        self._on_message_cb = on_message
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lost = threading.Event()
        self._dropping = False
        self._ready_mid: int | None = None
        self._acked: set[int] = set()
        self._acks = threading.Condition()
        self.connected = False

    def begin(self) -> None:
        """Connect in the background (paho retries until the broker answers)."""
        if self._client is not None:
            return
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.will is not None:
            c.will_set(self.will[0], self.will[1], qos=1, retain=True)
        c.reconnect_delay_set(1, 2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._ready.clear()
        self._lost.clear()
        self._client = c
        c.connect_async(self.host, self.port, keepalive=self.keepalive)
        c.loop_start()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(
                f"{self.name}: not connected to {self.host}:{self.port} within {timeout} s"
            )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 0) -> bool:
        """Publish if connected; False (and nothing sent) otherwise, as a device would."""
        c = self._client
        if c is None or not self.connected:
            return False
        return c.publish(topic, payload, qos=qos, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def subscribe(self, topics: Subscriptions, timeout: float) -> None:
        """Subscribe now (if connected) and wait for the SUBACK."""
        c = self._client
        if c is None or not self.connected or not topics:
            return
        rc, mid = c.subscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return
        with self._acks:
            if not self._acks.wait_for(lambda: mid in self._acked, timeout):
                raise TimeoutError(f"{self.name}: no SUBACK within {timeout} s")
            self._acked.discard(mid)

    def begin_close(self) -> None:
        """Clean DISCONNECT (no last will)."""
        c = self._client
        if c is not None:
            c.disconnect()

    def finish_close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            c.loop_stop()
        self._join()
        self.connected = False

    def close(self) -> None:
        self.begin_close()
        self.finish_close()

    def drop(self, timeout: float = 5.0) -> None:
        """Vanish without DISCONNECT, and return once the broker has noticed.

        Half-closing the socket sends a FIN; the broker then publishes the last
        will and closes its side, which paho sees as a lost connection.
        """
        c = self._client
        if c is None:
            return
        self._dropping = True
        try:
            sock = c.socket()
            if self.connected and isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                self._lost.wait(timeout)
            self._client = None
            c.loop_stop()  # no DISCONNECT: paho only sends one from disconnect()
            self._join()
            self.connected = False
        finally:
            self._dropping = False

    def _join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # paho's thread

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.name, reason)
            return
        self._thread = threading.current_thread()
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on, which holds every small publish ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected = True
        self._lost.clear()
        try:
            topics = self._on_connected()
        except Exception:
            log.exception("%s: announcing on connect failed", self.name)
            topics = []
        if topics:
            rc, mid = client.subscribe(topics)
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self._ready_mid = mid
                return
        self._ready.set()

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        _reasons: object,
        _props: object,
    ) -> None:
        if mid == self._ready_mid:
            self._ready_mid = None
            self._ready.set()
            return
        with self._acks:
            self._acked.add(mid)
            self._acks.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        self.connected = False
        self._ready.clear()
        if self._dropping:
            client.loop_stop()  # from paho's own thread: only stops it reconnecting
        elif reason.is_failure:
            log.info("%s: lost the broker (%s); paho reconnects", self.name, reason)
        self._lost.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message_cb(msg.topic, bytes(msg.payload))
        except Exception:
            # An exception would end paho's loop: log it and carry on, as firmware would.
            log.exception("%s: handling %s failed", self.name, msg.topic)


# --- what every simulated client shares ---------------------------------------------------


class SimClient:
    """A simulated MQTT client with a connection of its own."""

    name: str

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        client_id: str,
        will: tuple[str, bytes] | None,
        keepalive: int = 30,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self._link = _Link(
            name,
            host,
            port,
            client_id,
            will=will,
            on_connected=self._announce,
            on_message=self._handle,
            keepalive=keepalive,
        )
        self._later = _Later(name)

    @property
    def connected(self) -> bool:
        return self._link.connected

    def start(self, timeout: float = 10.0) -> None:
        """Connect; return once connected, announced and subscribed.

        Also waits for paho's own reconnect (after a broker restart) if the
        connection is down.
        """
        self._begin()
        self._wait_started(timeout)

    def stop(self) -> None:
        """Clean disconnect; joins paho's thread and the delayed-call thread."""
        self._begin_stop()
        self._finish_stop()

    def __enter__(self: D) -> D:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The two halves let `SimDevices` start and stop hundreds at once.

    def _begin(self) -> None:
        self._link.begin()

    def _wait_started(self, timeout: float) -> None:
        try:
            self._link.wait_ready(timeout)
        except TimeoutError:
            self._link.close()
            raise

    def _begin_stop(self) -> None:
        self._link.begin_close()

    def _finish_stop(self) -> None:
        self._link.finish_close()
        self._later.close()

    def _announce(self) -> Subscriptions:
        raise NotImplementedError

    def _handle(self, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} connected={self.connected}>"


class OnOffState:
    """The state a switchable thing keeps, safe to read from any thread.

    `history` holds `(time.monotonic_ns(), on)` for every change the device
    applied (a command that leaves the state as it was adds nothing);
    `commands` counts the commands it took in, muted ones included (not the
    malformed ones it drops; Tasmota drops none, it answers them as queries).
    """

    def __init__(self, on: bool) -> None:
        self._cond = threading.Condition()
        self._on = on
        self._history: list[tuple[int, bool]] = []
        self._commands = 0
        self.delay_s = 0.0
        self.mute = False

    @property
    def on(self) -> bool:
        with self._cond:
            return self._on

    @property
    def history(self) -> list[tuple[int, bool]]:
        with self._cond:
            return list(self._history)

    @property
    def commands(self) -> int:
        with self._cond:
            return self._commands

    def wait_on(self, on: bool, timeout: float) -> bool:
        """Block until the state is `on`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._on == on, timeout)

    def wait_commands(self, count: int, timeout: float) -> bool:
        """Block until at least `count` commands reached the device."""
        with self._cond:
            return self._cond.wait_for(lambda: self._commands >= count, timeout)

    def _count_command(self) -> None:
        with self._cond:
            self._commands += 1
            self._cond.notify_all()

    def _apply(self, on: bool) -> None:
        with self._cond:
            if on != self._on:
                self._on = on
                self._history.append((time.monotonic_ns(), on))
                self._cond.notify_all()


# --- Tasmota ------------------------------------------------------------------------------

# support.ino kOptions / sNumbers, English texts (GetCommandCode is case-insensitive).
_TASMOTA_WORDS = {
    **dict.fromkeys(("OFF", "FALSE", "STOP", "CELSIUS", "DOWN", "CLOSE"), 0),
    **dict.fromkeys(("ON", "TRUE", "START", "FAHRENHEIT", "USER"), 1),
    **dict.fromkeys(("TOGGLE", "ADMIN"), 2),
    "BLINK": 3,
    "BLINKOFF": 4,
    **dict.fromkeys(("UP", "OPEN"), 100),
    "ALL": 255,
}
_STRTOL = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_NO_PAYLOAD = -99
_POWER_OFF, _POWER_ON, _POWER_TOGGLE = 0, 1, 2


def tasmota_payload(data: str) -> int:
    """The number CommandHandler makes of a payload (-99: none), as support_command.ino does."""
    data = data.lstrip()
    if data == "?":
        return _NO_PAYLOAD
    payload = _NO_PAYLOAD
    m = _STRTOL.match(data)
    if m is not None:
        text = m.group()
        digits = text.lstrip("+-")
        if digits[:2] in ("0x", "0X"):
            value = int(digits[2:], 16)
        elif digits.startswith("0"):
            value = int(digits, 8)
        else:
            value = int(digits)
        payload = -value if text.startswith("-") else value
    word = _TASMOTA_WORDS.get(data.upper())
    return word if word is not None else payload


def _uptime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


class SimTasmotaPlug(SimClient, OnOffState):
    """A one-relay Tasmota plug with its own connection (client id `tasmota_<topic>`)."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        power: bool = False,
        teleperiod_s: float | None = None,
    ) -> None:
        OnOffState.__init__(self, power)
        SimClient.__init__(
            self,
            f"tasmota/{topic}",
            host,
            port,
            f"tasmota_{topic}",
            will=(f"tele/{topic}/LWT", b"Offline"),
        )
        self.topic = topic
        self.teleperiod_s = teleperiod_s
        self._booted = time.monotonic()
        self._mqtt_count = 0
        self._session = 0
        self._publish_lock = threading.Lock()

    def _begin_stop(self) -> None:
        # So that the retained topic does not call a stopped simulator online.
        self._link.publish(f"tele/{self.topic}/LWT", b"Offline", retain=True)
        super()._begin_stop()

    # faults

    def gone(self) -> None:
        """The plug loses power or WiFi: the broker publishes `Offline`."""
        self._link.drop()

    def back(self, timeout: float = 10.0) -> None:
        """Reconnect: `Online`, the relay state and tele/STATE again."""
        self.start(timeout)

    def press(self) -> None:
        """The button on the plug: toggle the relay and report it."""
        with self._publish_lock:
            self._apply(not self.on)
            self._publish_power()

    # wire

    def _announce(self) -> Subscriptions:
        t = self.topic
        self._mqtt_count += 1
        self._session += 1
        self._link.publish(f"tele/{t}/LWT", b"Online", retain=True)
        self._link.publish(f"cmnd/{t}/POWER", b"")
        with self._publish_lock:
            self._publish_power()
        self._link.publish(f"tele/{t}/STATE", _json(self._state_json()))
        if self.teleperiod_s:
            session = self._session
            self._later.call(self.teleperiod_s, lambda: self._tele(session))
        return [(f"cmnd/{t}/#", 0)]

    def _tele(self, session: int) -> None:
        if session != self._session or not self.connected or not self.teleperiod_s:
            return
        self._link.publish(f"tele/{self.topic}/STATE", _json(self._state_json()))
        self._later.call(self.teleperiod_s, lambda: self._tele(session))

    def _handle(self, topic: str, payload: bytes) -> None:
        prefix = f"cmnd/{self.topic}/"
        if not topic.startswith(prefix) or "/" in topic[len(prefix) :]:
            return
        self._count_command()
        if self.mute:
            log.debug("%s: muted, ignoring %s %r", self.name, topic, payload)
            return
        command = topic[len(prefix) :]
        data = payload.decode("utf-8", "replace")
        if self.delay_s > 0:
            self._later.call(self.delay_s, lambda: self._command(command, data))
        else:
            self._command(command, data)

    def _command(self, command: str, data: str) -> None:
        name = command.upper()
        stripped = name.rstrip("0123456789")
        index = int(name[len(stripped) :]) if len(stripped) < len(name) else 1
        result = f"stat/{self.topic}/RESULT"
        if stripped == "POWER":
            payload = tasmota_payload(data)
            if index > 1:  # CmndPower leaves the prepared {"Command":"Error"} for a missing relay
                self._link.publish(result, b'{"Command":"Error"}')
                return
            with self._publish_lock:
                if _POWER_OFF <= payload <= _POWER_TOGGLE:  # anything else shows the state
                    on = self.on
                    self._apply(
                        {_POWER_OFF: False, _POWER_ON: True, _POWER_TOGGLE: not on}[payload]
                    )
                self._publish_power()
        elif stripped == "STATE":
            self._link.publish(result, _json(self._state_json()))
        else:
            self._link.publish(result, b'{"Command":"Unknown"}')

    def _publish_power(self) -> None:
        text = b"ON" if self.on else b"OFF"
        self._link.publish(f"stat/{self.topic}/RESULT", b'{"POWER":"' + text + b'"}')
        self._link.publish(f"stat/{self.topic}/POWER", text)

    def _state_json(self) -> dict[str, Any]:
        up = int(time.monotonic() - self._booted)
        return {
            "Time": datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
            "Uptime": _uptime(up),
            "UptimeSec": up,
            "Heap": 25,
            "SleepMode": "Dynamic",
            "Sleep": 50,
            "LoadAvg": 19,
            "MqttCount": self._mqtt_count,
            "POWER": "ON" if self.on else "OFF",
            "Wifi": {
                "AP": 1,
                "SSId": "sim",
                "BSSId": "02:00:00:00:00:01",
                "Channel": 6,
                "Mode": "11n",
                "RSSI": 80,
                "Signal": -60,
                "LinkCount": self._mqtt_count,
                "Downtime": "0T00:00:03",
            },
        }


# --- the generic JSON device --------------------------------------------------------------


class SimJsonDevice(SimClient, OnOffState):
    """A device that speaks the house JSON convention on `<base>/...`."""

    def __init__(self, host: str, port: int, base: str, *, on: bool = False) -> None:
        OnOffState.__init__(self, on)
        SimClient.__init__(
            self,
            f"json/{base}",
            host,
            port,
            "sim_" + base.replace("/", "_"),
            will=(f"{base}/availability", b"offline"),
        )
        self.base = base
        self._publish_lock = threading.Lock()

    def _begin_stop(self) -> None:
        # A clean stop says so itself; only a vanished device leaves it to the will.
        self._link.publish(f"{self.base}/availability", b"offline", retain=True)
        super()._begin_stop()

    def gone(self) -> None:
        """The device vanishes: the broker publishes `offline`."""
        self._link.drop()

    def back(self, timeout: float = 10.0) -> None:
        self.start(timeout)

    def press(self) -> None:
        """A local switch: toggle and publish the state."""
        with self._publish_lock:
            self._apply(not self.on)
            self._publish_state()

    def _announce(self) -> Subscriptions:
        self._link.publish(f"{self.base}/availability", b"online", retain=True)
        with self._publish_lock:
            self._publish_state()
        return [(f"{self.base}/set", 1), (f"{self.base}/get", 1)]

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.base}/get":  # any payload: a query
            self._count_command()
            if self.mute:
                return
            if self.delay_s > 0:
                self._later.call(self.delay_s, self._report)
            else:
                self._report()
            return
        if topic != f"{self.base}/set":
            return
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        state = body.get("state") if isinstance(body, dict) else None
        if not isinstance(state, str) or state.upper() not in ("ON", "OFF"):
            log.warning("%s: ignoring malformed set %r", self.name, payload[:200])
            return
        self._count_command()
        if self.mute:
            return
        on = state.upper() == "ON"
        if self.delay_s > 0:
            self._later.call(self.delay_s, lambda: self._set(on))
        else:
            self._set(on)

    def _set(self, on: bool) -> None:
        with self._publish_lock:
            self._apply(on)
            self._publish_state()

    def _report(self) -> None:
        with self._publish_lock:
            self._publish_state()

    def _publish_state(self) -> None:
        state = {"state": "ON" if self.on else "OFF"}
        self._link.publish(f"{self.base}/state", _json(state), retain=True)


# --- Zigbee2MQTT --------------------------------------------------------------------------

_Z2M_PLAIN = ("on", "off", "toggle", "open", "close", "stop", "lock", "unlock")  # publish.ts


class SimZigbeeLight(OnOffState):
    """One dimmable bulb behind a `SimZigbee2Mqtt` bridge."""

    def __init__(self, bridge: SimZigbee2Mqtt, name: str, on: bool, brightness: int) -> None:
        super().__init__(on)
        self.bridge = bridge
        self.name = name
        self.brightness = brightness
        self.available = True
        crc = zlib.crc32(name.encode())
        self.linkquality = 90 + crc % 120
        self.ieee_address = f"0x{crc:08x}{zlib.adler32(name.encode()):08x}"

    def gone(self) -> None:
        """Off the mesh: the bridge publishes it offline and drops its commands."""
        self.bridge._light_gone(self)

    def back(self) -> None:
        """Back on the mesh: online again, and its state."""
        self.bridge._light_back(self)

    def press(self) -> None:
        """A wall switch bound to the bulb: it toggles and the bridge reports it."""
        self.bridge._press(self)

    def state_json(self) -> dict[str, Any]:
        with self._cond:
            return {
                "brightness": self.brightness,
                "linkquality": self.linkquality,
                "state": "ON" if self._on else "OFF",
            }

    def _change(self, state: str | None, brightness: int | None) -> None:
        with self._cond:
            on = self._on
            if state == "ON":
                on = True
            elif state == "OFF":
                on = False
            elif state == "TOGGLE":
                on = not on
            if brightness is not None:
                if brightness == 0:
                    on = False
                elif state is None or on:
                    on = True
                    self.brightness = brightness
            self._apply(on)


class SimZigbee2Mqtt(SimClient):
    """The Zigbee2MQTT bridge: one connection for all of its lights."""

    def __init__(self, host: str, port: int, base: str = "zigbee2mqtt") -> None:
        super().__init__(
            f"z2m/{base}",
            host,
            port,
            "zigbee2mqtt_" + base.replace("/", "_"),
            will=(f"{base}/bridge/state", b'{"state":"offline"}'),
        )
        self.base = base
        self.lights: dict[str, SimZigbeeLight] = {}
        self._routes: dict[str, tuple[SimZigbeeLight, str]] = {}
        self._lock = threading.RLock()

    def __getitem__(self, name: str) -> SimZigbeeLight:
        return self.lights[name]

    def add_light(
        self, name: str, *, on: bool = False, brightness: int = 254, timeout: float = 10.0
    ) -> SimZigbeeLight:
        """Pair a bulb; once the bridge runs it is announced and subscribed before this returns."""
        light = SimZigbeeLight(self, name, on, brightness)
        with self._lock:
            if name in self.lights:
                raise ValueError(f"{self.name}: a light {name!r} is already paired")
            self.lights[name] = light
            self._routes[f"{self.base}/{name}/set"] = (light, "set")
            self._routes[f"{self.base}/{name}/get"] = (light, "get")
        if self.connected:
            self._publish_devices()
            self._announce_light(light)
            self._link.subscribe(self._light_topics(light), timeout)
        return light

    def press(self, name: str) -> None:
        self.lights[name].press()

    def gone(self, name: str | None = None) -> None:
        """A light leaves the mesh; without a name the whole bridge vanishes (its will)."""
        if name is not None:
            self.lights[name].gone()
        else:
            self._link.drop()

    def back(self, name: str | None = None, timeout: float = 10.0) -> None:
        if name is not None:
            self.lights[name].back()
        else:
            self.start(timeout)

    def _begin_stop(self) -> None:
        # Zigbee2MQTT publishes offline right before it stops.
        self._link.publish(f"{self.base}/bridge/state", b'{"state":"offline"}', retain=True)
        super()._begin_stop()

    # wire

    def _announce(self) -> Subscriptions:
        self._link.publish(f"{self.base}/bridge/state", b'{"state":"online"}', retain=True)
        self._publish_devices()
        with self._lock:
            lights = list(self.lights.values())
        topics: Subscriptions = []
        for light in lights:
            self._announce_light(light)
            topics += self._light_topics(light)
        return topics

    def _light_topics(self, light: SimZigbeeLight) -> Subscriptions:
        return [(f"{self.base}/{light.name}/set", 0), (f"{self.base}/{light.name}/get", 0)]

    def _announce_light(self, light: SimZigbeeLight) -> None:
        with self._lock:
            self._publish_availability(light)
            if light.available:
                self._publish_state(light)

    def _publish_availability(self, light: SimZigbeeLight) -> None:
        state = {"state": "online" if light.available else "offline"}
        self._link.publish(f"{self.base}/{light.name}/availability", _json(state), retain=True)

    def _publish_state(self, light: SimZigbeeLight) -> None:
        self._link.publish(f"{self.base}/{light.name}", _json(light.state_json(), sort=True))

    def _publish_devices(self) -> None:
        with self._lock:
            lights = list(self.lights.values())
        devices: list[dict[str, Any]] = [
            {
                "ieee_address": "0x00124b0000000000",
                "type": "Coordinator",
                "friendly_name": "Coordinator",
                "supported": True,
                "definition": None,
                "interview_completed": True,
            }
        ]
        for light in lights:
            devices.append(
                {
                    "ieee_address": light.ieee_address,
                    "type": "Router",
                    "friendly_name": light.name,
                    "supported": True,
                    "power_source": "Mains (single phase)",
                    "interview_completed": True,
                    "definition": {
                        "model": "LED1545G12",
                        "vendor": "IKEA",
                        "description": "TRADFRI bulb E27, dimmable, white spectrum, opal white",
                        "exposes": [
                            {
                                "type": "light",
                                "features": [
                                    {
                                        "type": "binary",
                                        "name": "state",
                                        "property": "state",
                                        "access": 7,
                                        "value_on": "ON",
                                        "value_off": "OFF",
                                        "value_toggle": "TOGGLE",
                                    },
                                    {
                                        "type": "numeric",
                                        "name": "brightness",
                                        "property": "brightness",
                                        "access": 7,
                                        "value_min": 0,
                                        "value_max": 254,
                                    },
                                ],
                            }
                        ],
                    },
                }
            )
        self._link.publish(f"{self.base}/bridge/devices", _json(devices), retain=True)

    def _handle(self, topic: str, payload: bytes) -> None:
        with self._lock:
            route = self._routes.get(topic)
        if route is None:
            return
        light, kind = route
        message = _z2m_message(payload)
        if message is None:
            log.error("%s: Invalid message %r, skipping...", self.name, payload[:200])
            return
        if kind == "set":
            state, brightness = self._parse_set(light, message)
            if state is None and brightness is None:
                return
        elif not ({"state", "brightness"} & message.keys()):
            log.error("%s: No converter available for 'get' %s", self.name, sorted(message))
            return
        if not light.available:
            log.error(
                "%s: Publish '%s' to '%s' failed: 'Timeout: device did not respond'",
                self.name,
                kind,
                light.name,
            )
            return
        light._count_command()
        if light.mute:
            return

        def run() -> None:
            with self._lock:
                if not light.available:
                    return
                if kind == "set":
                    light._change(state, brightness)
                self._publish_state(light)

        if light.delay_s > 0:
            self._later.call(light.delay_s, run)
        else:
            run()

    def _parse_set(
        self, light: SimZigbeeLight, message: Mapping[str, object]
    ) -> tuple[str | None, int | None]:
        state: str | None = None
        brightness: int | None = None
        for key, value in message.items():
            if key == "state":
                if isinstance(value, str) and value.lower() in ("on", "off", "toggle"):
                    state = value.upper()
                else:
                    log.error(
                        "%s: Publish 'set' 'state' to '%s' failed: invalid value %r",
                        self.name,
                        light.name,
                        value,
                    )
            elif key == "brightness":
                if isinstance(value, int | float) and not isinstance(value, bool):
                    brightness = max(0, min(254, round(value)))
                else:
                    log.error(
                        "%s: Publish 'set' 'brightness' to '%s' failed: invalid value %r",
                        self.name,
                        light.name,
                        value,
                    )
            else:
                log.error("%s: No converter available for '%s' (%s)", self.name, key, value)
        return state, brightness

    def _light_gone(self, light: SimZigbeeLight) -> None:
        with self._lock:
            light.available = False
            self._publish_availability(light)

    def _light_back(self, light: SimZigbeeLight) -> None:
        with self._lock:
            light.available = True
            self._publish_availability(light)
            self._publish_state(light)

    def _press(self, light: SimZigbeeLight) -> None:
        with self._lock:
            light._change("TOGGLE", None)
            if light.available:
                self._publish_state(light)


def _z2m_message(payload: bytes) -> dict[str, Any] | None:
    """What publish.ts makes of a set/get payload: a JSON object, a bare state, or nothing."""
    text = payload.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return {"state": text} if text.lower() in _Z2M_PLAIN else None
    return value if isinstance(value, dict) else None


# --- a room panel -------------------------------------------------------------------------

PANEL_OPS = ("check_in", "book", "extend", "end", "activity")


class SimPanel(SimClient):
    """A meeting-room panel: reads the room's state, sends requests, matches answers."""

    def __init__(self, host: str, port: int, site: str, room: str) -> None:
        client_id = f"panel_{site}_{room}_{uuid.uuid4().hex[:6]}"
        super().__init__(f"panel/{site}/{room}", host, port, client_id, will=None)
        self.site = site
        self.room = room
        self.prefix = f"edge/{site}/rooms/{room}"
        self._cond = threading.Condition()
        self._state: dict[str, Any] | None = None
        self._answers: list[tuple[str, dict[str, Any]]] = []  # not yet taken
        self.malformed: list[tuple[str, bytes]] = []  # answers or states that were not JSON objects

    @property
    def state(self) -> dict[str, Any] | None:
        with self._cond:
            return self._state

    def wait_state(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The room state once `predicate` holds for it; TimeoutError otherwise."""

        def ok() -> bool:
            return self._state is not None and bool(predicate(self._state))

        with self._cond:
            if not self._cond.wait_for(ok, timeout):
                raise TimeoutError(
                    f"{self.name}: room state not as expected in {timeout} s: {self._state}"
                )
            assert self._state is not None
            return self._state

    def request(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send a request (QoS 1) and return the answer with its transaction.

        A `transaction` among the fields is sent as given (to replay one);
        otherwise a fresh one is made.
        """
        transaction = str(fields.pop("transaction", None) or uuid.uuid4().hex)
        self.send_raw(op, _json({"transaction": transaction, **fields}))
        try:
            return self.wait_response(op, lambda a: a.get("transaction") == transaction, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: no answer to {op} (transaction {transaction}) in {timeout} s"
            ) from None

    def send_raw(self, op: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish anything on `request/<op>`."""
        topic = f"{self.prefix}/request/{op}"
        if not self._link.publish(topic, payload, qos=qos):
            raise ConnectionError(f"{self.name}: not connected, cannot send {topic}")

    def wait_response(
        self,
        op: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _a: True,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Take the oldest answer on `response/<op>` that matches (earlier ones too)."""

        def find() -> dict[str, Any] | None:
            for i, (got_op, answer) in enumerate(self._answers):
                if got_op == op and predicate(answer):
                    del self._answers[i]
                    return answer
            return None

        found: dict[str, Any] | None = None

        def arrived() -> bool:
            nonlocal found
            found = find()
            return found is not None

        with self._cond:
            if not self._cond.wait_for(arrived, timeout):
                raise TimeoutError(f"{self.name}: no matching answer on {op} in {timeout} s")
            assert found is not None
            return found

    def answers(self) -> list[tuple[str, dict[str, Any]]]:
        """The answers received and not taken yet, oldest first, as `(op, answer)`."""
        with self._cond:
            return list(self._answers)

    def _announce(self) -> Subscriptions:
        return [(f"{self.prefix}/state", 1), (f"{self.prefix}/response/+", 1)]

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.prefix}/state":
            state = _json_object(payload) if payload else None
            with self._cond:
                if payload and state is None:
                    self.malformed.append((topic, payload))
                    log.warning("%s: room state is not a JSON object: %r", self.name, payload[:200])
                    return
                self._state = state
                self._cond.notify_all()
            return
        op = topic.rsplit("/", 1)[-1]
        answer = _json_object(payload)
        with self._cond:
            if answer is None:
                self.malformed.append((topic, payload))
                log.warning("%s: answer on %s is not a JSON object: %r", self.name, op, payload)
                return
            self._answers.append((op, answer))
            self._cond.notify_all()


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- many at once -------------------------------------------------------------------------


class SimDevices:
    """Simulated devices on one broker, connected and disconnected in parallel."""

    def __init__(self, host: str, port: int, devices: Iterable[SimClient] = ()) -> None:
        self.host = host
        self.port = port
        self.devices: list[SimClient] = list(devices)

    def add(self, device: D) -> D:
        self.devices.append(device)
        return device

    def plugs(self, n: int, *, prefix: str = "plug", power: bool = False) -> list[SimTasmotaPlug]:
        """`n` Tasmota plugs with topics `<prefix>1` .. `<prefix><n>`."""
        return [
            self.add(SimTasmotaPlug(self.host, self.port, f"{prefix}{i}", power=power))
            for i in range(1, n + 1)
        ]

    def json_devices(self, n: int, *, prefix: str = "sim/device") -> list[SimJsonDevice]:
        """`n` JSON devices on `<prefix>1` .. `<prefix><n>`."""
        return [
            self.add(SimJsonDevice(self.host, self.port, f"{prefix}{i}")) for i in range(1, n + 1)
        ]

    def zigbee(
        self, lights: int, *, base: str = "zigbee2mqtt", prefix: str = "light"
    ) -> SimZigbee2Mqtt:
        """A bridge with `lights` bulbs named `<prefix>1` .. `<prefix><n>`."""
        bridge = self.add(SimZigbee2Mqtt(self.host, self.port, base))
        for i in range(1, lights + 1):
            bridge.add_light(f"{prefix}{i}")
        return bridge

    def start(self, timeout: float = 30.0) -> None:
        """Connect them all at once; return when every one is announced and subscribed."""
        for d in self.devices:
            d._begin()
        deadline = time.monotonic() + timeout
        try:
            for d in self.devices:
                d._wait_started(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        for d in self.devices:
            d._begin_stop()
        for d in self.devices:
            d._finish_stop()

    def __enter__(self) -> SimDevices:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
