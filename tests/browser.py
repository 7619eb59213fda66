"""Browser tests: Debian's Chromium, driven by Playwright's sync API.

The browser is the system's `chromium` (scripts/bootstrap installs it); the
browser build that `playwright install` would download is never used, since not
every machine can reach it.

Playwright's sync API runs its event loop in a greenlet of the main thread and,
between two calls, leaves that loop marked as the thread's running loop
(wait_for_future() in playwright/_impl/_greenlets.py). asyncio.run() refuses to
start while it is marked, and many tests here use asyncio.run() (run_async in
conftest.py). So the loop is marked only while a browser test runs
(`SharedChromium.in_use`), and unmarked ("parked") between such tests; nothing
runs on it then, as the loop only turns during a Playwright call.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        CDPSession,
        Page,
        Playwright,
        ViewportSize,
    )

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}  # a 10" tablet in landscape, too
# Flags on top of Playwright's own (which already turn off background
# networking, component updates and /dev/shm use): no GPU in a container, and
# nothing that tries to reach the network, which is closed on test machines.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--disable-sync"]


class BrowserUnavailable(Exception):
    """Chromium or Playwright is missing; the message says how to get it."""


def chromium_executable() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return str(DEBIAN_CHROMIUM)
    raise BrowserUnavailable(
        f"chromium is not on PATH nor at {DEBIAN_CHROMIUM}: run ./scripts/bootstrap, "
        "which installs Debian's chromium package (never `playwright install`)"
    )


class SharedChromium:
    """One headless Chromium for the whole test session."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise BrowserUnavailable(
                f"playwright is not installed ({exc}): run ./scripts/bootstrap"
            ) from exc
        self._playwright = sync_playwright().start()
        self._loop = asyncio.get_running_loop()  # Playwright's, marked running by start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable,
                headless=True,
                # Playwright adds --no-sandbox unless this is true. Root cannot
                # use Chromium's sandbox; everyone else keeps it.
                chromium_sandbox=os.geteuid() != 0,
                args=CHROMIUM_ARGS,
            )
        except BaseException:
            self._playwright.stop()
            self._playwright = None
            raise
        asyncio._set_running_loop(None)  # parked; see the module's docstring

    def stop(self) -> None:
        if self._playwright is None:
            return
        asyncio._set_running_loop(self._loop)
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._playwright.stop()  # closes the loop and unmarks it
            self._playwright = self._browser = self._loop = None

    @contextmanager
    def in_use(self) -> Iterator[Browser]:
        """The browser, with Playwright's loop marked running while it is used."""
        if self._browser is None or self._loop is None:
            raise RuntimeError("SharedChromium.in_use() before start()")
        other = asyncio._get_running_loop()
        if other is not None and other is not self._loop:
            raise RuntimeError(
                "an asyncio loop is running in this thread; Playwright's sync API cannot "
                "run inside it (is this test or one of its fixtures async?)"
            )
        asyncio._set_running_loop(self._loop)
        try:
            yield self._browser
        finally:
            asyncio._set_running_loop(None)


def tablet_context(browser: Browser) -> BrowserContext:
    """A context like a 10" tablet in landscape; the caller closes it
    (`with tablet_context(browser) as context:`)."""
    return browser.new_context(
        viewport=VIEWPORT,
        has_touch=True,
        device_scale_factor=1.5,
        ignore_https_errors=True,  # the gateway's certificate is self-signed
    )


def throttle_cpu(page: Page, rate: float) -> CDPSession:
    """Slow the page's JavaScript down `rate` times (1 is no throttling), as
    DevTools' "CPU throttling" does. The returned session holds the setting:
    detaching it ends the throttling, closing the page's context does too."""
    session = page.context.new_cdp_session(page)
    session.send("Emulation.setCPUThrottlingRate", {"rate": rate})
    return session
