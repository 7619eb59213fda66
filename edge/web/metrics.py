"""`/metrics`: the gateway in the Prometheus text format (prometheus-client).

Decisions are counted as they happen (an observer of the access service);
everything else is read when Prometheus scrapes: the outbox from the store,
the cache's age, readers, buses, the broker link and the rooms from their
views. The registry is this server's own, not the process-global one.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge.access.policy import Decision
from edge.gateway import Gateway

PHASES = ("free", "upcoming", "awaiting_checkin", "in_use", "ending", "ended", "overtime")


class Metrics:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "edge_decisions",
            "Access decisions taken, by door, outcome and reason.",
            ["door", "granted", "reason"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "edge_decision_seconds",
            "Time spent in the access decision itself.",
            buckets=(25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3),
            registry=r,
        )
        self.outbox_pending = Gauge(
            "edge_outbox_pending", "Events not yet accepted by the cloud.", registry=r
        )
        self.outbox_oldest = Gauge(
            "edge_outbox_oldest_pending_age_seconds",
            "Age of the oldest event not yet accepted by the cloud (0: none).",
            registry=r,
        )
        self.outbox_rejected = Gauge(
            "edge_outbox_rejected", "Events the cloud rejected, kept for the operator.", registry=r
        )
        self.cache_age = Gauge(
            "edge_cache_age_seconds",
            "Seconds since the last successful sync or import (NaN: never).",
            registry=r,
        )
        self.holders = Gauge("edge_holders", "Members and guests in the index.", registry=r)
        self.generation = Gauge("edge_site_generation", "The index's generation.", registry=r)
        self.reader_up = Gauge(
            "edge_reader_up", "1 if the reader is online.", ["reader", "door"], registry=r
        )
        self.bus_up = Gauge("edge_bus_up", "1 if the bus is online.", ["bus", "kind"], registry=r)
        self.mqtt_up = Gauge(
            "edge_mqtt_connected",
            "1 if the site broker link is up (absent: no broker).",
            registry=r,
        )
        self.room_phase = Gauge(
            "edge_room_phase", "1 for each room's current phase.", ["room", "phase"], registry=r
        )
        self.door_lockdown = Gauge(
            "edge_lockdown", "1 if the whole site is in lockdown.", registry=r
        )
        gw.access.observers.append(self.decided)

    def decided(self, d: Decision, took: float) -> None:
        self.decisions.labels(d.door, "true" if d.granted else "false", d.reason).inc()
        self.decision_seconds.observe(took)

    async def render(self) -> bytes:
        """Bring the scrape-time gauges up to date and render the text format."""
        gw, now = self.gw, time.time()
        store = gw.site.store
        row = await store.fetchone(
            "SELECT COUNT(*), MIN(created) FROM outbox WHERE state = 'pending'"
        )
        pending, oldest = (row[0], row[1]) if row else (0, None)
        self.outbox_pending.set(pending)
        self.outbox_oldest.set(now - oldest if oldest is not None else 0)
        row = await store.fetchone("SELECT COUNT(*) FROM outbox WHERE state = 'rejected'")
        self.outbox_rejected.set(row[0] if row else 0)
        synced = gw.site.synced_at
        self.cache_age.set(now - synced if synced is not None else float("nan"))
        ix = gw.site.index
        self.holders.set(len(ix.holders))
        self.generation.set(ix.generation)
        self.door_lockdown.set(1 if gw.site.state.lockdown_site else 0)
        hw = gw.access.hardware
        if hw is not None:
            for port in hw.readers.values():
                self.reader_up.labels(port.name, port.door or "").set(1 if port.online else 0)
            for bus in hw.buses_view():
                self.bus_up.labels(bus["name"], bus["kind"]).set(
                    1 if bus["state"] == "online" else 0
                )
        if gw.mqtt is not None:
            self.mqtt_up.set(1 if gw.mqtt.connected else 0)
        if gw.rooms is not None:
            for room in gw.rooms.view():
                for phase in PHASES:
                    self.room_phase.labels(room["room"], phase).set(
                        1 if room.get("state") == phase else 0
                    )
        return generate_latest(self.registry)
