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
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.secrets import SecretError, read_secret

log = logging.getLogger("edge.mqtt")

Handler = Callable[[str, bytes], None]


class MqttLink:
    def __init__(self, cfg: MqttConfig, client_id: str, state_dir: Path) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.state_dir = state_dir
        self.connected = False
        self.fault: str | None = "connecting"
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, topic: str, handler: Handler, qos: int = 1) -> None:
        """Register before `start`; renewed on every (re)connect."""
        self._subs[topic] = (qos, handler)

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
                        "mqtt: no password in the secret %r; connecting without one",
                        self.cfg.password_secret,
                    )
                password = raw.decode().strip() if raw else None
            c.username_pw_set(self.cfg.username, password)
        if self.cfg.tls:
            ctx = ssl.create_default_context(
                cafile=str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None
            )
            c.tls_set_context(ctx)
        c.reconnect_delay_set(1, 30)
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

    async def stop(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        await asyncio.to_thread(_close, c)
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
        for topic, (qos, _) in self._subs.items():
            client.subscribe(topic, qos)
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
        if entry is None:
            for pattern, candidate in self._subs.items():
                if mqtt.topic_matches_sub(pattern, msg.topic):
                    entry = candidate
                    break
        if entry is not None:
            self._call(entry[1], msg.topic, bytes(msg.payload))

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


def _close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()
