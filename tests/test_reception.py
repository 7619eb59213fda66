"""The lobby's reception screen: the daemon as a process with the web server (TLS,
its self-signed certificate), a real Mosquitto, guest Wi-Fi, and guests announced
for today; its API over HTTPS, and the page in Debian's Chromium.

A guest's check-in is billed like a door's first entry: one `usage.guest_entry`
per guest and site-local day, whatever comes first and however often.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import requests
from playwright.sync_api import expect

from hwsim.broker import Mosquitto
from hwsim.cloud import API_PREFIX, CloudSim
from tests.browser import tablet_context
from tests.conftest import REPO, TZ
from tests.test_web import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T = TypeVar("T")
STATIC = REPO / "edge" / "web" / "static"
PAGE_FILES = ("reception.html", "reception.js", "reception.css", "icon.svg")
PASSWORD = "correct horse battery"
HOST = "m-1001"  # Ada Lovelace, of ACME GmbH
MARIE, MARIE_PIN = "g-20", "4711"
TOMORROW = "g-21"
LENA = "g-22"
DORA, DORA_PIN = "g-23", "5858"
ARRIVED = "edge/mitte/guests/+/arrived"


def instant(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat(timespec="seconds")


def guest(gid: str, name: str, start: float, end: float, pin: str | None = None) -> dict[str, Any]:
    from edge.access.cards import pin_hmac
    from hwsim.sitegen import EXAMPLE_PIN_KEY

    creds = []
    if pin is not None:
        creds.append(
            {
                "id": f"{gid}-pin",
                "type": "pin",
                "pin_hmac": pin_hmac(EXAMPLE_PIN_KEY, pin),
                "status": "active",
            }
        )
    return {
        "id": gid,
        "name": name,
        "host": HOST,
        "valid_from": instant(start),
        "valid_to": instant(end),
        "access": [{"group": "office-12", "schedule": "always"}],
        "credentials": creds,
    }


def todays_guests(doc: dict[str, Any], lena_leaves: float | None = None) -> dict[str, Any]:
    """The example site with guests of Ada's for the real today (the daemon's clock)."""
    now = time.time()
    tomorrow = datetime.fromtimestamp(now, TZ).date() + timedelta(days=1)
    nine = datetime.combine(tomorrow, datetime.min.time(), tzinfo=TZ).timestamp() + 9 * 3600
    doc = json.loads(json.dumps(doc))
    doc["guests"] += [
        guest(MARIE, "Marie Curie", now - 3600, now + 6 * 3600, MARIE_PIN),
        guest(TOMORROW, "Tomás Morrow", nine, nine + 8 * 3600, "9090"),
        guest(LENA, "Lena Leaving", now - 7200, lena_leaves or now + 7200),
        guest(DORA, "Dora Door", now - 3600, now + 6 * 3600, DORA_PIN),
    ]
    return doc


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def save_screenshot(page: Page, name: str) -> None:
    """docs/screenshots/reception-<name>.png, only when EDGE_SCREENSHOTS=1."""
    if os.environ.get("EDGE_SCREENSHOTS") != "1":
        return
    out = REPO / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    # The bytes, written here: with a path, Playwright writes the file from its loop's
    # executor, whose threads outlive the test (and the leak guard fails it).
    (out / f"reception-{name}.png").write_bytes(page.screenshot())


class Watcher:
    """A plain MQTT client of the hosts' topic, keeping every message."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="host-watcher")

        def on_message(_c: object, _u: object, msg: Any) -> None:
            self.got.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(ARRIVED, 1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Lobby:
    """The daemon with a reception screen's site, and HTTPS clients of it."""

    def __init__(self, daemon: Any, port: int, tmp: Path) -> None:
        self.d = daemon
        self.url = f"https://127.0.0.1:{port}"
        self.cert = str(daemon.state_dir / "web" / "cert.pem")
        self.tmp = tmp

    def load(self, doc: dict[str, Any]) -> None:
        snapshot = self.tmp / f"site-{time.monotonic_ns()}.json"
        snapshot.write_text(json.dumps(doc))
        self.d.ctl("import", str(snapshot))

    def client(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment replaces `verify`
        s.verify = self.cert
        return s

    def screen(self, room: str = "reception") -> requests.Session:
        """A client paired the way a tablet pairs: a code from edgectl, traded once."""
        code = self.d.ctl_json("panel", "pair", room)["code"]
        s = self.client()
        r = s.post(f"{self.url}/api/pair", json={"code": code}, timeout=30)
        assert r.status_code == 200, r.text
        return s

    def search(self, s: requests.Session, q: str) -> list[dict[str, Any]]:
        r = s.get(f"{self.url}/api/reception/guests", params={"q": q}, timeout=30)
        assert r.status_code == 200, r.text
        return list(r.json()["guests"])

    def checkin(self, s: requests.Session, gid: str) -> requests.Response:
        return s.post(f"{self.url}/api/reception/checkin", json={"guest": gid}, timeout=30)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        args = ["events", "--limit", "10000"] + (["--type", type_] if type_ else [])
        return list(self.d.ctl_json(*args))

    def logged(self, text: str) -> None:
        wait_for(f"{text!r} in the daemon's log", lambda: text in self.d.output(), timeout=10)


@pytest.fixture
def lobby(
    daemon_factory: Any, mosquitto: Mosquitto, example_doc: dict[str, Any], tmp_path: Path
) -> Lobby:
    port = free_port()
    config = f"""
[site]
id = "mitte"
[log]
level = "info"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
[wifi]
ssid = "Mitte Guest"
[rooms.ada]
[web]
enabled = true
host = "127.0.0.1"
port = {port}
"""
    lobby = Lobby(daemon_factory(config).start(), port, tmp_path)
    lobby.load(todays_guests(example_doc))
    return lobby


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Iterator[Watcher]:
    w = Watcher(mosquitto)
    try:
        yield w
    finally:
        w.close()


# --- the API --------------------------------------------------------------------------


def test_a_guest_found_by_name_or_code_checks_in_billed_once(
    lobby: Lobby, watcher: Watcher
) -> None:
    s = lobby.screen()
    marie = {"guest": MARIE, "name": "Marie C.", "host": "Ada", "company": "ACME GmbH"}
    # A name's start (first or last name, any case, accents aside), or the invitation's PIN.
    assert lobby.search(s, "mar") == [marie]
    assert lobby.search(s, "CUR") == [marie]
    assert lobby.search(s, "marie c") == [marie]
    assert lobby.search(s, MARIE_PIN) == [marie]
    assert lobby.search(s, "4712") == []
    assert lobby.search(s, "arie") == []  # the start of a name only
    # Tomorrow's guest is not expected today, by name or by code.
    assert lobby.search(s, "tomas") == []
    assert lobby.search(s, "9090") == []

    r = lobby.checkin(s, MARIE)
    assert r.status_code == 200, r.text
    first = r.json()
    wifi = lobby.d.ctl_json("wifi")
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){2}", wifi["passphrase"])
    assert first == {
        "guest": MARIE,
        "first_name": "Marie",
        "host": "Ada",
        "company": "ACME GmbH",
        "first_today": True,
        "host_notified": True,
        "welcome": "Welcome, Marie!",
        "detail": "Ada has been told you're here.",
        "wifi": {"ssid": "Mitte Guest", "passphrase": wifi["passphrase"]},
    }
    [billed] = lobby.events("usage.guest_entry")
    assert billed["holder"] == MARIE
    assert "door" not in billed
    today = datetime.now(TZ).date().isoformat()
    assert billed["details"] == {"host": HOST, "date": today, "via": "reception"}
    told = wait_for("the host's notification", lambda: watcher.got)
    assert told[0][0] == f"edge/mitte/guests/{HOST}/arrived"
    assert told[0][1]["guest"] == MARIE
    assert told[0][1]["first_name"] == "Marie"
    assert told[0][1]["via"] == "reception"
    assert told[0][2] is False  # a notification, not a state: never retained
    assert set(told[0][1]) == {"guest", "first_name", "at", "via"}

    # Again the same day: welcome, the host told again, not billed again.
    r = lobby.checkin(s, MARIE)
    assert r.status_code == 200, r.text
    assert r.json()["first_today"] is False
    wait_for("the second notification", lambda: len(watcher.got) == 2)
    # Then through a door, with her PIN: let in, still billed once.
    door = lobby.d.ctl_json("present", "--door", "office-12", "--pin", MARIE_PIN)
    assert door["granted"] is True
    assert [e["holder"] for e in lobby.events("usage.guest_entry")] == [MARIE]

    # The other way round: a door first, then the lobby; billed once, by the door.
    door = lobby.d.ctl_json("present", "--door", "office-12", "--pin", DORA_PIN)
    assert door["granted"] is True
    assert lobby.search(s, "dora") == [{**marie, "guest": DORA, "name": "Dora D."}]
    r = lobby.checkin(s, DORA)
    assert r.status_code == 200, r.text
    assert r.json()["first_today"] is False
    dora = [e for e in lobby.events("usage.guest_entry") if e["holder"] == DORA]
    assert len(dora) == 1
    assert dora[0]["door"] == "office-12"

    # Every check-in logged and audited, with the screen's pairing.
    audit = [
        a
        for a in lobby.d.ctl_json("audit", "--limit", "100")
        if a["method"] == "web POST /api/reception/checkin"
    ]
    assert [(a["params"]["guest"], a["outcome"]) for a in audit] == [
        (MARIE, "ok: billed"),
        (MARIE, "ok: already billed today"),
        (DORA, "ok: already billed today"),
    ]
    assert audit[0]["actor"].startswith("web:reception:")
    lobby.logged(f"guest {MARIE} checked in for host {HOST} (first today, billed; host notified)")
    lobby.logged(f"guest {MARIE} checked in for host {HOST} (again today, not billed")


def test_a_walk_in_is_recorded_for_the_operator(lobby: Lobby) -> None:
    s = lobby.screen()
    details = {
        "name": "Jo Walker",
        "company": "Walker & Co",
        "email": "jo@walker.example",
        "phone": "+49 30 1234-567",
        "visiting": "the community manager",
        "note": "About a desk\nfor March",
    }
    r = s.post(f"{lobby.url}/api/reception/walkin", json=details, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "recorded": True,
        "message": "Thank you, Jo. Someone will be with you shortly.",
    }
    [ev] = lobby.events("reception.walk_in")
    assert ev["details"] == {**details, "screen": ev["details"]["screen"]}
    assert "holder" not in ev
    # Only the name is required.
    r = s.post(f"{lobby.url}/api/reception/walkin", json={"name": "  Sam  "}, timeout=30)
    assert r.status_code == 200, r.text
    assert lobby.events("reception.walk_in")[-1]["details"]["name"] == "Sam"


def test_the_cloud_simulator_accepts_a_walk_in_event(example_doc: dict[str, Any]) -> None:
    """A type the contract does not list is accepted by the simulator (and by the
    bridge, which skips it); a cloud that rejects it leaves it `rejected` in the
    outbox, where the console still shows it."""
    sim = CloudSim(example_doc)
    event = {
        "id": "0193f0c2-0000-7000-8000-000000000001",
        "type": "reception.walk_in",
        "at": "2026-11-16T09:00:00.000+01:00",
        "site": "mitte",
        "gateway": "gw-1",
        "details": {"name": "Jo Walker"},
    }
    body = json.dumps({"events": [event]}).encode()
    path = f"{API_PREFIX}/sites/mitte/events"
    r = sim.handle_api("POST", path, "", f"Bearer {sim.token}", body)
    assert r.status == 200
    assert json.loads(r.body) == {"accepted": [event["id"]], "rejected": []}
    assert sim.counts() == {"reception.walk_in": 1}


def test_bad_input_is_refused_logged_and_records_nothing(lobby: Lobby, example_doc: Any) -> None:
    s = lobby.screen()
    url = lobby.url
    # Lena is offered by a search; then the cloud says her visit ended a minute ago.
    assert [g["guest"] for g in lobby.search(s, "lena")] == [LENA]
    lobby.load(todays_guests(example_doc, lena_leaves=time.time() - 60))
    before = lobby.events()

    # No token, a wrong one: 401. A room panel's token: 403. A console session: 401.
    bare = lobby.client()
    r = bare.get(f"{url}/api/reception/guests", params={"q": "mar"}, timeout=30)
    assert r.status_code == 401
    lobby.logged("GET /api/reception/guests from 127.0.0.1 refused: 401 this screen is not paired")
    assert bare.post(f"{url}/api/reception/checkin", json={"guest": MARIE}).status_code == 401
    wrong = lobby.client()
    wrong.cookies.set("edge_panel", "not-a-token", domain="127.0.0.1")
    assert wrong.get(f"{url}/api/reception", timeout=30).status_code == 401
    lobby.logged("GET /api/reception from 127.0.0.1 refused: 401 unknown token")
    room = lobby.screen("ada")
    for r in (
        room.get(f"{url}/api/reception/guests", params={"q": "mar"}, timeout=30),
        room.post(f"{url}/api/reception/checkin", json={"guest": MARIE}, timeout=30),
        room.post(f"{url}/api/reception/walkin", json={"name": "X"}, timeout=30),
    ):
        assert r.status_code == 403
        assert "paired to 'ada', not 'reception'" in r.text
    lobby.logged("POST /api/reception/checkin from 127.0.0.1 refused: 403 this screen is paired")
    lobby.d.ctl("user", "add", "olga", "--role", "admin", "--password-stdin", input=PASSWORD)
    console = lobby.client()
    login = {"name": "olga", "password": PASSWORD}
    assert console.post(f"{url}/api/login", json=login, timeout=30).status_code == 200
    r = console.get(f"{url}/api/reception/guests", params={"q": "mar"}, timeout=30)
    assert r.status_code == 401

    checkin = f"{url}/api/reception/checkin"
    # Another site's page posting with this screen's cookie: 403.
    evil = {"Origin": "https://evil.example"}
    r = s.post(checkin, json={"guest": MARIE}, headers=evil, timeout=30)
    assert r.status_code == 403
    lobby.logged("refused: 403 cross-site request from https://evil.example refused")
    # Too big (over [web] max_body_kb, 64), not JSON, not an object, not JSON at all.
    json_type = {"Content-Type": "application/json"}
    big = b'{"guest": "' + b"x" * 70_000 + b'"}'
    r = s.post(checkin, data=big, headers=json_type, timeout=30)
    assert r.status_code == 413
    lobby.logged("POST /api/reception/checkin from 127.0.0.1 refused: 413")
    r = s.post(checkin, data=b'{"guest": ', headers=json_type, timeout=30)
    assert r.status_code == 400
    assert "not JSON" in r.text
    lobby.logged("POST /api/reception/checkin from 127.0.0.1 refused: 400 not JSON")
    assert s.post(checkin, json=["g-20"], timeout=30).status_code == 400
    assert s.post(checkin, json={"guest": 20}, timeout=30).status_code == 400
    assert s.post(checkin, data=b"guest=g-20", timeout=30).status_code == 415
    # A guest nobody expects, a guest not shown by a search: 404 alike.
    r = lobby.checkin(s, "g-nobody")
    assert r.status_code == 404
    lobby.logged("refused: 404 no guest 'g-nobody' expected here today (search for them first)")
    assert lobby.checkin(s, MARIE).status_code == 404
    assert lobby.checkin(s, TOMORROW).status_code == 404
    # A guest whose visit ended since the search: refused with the reason.
    r = lobby.checkin(s, LENA)
    assert r.status_code == 409
    assert r.json() == {"error": "guest_expired", "message": "the guest's visit is over"}
    lobby.logged(f"refused: 409 guest {LENA} cannot check in: guest_expired")
    # Searches: at least 2 characters, at most 64; never a list without a query.
    for q in ("", "a", " b ", "x" * 65):
        r = s.get(f"{url}/api/reception/guests", params={"q": q}, timeout=30)
        assert r.status_code == 400, q
    assert s.get(f"{url}/api/reception/guests", timeout=30).status_code == 400
    lobby.logged("GET /api/reception/guests from 127.0.0.1 refused: 400 q: 2 to 64 characters")
    assert lobby.search(s, "--") == []
    # Walk-ins: a 10 KB name, no name, an unknown field, a bad email, a control character.
    walkin = f"{url}/api/reception/walkin"
    for body, words in (
        ({"name": "x" * 10_240}, "name: at most 100 characters"),
        ({"company": "ACME"}, "name: required"),
        ({"name": "Jo", "admin": True}, "'admin': unknown field"),
        ({"name": "Jo", "email": "not an address"}, "email: not an email address"),
        ({"name": "Jo", "phone": "call me"}, "phone: digits"),
        ({"name": "Jo\x1b[31m"}, "name: no control characters"),
        ({"name": ["Jo"]}, "name: a string"),
    ):
        r = s.post(walkin, json=body, timeout=30)
        assert r.status_code == 400, body
        assert words in r.text, (body, r.text)
    lobby.logged("POST /api/reception/walkin from 127.0.0.1 refused: 400 name: at most 100")

    assert lobby.events() == before  # nothing recorded: no usage, no walk-in, no event at all
    audit = lobby.d.ctl_json("audit", "--limit", "100")
    assert not [a for a in audit if "reception" in a["method"]]


def test_searches_are_rate_limited_per_screen(lobby: Lobby) -> None:
    s, other = lobby.screen(), lobby.screen()
    for _ in range(30):
        lobby.search(s, "zz")
    r = s.get(f"{lobby.url}/api/reception/guests", params={"q": "mar"}, timeout=30)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    lobby.logged("refused: 429 too many search requests from this screen")
    assert lobby.search(other, "mar")[0]["guest"] == MARIE  # another screen's own budget
    # Codes are door PINs: tried no faster than 10 a minute, whatever the search budget.
    for pin in range(1000, 1010):
        assert lobby.search(other, str(pin)) == []
    r = other.get(f"{lobby.url}/api/reception/guests", params={"q": MARIE_PIN}, timeout=30)
    assert r.status_code == 429
    lobby.logged("refused: 429 too many code requests from this screen")
    assert lobby.search(other, "mar")[0]["guest"] == MARIE
    lobby.logged("search by code (4 characters) found 0 guest(s)")


# --- the page -------------------------------------------------------------------------


@pytest.fixture
def tablet(browser: Browser) -> Iterator[Page]:
    with tablet_context(browser) as context:
        yield context.new_page()


def test_a_guest_checked_in_at_reception_billed_once(
    lobby: Lobby, watcher: Watcher, tablet: Page
) -> None:
    url = lobby.url
    tablet.clock.install()  # real time, until the test moves it (the 30 s idle)
    code = lobby.d.ctl_json("panel", "pair", "reception")["code"]
    tablet.goto(f"{url}/pair")
    tablet.fill("#code", code)
    tablet.click("#pair-submit")
    tablet.wait_for_url(f"{url}/reception")
    expect(tablet.locator("#welcome h1")).to_have_text("Welcome to Mitte")
    expect(tablet.locator("#go-guest")).to_be_visible()
    save_screenshot(tablet, "welcome")

    def check_in() -> None:
        tablet.tap("#go-guest")
        expect(tablet.locator("#q")).to_be_focused()
        tablet.locator("#q").press_sequentially("mar")
        found = tablet.locator("#results button")
        expect(found).to_have_count(1)
        expect(found.locator(".guest-name")).to_have_text("Marie C.")
        expect(found.locator(".guest-host")).to_have_text("visiting Ada · ACME GmbH")
        save_screenshot(tablet, "find")
        found.tap()
        expect(tablet.locator("#done-title")).to_have_text("Welcome, Marie!")

    check_in()
    expect(tablet.locator("#done-detail")).to_have_text("Ada has been told you're here.")
    wifi = lobby.d.ctl_json("wifi")
    expect(tablet.locator("#wifi-ssid")).to_have_text("Mitte Guest")
    expect(tablet.locator("#wifi-pass")).to_have_text(wifi["passphrase"])
    save_screenshot(tablet, "checked-in")
    told = wait_for("the host's notification", lambda: watcher.got)
    assert told[0][0] == f"edge/mitte/guests/{HOST}/arrived"
    assert told[0][1]["first_name"] == "Marie"

    # Left alone, the screen goes back to the welcome after 30 s.
    tablet.clock.run_for(31_000)
    expect(tablet.locator("#welcome")).to_be_visible()
    expect(tablet.locator("#done")).to_be_hidden()
    # Back later the same day, then through a door: billed once.
    check_in()
    wait_for("the second notification", lambda: len(watcher.got) == 2)
    door = lobby.d.ctl_json("present", "--door", "office-12", "--pin", MARIE_PIN)
    assert door["granted"] is True
    [billed] = lobby.events("usage.guest_entry")
    assert billed["holder"] == MARIE
    assert billed["details"]["host"] == HOST
    tablet.tap("#done [data-back]")

    # Someone not expected: nobody found by name; they leave their details instead.
    tablet.tap("#go-guest")
    tablet.locator("#q").press_sequentially("Jo Walker")
    expect(tablet.locator("#find-msg")).to_contain_text("No one by that name or code")
    tablet.tap("#find [data-back]")
    tablet.tap("#go-walkin")
    tablet.fill("#walkin-form [name=name]", "Jo Walker")
    tablet.fill("#walkin-form [name=email]", "jo@walker.example")
    save_screenshot(tablet, "walk-in")
    tablet.tap("#walkin-submit")
    expect(tablet.locator("#thanks-detail")).to_have_text(
        "Thank you, Jo. Someone will be with you shortly."
    )
    [walk_in] = lobby.events("reception.walk_in")
    assert walk_in["details"]["email"] == "jo@walker.example"
    assert len(lobby.events("usage.guest_entry")) == 1


def test_an_unpaired_screen_says_so(lobby: Lobby, tablet: Page) -> None:
    tablet.goto(f"{lobby.url}/reception")
    expect(tablet.locator("#unpaired")).to_be_visible()
    expect(tablet.locator("#unpaired-why")).to_have_text("This screen is not paired (no token).")


def test_page_weight_and_no_inline_code() -> None:
    """The screen's files within 60 KB; nothing the CSP would refuse."""
    weight = sum((STATIC / name).stat().st_size for name in PAGE_FILES)
    assert weight <= 60 * 1024, weight
    html = (STATIC / "reception.html").read_text()
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "another origin"
    assert not re.search(r"\son[a-z]+=", html), "an inline handler"
