"""The room panel page in a real browser: Debian's Chromium through Playwright, the
daemon as a process with rooms, a real Mosquitto and the web server (TLS with its
self-signed certificate), bookings imported as the cloud would send them.

Assertions are on what the page shows, and wait for the gateway's pushes to
reach it (Playwright's `expect` watches the page, never the server).
"""

from __future__ import annotations

import http.client
import math
import os
import re
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect

from hwsim.broker import Mosquitto
from tests.browser import tablet_context
from tests.conftest import REPO
from tests.test_rooms import LoopThread, Site, wait_for
from tests.test_web import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

GRACE = "m-1002"  # Grace Brewster: resident, billing ok, PIN 2468
GRACE_PIN = "2468"
PUSH_S = 20  # a push reaches the page well within this (the phases are seconds apart)
STATIC = REPO / "edge" / "web" / "static"
PAGE_FILES = ("panel.html", "panel.js", "panel.css", "icon.svg")


def save_screenshot(page: Page, name: str) -> None:
    """docs/screenshots/<name>.png, only when EDGE_SCREENSHOTS=1 (for the docs)."""
    if os.environ.get("EDGE_SCREENSHOTS") != "1":
        return
    out = REPO / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    # Written here: given a path, Playwright writes through an executor thread on its
    # session-long loop, a thread the leak guard would rightly count against the test.
    (out / f"{name}.png").write_bytes(page.screenshot())


class PanelSite:
    """The rooms' site of tests/test_rooms.py with the web server on."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        # Grace may pay for a room: 10 credits of her own.
        for m in site.doc["members"]:
            if m["id"] == GRACE:
                m["credits"] = 10

    def start(self, tls: bool = True) -> PanelSite:
        web = f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {self.port}\n'
        if not tls:
            web += "tls = false\n"
            self.url = f"http://127.0.0.1:{self.port}"
        self.site.start(extra=web)
        return self

    @property
    def daemon(self) -> Any:
        return self.site.daemon

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        args = ["events", "--limit", "10000"] + (["--type", type_] if type_ else [])
        return list(self.daemon.ctl_json(*args))

    def pair(self, page: Page, room: str = "ada") -> dict[str, Any]:
        """Pair the way staff do: a code from edgectl, typed on the /pair page."""
        pairing: dict[str, Any] = self.daemon.ctl_json("panel", "pair", room)
        assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", pairing["code"])
        page.goto(f"{self.url}/pair")
        page.fill("#code", pairing["code"].lower())  # typed in any case
        page.click("#pair-submit")
        page.wait_for_url(f"{self.url}/panel/{room}")
        return pairing

    def logged(self, text: str) -> None:
        wait_for(f"{text!r} in the daemon's log", lambda: text in self.daemon.output(), timeout=10)

    def http(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
        """A request from outside the browser (trusting the daemon's own certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.daemon.state_dir / "web" / "cert.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=ctx)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()


@pytest.fixture
def panel_site(tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Any) -> Iterator[PanelSite]:
    with LoopThread() as loop:
        s = Site(tmp_path, mosquitto, loop, daemon_factory)
        try:
            yield PanelSite(s)
        finally:
            s.stop()


@pytest.fixture
def tablet(browser: Browser) -> Iterator[Page]:
    """A page on a 10" touch tablet in landscape (self-signed certificates accepted)."""
    with tablet_context(browser) as context:
        page = context.new_page()
        page.emulate_media(reduced_motion="reduce")  # screenshots without a transition
        yield page


def status(page: Page, word: str, tone: str, timeout_s: float = PUSH_S) -> None:
    expect(page.locator("#status-word")).to_have_text(word, timeout=timeout_s * 1000)
    expect(page.locator("body")).to_have_class(re.compile(rf"\btone-{tone}\b"))


def type_pin(page: Page, pin: str) -> None:
    for digit in pin:
        page.tap(f'#pad button[data-key="{digit}"]')
    expect(page.locator("#pin-dots")).to_have_text("●" * len(pin))
    page.tap("#pin-ok")


def result(page: Page, title: str) -> str:
    expect(page.locator("#result-title")).to_have_text(title, timeout=PUSH_S * 1000)
    return page.locator("#result-detail").inner_text()


def test_a_bookings_life_on_the_panel(panel_site: PanelSite, tablet: Page) -> None:
    ps = panel_site.start()
    ps.pair(tablet)
    status(tablet, "Free", "free")
    expect(tablet.locator("#room-name")).to_have_text("Ada room")
    expect(tablet.locator("#status-detail")).to_have_text("No booking in the next 4 hours")
    expect(tablet.locator("#act-book")).to_be_visible()
    save_screenshot(tablet, "panel-free")

    start = math.ceil(time.time()) + 4
    ps.site.book("b-web", start, start + 16, member=GRACE)
    # Before its start: still free, the booking on the timeline (times only, no names).
    expect(tablet.locator(".tl-block")).to_have_count(1, timeout=PUSH_S * 1000)
    assert re.fullmatch(r"\d\d:\d\d–\d\d:\d\d", tablet.locator(".tl-block").inner_text())
    assert "Grace" not in tablet.inner_text("body")
    # It starts: waiting for a check-in, in amber, with a Check in button.
    status(tablet, "Check in", "wait")
    expect(tablet.locator("#status-detail")).to_contain_text("released in 1 min")
    expect(tablet.locator("#act-book")).to_be_hidden()
    tablet.tap("#act-check_in")
    expect(tablet.locator("#sheet-title")).to_have_text("Check in")
    type_pin(tablet, GRACE_PIN)
    assert "until" in result(tablet, "Checked in")
    tablet.tap("#sheet-close")
    status(tablet, "In use", "busy")
    expect(tablet.locator("#status-detail")).to_contain_text("min left")
    expect(tablet.locator("#act-extend")).to_be_visible()
    expect(tablet.locator("#act-end")).to_be_visible()
    [checked] = ps.events("booking.checked_in")
    assert checked["details"]["booking"] == "b-web"
    assert checked["holder"] == GRACE
    save_screenshot(tablet, "panel-in-use")
    # The warning before the end, then the end and the grace period, then free.
    status(tablet, "Ending soon", "busy")
    expect(tablet.locator("body")).to_have_class(re.compile(r"\bwarning\b"))
    save_screenshot(tablet, "panel-ending")
    status(tablet, "Ended", "busy")
    status(tablet, "Free", "free")
    expect(tablet.locator(".tl-block")).to_have_count(0)


def test_book_now_is_paid_in_credits(panel_site: PanelSite, tablet: Page) -> None:
    ps = panel_site.start()
    ps.pair(tablet)
    status(tablet, "Free", "free")
    # The choices within the room's limit, each with its price (2 credits an hour).
    tablet.tap("#act-book")
    choices = tablet.locator("#minutes button")
    expect(choices).to_have_count(3)
    assert [c.inner_text().split("\n") for c in choices.all()] == [
        ["15 min", "1 credit"],
        ["30 min", "1 credit"],
        ["60 min", "2 credits"],
    ]
    tablet.tap('#minutes button[data-minutes="30"]')
    expect(tablet.locator("#sheet-title")).to_have_text("Book 30 min")
    # A wrong PIN: refused in words, nothing booked, nothing paid.
    type_pin(tablet, "0000")
    assert "not recognised" in result(tablet, "Not accepted")
    assert not ps.events("booking.created")
    assert not ps.events("usage.credits")
    tablet.tap("#sheet-close")
    expect(tablet.locator("#sheet")).to_be_hidden()

    # A badge instead: the page counts down while the reader waits; Cancel lets go.
    tablet.tap("#act-book")
    tablet.tap('#minutes button[data-minutes="30"]')
    tablet.tap("#use-badge")
    expect(tablet.locator("#step-badge")).to_be_visible()
    expect(tablet.locator("#badge-count")).to_have_text(re.compile(r"^(30|29|28)$"))
    tablet.tap("#sheet-close")
    expect(tablet.locator("#sheet")).to_be_hidden()
    # The same on the socket: the wait, then its end when cancelled.
    waited = socket_session(
        tablet,
        ps.port,
        [
            {"type": "request", "id": 5, "op": "book", "minutes": 30, "badge": True},
            {"type": "cancel", "id": 5},
        ],
    )
    assert waited == [
        {"type": "badge", "id": 5, "waiting": True, "seconds": 30.0},
        {"type": "badge", "id": 5, "waiting": False},
        {
            "type": "result",
            "id": 5,
            "ok": False,
            "error": "cancelled",
            "message": "cancelled at the panel",
        },
    ]
    assert not ps.events("booking.created")

    tablet.tap("#act-book")
    tablet.tap('#minutes button[data-minutes="30"]')
    type_pin(tablet, GRACE_PIN)
    assert "1 credit charged to you." in result(tablet, "Booked")
    [paid] = ps.events("usage.credits")
    assert paid["holder"] == GRACE
    assert paid["details"]["credits"] == 1
    assert paid["details"]["minutes"] == 30
    assert paid["details"]["reason"] == "book"
    assert paid["details"]["source"] == "member"
    tablet.tap("#sheet-close")
    status(tablet, "In use", "busy")

    # Extend, paid too; then end: the room is free again.
    tablet.tap("#act-extend")
    tablet.tap('#minutes button[data-minutes="15"]')
    type_pin(tablet, GRACE_PIN)
    assert "1 credit charged to you." in result(tablet, "Extended")
    assert len(ps.events("usage.credits")) == 2
    tablet.tap("#sheet-close")
    tablet.tap("#act-end")
    type_pin(tablet, GRACE_PIN)
    result(tablet, "Meeting ended")
    status(tablet, "Free", "free")
    [ended] = ps.events("booking.ended_early")
    assert ended["holder"] == GRACE


def test_a_paired_token_opens_its_own_room_only(panel_site: PanelSite, tablet: Page) -> None:
    ps = panel_site.start()
    ps.pair(tablet)
    status(tablet, "Free", "free")
    before = ps.events()
    api = tablet.request
    # Its own room's page API answers; the other room's refuses.
    assert api.get(f"{ps.url}/api/panel/ada").status == 200
    other = api.get(f"{ps.url}/api/panel/babbage")
    assert other.status == 403
    assert "paired to 'ada', not 'babbage'" in other.text()
    # The other room's socket refuses it too, and its page says so.
    code = tablet.evaluate(
        """url => new Promise(done => {
            const ws = new WebSocket(url);
            ws.onopen = () => done("opened");
            ws.onclose = (ev) => done(ev.code);
        })""",
        f"wss://127.0.0.1:{ps.port}/api/panel/babbage/ws",
    )
    assert code == 1006  # refused before the upgrade
    ps.logged("GET /api/panel/babbage/ws from 127.0.0.1 refused: 403")
    tablet.goto(f"{ps.url}/panel/babbage")
    expect(tablet.locator("#unpaired")).to_be_visible()
    expect(tablet.locator("#unpaired-why")).to_contain_text("paired to 'ada', not 'babbage'")
    # Console APIs: never 200 (there is no console session behind a panel token).
    for method, path in (
        ("GET", "/api/doors"),
        ("GET", "/api/events"),
        ("GET", "/api/users"),
        ("GET", "/api/rooms"),
        ("POST", "/api/doors/front/unlock"),
        ("POST", "/api/doors/room-ada/unlock"),
        ("POST", "/api/lockdown"),
    ):
        r = api.fetch(f"{ps.url}{path}", method=method, data="{}")
        assert r.status in (401, 403, 404, 405), (method, path, r.status)
    # No unlock through its own socket either: the ops are the four of a panel.
    tablet.goto(f"{ps.url}/panel/ada")
    status(tablet, "Free", "free")
    answers = socket_session(
        tablet,
        ps.port,
        [
            {"type": "request", "id": 1, "op": "unlock", "door": "room-ada"},
            {"type": "request", "id": 2, "op": "lockdown", "on": False},
        ],
    )
    assert [a["type"] for a in answers] == ["error", "error"]
    assert "op: one of check_in, book, extend, end, not 'unlock'" in answers[0]["message"]
    assert ps.events() == before  # no door.unlocked, nothing at all


# Runs in the page: open a socket, send the messages and a last ping, collect the
# answers until that ping's pong (or the close, or 10 s).
SOCKET_SESSION = """([url, messages]) => new Promise((done) => {
    const got = [];
    const ws = new WebSocket(url);
    let first = true;
    let pongs = 0;
    const pings = messages.filter((m) => m && m.type === "ping").length + 1;
    const timer = setTimeout(() => done([...got, {type: "timeout"}]), 10000);
    const finish = (extra) => {
        clearTimeout(timer);
        done([...got, ...extra]);
    };
    ws.onmessage = (ev) => {
        if (first) {  // the state: the socket is the gateway's now
            first = false;
            for (const m of messages) {
                ws.send(typeof m === "string" ? m : JSON.stringify(m));
            }
            ws.send(JSON.stringify({type: "ping"}));
            return;
        }
        const msg = JSON.parse(ev.data);
        if (msg.type === "pong" && ++pongs === pings) {
            ws.onclose = null;
            ws.close();
            finish([]);
            return;
        }
        got.push(msg);
    };
    ws.onclose = (ev) => finish([{type: "closed", code: ev.code}]);
})"""


def socket_session(page: Page, port: int, messages: list[Any], room: str = "ada") -> list[Any]:
    """Open the room's socket from the page (its cookie, its origin), send each
    message (a string as is, anything else as JSON), and return what came back
    after the first state. Answers come in order, so the last pong ends it."""
    url = f"wss://127.0.0.1:{port}/api/panel/{room}/ws"
    return list(page.evaluate(SOCKET_SESSION, [url, messages]))


def test_revoking_the_pairing_disconnects_the_open_page(
    panel_site: PanelSite, tablet: Page
) -> None:
    ps = panel_site.start()
    pairing = ps.pair(tablet)
    status(tablet, "Free", "free")
    listed = ps.daemon.ctl_json("panel", "list")
    assert [(p["id"], p["state"]) for p in listed] == [(pairing["id"], "paired")]
    ps.daemon.ctl("panel", "revoke", pairing["id"])
    expect(tablet.locator("#unpaired")).to_be_visible(timeout=PUSH_S * 1000)
    expect(tablet.locator("#unpaired-why")).to_have_text("Its pairing was revoked on the gateway.")
    # And after a reload: the token is refused for good.
    tablet.reload()
    expect(tablet.locator("#unpaired")).to_be_visible()
    expect(tablet.locator("#unpaired-why")).to_have_text("This screen's pairing was revoked.")
    assert tablet.request.get(f"{ps.url}/api/panel/ada").status == 401


def test_the_offline_banner_follows_the_gateway(panel_site: PanelSite, tablet: Page) -> None:
    ps = panel_site.start()
    tablet.clock.install()  # the page's timers: real time, until the test moves them
    ps.pair(tablet)
    status(tablet, "Free", "free")
    banner = tablet.locator("#banner")
    expect(banner).to_be_hidden()
    # Walked away mid-way: after 30 s without a touch, back to the idle screen.
    tablet.tap("#act-book")
    tablet.tap('#minutes button[data-minutes="15"]')
    tablet.tap('#pad button[data-key="4"]')
    tablet.clock.fast_forward(29_000)
    expect(tablet.locator("#sheet")).to_be_visible()
    tablet.clock.fast_forward(2_000)
    expect(tablet.locator("#sheet")).to_be_hidden()
    expect(banner).to_be_hidden()
    tablet.tap("#act-book")  # and nothing typed is left over
    tablet.tap('#minutes button[data-minutes="15"]')
    expect(tablet.locator("#pin-dots")).to_have_text("")
    tablet.tap("#sheet-close")
    # The gateway stops: the socket drops and the page says so at once.
    ps.daemon.stop()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Offline")
    expect(tablet.locator("body")).to_have_class(re.compile(r"\boffline\b"))
    ps.daemon.start()
    expect(banner).to_be_hidden(timeout=30_000)  # it dials again by itself
    status(tablet, "Free", "free")

    # A gateway that hangs (the socket stays open, nothing answers): pongs stop.
    os.kill(ps.daemon.proc.pid, signal.SIGSTOP)
    try:
        tablet.clock.run_for(31_000)  # three ping intervals: two unanswered
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Offline")
    finally:
        os.kill(ps.daemon.proc.pid, signal.SIGCONT)
    tablet.clock.run_for(2_000)  # the first retry
    expect(banner).to_be_hidden(timeout=PUSH_S * 1000)


def test_the_installed_app_opens_offline(panel_site: PanelSite, tablet: Page) -> None:
    # Chromium registers no service worker behind a certificate it does not trust,
    # whatever the context ignores; plain HTTP on loopback is a secure context.
    ps = panel_site.start(tls=False)
    ps.pair(tablet)
    status(tablet, "Free", "free")
    # Polled from here: Playwright's wait_for_function builds its predicate with
    # eval inside the page, which the page's CSP (script-src 'self') refuses.
    wait_for(
        "the service worker to control the page",
        lambda: tablet.evaluate("navigator.serviceWorker.controller !== null"),
        timeout=PUSH_S,
    )
    ps.daemon.stop()
    tablet.reload()  # the page and its files come from the worker's cache
    expect(tablet.locator("#room-name")).to_have_text("Ada room")
    expect(tablet.locator("#status-word")).to_have_text("Free")  # as last known...
    expect(tablet.locator("body")).to_have_class(re.compile(r"\boffline\b"))  # ...greyed
    expect(tablet.locator("#banner")).to_contain_text("Offline")
    ps.daemon.start()
    expect(tablet.locator("#banner")).to_be_hidden(timeout=30_000)
    status(tablet, "Free", "free")


def test_bad_input_is_refused_logged_and_changes_nothing(
    panel_site: PanelSite, tablet: Page
) -> None:
    ps = panel_site.start()
    ps.pair(tablet)
    status(tablet, "Free", "free")
    before = len(ps.events())

    answers = socket_session(
        tablet,
        ps.port,
        [
            "not json",
            "[1, 2]",
            {"type": "dance"},
            {"type": "request", "op": "book", "minutes": 30, "pin": GRACE_PIN},
            {"type": "request", "id": "7", "op": "book", "pin": GRACE_PIN},
            {"type": "request", "id": 8, "op": "book", "minutes": 30, "card": "raw:0A0B0C0D"},
            {"type": "request", "id": 9, "op": "book", "minutes": 9999, "pin": GRACE_PIN},
            {"type": "cancel", "id": 10},
            {"type": "ping"},
        ],
    )
    errors = [a.get("message", "") for a in answers if a["type"] == "error"]
    assert errors[0].startswith("not JSON")
    assert errors[1] == "a message is a JSON object"
    assert errors[2] == "unknown message type 'dance' (expected request, cancel or ping)"
    assert errors[3] == "id: a request needs a whole-number id"
    assert errors[4] == "id: a request needs a whole-number id"
    results = {a["id"]: a for a in answers if a["type"] == "result"}
    assert results[8]["error"] == "not_authorised"  # a card is never taken from the page
    assert results[9]["error"] == "bad_request"
    assert "minutes: must be between 5 and" in results[9]["message"]
    assert {"type": "pong"} in answers
    ps.logged("web: panel ada from 127.0.0.1: refused message: not JSON")
    ps.logged("refused message: unknown message type 'dance'")
    # Over 4 KB: the socket is closed (1009: message too big), and that is logged.
    [closed] = socket_session(tablet, ps.port, ["x" * 5000])
    assert closed == {"type": "closed", "code": 1009}
    ps.logged("web: panel ada from 127.0.0.1: socket error")

    # A wrong token: the page says it is not paired, the gateway logs the refusal.
    tablet.context.add_cookies([{"name": "edge_panel", "value": "not-a-token", "url": ps.url}])
    tablet.reload()
    expect(tablet.locator("#unpaired")).to_be_visible()
    expect(tablet.locator("#unpaired-why")).to_have_text("Unknown token.")
    ps.logged("GET /api/panel/ada/ws from 127.0.0.1 refused: 401 unknown token")
    # A wrong pairing code.
    tablet.goto(f"{ps.url}/pair")
    tablet.fill("#code", "AAAA-BBBB")
    tablet.click("#pair-submit")
    expect(tablet.locator("#pair-error")).to_have_text(
        "That code is unknown or expired. Ask for a new one."
    )
    ps.logged("POST /api/pair from 127.0.0.1 refused: 401 unknown or expired pairing code")

    # Cross-origin: a page of another site opening the socket (its browser sends
    # that site's Origin, and no cookie: SameSite), and a client sending an Origin.
    # (The panel's own pages could not even try: their CSP allows 'self' only.)
    other = "https://localhost:1"  # local too, or Chromium's local-network checks stop it first
    tablet.route(
        f"{other}/",
        lambda route: route.fulfill(body="<!doctype html><title>elsewhere</title>"),
    )
    tablet.context.grant_permissions(["local-network-access"], origin=other)
    tablet.goto(f"{other}/")
    code = tablet.evaluate(
        """url => new Promise(done => {
            const ws = new WebSocket(url);
            ws.onopen = () => done("opened");
            ws.onclose = (ev) => done(ev.code);
        })""",
        f"wss://127.0.0.1:{ps.port}/api/panel/ada/ws",
    )
    assert code == 1006
    ps.logged(f"GET /api/panel/ada/ws from 127.0.0.1 refused: 403 cross-site request from {other}")
    upgrade = {
        "Origin": "https://evil.example",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert ps.http("/api/panel/ada/ws", headers=upgrade) == 403
    ps.logged("refused: 403 cross-site request from https://evil.example refused")
    assert len(ps.events()) == before


def test_page_weight_and_no_inline_code() -> None:
    """The panel's files within budget; nothing the CSP would refuse."""
    weight = sum((STATIC / name).stat().st_size for name in PAGE_FILES)
    assert weight <= 150 * 1024, weight
    for name in ("panel.html", "pair.html"):
        html = (STATIC / name).read_text()
        assert "<style" not in html
        assert " style=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "another origin"
        assert not re.search(r"\son[a-z]+=", html), "an inline handler"
