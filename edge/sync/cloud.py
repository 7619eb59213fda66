"""The cloud's HTTP API (`edge-sync/1`), as blocking calls for a worker thread.

Every call has a connect and a read timeout, verifies TLS (against the
configured CA bundle, else the system's), and carries the bearer token. What
can go wrong is a `CloudError` whose `kind` tells the caller what to do:
`auth` (401/403: stop and raise an alarm), `gone` (410: take a snapshot),
`retry` (5xx, 429, timeouts, dropped connections, malformed bodies: back off,
honouring `retry_after`), `refused` (4xx the cloud will answer the same way
again).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import requests

from edge.atomicfile import atomic_writer

ErrorKind = Literal["auth", "gone", "retry", "refused"]
CHUNK = 1 << 16


class CloudError(Exception):
    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reply:
    body: Any
    server_time: float | None  # the response's Date header, for the clock check


def _retry_after(r: requests.Response) -> float | None:
    value = r.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_time(r: requests.Response) -> float | None:
    value = r.headers.get("Date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class CloudClient:
    def __init__(
        self,
        base_url: str,
        site: str,
        token: str,
        timeout_s: float,
        ca_bundle: Path | None = None,
    ) -> None:
        self.base = base_url.rstrip("/") + f"/sites/{site}"
        self.timeout = (timeout_s, timeout_s)
        self.session = requests.Session()
        # Given with each request: a session's `verify` loses to REQUESTS_CA_BUNDLE
        # and CURL_CA_BUNDLE in the environment (psf/requests#3829), and the
        # configured bundle must win.
        self.verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "edge-gateway (edge-sync/1)"
        # Set by the daemon when it stops: a snapshot download ends at its next chunk.
        self.cancelled = threading.Event()

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        url = self.base + path
        try:
            r = self.session.request(method, url, timeout=self.timeout, verify=self.verify, **kw)
        except requests.exceptions.SSLError as exc:
            raise CloudError("retry", f"{what}: TLS verification failed: {exc}") from None
        except requests.exceptions.Timeout:
            raise CloudError("retry", f"{what}: no answer within {self.timeout[1]:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise CloudError("retry", f"{what}: cannot connect: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise CloudError("retry", f"{what}: {_short(exc)}") from None
        if r.status_code == 200:
            return r
        detail = _error_text(r)
        r.close()
        if r.status_code in (401, 403):
            raise CloudError(
                "auth",
                f"{what}: the cloud refused this gateway's token (HTTP {r.status_code}{detail})",
            )
        if r.status_code == 410:
            raise CloudError("gone", f"{what}: the cursor is too old (HTTP 410)")
        if r.status_code in (429, 503) or r.status_code >= 500:
            raise CloudError(
                "retry", f"{what}: HTTP {r.status_code}{detail}", retry_after=_retry_after(r)
            )
        raise CloudError("refused", f"{what}: HTTP {r.status_code}{detail}")

    def _json(self, r: requests.Response, what: str) -> Any:
        try:
            content = r.content
        except requests.exceptions.RequestException as exc:
            raise CloudError("retry", f"{what}: the answer is not JSON: {_short(exc)}") from None
        return decode_json(content, what)

    def snapshot(self, dest: Path) -> Reply:
        """Stream the snapshot into `dest`, which appears only whole and durable;
        a cut-off body is an error (and leaves no `dest`)."""
        what = "snapshot"
        r = self._request("GET", "/snapshot", what, stream=True)
        try:
            expected = r.headers.get("Content-Length")
            size = 0
            with atomic_writer(dest, 0o600) as f:
                for chunk in r.iter_content(CHUNK):
                    if self.cancelled.is_set():
                        raise CloudError("retry", f"{what}: cancelled (the gateway is stopping)")
                    f.write(chunk)
                    size += len(chunk)
                if expected is not None and size != int(expected):
                    raise CloudError("retry", f"{what}: cut off after {size} of {expected} bytes")
        except requests.exceptions.RequestException as exc:
            raise CloudError("retry", f"{what}: transfer failed: {_short(exc)}") from None
        finally:
            r.close()
        return Reply(None, _server_time(r))

    def changes(self, since: str, limit: int) -> Reply:
        what = "changes"
        r = self._request("GET", "/changes", what, params={"since": since, "limit": limit})
        body = self._json(r, what)
        check_changes_page(body, what)
        return Reply(body, _server_time(r))

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        what = "events"
        data = json.dumps({"events": events}).encode()
        r = self._request(
            "POST", "/events", what, data=data, headers={"Content-Type": "application/json"}
        )
        body = self._json(r, what)
        if not isinstance(body, dict):
            raise CloudError("retry", f"{what}: the answer is not an object")
        accepted = body.get("accepted", [])
        rejected = body.get("rejected", [])
        if not isinstance(accepted, list) or not all(isinstance(i, str) for i in accepted):
            raise CloudError("retry", f"{what}: accepted: not an array of ids")
        if not isinstance(rejected, list) or not all(
            isinstance(x, dict) and isinstance(x.get("id"), str) for x in rejected
        ):
            raise CloudError("retry", f"{what}: rejected: not an array of {{id, error}}")
        return Reply(body, _server_time(r))


def decode_json(content: bytes, what: str) -> Any:
    """An answer's body as JSON (UTF-8, -16 or -32, as `json.loads` detects it)."""
    try:
        return json.loads(content)
    except RecursionError:
        # json's C scanner gives up on deep nesting with RecursionError, not ValueError.
        raise CloudError("retry", f"{what}: the answer is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise CloudError("retry", f"{what}: the answer is not JSON: {_short(exc)}") from None


def check_changes_page(body: Any, what: str = "changes") -> None:
    """A page of changes has `changes` (an array), `cursor` and maybe `more`."""
    if not isinstance(body, dict):
        raise CloudError("retry", f"{what}: the answer is not an object")
    if not isinstance(body.get("changes"), list):
        raise CloudError("retry", f"{what}: changes: missing or not an array")
    cursor = body.get("cursor")
    if not isinstance(cursor, str) or not cursor:
        raise CloudError("retry", f"{what}: cursor: missing or not a string")
    if not isinstance(body.get("more", False), bool):
        raise CloudError("retry", f"{what}: more: not a boolean")


def _error_text(r: requests.Response) -> str:
    try:
        body = r.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str) and err:
            return f": {err[:200]}"
    return ""


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 nests its reasons; the OS error at the bottom is the useful part.
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0)
    return text[:300]
