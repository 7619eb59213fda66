"""One threaded HTTP/1.1 server for every simulated web API (the edge-sync/1
cloud, the simulated Nexudus and OfficeRnD).

A simulator gives a function from `Request` to `Response`; the server reads
whole bodies (Content-Length only, at most `MAX_BODY`), answers keep-alive
connections with one thread each, records every request, and carries out the
misbehaviour a `Response` asks for: a dropped connection, a truncated body, a
body spread over seconds, an answer held back (a timeout, for a client that
does not wait that long). `stop()` cuts every open connection and joins its
thread, and `start()` binds the same port again, so a test can take an API
away and bring it back.

Threads: the serving thread (`<name>:PORT`) and one per open connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("hwsim.http")

MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    client: str  # the peer's address
    stopping: threading.Event  # set when the server stops: a handler's waits end with it

    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        """The last value of a query parameter, or None."""
        values = self.params().get(name)
        return values[-1] if values else None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    drop: bool = False  # close the connection without a word
    truncate: bool = False  # send the headers and half of the body, then close
    stall_s: float = 0.0  # spread the body over this long
    delay_s: float = 0.0  # wait this long before answering (the server's stop ends it)


@dataclass
class RequestLog:
    """(method, path, status) of every request; 0 for a dropped one. Thread-safe."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.entries.append((method, path, status))

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self.entries)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()


Handler = Callable[[Request], Response]


class HttpSimServer:
    """Serve `handler` on host:port in threads; start/stop any number of times."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *, name: str):
        self.handler = handler
        self.host = host
        self.port = port
        self.name = name
        self.requests = RequestLog()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("url: the port is chosen by start(); call it first")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.stopping.set()
            server.shutdown()
            server.close_connections()
            server.server_close()
            thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # start() after stop() binds the same port at once

    def __init__(self, address: tuple[str, int], owner: HttpSimServer) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A daemon thread per connection, remembered so that stop() can cut and join it
        (socketserver joins only non-daemon threads)."""
        # Headers and body leave in separate writes: without TCP_NODELAY the body
        # waits for the client's delayed ACK of the headers (about 40 ms a request).
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{self.owner.name}:{self.server_port}<-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            alive = {t: s for t, s in self._connections.items() if t.is_alive()}
            self._connections = {**alive, thread: request}
        thread.start()

    def close_connections(self) -> None:
        """Cut every open connection (idle keep-alive reads and stalled writes end) and
        join its thread. Called after shutdown(), when no connection can be added."""
        with self._connections_lock:
            connections = list(self._connections.items())
            self._connections = {}
        for _, conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        for thread, _ in connections:
            thread.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection is closed after this long

    def do_GET(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away mid-response

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def version_string(self) -> str:
        return f"hwsim-{self.server.owner.name}/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (a bad request line, say), as JSON like the rest."""
        import json

        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._send(Response(code, json.dumps({"error": text}).encode()))

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        request = Request(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client=self.client_address[0],
            stopping=self.server.stopping,
        )
        response = self.server.owner.handler(request)
        if response.delay_s > 0 and self.server.stopping.wait(response.delay_s):
            self._drop()
            return
        if response.drop:
            self._drop()
            return
        self._send(response)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "a body needs a Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Content-Length: not an integer")
            return None
        if length > MAX_BODY:
            self.send_error(413, f"body: {length} bytes, at most {MAX_BODY}")
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        self._record(response.status)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        body = response.body
        if response.truncate:
            body = body[: len(body) // 2]
            self.close_connection = True
        if response.stall_s > 0 and response.status == 200:
            self._write_slowly(body, response.stall_s)
        else:
            self.wfile.write(body)
        if self.server.stopping.is_set():
            self.close_connection = True

    def _write_slowly(self, body: bytes, seconds: float, steps: int = 50) -> None:
        """The body in `steps` pieces over `seconds`; abandoned when the server stops."""
        size = -(-len(body) // steps) or 1
        for i in range(0, len(body), size):
            if i and self.server.stopping.wait(seconds / steps):
                self.close_connection = True
                return
            self.wfile.write(body[i : i + size])

    def _record(self, status: int) -> None:
        # A request line too bad to parse leaves neither command nor path set.
        path = urlsplit(getattr(self, "path", "")).path
        self.server.owner.requests.add(self.command or "", path, status)

    def _drop(self) -> None:
        """Close the connection without a word."""
        self._record(0)
        self.close_connection = True
