"""The views an operator reads: `edgectl status` and `edgectl member show`.

Built from the gateway's parts on request; nothing here changes anything.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.access.policy import entitlement
from edge.access.service import jsonable
from edge.site.state import GatewayError
from edge.timeutil import iso_instant
from edge.web import tls

if TYPE_CHECKING:
    from edge.gateway import Gateway


def _storage(gw: Gateway) -> dict[str, Any]:
    """The database's disk: ok, or failing since when with the last error."""
    health = gw.site.store.health()
    if "since" in health:
        health["since"] = iso_instant(health["since"], gw.site.index.tz)
    return health


def status(gw: Gateway) -> dict[str, Any]:
    """`edgectl status`: the site, the doors and readers, sync, the broker, the rooms."""
    ix, now = gw.site.index, time.time()
    doors = []
    for door_id in sorted(set(ix.doors) | set(gw.access.doors.controllers)):
        door = ix.doors.get(door_id)
        view = gw.access.doors.view(door_id)
        until = view.pop("unlocked_for_s")
        doors.append(
            {
                "id": door_id,
                "name": door.name if door else None,
                "mode": door.mode if door else None,
                **view,
                "unlocked_until": iso_instant(now + until, ix.tz) if until else None,
            }
        )
    members = sum(1 for h in ix.holders.values() if h.kind != "guest")
    hw = gw.access.hardware
    return {
        "ready": gw.ready,
        "site": ix.site_id or None,
        "gateway": gw.config.gateway.id,
        "generation": ix.generation,
        "cursor": ix.cursor,
        "snapshot_generated_at": iso_instant(ix.generated_at, ix.tz) if ix.generated_at else None,
        "members": members,
        "guests": len(ix.holders) - members,
        "credentials": ix.credential_count,
        "doors": doors,
        "readers": [] if hw is None else [p.view() for p in hw.readers.values()],
        "buses": [] if hw is None else hw.buses_view(),
        "lockdown": gw.site.state.lockdown_site,
        "storage": _storage(gw),
        "synced_at": iso_instant(gw.site.synced_at, ix.tz) if gw.site.synced_at else None,
        "cache_age_s": round(now - gw.site.synced_at, 1) if gw.site.synced_at else None,
        "offline": {
            "reason": gw.site.state.offline_reason,
            "doors": sorted(gw.site.state.offline_doors),
            "policies": dict(sorted(gw.site.state.offline_methods.items())),
        }
        if gw.site.state.offline_reason
        else None,
        "database_set_aside": str(gw.site.set_aside) if gw.site.set_aside else None,
        "clock_step_s": None if gw.site.clock.step is None else round(gw.site.clock.step, 1),
        "cloud": None
        if gw.sync is None
        else {
            "url": gw.sync.cfg.url,
            "stopped": gw.sync.auth_failed,
            "last_error": gw.sync.pull.last_error if gw.sync.pull.failures else None,
            "push": gw.sync.link.view() if gw.sync.link is not None else None,
        },
        "mqtt": None if gw.mqtt is None else gw.mqtt.view(),
        "rooms": None
        if gw.rooms is None
        else [
            {
                "id": r["room"],
                "state": r["state"],
                "booking": (r.get("booking") or {}).get("id"),
            }
            for r in gw.rooms.view()
        ],
        "pin_key": gw.access.pin_key is not None,
        "web": web_view(gw),
        "uptime_s": round(now - gw.started_at, 1),
    }


async def member_show(gw: Gateway, holder_id: str, at: float | None = None) -> dict[str, Any]:
    """`edgectl member show`: a holder's documents, credentials and every door's answer."""
    ix = gw.site.index
    h = ix.holders.get(holder_id)
    if h is None:
        raise GatewayError("not_found", f"no member or guest {holder_id!r} on this site")
    at = time.time() if at is None else at
    local = datetime.fromtimestamp(at, ix.tz)
    row = await gw.site.store.fetchone(
        "SELECT data FROM holders WHERE gen = ? AND id = ?", (ix.generation, holder_id)
    )
    data = json.loads(row[0]) if row else {}
    creds = await gw.site.store.fetchall(
        "SELECT id, key, active FROM credentials WHERE gen = ? AND holder = ? ORDER BY id",
        (ix.generation, holder_id),
    )
    doors = []
    for door in ix.doors.values():
        granted, reason, details, _ = entitlement(ix, gw.site.state, h, door, at, local)
        doors.append(
            {
                "door": door.id,
                "granted": granted,
                "reason": reason,
                "details": jsonable(details),
            }
        )
    today = local.date()
    used = gw.site.state.day_pass_uses.get((h.id, today))
    return {
        "id": h.id,
        "kind": h.kind,
        "name": data.get("name", ""),
        "at": iso_instant(at, ix.tz),
        "plan": h.plan,
        "company": h.company,
        "contract": data.get("contract"),
        "billing": data.get("billing"),
        "billing_allows_access": h.billing.allows(at),
        "credentials": [
            {
                "id": cid,
                "type": "pin" if key.startswith("pin:") else "card",
                "card": None if key.startswith("pin:") else key,
                "active": bool(active),
            }
            for cid, key, active in creds
        ],
        "grants": data.get("access", []),
        "day_passes": data.get("day_passes", []),
        "day_pass_balance": h.day_pass_balance,
        "day_pass_balance_used_here": gw.site.state.balance_used.get(h.id, 0),
        "day_pass_used_today": used.source if used else None,
        "bookings": [
            {
                "id": b.id,
                "room": b.room,
                "start": iso_instant(b.start, ix.tz),
                "end": iso_instant(b.end, ix.tz),
                "status": b.status,
                "checked_in": b.id in gw.site.state.checked_in,
            }
            for b in ix.bookings_by_holder.get(h.id, ())
        ],
        "host": h.host,
        "doors": doors,
    }


def web_view(gw: Gateway) -> dict[str, Any] | None:
    """Where the web server listens and, with TLS, the certificate's fingerprint."""
    cfg = gw.config.web
    if not cfg.enabled:
        return None
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    cert, _ = tls.cert_paths(gw.config, gw.state_dir)
    return {
        "url": f"{'https' if cfg.tls else 'http'}://{host}:{cfg.port}/",
        "fingerprint": tls.fingerprint(cert) if cfg.tls else None,
    }
