"""HTTP to a platform's API: our own rate budget, the platform's throttling,
retries, and a clear line between "not done" and "outcome unknown".

- Every request waits for the bridge's own budget (a token bucket of
  `requests_per_s`), so a full read never bursts into the platform's limit.
- Throttling (429, 503, or the platform's own status such as Nexudus's 409
  with Retry-After) means nothing was done: the request waits Retry-After and
  goes again, reads and writes alike.
- A read that fails (connection, timeout, 5xx, a body that is not JSON) is
  retried with capped, jittered backoff, then raised as `Unavailable`.
- A write that fails that way raises `OutcomeUnknown` at once: the platform
  may have done it, so the caller looks it up before any retry.
- 401 goes to the platform's `reauthorize` once (an expired token), then is
  an error like any other 4xx (`Refused`, with the platform's words).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("bridge.http")


class PlatformError(Exception):
    """A request that did not succeed; the message says why in words."""


class Unavailable(PlatformError):
    """The platform could not be reached or kept failing (nothing is known to be done)."""


class OutcomeUnknown(PlatformError):
    """A write whose outcome is unknown (timeout, dropped connection, server error)."""


class Refused(PlatformError):
    """The platform answered a 4xx: the request is wrong or not allowed (`status`, `detail`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class BadReply(PlatformError):
    """A 2xx whose body is not what the documentation says."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise BadReply(f"the body is not JSON ({len(self.body)} bytes)") from None


@dataclass
class Stats:
    calls: int = 0
    throttled: int = 0
    failures: int = 0
    last_retry_after: float | None = None
    platform_remaining: dict[str, str] = field(default_factory=dict)  # rate headers as sent


class RateBudget:
    """`rate` requests a second, evenly spaced (a token bucket of one): a platform
    that counts requests in any window of a second never sees more than `rate`,
    where a bucket allowing bursts would overrun a sliding window."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = 1.0
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.paused_until = 0.0  # set from Retry-After: nobody goes before it

    def left(self) -> float:
        now = self._clock()
        return min(self.capacity, self._tokens + (now - self._stamp) * self.rate)

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


def retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default  # an HTTP date: rare for APIs; the backoff is as good


def backoff(attempt: int, low: float, high: float) -> float:
    """Capped exponential backoff with full jitter between low and the cap."""
    cap = min(high, low * 2.0**attempt)
    return low + random.random() * max(0.0, cap - low)


Authorize = Callable[[], Awaitable[dict[str, str]]]
Reauthorize = Callable[[], Awaitable[None]]


class PlatformHttp:
    def __init__(
        self,
        name: str,
        *,
        requests_per_s: float,
        timeout_s: float,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 300.0,
        throttle_statuses: tuple[int, ...] = (429, 503),
        read_attempts: int = 5,
    ) -> None:
        self.name = name
        self.budget = RateBudget(requests_per_s)
        self.timeout_s = timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.throttle_statuses = throttle_statuses
        self.read_attempts = read_attempts
        self.stats = Stats()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _throttled(self, reply: Reply) -> bool:
        if reply.status == 409:
            # Nexudus answers its rate limit with 409 and Retry-After; a 409
            # without Retry-After is a real conflict.
            return 409 in self.throttle_statuses and "Retry-After" in reply.headers
        return reply.status in self.throttle_statuses

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authorize: Authorize | None = None,
        reauthorize: Reauthorize | None = None,
    ) -> Reply:
        """One request with the rules above; a 2xx `Reply`, else one of the errors."""
        write = method != "GET"
        attempt = 0
        reauthorized = False
        while True:
            await self.budget.take()
            all_headers = dict(headers or {})
            if authorize is not None:
                all_headers.update(await authorize())
            try:
                reply = await self._send(method, url, params, json_body, form, all_headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.failures += 1
                what = f"{method} {_short(url)}: {_describe(exc, self.timeout_s)}"
                if write:
                    raise OutcomeUnknown(what) from None
                attempt += 1
                if attempt >= self.read_attempts:
                    raise Unavailable(what) from None
                await asyncio.sleep(backoff(attempt, self.backoff_min_s, self.backoff_max_s))
                continue
            if self._throttled(reply):
                self.stats.throttled += 1
                wait = retry_after(reply.headers, backoff(attempt, self.backoff_min_s, 30))
                self.stats.last_retry_after = wait
                self.budget.paused_until = max(self.budget.paused_until, time.monotonic() + wait)
                log.debug("%s: throttled (%s), waiting %.1f s", self.name, reply.status, wait)
                attempt += 1
                continue
            if reply.status == 401 and reauthorize is not None and not reauthorized:
                reauthorized = True
                await reauthorize()
                continue
            if 200 <= reply.status < 300:
                return reply
            detail = _detail(reply)
            if reply.status >= 500:
                self.stats.failures += 1
                what = f"{method} {_short(url)}: {reply.status} {detail}"
                if write:
                    raise OutcomeUnknown(what)
                attempt += 1
                if attempt >= self.read_attempts:
                    raise Unavailable(what)
                await asyncio.sleep(backoff(attempt, self.backoff_min_s, self.backoff_max_s))
                continue
            raise Refused(reply.status, detail)

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        form: Mapping[str, str] | None,
        headers: dict[str, str],
    ) -> Reply:
        if self._session is None:
            raise Unavailable(f"{self.name}: not started")
        self.stats.calls += 1
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        elif form is not None:
            kwargs["data"] = dict(form)
        async with self._session.request(method, url, **kwargs) as response:
            body = await response.read()
            reply = Reply(response.status, response.headers, body)
        remaining = {
            k.lower(): v for k, v in reply.headers.items() if "ratelimit-remaining" in k.lower()
        }
        if remaining:
            self.stats.platform_remaining = remaining
        return reply


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed without an answer"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    return str(exc) or type(exc).__name__


def _detail(reply: Reply) -> str:
    """The platform's own words from an error body, whatever its shape."""
    try:
        body = json.loads(reply.body)
    except (UnicodeDecodeError, ValueError):
        text = reply.body[:200].decode("utf-8", "replace").strip()
        return text or "(no body)"
    if isinstance(body, dict):
        for key in ("error_description", "Message", "message", "error"):
            value = body.get(key)
            if isinstance(value, list):
                return "; ".join(str(v) for v in value)
            if isinstance(value, str) and value:
                return value
    return json.dumps(body)[:200]
