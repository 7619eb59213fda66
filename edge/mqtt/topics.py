"""Every MQTT topic the gateway publishes or subscribes to, in one table.

`docs/mqtt.md` lists the same table; a test keeps the two in step. Topics of
the devices themselves (Tasmota, Zigbee2MQTT, generic JSON) follow their
firmware and live with their dialects in `drivers/mqtt_devices.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Topic:
    pattern: str  # {site}, {gateway}, {room}, {op}, {device}, {prefix}, {kind}, {object}
    direction: Literal["in", "out"]  # seen from the gateway
    retained: bool
    qos: int
    payload: str


TOPICS: dict[str, Topic] = {
    "push": Topic(
        "edge/{site}/push", "in", False, 1, "signed envelope from the cloud (docs/sync.md)"
    ),
    "gateway_state": Topic(
        "edge/{site}/gateway/{gateway}/state",
        "out",
        True,
        1,
        '{"state": "online"|"offline"}; "offline" is also the last will',
    ),
    "room_state": Topic(
        "edge/{site}/rooms/{room}/state",
        "out",
        True,
        1,
        "the room as a panel shows it: state, booking, minutes left, next bookings, Wi-Fi",
    ),
    "room_request": Topic(
        "edge/{site}/rooms/{room}/request/{op}",
        "in",
        False,
        1,
        '{"transaction", "card"|"pin", "minutes"}; op: check_in, book, extend, end, activity',
    ),
    "room_response": Topic(
        "edge/{site}/rooms/{room}/response/{op}",
        "out",
        False,
        1,
        '{"transaction", "status": "ok"|"error", "data", "error", "message"}',
    ),
    "device_state": Topic(
        "edge/{site}/devices/{device}/state",
        "out",
        True,
        1,
        '{"on", "desired", "available", "fault", "room"}',
    ),
    "wifi_guest": Topic(
        "edge/{site}/wifi/guest",
        "out",
        True,
        1,
        '{"ssid", "passphrase", "since", "until"}: for the access point adapter',
    ),
    "hass_discovery": Topic(
        "{prefix}/{kind}/{object}/config",
        "out",
        True,
        1,
        "Home Assistant MQTT discovery (only with [homeassistant] discovery = true)",
    ),
}

PANEL_OPS = ("check_in", "book", "extend", "end", "activity")


def topic(name: str, **fields: str) -> str:
    return TOPICS[name].pattern.format(**fields)


def subscription(name: str, **fields: str) -> str:
    """The pattern with every field not given as a single-level wildcard."""
    t = TOPICS[name].pattern
    for key in ("site", "gateway", "room", "op", "device", "prefix", "kind", "object"):
        t = t.replace("{" + key + "}", fields.get(key, "+"))
    return t
