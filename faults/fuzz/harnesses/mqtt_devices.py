"""Device state payloads (Tasmota, Zigbee2MQTT, generic JSON), read by the dialects'
`parse` in `drivers.mqtt_devices`. A payload the device should not have sent is
ignored (`NOTHING`), never an exception: no error type is allowed here."""

from __future__ import annotations

import functools

from drivers.mqtt_devices import (
    Dialect,
    GenericJson,
    JsonDevice,
    Tasmota,
    TasmotaDevice,
    Zigbee2Mqtt,
    Zigbee2MqttDevice,
)
from faults.fuzz.harness import Harness


@functools.cache
def _devices() -> list[tuple[Dialect, list[str]]]:
    tasmota = Tasmota(TasmotaDevice(type="tasmota", room="ada", topic="tv1", relay=1))
    z2m = Zigbee2Mqtt(Zigbee2MqttDevice(type="zigbee2mqtt", room="ada", name="ada/light"))
    generic = GenericJson(
        JsonDevice(type="json", room="ada", base="site/fan", payload_on="1", payload_off="0")
    )
    return [(d, d.subscriptions()) for d in (tasmota, z2m, generic)]


def run(data: bytes) -> None:
    if not data:
        return
    # First byte: which device and which of its topics; the rest is the payload.
    devices = _devices()
    dialect, topics = devices[data[0] % len(devices)]
    topic = topics[(data[0] // len(devices)) % len(topics)]
    dialect.parse(topic, data[1:])


HARNESS = Harness("mqtt_devices", run, (), max_len=2048, prepare=_devices)
