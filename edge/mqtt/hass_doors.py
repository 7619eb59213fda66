"""Home Assistant MQTT discovery for the doors, their readers and the occupancy.

With `[homeassistant] discovery = true` the gateway announces, beside the
rooms and devices of `hass.py` and on the same device:

- each door as a `lock` read from its state topic, when `door_commands` is
  on: LOCKED or UNLOCKED, and JAMMED while the door is in alarm (forced or
  held open; which one is in the attributes, the whole door state). Its
  command topic takes HA's LOCK and UNLOCK (`door_commands.py`). With
  `door_commands` off, a read-only `binary_sensor` of device class `lock`
  (on: unlocked): HA's MQTT lock cannot be announced without a
  `command_topic`, which it requires;
- each door's contact as a `binary_sensor` of device class `door`, only for
  doors with a contact wired;
- each reader of a door as a `binary_sensor` of device class
  `connectivity` (diagnostic), from the `readers` of its door's state;
- the occupancy as a `sensor` (`occupancy.py`), with the count by area as
  attributes.

All unavailable when the gateway is. Unique ids are built from the site,
the gateway and the door or reader id, so they survive restarts and
re-imports; an id that no longer exists is removed (empty retained config).

Home Assistant's documentation of what is used here:
https://www.home-assistant.io/integrations/lock.mqtt/ (`command_topic`
required; `state_locked`, `state_unlocked`, `state_jammed`, `value_template`,
`payload_lock`, `payload_unlock`, `retain`),
https://www.home-assistant.io/integrations/binary_sensor/ and
https://developers.home-assistant.io/docs/core/entity/binary-sensor (device
classes `lock`, `door`, `connectivity`; a template rendering "None" makes
the state unknown, as `homeassistant/components/mqtt/binary_sensor.py` does).
The lock's "open" state is not used: it means a latch released by an OPEN
command, and MQTT locks only know it since 2024 (home-assistant/core#117110);
older versions ignore a state they do not know and keep the last one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from edge.mqtt.hass import gateway_availability, gateway_device, node_id, slug
from edge.mqtt.topics import topic

if TYPE_CHECKING:
    from edge.config import Config
    from edge.mqtt.link import MqttLink
    from edge.site.state import SiteChange, SiteState

LOCK_STATE = (
    "{% if value_json.alarm %}JAMMED"
    "{% elif value_json.lock == 'unlocked' %}UNLOCKED"
    "{% else %}LOCKED{% endif %}"
)
UNLOCKED_ON = "{{ 'ON' if value_json.lock == 'unlocked' else 'OFF' }}"
CONTACT_OPEN_ON = "{{ {'open': 'ON', 'closed': 'OFF'}.get(value_json.contact, 'None') }}"

Message = tuple[str, dict[str, object]]


def door_discovery(cfg: Config, doors: dict[str, str]) -> tuple[list[Message], list[str]]:
    """What to announce for `doors` (id: name), and the config topics to clear:
    each door's lock in the form not in use (a lock or a read-only binary sensor)."""
    site = cfg.site.id
    ha = cfg.homeassistant
    node = node_id(cfg)
    common: dict[str, object] = {"device": gateway_device(cfg), **gateway_availability(cfg)}
    out: list[Message] = []
    clear: list[str] = []
    for door, name in sorted(doors.items()):
        state = topic("door_state", site=site, door=door)
        oid = f"{node}_door_{slug(door)}"
        lock: dict[str, object] = {
            "name": name,
            "unique_id": oid,
            "state_topic": state,
            "json_attributes_topic": state,
            **common,
        }
        if ha.door_commands:
            lock |= {
                "value_template": LOCK_STATE,
                "state_locked": "LOCKED",
                "state_unlocked": "UNLOCKED",
                "state_jammed": "JAMMED",
                "command_topic": topic("door_command", site=site, door=door),
                "payload_lock": "LOCK",
                "payload_unlock": "UNLOCK",
                "retain": False,  # a retained UNLOCK would run again at every reconnect
                "qos": 0,
            }
            out.append((f"{ha.prefix}/lock/{oid}/config", lock))
            clear.append(f"{ha.prefix}/binary_sensor/{oid}/config")
        else:
            lock |= {"value_template": UNLOCKED_ON, "device_class": "lock"}
            out.append((f"{ha.prefix}/binary_sensor/{oid}/config", lock))
            clear.append(f"{ha.prefix}/lock/{oid}/config")
        hw = cfg.doors.get(door)
        if hw is None:
            continue
        if hw.contact is not None:
            cid = f"{oid}_contact"
            contact = {
                "name": f"{name} contact",
                "unique_id": cid,
                "state_topic": state,
                "value_template": CONTACT_OPEN_ON,
                "device_class": "door",
                **common,
            }
            out.append((f"{ha.prefix}/binary_sensor/{cid}/config", contact))
        for reader in (*hw.in_readers, *hw.out_readers):
            rid = f"{node}_reader_{slug(reader)}"
            online = "{{ 'ON' if value_json.readers.get(" + json.dumps(reader) + ") else 'OFF' }}"
            entity = {
                "name": f"Reader {reader}",
                "unique_id": rid,
                "state_topic": state,
                "value_template": online,
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                **common,
            }
            out.append((f"{ha.prefix}/binary_sensor/{rid}/config", entity))
    occupancy = topic("occupancy", site=site)
    out.append(
        (
            f"{ha.prefix}/sensor/{node}_occupancy/config",
            {
                "name": "People on site",
                "unique_id": f"{node}_occupancy",
                "state_topic": occupancy,
                "value_template": "{{ value_json.count }}",
                "json_attributes_topic": occupancy,
                "json_attributes_template": "{{ value_json.by_area | tojson }}",
                "unit_of_measurement": "people",
                "state_class": "measurement",
                "icon": "mdi:account-group",
                **common,
            },
        )
    )
    return out, clear


class DoorDiscovery:
    """Announces the doors at every connect and when the site's doors change."""

    def __init__(self, site: SiteState, link: MqttLink) -> None:
        self.site = site
        self.link = link
        self._sent: dict[str, bytes] = {}
        link.on_connect(self.connected)
        site.subscribe(self._site_changed)

    def doors(self) -> dict[str, str]:
        ix = self.site.index
        ids = set(ix.doors) | set(self.site.config.doors)
        return {d: ix.doors[d].name if d in ix.doors else d for d in ids}

    def connected(self) -> None:
        self._sent.clear()  # a broker that restarted without persistence lost them
        self.publish(clear_other_forms=True)

    def _site_changed(self, change: SiteChange) -> None:
        if (change.index or change.entitlements) and self.link.connected:
            self.publish()

    def publish(self, clear_other_forms: bool = False) -> None:
        """Announce what changed; remove what no longer exists (empty retained)."""
        messages, clear = door_discovery(self.site.config, self.doors())
        bodies = {t: json.dumps(b, separators=(",", ":")).encode() for t, b in messages}
        for t in set(self._sent) - set(bodies):
            self.link.publish(t, b"", retain=True)
        if clear_other_forms:
            for t in clear:  # left by a run with the other door_commands setting
                self.link.publish(t, b"", retain=True)
        for t, body in bodies.items():
            if self._sent.get(t) != body:
                self.link.publish(t, body, retain=True)
        self._sent = bodies
