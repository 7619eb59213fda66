"""Shared fixtures: the example site, an index built through the real import
path, a daemon run as a real process, and a guard against leaked threads,
child processes and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from edge.config import parse_config
from edge.gateway import Gateway
from edge.secrets import write_secret
from edge.site.importer import commit_ops, stage_snapshot
from edge.site.index import load_index
from edge.site.model import SiteIndex
from edge.site.store import Store
from hwsim.broker import Mosquitto
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, reference_monday

REPO = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Berlin")
T = TypeVar("T")

# A fixed Monday keeps every test's calendar the same, whatever today is.
DAY = reference_monday(date(2026, 11, 16))


def at(day: date, hhmm: str, tz: ZoneInfo = TZ) -> float:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, dtime(h, m), tzinfo=tz).timestamp()


# --- leak guard -------------------------------------------------------------


def _children() -> set[int]:
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.add(int(entry))
    return kids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves threads or child processes behind."""
    threads_before = set(threading.enumerate())
    kids_before = _children()
    yield
    deadline = time.monotonic() + 5
    while True:
        threads = {t for t in threading.enumerate() if t not in threads_before and t.is_alive()}
        kids = _children() - kids_before
        if not threads and not kids:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pytest.fail(
        f"test leaked threads {sorted(t.name for t in threads)} or child processes {sorted(kids)}"
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, but fail when the coroutine leaves tasks running."""

    async def guarded() -> T:
        result = await coro
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if leaked:
            for t in leaked:
                t.cancel()
            raise AssertionError(f"leaked tasks: {[t.get_name() for t in leaked]}")
        return result

    return asyncio.run(guarded())


def raw_replies(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send raw bytes to an admin socket, then read its replies until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.settimeout(30)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)  # the server may close before it has read it all
            s.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):  # what was unread on its side
            while chunk := s.recv(65536):
                received += chunk
    return [json.loads(line) for line in received.splitlines()]


# --- sites --------------------------------------------------------------------


@pytest.fixture
def example_doc() -> dict[str, Any]:
    doc, _ = example_site(DAY)
    return doc


async def import_doc(state_dir: Path, doc: dict[str, Any]) -> SiteIndex:
    """Import through the real path (stream, validate, stage, flip, load)."""
    path = state_dir / "snapshot.json"
    path.write_text(json.dumps(doc))
    store = Store(state_dir / "gateway.db")
    await store.start()
    try:
        staged = await stage_snapshot(store, path, doc["site"]["id"])
        await store.write(commit_ops(staged))
    finally:
        await store.stop()
    return load_index(state_dir / "gateway.db", staged.gen)


def index_of(tmp_path: Path, doc: dict[str, Any]) -> SiteIndex:
    state_dir = tmp_path / f"state-{time.monotonic_ns()}"
    state_dir.mkdir()
    return run_async(import_doc(state_dir, doc))


@pytest.fixture
def example_index(tmp_path: Path, example_doc: dict[str, Any]) -> SiteIndex:
    return index_of(tmp_path, example_doc)


def gateway_config(site: str = "mitte") -> Any:
    return parse_config(f'[site]\nid = "{site}"\n')


async def started_gateway(state_dir: Path, doc: dict[str, Any] | None = None) -> Gateway:
    write_secret(state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    gw = Gateway(gateway_config(), state_dir)
    await gw.start()
    if doc is not None:
        path = state_dir / "import.json"
        path.write_text(json.dumps(doc))
        await gw.updates.import_snapshot(path)
    return gw


# --- the daemon as a process ------------------------------------------------------


class Daemon:
    """`edge-gateway run` in a subprocess, driven with the real `edgectl`."""

    def __init__(self, state_dir: Path, config: Path, env: dict[str, str] | None = None):
        self.state_dir = state_dir
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    # What the daemon's command runs under (a sandbox, in tests/test_exposure.py).
    wrapper: tuple[str, ...] = ()

    def start(self, wait: bool = True) -> Daemon:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "edge.ops.cli",
                "run",
                "--config",
                str(self.config),
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            r = self.ctl("status", "--json", check=False)
            if r.returncode == 0 and json.loads(r.stdout).get("ready"):
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout} s:\n{self.output()}")

    def ctl(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "edge.ops.edgectl", "--state-dir", str(self.state_dir), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"edgectl {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def ctl_json(self, *args: str, check: bool = True) -> Any:
        return json.loads(self.ctl(*args, "--json", check=check).stdout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(
        config_text: str | None = None,
        env: dict[str, str] | None = None,
        state_dir: Path | None = None,
        pin_key: bool = True,
    ) -> Daemon:
        state = state_dir or tmp_path / f"state{len(started)}"
        state.mkdir(parents=True, exist_ok=True)
        if pin_key:
            write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        config = tmp_path / f"config{len(started)}.toml"
        config.write_text(config_text or '[site]\nid = "mitte"\n[log]\nlevel = "info"\n')
        d = Daemon(state, config, env)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop(sig=9)


def copy_example_config(dest: Path) -> Path:
    target = dest / "config.example.toml"
    shutil.copy(REPO / "config.example.toml", target)
    return target


# --- an MQTT broker -----------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, killed at teardown."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- a browser --------------------------------------------------------------------
# Chromium starts once per session; each test gets a fresh context. Inside a
# browser test Playwright's loop is marked running from the point where `browser`
# or `page` is set up (tests/browser.py says why): a fixture that calls
# asyncio.run() must come before them in the test's arguments.

# Imported here, below the rest, so that this section is self-contained.
from typing import TYPE_CHECKING  # noqa: E402

from tests.browser import (  # noqa: E402
    VIEWPORT,
    BrowserUnavailable,
    SharedChromium,
    chromium_executable,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="session")
def chromium() -> Iterator[SharedChromium]:
    """The session's Chromium, launched once; tests use `browser` or `page`."""
    try:
        shared = SharedChromium(chromium_executable())
        shared.start()
    except BrowserUnavailable as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)  # not a skip: a suite without it is not green
    yield shared
    shared.stop()


@pytest.fixture
def browser(chromium: SharedChromium) -> Iterator[Browser]:
    """The session's Chromium, ready for this test's Playwright calls."""
    with chromium.in_use() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own (self-signed certificates accepted), closed
    after the test."""
    context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
    try:
        yield context.new_page()
    finally:
        context.close()
