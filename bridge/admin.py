"""The bridge's admin socket: the gateway's envelope, one JSON object per line.

Request `{"id": 1, "method": "status", "params": {}}`; reply `{"id": 1,
"result": ...}` or `{"id": 1, "error": {"code": ..., "message": ...}}`.
`list_methods` names them all. The socket is 0660: the service's group are
its operators.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.http import PlatformError
from bridge.platforms.base import ReadError
from edge.ops.lineserver import LineServer, send

if TYPE_CHECKING:
    from bridge.service import Bridge

log = logging.getLogger("bridge.admin")


class AdminError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Method = Callable[["Bridge", dict[str, Any]], Awaitable[Any]]
METHODS: dict[str, tuple[Method, str]] = {}


def method(name: str, help_: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        METHODS[name] = (fn, help_)
        return fn

    return register


@method("list_methods", "the methods of this socket")
async def _list(bridge: Bridge, params: dict[str, Any]) -> Any:
    return [{"method": n, "help": h} for n, (_, h) in sorted(METHODS.items())]


@method("status", "per platform and site: reads, refusals, outbox, API budget")
async def _status(bridge: Bridge, params: dict[str, Any]) -> Any:
    return await bridge.status()


@method("sync_now", "read now: params platform (default all), full (bool), allow_deletes (bool)")
async def _sync_now(bridge: Bridge, params: dict[str, Any]) -> Any:
    name = params.get("platform")
    full = params.get("full", False)
    allow = params.get("allow_deletes", False)
    if name is not None and not isinstance(name, str):
        raise AdminError("bad_request", "params.platform: expected a string")
    if not isinstance(full, bool) or not isinstance(allow, bool):
        raise AdminError("bad_request", "params.full and params.allow_deletes are booleans")
    if name is not None and name not in bridge.syncs:
        known = ", ".join(sorted(bridge.syncs))
        raise AdminError("not_found", f"unknown platform {name!r} (known: {known})")
    results: dict[str, str] = {}
    for pname, sync in bridge.syncs.items():
        if name is not None and pname != name:
            continue
        if sync.initial_done is None:
            results[pname] = "initial read still running"
            continue
        try:
            await sync.sync_now(full=full, allow_deletes=allow)
        except (ReadError, PlatformError) as exc:
            raise AdminError("sync_failed", f"{pname}: {exc}") from None
        results[pname] = "ok"
    return results


@method("outbox.retry", "send rejected events again: params events (ids) or all (bool)")
async def _retry(bridge: Bridge, params: dict[str, Any]) -> Any:
    ids = params.get("events") or []
    every = params.get("all", False)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise AdminError("bad_request", "params.events: expected a list of event ids")
    if not isinstance(every, bool) or (not ids and not every):
        raise AdminError("bad_request", "name the events to send again, or all = true")
    # Every rejected event, or those whose id is in the list (NULL: no list).
    count = await bridge.store.write(
        [
            (
                "UPDATE events SET state = 'pending', next_at = 0, error = NULL "
                "WHERE state = 'rejected' "
                "AND (? IS NULL OR id IN (SELECT value FROM json_each(?)))",
                (None if every else 1, json.dumps(ids)),
            )
        ]
    )
    for outbox in bridge.outboxes.values():
        outbox.wake()
    return {"requeued": count}


class AdminServer(LineServer):
    def __init__(self, bridge: Bridge, path: Path, mode: int) -> None:
        super().__init__(path, mode)
        self.bridge = bridge

    async def handle(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await send(writer, await self._handle(line))
        return True

    async def _handle(self, line: bytes) -> dict[str, Any]:
        request_id = None
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise AdminError("bad_request", "not a JSON object") from None
            if not isinstance(request, dict):
                raise AdminError("bad_request", "not a JSON object")
            request_id = request.get("id")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise AdminError("bad_request", "params: expected an object")
            entry = METHODS.get(request.get("method"))  # type: ignore[arg-type]
            if entry is None:
                raise AdminError(
                    "unknown_method",
                    f"unknown method {request.get('method')!r} (list_methods names them)",
                )
            return {"id": request_id, "result": await entry[0](self.bridge, params)}
        except AdminError as exc:
            return {"id": request_id, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:
            log.exception("admin: request failed")
            return {"id": request_id, "error": {"code": "internal", "message": str(exc)}}
