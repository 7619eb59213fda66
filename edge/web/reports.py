"""The console's reports over HTTP, and the weekly report sent once a week.

`GET /api/reports/<kind>?from=YYYY-MM-DD&to=YYYY-MM-DD` answers the report as
JSON (`columns`, `rows`, `series`, `summary`); `&format=csv` as a CSV file
named after the site, the kind and the dates. Without dates: the last full
week, Monday to Sunday, in the site's time zone. `POST /api/reports/weekly`
(admin) sends the last week's report now.

`WeeklyReport.due()` runs hourly from the daemon: once the week is over (after
Monday 00:00 site time) it records the `site.report.weekly` event for the
cloud and publishes it retained on `edge/{site}/reports/weekly`, once per
week (the week sent is kept in the database's meta table).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge.site.reports import KINDS, ReportError, build, last_full_week, to_csv, weekly_report

if TYPE_CHECKING:
    from edge.gateway import Gateway
    from edge.web.accounts import Session

log = logging.getLogger("edge.web")

SENT_KEY = "report_weekly_sent"


class WeeklyReport:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def due(self, now: float | None = None) -> dict[str, Any] | None:
        """Send the last full week's report if it was not sent yet."""
        now = time.time() if now is None else now
        ix = self.gw.site.index
        if not ix.loaded:
            return None
        start, _end = last_full_week(now, ix.tz)
        row = await self.gw.site.store.fetchone("SELECT value FROM meta WHERE key = ?", (SENT_KEY,))
        if row is not None and row[0] == start.isoformat():
            return None
        return await self.send(now)

    async def send(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        gw = self.gw
        ev = await weekly_report(gw.site.store, gw.site.index, now, gateway=gw.config.gateway.id)
        week = ev["details"]["start"]
        await gw.recorder.record(
            [ev],
            [("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SENT_KEY, week))],
        )
        if gw.mqtt is not None:
            from edge.mqtt.topics import topic

            gw.mqtt.publish(
                topic("report_weekly", site=gw.config.site.id),
                json.dumps(ev).encode(),
                retain=True,
            )
        log.info("reports: the weekly report of %s to %s sent", week, ev["details"]["end"])
        return ev


class ReportRoutes:
    def __init__(self, gateway: Gateway, weekly: WeeklyReport) -> None:
        self.gw = gateway
        self.weekly = weekly

    async def report(self, request: web.Request, _session: Session) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in KINDS:
            raise web.HTTPNotFound(reason=f"no report {kind!r} (reports: {', '.join(KINDS)})")
        q = request.query
        start, end = _day(q.get("from"), "from"), _day(q.get("to"), "to")
        ix = self.gw.site.index
        try:
            report = await build(self.gw.site.store, ix, kind, start, end)
        except ReportError as exc:
            raise web.HTTPBadRequest(reason=str(exc)) from None
        fmt = q.get("format", "json")
        if fmt == "csv":
            name = f"{ix.site_id or 'site'}-{kind}-{report.start}-{report.end}.csv"
            return web.Response(
                text=to_csv(report),
                content_type="text/csv",
                charset="utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        if fmt != "json":
            raise web.HTTPBadRequest(reason="format: json or csv")
        return web.json_response(report.as_dict(), dumps=_dumps)

    async def send_weekly(self, _request: web.Request, _session: Session) -> Any:
        ev = await self.weekly.send()
        return {"sent": True, "id": ev["id"], "start": ev["details"]["start"]}


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(
            reason=f"{name}: a date like 2026-11-30, not {text[:40]!r}"
        ) from None


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
