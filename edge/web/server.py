"""The web server: aiohttp on the daemon's own event loop, no second process.

TLS by default (`tls.py`); plain HTTP only on a loopback address (the config
refuses anything else). Every 4xx answer is logged with the request's
method, path and peer, and changes nothing. Bodies over `max_body_kb` are
refused with 413 before they are read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from edge.config import Config
from edge.gateway import Gateway
from edge.web import tls
from edge.web.accounts import Accounts
from edge.web.common import CSP, STATIC, static_page
from edge.web.console import Console
from edge.web.metrics import Metrics
from edge.web.panel import PanelSockets
from edge.web.reception import Reception
from edge.web.reports import ReportRoutes, WeeklyReport

log = logging.getLogger("edge.web")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY = web.AppKey("max_body", int)


@web.middleware
async def _log_refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if 400 <= exc.status < 500:
            log.warning(
                "web: %s %s from %s refused: %d %s",
                request.method,
                request.rel_url.raw_path[:200],
                request.remote,
                exc.status,
                exc.reason,
            )
        raise
    return response


@web.middleware
async def _size_first(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A declared body over the limit is refused before anything else looks at it."""
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await handler(request)


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if request.secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


class WebServer:
    def __init__(
        self,
        gateway: Gateway,
        config: Config,
        state_dir: Path,
        accounts: Accounts,
        weekly: WeeklyReport,
    ) -> None:
        self.gateway = gateway
        self.config = config
        self.state_dir = state_dir
        self.accounts = accounts
        self.metrics = Metrics(gateway)
        self.panels = PanelSockets(accounts, gateway.rooms, gateway.panels)
        self.console = Console(gateway, accounts)
        self.reception = Reception(gateway, accounts)
        self.reports = ReportRoutes(gateway, weekly)
        self._static = frozenset(p.name for p in STATIC.glob("*") if p.is_file())
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # as bound (the config may say 0)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.web.max_body_kb * 1024,
            middlewares=[_log_refusals, _size_first, _headers],
        )
        app[MAX_BODY] = self.config.web.max_body_kb * 1024
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/sw.js", self._service_worker)
        self.panels.routes(app)
        self.console.routes(app)
        guard = self.console._for  # the console's sessions, roles and CSRF check
        app.router.add_get("/api/reports/{kind}", guard("viewer", self.reports.report))
        app.router.add_post(
            "/api/reports/weekly", guard("admin", self.reports.send_weekly, changes=True)
        )
        self.reception.routes(app)
        return app

    async def start(self) -> None:
        cfg = self.config.web
        ssl_context = None
        if cfg.tls:
            tls.ensure_self_signed(self.config, self.state_dir)
            try:
                ssl_context = tls.server_context(self.config, self.state_dir)
            except (OSError, ValueError) as exc:
                cert, key = tls.cert_paths(self.config, self.state_dir)
                raise OSError(
                    f"web: cannot use the certificate {cert} with the key {key}: {exc}"
                ) from None
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        log.info(
            "web: listening on %s://%s:%d",
            "https" if cfg.tls else "http",
            cfg.host,
            self.port,
        )

    async def stop(self) -> None:
        await self.panels.close_all()
        await self.console.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static or name == "sw.js":
            raise web.HTTPNotFound(reason=f"no file {name[:80]!r}")
        return static_page(name, cache_s=300)

    async def _service_worker(self, _request: web.Request) -> web.Response:
        # At the root so that it may keep the panel pages working offline.
        response = static_page("sw.js")
        response.headers["Service-Worker-Allowed"] = "/"
        return response

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TEXT})
