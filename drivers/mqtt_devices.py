"""Switchable room devices on the site broker: Tasmota, Zigbee2MQTT, generic JSON.

Each firmware family is a `Dialect`: the topics it listens and answers on and
how its payloads read. `MqttSwitch` drives any of them towards a desired state:

- `want(on)` sets what the room controller wants. The command is sent at once
  and counts as done only when the device's own state report says so.
- Without a confirmation within `confirm_timeout_s` the command is sent again,
  `retries` times; then the device is reported unavailable with the cause, and
  the command is repeated with capped, jittered backoff until it confirms.
- A device that comes back (Tasmota's `LWT Online`, Zigbee2MQTT's availability,
  any state report) is told the desired state again.
- A report that nobody asked for (a wall switch, a remote, a button) is passed
  to the room controller as a manual change; it decides whether to allow it.

Nothing here polls: a device is queried once when the link (re)connects, and
otherwise every report is pushed by the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("drivers.mqtt_devices")

Role = Literal["tv", "light", "plug", "screen", "fan"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _SwitchCommon(_Section):
    room: Annotated[str, Field(min_length=1)]
    role: Role = "plug"
    # Off while the room is not in use, on at check-in. False: the device is
    # left alone by bookings (a fridge, a printer).
    follows_booking: bool = True
    # A command not confirmed by the device's state within this long is sent again.
    confirm_timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Attempts after the first before the device is reported unavailable.
    retries: Annotated[int, Field(ge=0, le=10)] = 2


class TasmotaDevice(_SwitchCommon):
    """A Tasmota plug or relay: `cmnd/<topic>/POWER`, `stat/<topic>/POWER`, `tele/<topic>/LWT`."""

    type: Literal["tasmota"]
    topic: Annotated[str, Field(pattern=r"^[^\s/#+]+$")]
    # The relay, for multi-relay boards: POWER1, POWER2... 0 = the plain POWER.
    relay: Annotated[int, Field(ge=0, le=8)] = 0


class Zigbee2MqttDevice(_SwitchCommon):
    """A light or plug behind Zigbee2MQTT: `<base>/<name>/set`, state on `<base>/<name>`."""

    type: Literal["zigbee2mqtt"]
    name: Annotated[str, Field(pattern=r"^[^#+]+$")]  # the friendly name, may contain '/'
    base: Annotated[str, Field(pattern=r"^[^\s#+]+$")] = "zigbee2mqtt"


class JsonDevice(_SwitchCommon):
    """A generic JSON device: `{"state": "ON"}` on `<base>/set`, state on `<base>/state`."""

    type: Literal["json"]
    base: Annotated[str, Field(pattern=r"^[^\s#+]+$")]
    state_key: Annotated[str, Field(min_length=1)] = "state"
    payload_on: str = "ON"
    payload_off: str = "OFF"


SwitchConfig = TasmotaDevice | Zigbee2MqttDevice | JsonDevice


@dataclass(frozen=True, slots=True)
class Report:
    """What one message said: the power state, the availability, or both."""

    on: bool | None = None
    available: bool | None = None


NOTHING = Report()


class Dialect(Protocol):
    def subscriptions(self) -> list[str]: ...
    def command(self, on: bool) -> tuple[str, bytes]: ...
    def query(self) -> tuple[str, bytes]: ...
    def parse(self, topic: str, payload: bytes) -> Report: ...


def _onoff(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().upper()
        if v in ("ON", "1", "TRUE"):
            return True
        if v in ("OFF", "0", "FALSE"):
            return False
    if isinstance(value, int):
        return value != 0 if value in (0, 1) else None
    return None


def _json(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None


class Tasmota:
    def __init__(self, cfg: TasmotaDevice) -> None:
        self.topic = cfg.topic
        self.power = f"POWER{cfg.relay}" if cfg.relay else "POWER"
        # A one-relay device answers POWER1 with "POWER" (SetOption26 off, the default).
        self.keys = {self.power, "POWER"} if cfg.relay == 1 else {self.power}

    def subscriptions(self) -> list[str]:
        t = self.topic
        stats = [f"stat/{t}/{key}" for key in sorted(self.keys)]
        return [*stats, f"stat/{t}/RESULT", f"tele/{t}/STATE", f"tele/{t}/LWT"]

    def command(self, on: bool) -> tuple[str, bytes]:
        return f"cmnd/{self.topic}/{self.power}", b"ON" if on else b"OFF"

    def query(self) -> tuple[str, bytes]:
        return f"cmnd/{self.topic}/{self.power}", b""

    def parse(self, topic: str, payload: bytes) -> Report:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "LWT":
            text = payload.decode(errors="replace").strip()
            if text in ("Online", "Offline"):
                return Report(available=text == "Online")
            return NOTHING
        if kind in self.keys:
            return Report(on=_onoff(payload.decode(errors="replace")), available=True)
        doc = _json(payload)  # RESULT and STATE carry {"POWER": "ON", ...}
        if isinstance(doc, dict):
            for key in self.keys:
                if key in doc:
                    return Report(on=_onoff(doc[key]), available=True)
        return NOTHING


class Zigbee2Mqtt:
    def __init__(self, cfg: Zigbee2MqttDevice) -> None:
        self.state_topic = f"{cfg.base}/{cfg.name}"

    def subscriptions(self) -> list[str]:
        return [self.state_topic, f"{self.state_topic}/availability"]

    def command(self, on: bool) -> tuple[str, bytes]:
        return f"{self.state_topic}/set", json.dumps({"state": "ON" if on else "OFF"}).encode()

    def query(self) -> tuple[str, bytes]:
        return f"{self.state_topic}/get", b'{"state": ""}'

    def parse(self, topic: str, payload: bytes) -> Report:
        if topic.endswith("/availability"):
            # {"state": "online"} since Zigbee2MQTT 1.30, a bare "online" before.
            doc = _json(payload)
            value = doc.get("state") if isinstance(doc, dict) else payload.decode(errors="replace")
            if value in ("online", "offline"):
                return Report(available=value == "online")
            return NOTHING
        doc = _json(payload)
        if isinstance(doc, dict) and "state" in doc:
            return Report(on=_onoff(doc["state"]))
        return NOTHING


class GenericJson:
    def __init__(self, cfg: JsonDevice) -> None:
        self.base = cfg.base
        self.key = cfg.state_key
        self.on_value = cfg.payload_on
        self.off_value = cfg.payload_off

    def subscriptions(self) -> list[str]:
        return [f"{self.base}/state", f"{self.base}/availability"]

    def command(self, on: bool) -> tuple[str, bytes]:
        value = self.on_value if on else self.off_value
        return f"{self.base}/set", json.dumps({self.key: value}).encode()

    def query(self) -> tuple[str, bytes]:
        return f"{self.base}/get", b"{}"

    def parse(self, topic: str, payload: bytes) -> Report:
        if topic.endswith("/availability"):
            text = payload.decode(errors="replace").strip()
            if text in ("online", "offline"):
                return Report(available=text == "online")
            return NOTHING
        doc = _json(payload)
        if isinstance(doc, dict) and self.key in doc:
            value = doc[self.key]
            if value == self.on_value:
                return Report(on=True)
            if value == self.off_value:
                return Report(on=False)
        return NOTHING


DIALECTS: dict[str, Callable[..., Dialect]] = {
    "tasmota": Tasmota,
    "zigbee2mqtt": Zigbee2Mqtt,
    "json": GenericJson,
}


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


# Called on the loop: (device, on, manual). `manual`: nobody here asked for it.
StateListener = Callable[["MqttSwitch", bool, bool], None]
BACKOFF_MAX_S = 60.0


class MqttSwitch:
    def __init__(
        self,
        name: str,
        cfg: SwitchConfig,
        link: Publisher,
        on_state: StateListener,
        on_change: Callable[[MqttSwitch], None],
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.dialect: Dialect = DIALECTS[cfg.type](cfg)
        self.link = link
        self.on_state = on_state
        self.on_change = on_change
        self.on: bool | None = None  # as the device last said
        self.desired: bool | None = None
        self.available = True
        self.fault: str | None = None
        self.commands = 0
        self._attempts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._said_unavailable = False
        self._silent = False  # unavailable because commands went unconfirmed

    @property
    def room(self) -> str:
        return self.cfg.room

    def subscriptions(self) -> list[str]:
        return self.dialect.subscriptions()

    def view(self) -> dict[str, object]:
        return {
            "type": self.cfg.type,
            "role": self.cfg.role,
            "on": self.on,
            "desired": self.desired,
            "available": self.available,
            "fault": self.fault,
        }

    # --- commands -------------------------------------------------------------------

    def want(self, on: bool) -> None:
        """Drive the device to `on` until its own state confirms it."""
        if self.desired == on and (self.on == on or self._timer is not None):
            return
        self.desired = on
        self._attempts = 0
        if self.on == on:
            self._confirmed()
            return
        self._send()

    def accept(self, on: bool) -> None:
        """The room allows a change someone made by hand: stop driving it back."""
        self.desired = on
        self._cancel_timer()

    def connected(self) -> None:
        """The link (re)connected: ask for the state, and re-send what is wanted."""
        topic, payload = self.dialect.query()
        self.link.publish(topic, payload)
        if self.desired is not None and self.on != self.desired:
            self._attempts = 0
            self._send()

    def stop(self) -> None:
        self._cancel_timer()

    def _send(self) -> None:
        assert self.desired is not None
        topic, payload = self.dialect.command(self.desired)
        self.link.publish(topic, payload)
        self.commands += 1
        self._attempts += 1
        self._cancel_timer()
        if self._attempts <= 1 + self.cfg.retries:
            delay = self.cfg.confirm_timeout_s
        else:
            extra = self._attempts - 1 - self.cfg.retries
            delay = min(BACKOFF_MAX_S, self.cfg.confirm_timeout_s * 2**extra)
            delay *= random.uniform(0.8, 1.2)
        self._timer = asyncio.get_running_loop().call_later(delay, self._unconfirmed)

    def _unconfirmed(self) -> None:
        self._timer = None
        if self.desired is None or self.on == self.desired:
            return
        if self._attempts > self.cfg.retries and self.available:
            want = "ON" if self.desired else "OFF"
            self._set_available(
                False,
                f"did not confirm {want} after {self._attempts} command(s) "
                f"({self.cfg.confirm_timeout_s:g} s each)",
                unconfirmed=True,
            )
        self._send()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _confirmed(self) -> None:
        self._cancel_timer()
        self._attempts = 0

    # --- reports ----------------------------------------------------------------------

    def message(self, topic: str, payload: bytes) -> None:
        """A message on one of this device's topics (on the loop)."""
        report = self.dialect.parse(topic, payload)
        if report is NOTHING or (report.on is None and report.available is None):
            log.debug("%s: ignored %s: %r", self.name, topic, payload[:80])
            return
        if report.available is not None:
            if report.available:
                self._set_available(True, None)
            else:
                self._set_available(False, "the device reports itself offline")
        if report.on is None:
            return
        before = self.on
        self.on = report.on
        if self.desired is not None and report.on == self.desired:
            was_pending = self._timer is not None or self._attempts > 0
            self._confirmed()
            if self._silent:  # it answers after all
                self._set_available(True, None)
            if before != report.on:
                self.on_state(self, report.on, not was_pending)
            self.on_change(self)
            return
        if before != report.on or self.desired is None:
            # Nobody here asked for this: a switch, a remote, or the first report.
            self.on_state(self, report.on, before is not None)
        self.on_change(self)

    def _set_available(self, available: bool, fault: str | None, unconfirmed: bool = False) -> None:
        """`unconfirmed`: unavailable because commands went unconfirmed (a confirmation
        ends it), not because the device said it is offline."""
        self._silent = unconfirmed
        if available == self.available and fault == self.fault:
            return
        came_back = available and not self.available
        self.available = available
        self.fault = fault
        if available:
            if self._said_unavailable:
                log.info("%s: available again", self.name)
            self._said_unavailable = False
            if came_back and self.desired is not None and self.on != self.desired:
                self._attempts = 0
                self._send()
        elif not self._said_unavailable:
            log.error("%s: unavailable: %s", self.name, fault)
            self._said_unavailable = True
        self.on_change(self)
