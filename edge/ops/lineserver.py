"""A unix socket serving one JSON request per line: the gateway's and the bridge's admin sockets.

The server owns the socket file (replaced at start, removed at stop, its mode
set), tracks each connection's task so that `stop` ends them, and answers a
line over `MAX_LINE` with a `bad_request` error before closing. What a line
means is the subclass's `handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

MAX_LINE = 1 << 20


async def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


class LineServer:
    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self.mode = mode
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, self.mode)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def client_name(self, writer: asyncio.StreamWriter) -> str:
        """The connection task's name, as `edgectl tasks` and tracebacks show it."""
        return "admin.client"

    async def handle(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request line; False when the connection cannot go on."""
        raise NotImplementedError

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name(self.client_name(writer))
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    error = {"code": "bad_request", "message": "request line too long"}
                    await send(writer, {"id": None, "error": error})
                    return
                if not line or not await self.handle(line, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
