"""Events as the contract defines them, and their one-line log form."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from edge.timeutil import iso_instant

log = logging.getLogger("edge.events")

USAGE_TYPES = frozenset(
    {
        "usage.day_pass",
        "usage.guest_entry",
        "usage.room_overtime",
        "usage.credits",
    }
)


# Uses the contract allows once per holder and site-local day: their ids are
# UUIDv5s over `{site}/{type}/{holder}/{date}` in this namespace, so that two
# gateways of one site recording the same use send the same id (edge-sync/1,
# "Events"), and the cloud bills it once.
ONCE_A_DAY = frozenset({"usage.day_pass", "usage.guest_entry"})
USAGE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edge-gateway:usage-once-a-day")


def usage_id(site: str, type_: str, holder: str, day: str) -> str:
    return str(uuid.uuid5(USAGE_NAMESPACE, f"{site}/{type_}/{holder}/{day}"))


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort like the outbox."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


def make_event(
    type_: str,
    at: float,
    tz: ZoneInfo,
    site: str,
    gateway: str,
    *,
    door: str | None = None,
    holder: str | None = None,
    credential: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    day = (details or {}).get("date")
    if type_ in ONCE_A_DAY and holder is not None and isinstance(day, str):
        event_id = usage_id(site, type_, holder, day)
    else:
        event_id = new_event_id()
    event: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "at": iso_instant(at, tz),
        "site": site,
        "gateway": gateway,
    }
    if door is not None:
        event["door"] = door
    if holder is not None:
        event["holder"] = holder
    if credential is not None:
        event["credential"] = credential
    if reason is not None:
        event["reason"] = reason
    event["details"] = details or {}
    return event


def log_line(event: dict[str, Any]) -> str:
    """`access.denied door=front holder=m-1001 credential=cr-1 reason=billing_suspended`."""
    parts = [event["type"]]
    for key in ("door", "holder", "credential", "reason"):
        if key in event:
            parts.append(f"{key}={event[key]}")
    for key, value in event.get("details", {}).items():
        parts.append(f"{key}={value}")
    return " ".join(parts)
