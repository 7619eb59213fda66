"""The device dialects: what each firmware's messages say, and nothing from garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.mqtt_devices import (
    NOTHING,
    GenericJson,
    JsonDevice,
    Report,
    Tasmota,
    TasmotaDevice,
    Zigbee2Mqtt,
    Zigbee2MqttDevice,
)

TASMOTA = Tasmota(TasmotaDevice(type="tasmota", room="ada", topic="tv"))
TASMOTA_1 = Tasmota(TasmotaDevice(type="tasmota", room="ada", topic="tv", relay=1))
Z2M = Zigbee2Mqtt(Zigbee2MqttDevice(type="zigbee2mqtt", room="ada", name="ada/ceiling"))
JSON = GenericJson(JsonDevice(type="json", room="ada", base="dev/screen"))


@pytest.mark.parametrize(
    ("dialect", "topic", "payload", "report"),
    [
        (TASMOTA, "stat/tv/POWER", b"ON", Report(on=True, available=True)),
        (TASMOTA, "stat/tv/RESULT", b'{"POWER":"OFF"}', Report(on=False, available=True)),
        (TASMOTA, "tele/tv/STATE", b'{"Time":"x","POWER":"ON"}', Report(on=True, available=True)),
        (TASMOTA, "tele/tv/LWT", b"Offline", Report(available=False)),
        (TASMOTA, "tele/tv/LWT", b"Online", Report(available=True)),
        (TASMOTA, "stat/tv/RESULT", b'{"Command":"Unknown"}', NOTHING),
        (TASMOTA_1, "stat/tv/POWER", b"ON", Report(on=True, available=True)),
        (TASMOTA_1, "stat/tv/RESULT", b'{"POWER1":"OFF"}', Report(on=False, available=True)),
        (Z2M, "zigbee2mqtt/ada/ceiling", b'{"state":"ON","brightness":254}', Report(on=True)),
        (
            Z2M,
            "zigbee2mqtt/ada/ceiling/availability",
            b'{"state":"offline"}',
            Report(available=False),
        ),
        (Z2M, "zigbee2mqtt/ada/ceiling/availability", b"online", Report(available=True)),
        (Z2M, "zigbee2mqtt/ada/ceiling", b'{"brightness":3}', NOTHING),
        (JSON, "dev/screen/state", b'{"state":"OFF"}', Report(on=False)),
        (JSON, "dev/screen/state", b'{"state":"maybe"}', NOTHING),
        (JSON, "dev/screen/availability", b"offline", Report(available=False)),
    ],
)
def test_reports(dialect: object, topic: str, payload: bytes, report: Report) -> None:
    assert dialect.parse(topic, payload) == report  # type: ignore[attr-defined]


def test_commands() -> None:
    assert TASMOTA.command(True) == ("cmnd/tv/POWER", b"ON")
    assert TASMOTA_1.command(False) == ("cmnd/tv/POWER1", b"OFF")
    assert Z2M.command(True) == ("zigbee2mqtt/ada/ceiling/set", b'{"state": "ON"}')
    assert JSON.command(False) == ("dev/screen/set", b'{"state": "OFF"}')


@given(st.sampled_from([TASMOTA, TASMOTA_1, Z2M, JSON]), st.binary(max_size=200))
def test_garbage_never_raises(dialect: object, payload: bytes) -> None:
    for topic in dialect.subscriptions():  # type: ignore[attr-defined]
        report = dialect.parse(topic, payload)  # type: ignore[attr-defined]
        assert isinstance(report, Report)
