"""Every MQTT topic the gateway publishes or subscribes to, in one table.

`docs/mqtt.md` lists the same table; a test keeps the two in step. Topics of
the devices themselves (Tasmota, Zigbee2MQTT, generic JSON) follow their
firmware and live with their dialects in `drivers/mqtt_devices.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Topic:
    # {site}, {gateway}, {room}, {op}, {device}, {door}, {host}, {prefix}, {kind}, {object}
    pattern: str
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
    "door_state": Topic(
        "edge/{site}/doors/{door}/state",
        "out",
        True,
        1,
        '{"door", "lock", "cause", "lockdown", "contact", "alarm", "readers", "fault"}',
    ),
    "door_command": Topic(
        "edge/{site}/doors/{door}/command",
        "in",
        False,
        0,
        '"UNLOCK", "LOCK" or {"action": "unlock"|"lock", "seconds", "by"}; only with '
        "[homeassistant] door_commands = true, reserved to admin users by the broker's ACL",
    ),
    "occupancy": Topic(
        "edge/{site}/occupancy",
        "out",
        True,
        1,
        '{"count", "by_area": {door: count}}: people on site, at most once a second',
    ),
    "report_weekly": Topic(
        "edge/{site}/reports/weekly",
        "out",
        True,
        1,
        "the last full week's report (the site.report.weekly event), once a week",
    ),
    "wifi_guest": Topic(
        "edge/{site}/wifi/guest",
        "out",
        True,
        1,
        '{"ssid", "passphrase", "since", "until"}: for the access point adapter',
    ),
    "guest_arrived": Topic(
        "edge/{site}/guests/{host}/arrived",
        "out",
        False,
        1,
        '{"guest", "first_name", "at", "via": "reception"}: tells the host (a member id) '
        "that their guest checked in at the lobby's reception screen",
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
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m[1], "+"), TOPICS[name].pattern)
