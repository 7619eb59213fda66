"""The room panels' requests: check in, end early, book now, extend, activity.

A panel publishes `edge/<site>/rooms/<room>/request/<op>` with a card or a
PIN; the gateway identifies the holder from its own index, checks the room's
bookings, records what changes (a paid request waits for its usage event's
commit) and answers on `.../response/<op>` with the request's `transaction`.
Every refusal is an answer with a code and a message, never silence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from edge.access.cards import CardSpecError, parse_card_spec, pin_hmac
from edge.access.policy import Presentation, identify_at_panel
from edge.config import RoomConfig
from edge.mqtt.topics import PANEL_OPS, subscription, topic
from edge.rooms.controller import (
    RoomRuntime,
    Rooms,
    adhoc_booking,
    dumps,
    facts_op,
)
from edge.rooms.phases import ON_PHASES, RoomNow, credits_for, evaluate
from edge.site.events import new_event_id
from edge.site.sqlite import Many, SqlOp
from edge.timeutil import iso_instant

log = logging.getLogger("edge.rooms")

MAX_REQUEST_BYTES = 4096


class PanelError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Panels:
    """Answers the panels of the rooms `ctl` controls."""

    def __init__(self, ctl: Rooms) -> None:
        self.ctl = ctl
        self.site = ctl.site
        self.access = ctl.access
        self.recorder = ctl.recorder
        self.link = ctl.link
        self.site_id = ctl.site_id
        self._tasks: set[asyncio.Task[Any]] = set()
        # Credits spent here, by holder or "company:<id>", not yet in the cloud's balances.
        self.credits_spent: dict[str, int] = {}

    def build(self) -> None:
        """Subscribe the request topic; before the link starts."""
        self.link.subscribe(subscription("room_request", site=self.site_id), self._on_request)

    async def start(self) -> None:
        for holder, credits in await self.site.store.fetchall(
            "SELECT holder, SUM(credits) FROM credit_uses WHERE reflected = 0 GROUP BY holder"
        ):
            self.credits_spent[holder] = int(credits)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_request(self, t: str, payload: bytes) -> None:
        parts = t.split("/")  # edge/<site>/rooms/<room>/request/<op>
        rid, op = parts[3], parts[5]
        tx: object = None
        try:
            body, tx = parse_request(payload)
            result = self.request(rid, op, body)
        except PanelError as exc:
            log.warning("rooms: %s: panel %s refused: %s: %s", rid, op, exc.code, exc)
            self._respond(rid, op, tx, error=exc)
            return
        if isinstance(result, asyncio.Future):
            fut: asyncio.Future[dict[str, Any]] = result

            async def when_durable() -> None:
                try:
                    data = await fut
                except PanelError as exc:
                    self._respond(rid, op, tx, error=exc)
                else:
                    self._respond(rid, op, tx, data=data)

            task = asyncio.create_task(when_durable(), name=f"rooms[{rid}].{op}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._respond(rid, op, tx, data=result)

    def request(
        self, rid: str, op: str, body: dict[str, Any], cards: tuple[str, ...] = ()
    ) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        """One panel request, from MQTT or the web panel: its answer, or a future of
        it that resolves once what it changed is durable. Refusals raise PanelError.
        `cards`: lookup keys read at the room's own reader (a badge for identity)."""
        if op not in PANEL_OPS:
            raise PanelError(
                "bad_request",
                f"unknown request {op!r} (expected one of: {', '.join(PANEL_OPS)})",
            )
        rt = self.ctl.rooms.get(rid)
        if rt is None:
            raise PanelError("unknown_room", f"no room {rid!r} on this site")
        return self._handle(rt, op, body, cards)

    def _respond(
        self,
        rid: str,
        op: str,
        tx: object,
        data: dict[str, Any] | None = None,
        error: PanelError | None = None,
    ) -> None:
        body: dict[str, Any] = {"transaction": tx, "status": "ok" if error is None else "error"}
        body["data"] = data or {}
        if error is not None:
            body["error"] = error.code
            body["message"] = str(error)
        self.link.publish(topic("room_response", site=self.site_id, room=rid, op=op), dumps(body))

    def _who(self, body: dict[str, Any], at: float, cards: tuple[str, ...] = ()) -> str:
        """The holder behind the card or PIN, decided by the gateway's own index."""
        ix = self.site.index
        digest = None
        card, pin = body.get("card"), body.get("pin")
        if card is None and pin is None and not cards:
            raise PanelError("not_authorised", "show a card or type a PIN")
        if card is not None:
            if not isinstance(card, str):
                raise PanelError("bad_request", "card: must be a string like H10301:12:3456")
            try:
                cards = (parse_card_spec(card),)
            except CardSpecError as exc:
                raise PanelError("bad_request", f"card: {exc}") from None
        if pin is not None:
            if not isinstance(pin, str) or not pin.isdigit() or not pin.isascii() or len(pin) > 12:
                raise PanelError("bad_request", "pin: must be a string of up to 12 digits")
            if self.access.pin_key is None:
                raise PanelError("not_authorised", "PIN entry is not set up on this gateway")
            digest = pin_hmac(self.access.pin_key, pin)
        holder, denial = identify_at_panel(
            ix, self.site.state, Presentation("(panel)", at, cards, digest)
        )
        if holder is None or denial is not None:
            raise PanelError("not_authorised", f"not recognised or not allowed ({denial})")
        return holder.id

    def _handle(
        self, rt: RoomRuntime, op: str, body: dict[str, Any], cards: tuple[str, ...] = ()
    ) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        now = time.time()
        if not self.site.index.loaded:
            raise PanelError("not_ready", "no site loaded yet")
        self.ctl.presence(rt.room.id, now, f"panel {op}")
        if op == "activity":
            return {"state": self.ctl.room_state(rt)}
        holder = self._who(body, now, cards)
        current = evaluate(self.ctl.slots(rt.room.id), rt.rc, now)
        if op == "check_in":
            return self._check_in(rt, current, holder, now)
        if op == "end":
            return self._end(rt, current, holder, now)
        minutes = _minutes(body, rt.rc)
        if op == "book":
            if current.phase not in ("free", "upcoming"):
                raise PanelError("room_busy", f"the room is {current.phase.replace('_', ' ')}")
            return self._book(rt, holder, minutes, now)
        return self._extend(rt, current, holder, minutes, now)

    def _check_in(
        self, rt: RoomRuntime, current: RoomNow, holder: str, now: float
    ) -> dict[str, Any]:
        s = current.slot
        if current.phase != "awaiting_checkin" or s is None:
            if current.phase in ON_PHASES and s is not None and holder in s.booking.holders:
                return {"booking": s.id, "already": True}
            raise PanelError("no_booking", "no booking of this room is waiting for a check-in")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        self.access.check_in(s.id, rt.room.id, holder, rt.room.door, now, via="panel")
        return {"booking": s.id}

    def _end(self, rt: RoomRuntime, current: RoomNow, holder: str, now: float) -> dict[str, Any]:
        s = current.slot
        if current.phase not in ("in_use", "ending") or s is None:
            raise PanelError("no_booking", "no booking of this room is in use")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        f = self.ctl.facts_of(s.id, rt.room.id)
        f.ended_at = now
        tz = self.site.index.tz
        ev = self.ctl.booking_event(
            rt,
            "booking.ended_early",
            now,
            holder,
            s.id,
            end=iso_instant(now, tz),
            planned_end=iso_instant(s.booking.end, tz),
        )
        self.recorder.record([ev], [facts_op(f)])
        self.ctl.apply_overrides()
        self.ctl.refresh()
        return {"booking": s.id, "end": iso_instant(now, tz)}

    def _free(self, rt: RoomRuntime, start: float, end: float, skip: str | None = None) -> None:
        for s in self.ctl.slots(rt.room.id):
            if not s.active or s.id == skip or (s.ended_early and s.booking.end <= start):
                continue
            b = s.booking
            if b.start < end and start < b.end:
                raise PanelError(
                    "room_busy",
                    f"booked from {iso_instant(b.start, self.site.index.tz)} "
                    f"to {iso_instant(b.end, self.site.index.tz)}",
                )

    def _pay(
        self, rt: RoomRuntime, holder: str, minutes: int, booking: str, reason: str, at: float
    ) -> tuple[list[dict[str, Any]], list[SqlOp], dict[str, Any]]:
        """Credits for `minutes` of this room, from the member's own, else the company's."""
        credits = credits_for(minutes, rt.room.credits_per_hour)
        if credits == 0:
            return [], [], {"credits": 0}
        ix = self.site.index
        h = ix.holders[holder]
        if h.kind == "guest":
            raise PanelError("not_authorised", "guests cannot book rooms")
        own = h.credits - self.credits_spent.get(holder, 0)
        source, company, key = "member", None, holder
        if own < credits:
            c = ix.companies.get(h.company) if h.company else None
            key = f"company:{c.id}" if c else ""
            if (
                c is None
                or not c.billing.allows(at)
                or c.credits - self.credits_spent.get(key, 0) < credits
            ):
                raise PanelError(
                    "no_credits", f"{credits} credit(s) needed, {max(own, 0)} available"
                )
            source, company = "company", c.id
        self.credits_spent[key] = self.credits_spent.get(key, 0) + credits
        extra = {} if company is None else {"company": company}
        ev = self.ctl.booking_event(
            rt,
            "usage.credits",
            at,
            holder,
            booking,
            credits=credits,
            minutes=minutes,
            reason=reason,
            source=source,
            **extra,
        )
        op: SqlOp = (
            "INSERT INTO credit_uses (event_id, holder, company, credits, at) VALUES (?,?,?,?,?)",
            (ev["id"], key, company, credits, at),
        )
        return [ev], [op], {"credits": credits, "paid_by": source}

    def _book(
        self, rt: RoomRuntime, holder: str, minutes: int, now: float
    ) -> asyncio.Future[dict[str, Any]]:
        start = now
        end = now + 60 * minutes
        self._free(rt, start, end)
        bid = f"adhoc-{new_event_id()}"
        events, ops, paid = self._pay(rt, holder, minutes, bid, "book", now)
        tz = self.site.index.tz
        booking = adhoc_booking(bid, rt.room.id, holder, start, end, rt.room.door)
        self.ctl.adhoc[bid] = booking
        self.site.state.checked_in.add(bid)
        created = self.ctl.booking_event(
            rt,
            "booking.created",
            now,
            holder,
            bid,
            start=iso_instant(start, tz),
            end=iso_instant(end, tz),
            minutes=minutes,
            checked_in=True,
            **paid,
        )
        ops += [
            (
                "INSERT INTO room_bookings (id, room, member, start, end, created) "
                "VALUES (?,?,?,?,?,?)",
                (bid, rt.room.id, holder, start, end, now),
            ),
            (
                "INSERT OR IGNORE INTO booking_checkins (booking, holder, at) VALUES (?,?,?)",
                (bid, holder, now),
            ),
        ]
        done = self.recorder.record([created, *events], ops)
        log.info("rooms: %s: booked at the panel for %d min (%s)", rt.room.id, minutes, bid)
        self.ctl.index_changed()
        data = {
            "booking": bid,
            "start": iso_instant(start, tz),
            "end": iso_instant(end, tz),
            **paid,
        }
        return _after(done, data)

    def _extend(
        self, rt: RoomRuntime, current: RoomNow, holder: str, minutes: int, now: float
    ) -> asyncio.Future[dict[str, Any]]:
        s = current.slot
        if current.phase not in ON_PHASES or s is None:
            raise PanelError("no_booking", "no booking of this room is in use")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        old_end = s.booking.end
        new_end = max(old_end, now) + 60 * minutes
        self._free(rt, old_end, new_end, skip=s.id)
        events, ops, paid = self._pay(rt, holder, minutes, s.id, "extend", now)
        f = self.ctl.facts_of(s.id, rt.room.id)
        f.extended_to = new_end
        if f.presence_at is not None and f.presence_at < new_end:
            f.presence_at = None  # the time after the old end is paid for now
        tz = self.site.index.tz
        if events:
            events[0]["details"]["end"] = iso_instant(new_end, tz)
        ops.append(facts_op(f))
        done = self.recorder.record(events, ops)
        self.ctl.apply_overrides()
        self.ctl.refresh()
        return _after(done, {"booking": s.id, "end": iso_instant(new_end, tz), **paid})

    # --- credits ------------------------------------------------------------------------

    async def reconcile_credits(
        self, fetched_at: float, holders: set[str] | None, companies: set[str] | None
    ) -> None:
        """Credits spent here stop being subtracted once the cloud's balance counts them:
        the event was accepted, and a document fetched after that has arrived."""
        if holders is not None and not holders and not companies:
            return
        rows = await self.site.store.fetchall(
            "SELECT u.event_id, u.holder, u.credits FROM credit_uses u "
            "LEFT JOIN outbox o ON o.id = u.event_id WHERE u.reflected = 0 "
            "AND (o.id IS NULL OR (o.state = 'delivered' AND o.delivered < ?))",
            (fetched_at,),
        )
        done = []
        for event_id, key, credits in rows:
            if holders is not None:
                company = key.removeprefix("company:") if key.startswith("company:") else None
                if not (key in holders or (company is not None and company in (companies or ()))):
                    continue
            done.append((event_id,))
            left = self.credits_spent.get(key, 0) - int(credits)
            if left > 0:
                self.credits_spent[key] = left
            else:
                self.credits_spent.pop(key, None)
        if done:
            await self.site.store.write(
                [("UPDATE credit_uses SET reflected = 1 WHERE event_id = ?", Many(done))]
            )


def parse_request(payload: bytes) -> tuple[dict[str, Any], object]:
    """A panel request's body and its transaction (echoed in the answer); PanelError if
    the payload is not a request. Its operation and room come from the topic."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise PanelError("bad_request", f"request of {len(payload)} bytes is too large")
    try:
        body = json.loads(payload) if payload.strip() else {}
    except RecursionError:
        # json's C scanner gives up on deep nesting with RecursionError, not ValueError.
        raise PanelError("bad_request", "not JSON: nested too deeply") from None
    except ValueError as exc:
        raise PanelError("bad_request", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PanelError("bad_request", "the request must be a JSON object")
    tx = body.get("transaction")
    if tx is not None and not isinstance(tx, (str, int)):
        raise PanelError("bad_request", "transaction: must be a string or a number")
    return body, tx


def _minutes(body: dict[str, Any], rc: RoomConfig) -> int:
    minutes = body.get("minutes", 30)
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise PanelError("bad_request", "minutes: must be a whole number")
    if not 5 <= minutes <= rc.max_panel_booking_min:
        raise PanelError(
            "bad_request", f"minutes: must be between 5 and {rc.max_panel_booking_min}"
        )
    return minutes


def _after(done: asyncio.Future[int], data: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
    """The panel hears of a paid booking once its usage is durable."""
    out: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def finished(f: asyncio.Future[int]) -> None:
        if out.done():
            return
        exc = f.exception() if not f.cancelled() else None
        if f.cancelled() or exc is not None:
            out.set_exception(PanelError("failed", f"could not record the booking: {exc}"))
        else:
            out.set_result(data)

    done.add_done_callback(finished)
    return out
