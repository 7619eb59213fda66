"""The gateway's link to the site broker (paho-mqtt), bridged into asyncio.

paho runs its network loop in its own thread and reconnects by itself (1 s
doubling to 30 s). Subscriptions are renewed on every connect; a message is
handed to the event loop with `call_soon_threadsafe`, so handlers run on the
loop like everything else. The session is persistent (a fixed client id,
clean_session off): QoS 1 messages published while the gateway was away are
delivered when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.secrets import SecretError, describe_missing, read_secret

log = logging.getLogger("edge.mqtt")

Handler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Will:
    """The last-will message the broker publishes if the gateway vanishes."""

    topic: str
    payload: bytes
    retain: bool = True


class MqttLink:
    def __init__(self, cfg: MqttConfig, client_id: str, state_dir: Path) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.state_dir = state_dir
        self.connected = False
        self.fault: str | None = "connecting"
        self.will: Will | None = None
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._patterns: list[tuple[str, Handler]] = []  # the subscriptions with wildcards
        self._fresh_only: set[str] = set()
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(
        self, topic: str, handler: Handler, qos: int = 1, fresh_only: bool = False
    ) -> None:
        """Register before `start`; renewed on every (re)connect. `fresh_only`: drop
        retained messages (a command left retained would run again at each connect)."""
        self._subs[topic] = (qos, handler)
        if fresh_only:
            self._fresh_only.add(topic)
        if "+" in topic or "#" in topic:
            self._patterns.append((topic, handler))

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Called on the loop after every (re)connect, once subscriptions are renewed."""
        self._on_connect_hooks.append(hook)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message (from the loop). paho keeps QoS 1 messages published while
        disconnected and sends them when the connection is back."""
        c = self._client
        if c is None:
            return
        info = c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("mqtt: cannot publish to %s: %s", topic, mqtt.error_string(info.rc))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if self.cfg.username is not None:
            password = None
            if self.cfg.password_secret is not None:
                try:
                    raw = read_secret(self.state_dir, self.cfg.password_secret)
                except SecretError as exc:
                    log.error("mqtt: %s", exc)
                    raw = None
                if raw is None:
                    log.error(
                        "mqtt: mqtt.password_secret %r is not provisioned (put it in %s); "
                        "connecting without a password",
                        self.cfg.password_secret,
                        describe_missing(self.state_dir, self.cfg.password_secret),
                    )
                password = raw.decode().strip() if raw else None
            c.username_pw_set(self.cfg.username, password)
        if self.cfg.tls:
            ctx = ssl.create_default_context(
                cafile=str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None
            )
            c.tls_set_context(ctx)
        if self.will is not None:
            c.will_set(self.will.topic, self.will.payload, qos=1, retain=self.will.retain)
        c.reconnect_delay_set(1, 30)
        # paho allows 20 unacknowledged QoS 1 messages by default: a room burst (every
        # device of 50 rooms at a booking's start) would trickle out behind the acks.
        c.max_inflight_messages_set(1000)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        try:
            c.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            self.fault = f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}"
            log.error("mqtt: %s", self.fault)
        c.loop_start()

    async def stop(self, farewell: tuple[str, bytes] | None = None) -> None:
        """Disconnect cleanly; `farewell` (retained) is published first, since a clean
        disconnect does not fire the last will."""
        c, self._client = self._client, None
        if c is None:
            return
        await asyncio.to_thread(_close, c, farewell if self.connected else None)
        self.connected = False

    def view(self) -> dict[str, object]:
        return {
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "connected": self.connected,
            "fault": None if self.connected else self.fault,
        }

    # --- paho's thread ------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        if reason.is_failure:
            self._call(self._set_state, False, f"the broker refused the connection: {reason}")
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: a push would wait for the previous segment's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        subs = [(topic, qos) for topic, (qos, _) in self._subs.items()]
        for i in range(0, len(subs), 100):  # one SUBSCRIBE per hundred topics
            client.subscribe(subs[i : i + 100])
        self._call(self._set_state, True, None)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        self._call(self._set_state, False, f"disconnected from the broker: {reason}")

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        entry = self._subs.get(msg.topic)
        if entry is not None:
            if not (msg.retain and msg.topic in self._fresh_only):
                self._call(entry[1], msg.topic, bytes(msg.payload))
            return
        for pattern, handler in self._patterns:
            if mqtt.topic_matches_sub(pattern, msg.topic):
                if msg.retain and pattern in self._fresh_only:
                    log.warning("mqtt: %s: a retained message here is ignored", msg.topic)
                    return
                self._call(handler, msg.topic, bytes(msg.payload))
                return

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(fn, *args)

    # --- the loop -----------------------------------------------------------------------

    def _set_state(self, connected: bool, fault: str | None) -> None:
        if connected != self.connected:
            if connected:
                log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
            else:
                log.warning("mqtt: %s", fault)
        self.connected = connected
        self.fault = fault
        if connected:
            for hook in self._on_connect_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("mqtt: a connect hook failed")


def _close(c: mqtt.Client, farewell: tuple[str, bytes] | None) -> None:
    if farewell is not None:
        info = c.publish(farewell[0], farewell[1], qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=2)
    c.disconnect()
    c.loop_stop()
