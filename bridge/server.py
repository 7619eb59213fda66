"""The bridge's HTTP(S) listener (aiohttp, on the bridge's loop): the server side
of edge-sync/1 for the gateways, and the platforms' webhooks.

    GET  /api/edge/v1/sites/{site}/snapshot
    GET  /api/edge/v1/sites/{site}/changes?since=CURSOR&limit=N
    POST /api/edge/v1/sites/{site}/events
    POST /webhooks/{platform}[/{event}]
    GET  /healthz

Gateways authenticate with their site's bearer token (a file, compared in
constant time). A site is served only once its platform's initial read is
complete: until then the snapshot answers 503 with Retry-After, which the
gateway honours. Cursors carry the database's epoch, so a cursor from another
bridge database gets 410 and the gateway takes a snapshot. Webhooks are hints:
the platform module verifies the signature where the platform signs them, and
the records named are re-read, never taken from the webhook's body.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import ssl
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.platforms.base import WebhookRefused
from bridge.usage import MAX_EVENTS
from edge.secrets import SecretError, read_secret

if TYPE_CHECKING:
    from bridge.service import Bridge

log = logging.getLogger("bridge.server")

API = "/api/edge/v1"
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_CURSOR = re.compile(r"([0-9a-f]{8})-(\d+)\Z")


def format_cursor(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq:06d}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class EdgeServer:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._tokens: dict[str, bytes] = {}
        self.webhooks: dict[str, int] = {}  # by platform: accepted
        self.webhooks_refused: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get(API + "/sites/{site}/snapshot", self.snapshot)
        app.router.add_get(API + "/sites/{site}/changes", self.changes)
        app.router.add_post(API + "/sites/{site}/events", self.events)
        app.router.add_post("/webhooks/{platform}", self.webhook)
        app.router.add_post("/webhooks/{platform}/{event}", self.webhook)
        app.router.add_get("/healthz", self.health)
        return app

    async def start(self) -> None:
        cfg = self.bridge.config.bridge
        context = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.listen_host, cfg.listen_port, ssl_context=context)
        await site.start()
        addresses = self._runner.addresses  # the port the OS chose for listen_port = 0
        self.port = int(addresses[0][1]) if addresses else cfg.listen_port
        scheme = "https" if context else "http"
        log.info("server: listening on %s://%s:%d", scheme, cfg.listen_host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- authentication --------------------------------------------------------------

    def _authorized(self, request: web.Request, site: str) -> web.Response | None:
        cfg = self.bridge.config.sites.get(site)
        if cfg is None:
            return _error(404, f"unknown site {site!r}")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "a bearer token is required")
        given = header[len("Bearer ") :].strip().encode()
        token = self._token(site, cfg.gateway_token_secret, refresh=False)
        if token is None or not hmac.compare_digest(given, token):
            # The file may have been rotated since it was read.
            token = self._token(site, cfg.gateway_token_secret, refresh=True)
            if token is None or not hmac.compare_digest(given, token):
                return _error(401, "the bearer token is not this site's")
        return None

    def _token(self, site: str, secret: str, refresh: bool) -> bytes | None:
        if refresh or site not in self._tokens:
            try:
                raw = read_secret(self.bridge.state_dir, secret)
            except SecretError as exc:
                log.error("server: %s", exc)
                raw = None
            if raw is None or not raw.strip():
                self._tokens.pop(site, None)
                return None
            self._tokens[site] = raw.strip()
        return self._tokens.get(site)

    # --- edge-sync/1 -----------------------------------------------------------------

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        site = request.match_info["site"]
        refused = self._authorized(request, site)
        if refused is not None:
            return refused
        rt = self.bridge.site(site)
        if rt is None or rt.ready_at is None:
            why = self.bridge.not_ready(site)
            return _error(503, f"site {site!r} is not ready: {why}", {"Retry-After": "5"})
        state = rt.state
        head = {
            "schema": "edge-sync/1",
            "cursor": format_cursor(self.bridge.epoch, state.seq),
            "generated_at": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        # Taken whole before the first await: a consistent cut at one cursor.
        parts = [json.dumps(head)[:-1], *state.snapshot_parts(), "}"]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = sum(len(p.encode()) for p in parts)
        await response.prepare(request)
        chunk: list[str] = []
        size = 0
        for part in parts:
            chunk.append(part)
            size += len(part)
            if size >= 1 << 16:
                await response.write("".join(chunk).encode())
                chunk, size = [], 0
        if chunk:
            await response.write("".join(chunk).encode())
        await response.write_eof()
        return response

    async def changes(self, request: web.Request) -> web.Response:
        site = request.match_info["site"]
        refused = self._authorized(request, site)
        if refused is not None:
            return refused
        rt = self.bridge.site(site)
        if rt is None or rt.ready_at is None:
            return _error(410, f"site {site!r} is not ready; take a snapshot")
        since = request.query.get("since")
        if since is None:
            return _error(400, "since: required (a cursor)")
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return _error(400, "limit: not an integer")
        if limit < 1:
            return _error(400, f"limit: {limit} (at least 1)")
        limit = min(limit, MAX_LIMIT)
        m = _CURSOR.match(since)
        current = rt.state.seq
        if m is None or m.group(1) != self.bridge.epoch:
            return _error(410, f"since: {since!r} is not a cursor of this bridge; take a snapshot")
        seq = int(m.group(2))
        if seq > current:
            return _error(410, f"since: {since!r} is ahead of this bridge; take a snapshot")
        if seq < rt.floor:
            return _error(410, f"since: {since!r} is too old; take a snapshot")
        rows = await self.bridge.store.fetchall(
            "SELECT seq, change FROM site_changes WHERE site = ? AND seq > ? AND seq <= ? "
            "ORDER BY seq LIMIT ?",
            (site, seq, current, limit),
        )
        end = rows[-1][0] if rows else seq
        body = (
            '{"changes":['
            + ",".join(r[1] for r in rows)
            + f'],"cursor":"{format_cursor(self.bridge.epoch, end)}","more":'
            + ("true" if end < current else "false")
            + "}"
        )
        return web.Response(body=body.encode(), content_type="application/json")

    async def events(self, request: web.Request) -> web.Response:
        site = request.match_info["site"]
        refused = self._authorized(request, site)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body: not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            return _error(400, "events: required (an array)")
        events = body["events"]
        if len(events) > MAX_EVENTS:
            return _error(400, f"events: {len(events)} events, at most {MAX_EVENTS} per request")
        outbox = self.bridge.outbox_of(site)
        if outbox is None:
            return _error(404, f"unknown site {site!r}")
        return web.json_response(await outbox.receive(site, events))

    # --- webhooks --------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        name = request.match_info["platform"]
        sync = self.bridge.syncs.get(name)
        if sync is None:
            return _error(404, f"unknown platform {name!r}")
        body = await request.read()
        try:
            hints = sync.platform.webhook(request.headers, body, request.match_info.get("event"))
        except WebhookRefused as exc:
            self.webhooks_refused[name] = self.webhooks_refused.get(name, 0) + 1
            log.warning("webhook %s: refused (%d): %s", name, exc.status, exc.reason)
            return _error(exc.status, exc.reason)
        self.webhooks[name] = self.webhooks.get(name, 0) + 1
        sync.hint(hints)
        return web.json_response({"records": len(hints)})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "sites": {
                    sid: rt.ready_at is not None
                    for sync in self.bridge.syncs.values()
                    for sid, rt in sync.sites.items()
                },
                "time": time.time(),
            }
        )
