"""Usage back to the platform, exactly once (`Outbox`).

Gateways upload events to the bridge (`receive`): stored idempotently by
(site, id) and acknowledged only once durable, as the contract asks. One task
per platform (`outbox[NAME]`) then takes them oldest first:

- what an event means for the platform is decided here, the same for every
  platform (`plan`): a granted entry at a check-in door is a door check-in
  (the first per holder and site-local day, or every one); a day pass used is
  a check-in that uses the pass; a guest's entry is a charge to the host;
  room overtime and credits spent at a panel are charges. Everything else is
  kept for `status` and not written;
- **before** a write goes out its attempt is durable (`sending`). A write that
  fails with an unknown outcome (timeout, dropped connection, a 5xx), or one
  found `sending` after a crash, is **looked up** on the platform before it is
  tried again (`Platform.find`: the check-in of that person at that minute,
  the charge whose description carries the event id), so the platform never
  gets it twice;
- a write the platform refuses (4xx) is kept `rejected` with the platform's
  words, shown by `edge-bridge status`, never retried and never dropped;
- throttling waits (the platform did nothing); anything else backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.config import SiteSection
from bridge.engine import PlatformSync
from bridge.http import Refused, backoff
from bridge.platforms.base import Write, parse_instant
from bridge.store import BridgeStore
from edge.site.sqlite import Many, SqlOp

log = logging.getLogger("bridge.usage")

MAX_EVENTS = 500
BILLABLE = frozenset(
    {
        "access.granted",
        "usage.day_pass",
        "usage.guest_entry",
        "usage.room_overtime",
        "usage.credits",
    }
)


class EventError(ValueError):
    pass


def check_event(event: object, site: str) -> dict[str, Any]:
    """One uploaded event as the contract describes it; `EventError` says what is wrong."""
    if not isinstance(event, dict):
        raise EventError("not an object")
    eid = event.get("id")
    if not isinstance(eid, str) or not 0 < len(eid) <= 64:
        raise EventError("id: required (a string of 1 to 64 characters)")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise EventError("type: required (a string)")
    try:
        parse_instant(event.get("at"))
    except ValueError as exc:
        raise EventError(f"at: {exc}") from None
    if event.get("site", site) != site:
        raise EventError(f"site: {event.get('site')!r} is not this site ({site!r})")
    details = event.get("details", {})
    if details is not None and not isinstance(details, dict):
        raise EventError("details: not an object")
    return event


class Outbox:
    def __init__(
        self,
        sync: PlatformSync,
        store: BridgeStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sync = sync
        self.platform = sync.platform
        self.store = store
        self.clock = clock
        self._wake = asyncio.Event()
        self.delivered = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    # --- receiving ---------------------------------------------------------------------

    async def receive(self, site: str, events: list[Any]) -> dict[str, Any]:
        """Store a gateway's upload; the contract's answer once it is durable."""
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
        rows = []
        now = self.clock()
        for i, event in enumerate(events):
            try:
                ev = check_event(event, site)
            except EventError as exc:
                eid = event.get("id") if isinstance(event, dict) else None
                rejected.append(
                    {"id": eid if isinstance(eid, str) else f"events[{i}]", "error": str(exc)}
                )
                continue
            state = "pending" if ev["type"] in BILLABLE else "skipped"
            rows.append((site, ev["id"], ev["type"], json.dumps(ev), now, state))
            accepted.append(ev["id"])
        if rows:
            await self.store.write(
                [
                    (
                        "INSERT OR IGNORE INTO events (site, id, type, body, received, state) "
                        "VALUES (?,?,?,?,?,?)",
                        Many(rows),
                    )
                ]
            )
            self._wake.set()
        return {"accepted": accepted, "rejected": rejected}

    # --- delivering -------------------------------------------------------------------

    async def run(self) -> None:
        sites = {sid: rt.cfg for sid, rt in self.sync.sites.items()}
        failures = 0
        while True:
            self._wake.clear()
            try:
                worked = await self._deliver_due(sites)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one event stop the outbox (its own state stays as it was).
                failures += 1
                log.exception("outbox %s: delivery failed", self.platform.name)
                await asyncio.sleep(min(60.0, 0.5 * 2**failures))
                continue
            failures = 0
            if worked:
                continue
            row = await self.store.fetchone(
                "SELECT MIN(next_at) FROM events WHERE state IN ('pending', 'sending', 'unknown') "
                "AND site IN (SELECT value FROM json_each(?))",
                (json.dumps(list(sites)),),
            )
            wait = 3600.0 if row is None or row[0] is None else max(0.05, row[0] - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 3600.0))

    async def _deliver_due(self, sites: dict[str, SiteSection]) -> bool:
        # Events wait for their site to be built: who is a member decides what they mean.
        ready = [sid for sid in sites if self.sync.sites[sid].ready_at is not None]
        rows = await self.store.fetchall(
            "SELECT seq, site, id, type, body, state, attempts FROM events "
            "WHERE state IN ('pending', 'sending', 'unknown') AND next_at <= ? "
            "AND site IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 100",
            (self.clock(), json.dumps(ready)),
        )
        for seq, site, _eid, _type, body, state, attempts in rows:
            await self._deliver_one(seq, sites[site], site, json.loads(body), state, attempts)
        return bool(rows)

    async def _deliver_one(
        self,
        seq: int,
        cfg: SiteSection,
        site: str,
        event: dict[str, Any],
        state: str,
        attempts: int,
    ) -> None:
        write, reason, claim = self.plan(site, cfg, event)
        if write is None:
            await self._finish(seq, "skipped", None, reason)
            return
        if claim is not None and not write.pass_use and cfg.usage.checkins == "first_per_day":
            row = await self.store.fetchone(
                "SELECT event_id FROM checkin_days WHERE site = ? AND holder = ? AND day = ?",
                (site, write.person, write.day.isoformat()),
            )
            if row is not None and row[0] != write.event_id:
                await self._finish(seq, "skipped", None, f"already checked in on {write.day}")
                return
        world = self.sync.world
        sent = False
        try:
            if state in ("sending", "unknown"):
                # It may have been written: find it before writing again.
                ref = await self.platform.find(write, cfg, world)
                if ref is not None:
                    log.info(
                        "%s: %s %s was already written (%s)", site, write.kind, write.event_id, ref
                    )
                    await self._finish(seq, "done", ref, None)
                    return
            # The attempt (and the day it claims) is durable before the write goes out.
            sending: list[SqlOp] = [
                (
                    "UPDATE events SET state = 'sending', attempts = attempts + 1 WHERE seq = ?",
                    (seq,),
                )
            ]
            await self.store.write(sending + ([claim] if claim is not None else []))
            sent = True
            ref = await self.platform.write(write, cfg, world)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if sent and isinstance(exc, Refused) and exc.status not in (401, 403):
                # The platform says no to this write: kept with its words, not retried.
                log.error(
                    "%s: %s %s refused by %s: %s",
                    site,
                    write.kind,
                    write.event_id,
                    self.platform.name,
                    exc,
                )
                await self._finish(seq, "rejected", None, f"{self.platform.name} refused it: {exc}")
                await self.store.write(
                    [("DELETE FROM checkin_days WHERE event_id = ?", (write.event_id,))]
                )
                return
            # Anything else is tried again later. Once the write went out (a timeout,
            # a dropped connection, a 5xx, an answer that makes no sense), it may have
            # been done: it is looked up first next time. Refused credentials (401,
            # 403) and failures before sending leave the state as it was.
            refused_auth = isinstance(exc, Refused)
            new_state = "unknown" if sent and not refused_auth else state
            self.last_error = f"{write.kind} {write.event_id}: {exc}"
            delay = backoff(attempts + 1, self.sync.cfg.backoff_min_s, self.sync.cfg.backoff_max_s)
            log.warning(
                "%s: %s %s: %s; again in %.0f s", site, write.kind, write.event_id, exc, delay
            )
            await self.store.write(
                [
                    (
                        "UPDATE events SET state = ?, next_at = ?, error = ? WHERE seq = ?",
                        (new_state, self.clock() + delay, str(exc) or type(exc).__name__, seq),
                    )
                ]
            )
            return
        await self._finish(seq, "done", ref, None)

    async def _finish(self, seq: int, state: str, ref: str | None, error: str | None) -> None:
        await self.store.write(
            [
                (
                    "UPDATE events SET state = ?, ref = ?, error = ?, done_at = ? WHERE seq = ?",
                    (state, ref, error, self.clock(), seq),
                )
            ]
        )
        if state == "done":
            self.delivered += 1
            self.last_error = None

    # --- what an event means -------------------------------------------------------------

    def plan(
        self, site: str, cfg: SiteSection, event: dict[str, Any]
    ) -> tuple[Write | None, str | None, SqlOp | None]:
        """The write for an event, or why there is none; and the check-in day it claims."""
        kind = event["type"]
        tz = ZoneInfo(cfg.timezone)
        at = parse_instant(event["at"]).astimezone(tz)
        day = at.date()
        holder = event.get("holder")
        details = event.get("details") or {}
        if not isinstance(holder, str) or self.platform.person_ref(holder) is None:
            who = details.get("host") if kind == "usage.guest_entry" else holder
            if not (isinstance(who, str) and self.platform.person_ref(who) is not None):
                return None, f"holder {holder!r} is not a person of {self.platform.name}", None
        state = self.sync.sites[site].state
        if kind == "access.granted":
            if event.get("door") not in cfg.usage.checkin_doors or cfg.usage.checkins == "off":
                return None, "not a check-in door", None
            if event.get("reason") == "day_pass":
                return None, "the day pass's own event writes the check-in", None
            assert isinstance(holder, str)
            if ("member", holder) not in state:
                return None, "not a member (guests are billed to their host)", None
            return self._checkin(site, event, holder, at, day, cfg, pass_use=False)
        if kind == "usage.day_pass":
            assert isinstance(holder, str)
            return self._checkin(site, event, holder, at, day, cfg, pass_use=True)
        if kind == "usage.guest_entry":
            host = details.get("host")
            if not isinstance(host, str):
                return None, "details.host: missing", None
            if cfg.usage.guest_entry_price <= 0:
                return None, "usage.guest_entry_price is 0", None
            name = _name_of(state.text(("guest", holder or ""))) or holder
            desc = f"Guest entry: {name} on {day.isoformat()}"
            return self._charge(site, event, host, None, at, day, desc, cfg.usage.guest_entry_price)
        if kind == "usage.room_overtime":
            room_id = details.get("room")
            room = cfg.rooms.get(room_id) if isinstance(room_id, str) else None
            minutes = details.get("minutes")
            if room is None or not isinstance(minutes, int):
                return (
                    None,
                    f"details.room {room_id!r} / minutes {minutes!r}: not a room of this site",
                    None,
                )
            if room.overtime_price_per_hour <= 0:
                return None, f"rooms.{room_id}.overtime_price_per_hour is 0", None
            amount = round(room.overtime_price_per_hour * minutes / 60, 2)
            booking = details.get("booking")
            desc = f"Room overtime: {room.name or room_id}, {minutes} min (booking {booking})"
            assert isinstance(holder, str)
            return self._charge(site, event, holder, None, at, day, desc, amount)
        if kind == "usage.credits":
            credits = details.get("credits")
            if not isinstance(credits, int) or credits <= 0:
                return None, f"details.credits {credits!r}: not a count", None
            if cfg.usage.credit_price <= 0:
                return None, "usage.credit_price is 0", None
            company = details.get("company") if details.get("source") == "company" else None
            desc = f"Room credits: {credits} (booking {details.get('booking')})"
            assert isinstance(holder, str)
            return self._charge(
                site,
                event,
                holder,
                company,
                at,
                day,
                desc,
                round(credits * cfg.usage.credit_price, 2),
            )
        return None, "not billable", None

    def _checkin(
        self,
        site: str,
        event: dict[str, Any],
        holder: str,
        at: datetime,
        day: Any,
        cfg: SiteSection,
        pass_use: bool,
    ) -> tuple[Write | None, str | None, SqlOp | None]:
        claim: SqlOp = (
            "INSERT OR IGNORE INTO checkin_days (site, holder, day, event_id) VALUES (?,?,?,?)",
            (site, holder, day.isoformat(), event["id"]),
        )
        write = Write(
            "checkin",
            event["id"],
            site,
            holder,
            None,
            at,
            day,
            f"Door check-in at {event.get('door')}",
            pass_use=pass_use,
        )
        return write, None, claim

    def _charge(
        self,
        site: str,
        event: dict[str, Any],
        person: str,
        company: str | None,
        at: datetime,
        day: Any,
        description: str,
        amount: float,
    ) -> tuple[Write | None, str | None, SqlOp | None]:
        return (
            Write("charge", event["id"], site, person, company, at, day, description, amount),
            None,
            None,
        )

    # --- status -----------------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        sites = list(self.sync.sites)
        counts = {
            state: n
            for state, n in await self.store.fetchall(
                "SELECT state, COUNT(*) FROM events WHERE site IN (SELECT value FROM json_each(?)) "
                "GROUP BY state",
                (json.dumps(sites),),
            )
        }
        rejected = [
            {"site": s, "event": i, "type": t, "error": e}
            for s, i, t, e in await self.store.fetchall(
                "SELECT site, id, type, error FROM events WHERE state = 'rejected' "
                "AND site IN (SELECT value FROM json_each(?)) ORDER BY seq DESC LIMIT 20",
                (json.dumps(sites),),
            )
        ]
        waiting = [
            {"site": s, "event": i, "type": t, "state": st, "error": e}
            for s, i, t, st, e in await self.store.fetchall(
                "SELECT site, id, type, state, error FROM events WHERE state IN "
                "('pending', 'sending', 'unknown') AND error IS NOT NULL "
                "AND site IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 10",
                (json.dumps(sites),),
            )
        ]
        return {
            "counts": counts,
            "delivered_since_start": self.delivered,
            "last_error": self.last_error,
            "rejected": rejected,
            "retrying": waiting,
        }


def _name_of(text: str | None) -> str | None:
    if text is None:
        return None
    name = json.loads(text).get("name")
    return name if isinstance(name, str) and name else None
