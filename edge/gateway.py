"""The gateway: the composition root. It builds the parts, wires them, and
starts and stops them in order; it decides nothing itself.

- `site` (`SiteState`): the store, the index, the runtime state, their freshness;
- `recorder` (`Recorder`): every event, with the state changes it goes with;
- `updates` (`SiteUpdates`): snapshots imported and changes applied;
- `access` (`AccessService`): readers, decisions, doors, lockdowns;
- `sync` (`Sync`, with `[cloud]`): pull, push, upload;
- `mqtt`, `broker`, `rooms`, `wifi` (with `[mqtt]`): the site broker and what uses it.

Each part gets the narrow pieces it needs (see docs/architecture.md), never
this object; only the admin socket and the views, above it, hold it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge.access.service import AccessService
from edge.atomicfile import remove_leftovers
from edge.config import Config
from edge.site.recorder import Recorder
from edge.site.state import SiteChange, SiteState
from edge.site.updates import SiteUpdates

if TYPE_CHECKING:
    from edge.mqtt.broker import EmbeddedBroker
    from edge.mqtt.door_commands import DoorCommandTopic
    from edge.mqtt.doors import DoorStates
    from edge.mqtt.hass_doors import DoorDiscovery
    from edge.mqtt.link import MqttLink
    from edge.mqtt.occupancy import Occupancy
    from edge.rooms.controller import Rooms
    from edge.rooms.panels import Panels
    from edge.rooms.wifi import GuestWifi
    from edge.sync.service import Sync

log = logging.getLogger("edge.gateway")

# The gateway's availability on the site broker (retained; OFFLINE is its last will).
ONLINE, OFFLINE = b'{"state":"online"}', b'{"state":"offline"}'


class Gateway:
    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.ready = False
        self.started_at = time.time()
        self.site = SiteState(config, state_dir)
        self.recorder = Recorder(self.site)
        self.updates = SiteUpdates(self.site, self.recorder)
        self.access = AccessService(self.site, self.recorder)
        self.sync: Sync | None = None
        if config.cloud is not None:
            from edge.sync.service import Sync

            self.sync = Sync(
                config.cloud, self.site, self.recorder, self.updates, self.access, state_dir
            )
            self.recorder.on_recorded = self.sync.wake_upload
        # The site broker: pushes, rooms, devices, panels, guest Wi-Fi. One connection.
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttLink | None = None
        self.rooms: Rooms | None = None
        self.panels: Panels | None = None
        self.wifi: GuestWifi | None = None
        self.door_states: DoorStates | None = None
        self.occupancy: Occupancy | None = None
        self.door_discovery: DoorDiscovery | None = None
        self.door_commands: DoorCommandTopic | None = None
        if config.uses_mqtt:
            self._build_mqtt()

    def _build_mqtt(self) -> None:
        from edge.mqtt.doors import DoorStates
        from edge.mqtt.link import MqttLink, Will
        from edge.mqtt.topics import topic
        from edge.rooms.controller import Rooms
        from edge.rooms.panels import Panels

        cfg = self.config
        if cfg.mqtt.embedded:
            from edge.mqtt.broker import EmbeddedBroker

            self.broker = EmbeddedBroker(cfg.mqtt.host, cfg.mqtt.port)
        client_id = cfg.mqtt.client_id or f"edge-{cfg.site.id}-{cfg.gateway.id}"
        self.mqtt = MqttLink(cfg.mqtt, client_id, self.state_dir)
        self._availability = topic("gateway_state", site=cfg.site.id, gateway=cfg.gateway.id)
        self.mqtt.will = Will(self._availability, OFFLINE)
        self.mqtt.on_connect(self._announce_online)
        doors = self.access.doors
        self.door_states = DoorStates(
            self.mqtt,
            cfg.site.id,
            lambda: sorted(set(self.site.index.doors) | set(doors.controllers)),
            doors.state_of,
        )
        doors.observers.append(self.door_states.changed)
        self.access.reader_observers.append(self.door_states.changed)
        self._build_doors_mqtt()
        rooms = Rooms(self.site, self.recorder, self.access, self.mqtt)
        self.rooms = rooms
        panels = Panels(rooms)
        self.panels = panels
        self.access.rooms = rooms
        doors.movement.append(rooms.door_moved)  # a room door's contact and exit button
        self.updates.on_fetched(panels.reconcile_credits)
        self.site.subscribe(self._rooms_follow)
        if cfg.wifi is not None:
            from edge.rooms.wifi import GuestWifi

            self.wifi = GuestWifi(self.site, cfg.wifi, self.mqtt, rooms.set_wifi)

    def _build_doors_mqtt(self) -> None:
        """Occupancy, and the doors in Home Assistant: discovery, commands (if allowed)."""
        from edge.mqtt.occupancy import Occupancy

        assert self.mqtt is not None
        ha = self.config.homeassistant
        self.occupancy = Occupancy(self.mqtt, self.site, self.recorder)
        if ha.discovery:
            from edge.mqtt.hass_doors import DoorDiscovery

            self.door_discovery = DoorDiscovery(self.site, self.mqtt)
        if ha.door_commands:
            from edge.access.remote import DoorRemote
            from edge.mqtt.door_commands import DoorCommandTopic

            remote = DoorRemote(self.access)
            self.door_commands = DoorCommandTopic(
                self.mqtt, self.config.site.id, remote, self.recorder
            )

    def _rooms_follow(self, change: SiteChange) -> None:
        if self.door_states is not None and (change.index or change.entitlements):
            self.door_states.refresh_all()  # doors come and go with the site
        if self.rooms is not None and (change.index or change.bookings):
            self.rooms.index_changed()
        if self.wifi is not None and change.index:
            self.wifi.site_changed()

    def _announce_online(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(self._availability, ONLINE, retain=True)

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        # Temporary files of writes a power cut or a crash interrupted
        # (edge.atomicfile): the files they were for still hold their old content.
        for directory in (self.state_dir, self.state_dir / "secrets", self.state_dir / "web"):
            for path in remove_leftovers(directory):
                log.info("gateway: removed %s, left by an interrupted write", path)
        gen = await self.site.start()
        await self.access.start()
        self.ready = True
        ix = self.site.index
        log.info(
            "gateway: ready, site %s generation %d: %d holders, %d credentials",
            ix.site_id or "(none imported)",
            ix.generation,
            len(ix.holders),
            ix.credential_count,
        )
        self.recorder.emit("gateway.started", time.time(), details={"generation": gen})
        if self.mqtt is not None:
            if self.broker is not None:
                await self.broker.start()
            if self.rooms is not None:
                self.rooms.build()
            if self.panels is not None:
                self.panels.build()
            if self.sync is not None:
                self.sync.attach(self.mqtt)
            if self.panels is not None:
                await self.panels.start()  # spent credits loaded before any request
            if self.occupancy is not None:
                await self.occupancy.start()
            await self.mqtt.start()
            if self.rooms is not None:
                await self.rooms.start()
            if self.wifi is not None:
                await self.wifi.start()
        if self.sync is not None:
            await self.sync.start()

    async def stop(self) -> None:
        self.ready = False
        if self.wifi is not None:
            await self.wifi.stop()
        if self.panels is not None:
            await self.panels.stop()
        if self.rooms is not None:
            await self.rooms.stop()
        if self.sync is not None:
            await self.sync.stop()
        if self.door_commands is not None:
            await self.door_commands.stop()
        if self.occupancy is not None:
            await self.occupancy.stop()
        if self.mqtt is not None:
            await self.mqtt.stop(farewell=(self._availability, OFFLINE))
        if self.broker is not None:
            await self.broker.stop()
        await self.access.stop()
        await self.updates.stop()
        self.recorder.end_follows()
        await self.site.stop()
