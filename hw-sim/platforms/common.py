"""What every simulated platform API shares: serving, bearer tokens that expire,
a rate limit with Retry-After, injected faults, a count of API calls, and
signed webhooks sent to a subscriber.

A platform (`hwsim.platforms.nexudus`, `hwsim.platforms.officernd`) subclasses
`PlatformSim` and implements `route(request)`; everything here runs before it.
Its world is guarded by `self.lock`; requests come in on one thread per
connection.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from hwsim.httpserving import HttpSimServer, Request, Response

log = logging.getLogger("hwsim.platforms")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, dumps(value), tuple(headers))


def malformed(body: bytes) -> bytes:
    """A body that begins like `body` and then stops being JSON."""
    return body[: max(1, len(body) // 2)] + b"\xff\x00<garbage>"


# --- rate limit -------------------------------------------------------------------


class RateLimit:
    """At most `requests` per `window_s` seconds (a sliding window of request
    times); over it, the seconds until a slot frees (for Retry-After). None: no limit."""

    def __init__(self, requests: int | None = None, window_s: float = 1.0) -> None:
        self.requests = requests
        self.window_s = window_s
        self._times: list[float] = []
        self._lock = threading.Lock()
        self.refused = 0

    def set(self, requests: int | None, window_s: float = 1.0) -> None:
        with self._lock:
            self.requests = requests
            self.window_s = window_s
            self._times.clear()

    def take(self, now: float | None = None) -> float | None:
        """None when the request may go on, else how long until it could."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.requests is None:
                return None
            cutoff = now - self.window_s
            times = self._times
            while times and times[0] <= cutoff:
                times.pop(0)
            if len(times) >= self.requests:
                self.refused += 1
                return max(0.0, times[0] + self.window_s - now)
            times.append(now)
            return None

    def remaining(self, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.requests is None:
                return None
            cutoff = now - self.window_s
            return self.requests - sum(1 for t in self._times if t > cutoff)


def retry_after_header(wait_s: float) -> tuple[str, str]:
    """Retry-After is whole seconds (RFC 9110); at least 1 so a client never spins."""
    return ("Retry-After", str(max(1, math.ceil(wait_s))))


# --- tokens ---------------------------------------------------------------------------


class Tokens:
    """Bearer tokens the platform issued, each with its expiry (wall clock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def issue(self, lifetime_s: float, prefix: str = "") -> str:
        token = prefix + secrets.token_urlsafe(24)
        with self._lock:
            self._expiry[token] = self._clock() + lifetime_s
            self.issued += 1
        return token

    def check(self, authorization: str | None) -> Literal["ok", "missing", "invalid", "expired"]:
        if not authorization or not authorization.startswith("Bearer "):
            return "missing"
        token = authorization[len("Bearer ") :].strip()
        with self._lock:
            expiry = self._expiry.get(token)
        if expiry is None:
            return "invalid"
        return "ok" if self._clock() < expiry else "expired"

    def expire_all(self) -> None:
        """Every token issued so far is expired from now on (the next call gets 401)."""
        with self._lock:
            now = self._clock()
            self._expiry = {t: min(e, now) for t, e in self._expiry.items()}

    def revoke(self, token: str) -> None:
        with self._lock:
            self._expiry.pop(token, None)


# --- faults ---------------------------------------------------------------------------

FaultKind = Literal["fail", "drop", "timeout", "malformed", "rate_limit", "after_write", "late"]


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int
    path: str | None
    method: str | None
    status: int = 500
    seconds: float = 0.0


class Faults:
    """Misbehaviour for the next `n` API requests whose path contains `path`
    (and whose method is `method`, when given); the oldest matching fault is taken.

    - `fail`: answer `status` without doing anything;
    - `drop`: close the connection without an answer, doing nothing;
    - `timeout`: hold the answer `seconds` (longer than the client waits), doing nothing;
    - `malformed`: do the request, answer 200 with a body that is not JSON;
    - `rate_limit`: answer the platform's throttling status with Retry-After `seconds`;
    - `after_write`: do the request (a write is stored), then drop the connection:
      the client cannot know whether it happened;
    - `late`: do the request, then hold the answer `seconds` (the client times out
      not knowing that it happened).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: list[_Fault] = []
        self.latency_s = 0.0  # added to every API request
        self.error_rate = 0.0  # fraction of requests answered 503 at random
        self.timeout_rate = 0.0  # fraction of requests held `timeout_s` at random
        self.late_rate = 0.0  # fraction done and then answered `timeout_s` late, at random
        self.timeout_s = 30.0
        self._random = random.Random(7)

    def next(
        self,
        kind: FaultKind,
        n: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        status: int = 500,
        seconds: float = 30.0,
    ) -> None:
        if n < 1:
            raise ValueError(f"n: {n} (at least 1)")
        with self._lock:
            self._queued.append(_Fault(kind, n, path, method, status, seconds))

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self.latency_s = 0.0
            self.error_rate = 0.0
            self.timeout_rate = 0.0
            self.late_rate = 0.0

    def take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._queued:
                if fault.path is not None and fault.path not in path:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._queued.remove(fault)
                return fault
            roll = self._random.random()
            if roll < self.error_rate:
                return _Fault("fail", 1, None, None, status=503)
            if roll < self.error_rate + self.timeout_rate:
                return _Fault("timeout", 1, None, None, seconds=self.timeout_s)
            if roll < self.error_rate + self.timeout_rate + self.late_rate:
                return _Fault("late", 1, None, None, seconds=self.timeout_s)
        return None


# --- webhooks ---------------------------------------------------------------------------


@dataclass
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None = None  # the subscriber's answer; None until sent, 0 when unreachable
    sent_at: float | None = None


class WebhookSender:
    """Sends webhook deliveries one at a time from a thread of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.timeout_s = 5.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.name}.webhooks")
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> Delivery:
        delivery = Delivery(url, body, headers)
        self.deliveries.append(delivery)
        self._queue.put(delivery)
        return delivery

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(d.status is not None for d in self.deliveries):
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            request = urllib.request.Request(  # noqa: S310 - the subscriber's own URL, http(s)
                delivery.url, data=delivery.body, headers=delivery.headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                    delivery.status = answer.status
            except urllib.error.HTTPError as exc:
                delivery.status = exc.code
            except (OSError, ValueError) as exc:
                log.info("%s: webhook to %s failed: %s", self.name, delivery.url, exc)
                delivery.status = 0
            delivery.sent_at = time.time()


# --- the base simulator ------------------------------------------------------------------


class PlatformSim:
    """A platform's HTTP API: faults, rate limit and call counts around `route`.

    What tests read and set while it runs: `faults`, `rate` (a `RateLimit`),
    `tokens` (`expire_all()`), `calls` (a Counter of (method, path) answered by
    `route`, the platform's own bill of API calls), `webhooks` (deliveries).
    """

    name = "platform"
    throttle_status = 429  # what the platform answers when the rate limit is hit

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.http = HttpSimServer(self.handle, host, port, name=f"{self.name}-sim")
        self.lock = threading.RLock()
        self.faults = Faults()
        self.rate = RateLimit()
        self.tokens = Tokens()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.webhooks = WebhookSender(f"{self.name}-sim")

    # --- lifecycle ---

    @property
    def base_url(self) -> str:
        return self.http.base_url

    @property
    def running(self) -> bool:
        return self.http.running

    def start(self) -> PlatformSim:
        self.http.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self.http.stop()
        self.webhooks.stop()

    def __enter__(self) -> PlatformSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_calls(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    # --- requests ---

    def now(self) -> datetime:
        """The platform's clock (tests may replace it)."""
        return datetime.now(UTC)

    def handle(self, request: Request) -> Response:
        faults = self.faults
        if faults.latency_s > 0 and request.stopping.wait(faults.latency_s):
            return Response(0, drop=True)
        if self.is_open(request):
            return self.route(request)
        fault = faults.take(request.method, request.path)
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "fail":
            return self.error_response(fault.status, "simulated server error")
        if kind == "drop":
            return Response(0, drop=True)
        if fault is not None and kind == "timeout":
            return Response(0, drop=True, delay_s=fault.seconds)
        if fault is not None and kind == "rate_limit":
            return self.throttled(fault.seconds)
        wait = self.rate.take()
        if wait is not None:
            return self.throttled(wait)
        with self.lock:
            self.calls[(request.method, self.endpoint(request.path))] += 1
        response = self.route(request)
        if kind == "malformed":
            return Response(200, malformed(response.body))
        if kind == "after_write":
            return Response(0, drop=True)
        if fault is not None and kind == "late":
            return replace(response, delay_s=fault.seconds)
        return response

    def is_open(self, request: Request) -> bool:
        """Requests that faults and the rate limit leave alone (an operator's admin API)."""
        return False

    def endpoint(self, path: str) -> str:
        """The path with record ids taken out, for counting calls by endpoint."""
        return "/".join("{id}" if part.isdigit() else part for part in path.split("/"))

    def throttled(self, wait_s: float) -> Response:
        return self.error_response(
            self.throttle_status, "rate limit exceeded", [retry_after_header(wait_s)]
        )

    def error_response(
        self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return json_response(status, {"error": message}, headers)

    def route(self, request: Request) -> Response:
        raise NotImplementedError
