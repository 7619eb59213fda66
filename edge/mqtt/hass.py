"""Home Assistant MQTT discovery for the rooms and their devices (optional).

With `[homeassistant] discovery = true` the gateway announces, retained under
`<prefix>/<component>/<object>/config`, one sensor per room (its phase, with
the panel state as attributes) and one binary sensor per device (on/off as
the gateway last confirmed it), all unavailable when the gateway is. Home
Assistant reads the gateway's own retained topics; it never commands rooms or
devices through them: Tasmota and Zigbee2MQTT announce their devices
themselves. The doors, their readers and the occupancy are `hass_doors.py`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from edge.mqtt.topics import topic

if TYPE_CHECKING:
    from edge.config import Config
    from edge.mqtt.link import MqttLink
    from edge.site.state import SiteState


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).lower()


def node_id(cfg: Config) -> str:
    """The prefix of every object id and unique id: stable for a site and gateway."""
    return f"edge_{slug(cfg.site.id)}_{slug(cfg.gateway.id)}"


def gateway_device(cfg: Config) -> dict[str, object]:
    """The device every entity of this gateway belongs to."""
    return {
        "identifiers": [node_id(cfg)],
        "name": f"Edge gateway {cfg.site.id}/{cfg.gateway.id}",
        "manufacturer": "edge-gateway",
    }


def gateway_availability(cfg: Config) -> dict[str, object]:
    """Every entity is unavailable when the gateway is (its retained state, last will)."""
    return {
        "availability_topic": topic("gateway_state", site=cfg.site.id, gateway=cfg.gateway.id),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def discovery_messages(site_state: SiteState) -> list[tuple[str, dict[str, object]]]:
    cfg = site_state.config
    site = cfg.site.id
    prefix = cfg.homeassistant.prefix
    node = node_id(cfg)
    device = gateway_device(cfg)
    availability = gateway_availability(cfg)
    out: list[tuple[str, dict[str, object]]] = []
    for rid, room in sorted(site_state.index.rooms.items()):
        state = topic("room_state", site=site, room=rid)
        oid = f"{node}_room_{slug(rid)}"
        out.append(
            (
                f"{prefix}/sensor/{oid}/config",
                {
                    "name": f"{room.name} state",
                    "unique_id": oid,
                    "state_topic": state,
                    "value_template": "{{ value_json.state }}",
                    "json_attributes_topic": state,
                    "icon": "mdi:door",
                    "device": device,
                    **availability,
                },
            )
        )
    for name, dc in sorted(cfg.devices.items()):
        if dc.type == "modbus_hvac":
            continue
        oid = f"{node}_device_{slug(name)}"
        out.append(
            (
                f"{prefix}/binary_sensor/{oid}/config",
                {
                    "name": name,
                    "unique_id": oid,
                    "state_topic": topic("device_state", site=site, device=name),
                    "value_template": "{{ 'ON' if value_json.on else 'OFF' }}",
                    "json_attributes_topic": topic("device_state", site=site, device=name),
                    "device_class": "power",
                    "device": device,
                    **availability,
                },
            )
        )
    return out


class Discovery:
    def __init__(self, site: SiteState, link: MqttLink) -> None:
        self.site = site
        self.link = link
        self._sent: set[str] = set()

    def publish(self) -> None:
        """(Re)announce everything; what no longer exists is removed (empty retained)."""
        messages = discovery_messages(self.site)
        topics = {t for t, _ in messages}
        for t in self._sent - topics:
            self.link.publish(t, b"", retain=True)
        for t, body in messages:
            self.link.publish(t, json.dumps(body, separators=(",", ":")).encode(), retain=True)
        self._sent = topics
