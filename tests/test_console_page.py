"""The site console page in a real browser: Debian's Chromium through Playwright,
the daemon as a process with its web server (TLS, self-signed), and the front
door on simulated hardware (hw-sim/site.py): an OSDP reader on a simulated
RS-485 cable and a pymodbus relay board whose coil 0 is the front door's strike.

What the page shows is asserted with Playwright's `expect` (which waits for the
gateway's pushes to reach the page); what the hardware was told is read from the
board's coils. The reports are read from the real API, on days of badges made by
hand and recorded by the gateway in-process (tests/test_reports.py's site).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect

from edge.gateway import Gateway
from hwsim.site import SimDoor, SimSite, SiteThread
from hwsim.sitegen import example_site, reference_monday
from tests.conftest import REPO
from tests.test_reports import enter, site_doc, with_gateway
from tests.test_web import free_port

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Error, Locator, Page, Route

PASSWORD = "correct horse battery"
GRACE = "H10306:1000:50001"  # m-1002: resident, billing ok, any hour
LINUS = "H10301:12:4000"  # m-1003: billing suspended
UNLOCK_S = 3
PUSH_MS = 15_000  # a push reaches the page well within this
# The front door on hardware; the example site's other doors have none.
FRONT = SimDoor("front", "osdp", None, exit_button=False, unlock_seconds=2, held_open_seconds=30)


def save_screenshot(page: Page, name: str) -> None:
    """docs/screenshots/console-<name>.png, only when EDGE_SCREENSHOTS=1 (for the docs)."""
    if os.environ.get("EDGE_SCREENSHOTS") != "1":
        return
    out = REPO / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    # Written here: with `path=` Playwright writes in a thread of its loop's
    # executor, which then outlives the test (and the leak guard fails it).
    (out / f"console-{name}.png").write_bytes(page.screenshot())


class Console:
    """The daemon with its web server on, and the console page's sign-in."""

    def __init__(self, daemon: Any, port: int) -> None:
        self.daemon = daemon
        self.url = f"https://127.0.0.1:{port}/"
        self.errors: list[str] = []  # the page's uncaught errors and CSP violations

    def user(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.daemon.ctl(
            "user", "add", name, "--role", role, "--password-stdin", input=password + "\n"
        )

    def open(self, page: Page) -> None:
        def failed(exc: Error) -> None:
            self.errors.append(str(exc))

        def console(msg: ConsoleMessage) -> None:
            # The CSP allows nothing inline: a violation is reported on the console.
            if "Content Security Policy" in msg.text:
                self.errors.append(msg.text)

        page.on("pageerror", failed)
        page.on("console", console)
        page.goto(self.url)

    def sign_in(self, page: Page, name: str, password: str = PASSWORD) -> None:
        expect(page.locator("#signin")).to_be_visible()
        page.fill("#signin-name", name)
        page.fill("#signin-password", password)
        page.click("#signin-submit")


class ConsoleSite(Console):
    """The console on the simulated front door."""

    def __init__(self, site: SimSite, thread: SiteThread, daemon: Any, port: int) -> None:
        super().__init__(daemon, port)
        self.site = site
        self.thread = thread

    def card(self, page: Page, door: str) -> Locator:
        return page.locator(f'.door-card[data-door="{door}"]')

    def present(self, card: str) -> dict[str, Any]:
        decision: dict[str, Any] = self.daemon.ctl_json(
            "present", "--door", "front", "--card", card, check=False
        )
        return decision

    def strike_on(self, on: bool = True) -> None:
        self.thread.call(self.site.wait_unlocked("front", on), timeout=15)

    def coil_history(self) -> list[bool]:
        assert self.site.board is not None
        coil = self.site.coils["front"]
        return [c.on for c in self.site.board.history if c.coil == coil]


def console_config(port: int, hardware: str = "") -> str:
    web = f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
    return '[site]\nid = "mitte"\n[log]\nlevel = "info"\n' + web + hardware


@pytest.fixture
def console(tmp_path: Path, daemon_factory: Any) -> Iterator[ConsoleSite]:
    work = tmp_path / "site"
    work.mkdir()
    site = SimSite(work, [FRONT])
    with SiteThread(site) as thread:
        port = free_port()
        d = daemon_factory(console_config(port, site.config()))
        site.provision(d.state_dir)
        d.start()
        doc, _ = example_site(reference_monday(date.today()))
        for door in doc["doors"]:  # no lunchtime opening: the front door stays locked
            door.pop("unlock_schedule", None)
        snapshot = tmp_path / "site.json"
        snapshot.write_text(json.dumps(doc))
        d.ctl("import", str(snapshot))
        c = ConsoleSite(site, thread, d, port)
        try:
            yield c
        finally:
            d.stop()
    assert not c.errors, f"the page's script failed: {c.errors}"


def test_sign_in_refuses_a_wrong_password_then_shows_the_doors(
    console: ConsoleSite, page: Page
) -> None:
    console.user("olga", "operator")
    console.open(page)
    console.sign_in(page, "olga", "not the password")
    expect(page.locator("#signin-error")).to_have_text("Wrong user name or password.")
    expect(page.locator("#app")).to_be_hidden()

    console.sign_in(page, "olga")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#who")).to_have_text("olga · operator")
    expect(page.locator(".door-card")).to_have_count(4)
    front = console.card(page, "front")
    expect(front.locator("h2")).to_have_text("Front entrance")
    expect(front.locator(".door-lock")).to_have_text("Locked")
    expect(front.locator(".door-contact")).to_have_text("Closed")
    # The reader on the simulated bus, once its secure channel is up.
    expect(front.locator(".door-readers li")).to_have_text(
        "front-in online (secure channel)", timeout=PUSH_MS
    )
    expect(console.card(page, "server-room").locator(".door-readers")).to_have_text(
        "No readers configured"
    )
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#site-lockdown-state")).to_have_text("Site-wide lockdown: off")
    save_screenshot(page, "doors")


def test_unlock_reaches_the_strike_and_the_card_follows_live(
    console: ConsoleSite, page: Page
) -> None:
    console.user("olga", "operator")
    console.open(page)
    console.sign_in(page, "olga")
    front = console.card(page, "front")
    expect(front.locator(".door-lock")).to_have_text("Locked")
    expect(page.locator("#live")).to_have_text("Live")
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

    front.get_by_label("Unlock for").select_option(str(UNLOCK_S))
    front.locator(".act-unlock").click()
    console.strike_on()
    expect(front.locator(".door-lock")).to_have_text("Unlocked", timeout=PUSH_MS)
    expect(front.locator(".door-cause")).to_contain_text("Unlocked by an operator")
    expect(page.locator("#toast")).to_have_text("Front entrance unlocked for 3 s.")
    # Relocked by the gateway after the seconds chosen; the page is told, not asked.
    console.strike_on(False)
    expect(front.locator(".door-lock")).to_have_text("Locked", timeout=PUSH_MS)
    assert console.coil_history()[-2:] == [True, False]
    assert page.evaluate("window.sameDocument") is True
    [action] = console.daemon.ctl_json("events", "--type", "admin.action")
    assert action["details"]["by"] == "web:olga"
    assert action["details"]["seconds"] == UNLOCK_S


def test_lockdown_is_confirmed_and_refuses_badges_at_the_strike(
    console: ConsoleSite, page: Page
) -> None:
    console.user("olga", "operator")
    console.open(page)
    console.sign_in(page, "olga")
    front = console.card(page, "front")
    dialog = page.locator("#confirm")

    # Asked first, in words; Cancel changes nothing.
    front.locator(".act-lockdown").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Lock down Front entrance?")
    expect(page.locator("#confirm-text")).to_contain_text(
        "Every badge and PIN will be refused at Front entrance"
    )
    expect(page.locator("#confirm-cancel")).to_be_focused()
    save_screenshot(page, "lockdown-confirm")
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    expect(front.locator(".door-lock")).to_have_text("Locked")
    assert not console.daemon.ctl_json("events", "--type", "admin.action")

    front.locator(".act-lockdown").click()
    expect(page.locator("#confirm-ok")).to_have_text("Lock down Front entrance")
    page.click("#confirm-ok")
    expect(front.locator(".door-lock")).to_have_text("Lockdown", timeout=PUSH_MS)
    expect(front.locator(".door-cause")).to_have_text("In lockdown: every badge is refused")
    expect(front.locator(".act-unlock")).to_be_disabled()
    expect(front.locator(".act-lockdown")).to_have_text("Lift lockdown")
    # A member who may enter is refused, and the strike is never energised.
    before = len(console.coil_history())
    decision = console.present(GRACE)
    assert (decision["granted"], decision["reason"]) == (False, "lockdown"), decision
    assert True not in console.coil_history()[before:]
    assert not console.site.strike("front")

    # Lifted (confirmed too): the same badge opens the strike again.
    front.locator(".act-lockdown").click()
    expect(page.locator("#confirm-title")).to_have_text("Lift the lockdown of Front entrance?")
    page.click("#confirm-ok")
    expect(front.locator(".door-lock")).to_have_text("Locked", timeout=PUSH_MS)
    assert console.present(GRACE)["granted"]
    console.strike_on()

    # The whole site: every door, named in the question.
    page.click("#site-lockdown")
    expect(page.locator("#confirm-text")).to_contain_text(
        "refused at all 4 doors (Front entrance, Office 12, Ada room, Server room)"
    )
    page.click("#confirm-ok")
    expect(page.locator("#site-lockdown-state")).to_have_text("Site-wide lockdown is ON")
    for door in ("front", "office-12", "room-ada", "server-room"):
        expect(console.card(page, door).locator(".door-lock")).to_have_text("Lockdown")
    console.strike_on(False)  # locked, whatever was left of the grant's unlock
    assert console.present(GRACE)["reason"] == "lockdown"
    assert not console.site.strike("front")
    page.click("#site-lockdown")
    expect(page.locator("#confirm-title")).to_have_text("Lift the site-wide lockdown?")
    page.click("#confirm-ok")
    expect(page.locator("#site-lockdown-state")).to_have_text("Site-wide lockdown: off")
    expect(front.locator(".door-lock")).to_have_text("Locked")
    audit = console.daemon.ctl_json("audit", "--limit", "50")
    lockdowns = [a for a in audit if a["method"] == "web POST /api/lockdown"]
    assert len(lockdowns) == 4
    assert all(a["actor"] == "web:olga" and a["outcome"] == "ok" for a in lockdowns)


def test_a_viewer_sees_the_doors_but_no_buttons(console: ConsoleSite, page: Page) -> None:
    console.user("vic", "viewer")
    console.open(page)
    console.sign_in(page, "vic")
    expect(page.locator(".door-card")).to_have_count(4)
    expect(page.locator("#viewer-note")).to_be_visible()
    expect(page.locator(".door-actions")).to_have_count(0)
    expect(page.locator(".act-unlock")).to_have_count(0)
    expect(page.locator(".act-lockdown")).to_have_count(0)
    expect(page.locator("#site-lockdown")).to_be_hidden()
    expect(page.locator("#tab-audit")).to_be_hidden()


def test_events_show_a_new_refusal_live_with_its_reason(console: ConsoleSite, page: Page) -> None:
    console.user("vic", "viewer")
    console.open(page)
    console.sign_in(page, "vic")
    page.click('.tabs a[data-page="events"]')
    expect(page.locator("#h-events")).to_be_visible()
    expect(page.locator("#live")).to_have_text("Live")
    page.select_option("#f-outcome", "denied")
    expect(page.locator("#events-empty")).to_be_visible()

    # A grant, then a refusal: only the refusal matches the filter.
    assert console.present(GRACE)["granted"]
    assert not console.present(LINUS)["granted"]
    rows = page.locator("#events tr")
    expect(rows).to_have_count(1, timeout=PUSH_MS)
    row = rows.first
    expect(row.locator(".ev-type")).to_have_text("Refused")
    expect(row).to_contain_text("Front entrance")
    expect(row).to_contain_text("m-1003")
    expect(row.locator(".why")).to_have_text(
        "Access is suspended: the member's invoices are overdue"
    )
    # Without the filter, both, newest first; a new one still streams in on top.
    page.select_option("#f-outcome", "")
    expect(rows.first.locator(".ev-type")).to_have_text("Refused")
    expect(page.locator("#events tr.granted")).to_have_count(1)
    console.present("H10301:12:65000")
    expect(rows.first.locator(".why")).to_have_text(
        "This card or PIN belongs to no one on this site", timeout=PUSH_MS
    )
    save_screenshot(page, "events")


def test_member_lookup_says_why_a_badge_is_refused(console: ConsoleSite, page: Page) -> None:
    console.user("vic", "viewer")
    console.open(page)
    console.sign_in(page, "vic")
    page.click('.tabs a[data-page="members"]')
    page.fill("#member-q", "linus")
    page.press("#member-q", "Enter")
    expect(page.locator("#member-results a")).to_have_count(1)
    expect(page.locator("#member-name")).to_have_text("Linus Suspended")
    assert page.url.endswith("#members/m-1003")
    detail = page.locator("#member-detail")
    expect(detail).to_contain_text("suspended (access suspended)")
    front = detail.locator('tr[data-door="front"]')
    expect(front.locator("td").nth(0)).to_have_text("Front entrance")
    expect(front.locator(".ev-type")).to_have_text("Refused")
    expect(front.locator(".why")).to_have_text(
        "Access is suspended: the member's invoices are overdue"
    )
    expect(detail).to_contain_text("Card H10301:12:4000")
    save_screenshot(page, "member")
    # An unknown name says so.
    page.fill("#member-q", "nobody-like-this")
    page.press("#member-q", "Enter")
    expect(page.locator("#member-status")).to_have_text("Nobody matches “nobody-like-this”.")


def test_sign_out_session_end_and_a_lost_gateway(console: ConsoleSite, page: Page) -> None:
    console.user("olga", "operator")
    console.open(page)
    console.sign_in(page, "olga")
    expect(page.locator("#live")).to_have_text("Live")
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-note")).to_have_text("You have signed out.")
    assert page.request.get(console.url + "api/session").status == 401

    # The session ends on the gateway (a new password): the open page is told at once.
    console.sign_in(page, "olga")
    expect(page.locator("#live")).to_have_text("Live")
    console.daemon.ctl("user", "passwd", "olga", "--password-stdin", input=PASSWORD + "!\n")
    expect(page.locator("#signin-note")).to_have_text(
        "Your session has ended. Sign in again.", timeout=PUSH_MS
    )
    expect(page.locator("#app")).to_be_hidden()

    # The account removed, then a tab opened: its call is answered 401 (or the live
    # socket is closed first, whichever comes first): the sign-in form again.
    console.sign_in(page, "olga", PASSWORD + "!")
    expect(page.locator("#live")).to_have_text("Live")
    console.daemon.ctl("user", "remove", "olga")
    page.click('.tabs a[data-page="sync"]')
    expect(page.locator("#signin")).to_be_visible(timeout=PUSH_MS)

    # The gateway goes away: "disconnected", said plainly, and retried.
    console.user("ada", "admin")
    console.sign_in(page, "ada")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#tab-audit")).to_be_visible()
    console.daemon.stop()
    expect(page.locator("#live")).to_have_text(
        re.compile(r"^Disconnected: retrying in \d+ s$"), timeout=PUSH_MS
    )
    # Back, but sessions live in memory only: the page says so at its next try.
    console.daemon.start()
    expect(page.locator("#signin-note")).to_have_text(
        "Your session has ended. Sign in again.", timeout=40_000
    )


# --- reports: the real API on days made by hand ------------------------------------------
# tests/test_reports.py's small site (ada and bob of ACME GmbH, cy of Beta Ltd); the
# gateway decides and records these badges in-process, then the daemon serves that
# state directory. Site-local times, Europe/Berlin (+01:00 from 25 October 2026):
#
#   ada  front            Sat 2026-10-31 23:30   22:30 UTC
#   bob  front            Sun 2026-11-01 00:30   23:30 UTC on the 31st  (seed bug b)
#   ada  front            2026-11-10 09:00 and 13:00
#   bob  front            2026-11-12 10:00
#   on the 16th: ada changes plan and contract (hot desk -> resident),
#                bob moves from ACME to Beta                           (seed bug a)
#   bob  front            2026-11-18 10:00
#   ada  front, office    2026-11-20 09:00, 09:10 (the new plan's door), front 18:00
#   ada  front            2026-11-21 10:00


async def hand_made_days(gw: Gateway) -> None:
    await enter(gw, "m-ada", "front", "2026-10-31", "23:30")
    await enter(gw, "m-bob", "front", "2026-11-01", "00:30")
    await enter(gw, "m-ada", "front", "2026-11-10", "09:00")
    await enter(gw, "m-ada", "front", "2026-11-10", "13:00")
    await enter(gw, "m-bob", "front", "2026-11-12", "10:00")
    ada, bob = (copy.deepcopy(m) for m in site_doc()["members"][:2])
    ada["plan"] = "resident"
    ada["contract"] = {"start": "2026-11-16", "end": None}
    bob["company"] = "beta"
    changes = [{"op": "upsert", "kind": "member", "data": m} for m in (ada, bob)]
    await gw.updates.apply_changes(changes, "c-2", "test")
    await enter(gw, "m-bob", "front", "2026-11-18", "10:00")
    await enter(gw, "m-ada", "front", "2026-11-20", "09:00")
    await enter(gw, "m-ada", "office", "2026-11-20", "09:10")
    await enter(gw, "m-ada", "front", "2026-11-20", "18:00")
    await enter(gw, "m-ada", "front", "2026-11-21", "10:00")


@pytest.fixture
def reports_console(tmp_path: Path, daemon_factory: Any) -> Iterator[Console]:
    """The daemon on the hand-made days. Before `page` in a test's arguments: the
    in-process gateway runs its own event loop (asyncio.run)."""
    with_gateway(tmp_path, site_doc(), hand_made_days)
    state = tmp_path / "state"  # with_gateway's
    assert (state / "gateway.db").is_file()
    port = free_port()
    d = daemon_factory(console_config(port), state_dir=state)
    d.start()
    c = Console(d, port)
    try:
        yield c
    finally:
        d.stop()
    assert not c.errors, f"the page's script failed: {c.errors}"


def show_report(page: Page, kind: str, start: str, end: str, title: str) -> None:
    page.select_option("#report-kind", kind)
    page.fill("#report-from", start)
    page.fill("#report-to", end)
    page.click('#report-form button[type="submit"]')
    # Set with the answer, in the same turn as the summary, chart and table.
    expect(page.locator("#report-status")).to_have_text(
        f"{title}, {start} to {end} (Europe/Berlin)."
    )


def report_table(page: Page) -> list[list[str]]:
    """The table's header and rows, cell by cell."""
    rows: list[list[str]] = page.locator("#report-table tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return rows


def nonzero_bars(page: Page) -> list[str]:
    """The titles of the chart's bars that are not empty: `series, x: value`."""
    titles: list[str] = page.locator("#report-chart rect.bar").evaluate_all(
        "bars => bars.map(b => b.textContent)"
    )
    return [t for t in titles if not t.endswith(": 0")]


def download_csv(page: Page) -> tuple[str, str]:
    with page.expect_download() as download:
        page.click("#report-csv")
    saved = Path(download.value.path()).read_bytes().decode()
    return download.value.suggested_filename, saved


def test_reports_match_days_made_by_hand_in_table_chart_and_csv(
    reports_console: Console, page: Page
) -> None:
    console = reports_console
    console.user("vic", "viewer")
    console.open(page)
    console.sign_in(page, "vic")
    # The tab's first report (the default) is held back until another one is shown.
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/api/reports/occupancy?*", hold)
    page.click('.tabs a[data-page="reports"]')
    # The last full week, Monday to Sunday, by default.
    monday = date.today() - timedelta(days=date.today().weekday() + 7)
    sunday = monday + timedelta(days=6)
    expect(page.locator("#report-from")).to_have_value(monday.isoformat())
    expect(page.locator("#report-to")).to_have_value(sunday.isoformat())
    expect(page.locator("#report-status")).to_have_text("Reading…")

    # (a) November per company. ACME: ada on the 10th, 20th and 21st (two entries,
    # then three at two doors, under both plans: a day each), bob on the 1st (00:30)
    # and the 12th, before he moved: 2 people, 5 days. Beta: bob on the 18th: 1, 1.
    # Nobody is counted twice, and ada's 31 October is not November. (Counted by
    # entry, ACME would have 8; by today's companies, bob's 3 days would be Beta's.)
    show_report(page, "companies", "2026-11-01", "2026-11-30", "Day passes and guests per company")
    assert report_table(page) == [
        ["company", "company name", "members", "member days", "day passes", "guest entries"],
        ["acme", "ACME GmbH", "2", "5", "0", "0"],
        ["beta", "Beta Ltd", "1", "1", "0", "0"],
    ]
    expect(page.locator("#report-summary")).to_have_text(
        "Companies2Member days6Day passes0Guest entries0"
    )
    # 3 series (member days, day passes, guest entries) x 2 companies.
    expect(page.locator("#report-chart rect.bar")).to_have_count(6)
    assert nonzero_bars(page) == ["member_days, acme: 5", "member_days, beta: 1"]
    assert page.locator("#report-csv").get_attribute("href") == (
        "/api/reports/companies?from=2026-11-01&to=2026-11-30&format=csv"
    )
    # The default report's answer, come late, changes nothing: the page shows the
    # last report asked for. The late answer is all in the browser, and read by the
    # page's script long before a request made after it is answered.
    with page.expect_response(lambda r: "/api/reports/occupancy?" in r.url) as late:
        held[0].continue_()
    page.unroute("**/api/reports/occupancy?*")
    assert late.value.finished() is None
    assert late.value.json()["start"] == monday.isoformat()
    assert page.evaluate("() => fetch('/api/session').then(r => r.status)") == 200
    expect(page.locator("#report-status")).to_have_text(
        "Day passes and guests per company, 2026-11-01 to 2026-11-30 (Europe/Berlin)."
    )
    assert report_table(page)[1][:2] == ["acme", "ACME GmbH"]
    name, saved = download_csv(page)
    assert name == "mitte-companies-2026-11-01-2026-11-30.csv"
    assert saved == (
        "company,company_name,members,member_days,day_passes,guest_entries\r\n"
        "acme,ACME GmbH,2,5,0,0\r\n"
        "beta,Beta Ltd,1,1,0,0\r\n"
    )

    # (b) The week of 26 October: ada on Saturday the 31st, bob on Sunday the 1st, a
    # member each. By UTC day both would be on the 31st and the 1st empty.
    show_report(page, "visitors", "2026-10-26", "2026-11-01", "Unique visitors per day")
    save_screenshot(page, "reports")
    week = [f"2026-10-{d}" for d in range(26, 32)] + ["2026-11-01"]
    counts = {"2026-10-31": ["1", "0", "0", "0", "1"], "2026-11-01": ["1", "0", "0", "0", "1"]}
    assert report_table(page) == [
        ["date", "members", "day pass", "guests", "other", "total"],
        *([d, *counts.get(d, ["0"] * 5)] for d in week),
    ]
    expect(page.locator("#report-summary")).to_have_text(
        "People2Person days2Busiest day2026-10-31Members2Day pass0Guests0Other0"
    )
    # 4 series (members, day pass, guests, other) x 7 days.
    expect(page.locator("#report-chart rect.bar")).to_have_count(28)
    assert nonzero_bars(page) == ["members, Sat 31.10.: 1", "members, Sun 01.11.: 1"]
    name, saved = download_csv(page)
    assert name == "mitte-visitors-2026-10-26-2026-11-01.csv"
    assert saved.split("\r\n") == [
        "date,members,day_pass,guests,other,total",
        *(f"{d},{','.join(counts.get(d, ['0'] * 5))}" for d in week),
        "",
    ]

    # The same week by the hour: a line per door, 7 x 24 points each; ada in the
    # front's 23:00 hour of the 31st, bob in its 00:00 hour of the 1st.
    show_report(page, "occupancy", "2026-10-26", "2026-11-01", "Occupancy per area and hour")
    lines = page.locator("#report-chart polyline.series")
    expect(lines).to_have_count(3)
    points = lines.evaluate_all("ls => ls.map(l => l.getAttribute('points').split(' ').length)")
    assert points == [7 * 24] * 3
    table = report_table(page)
    assert len(table) == 1 + 3 * 7 * 24
    busy = [(r[0], r[2], r[3], r[4], r[6]) for r in table[1:] if r[-1] != "0"]
    assert busy == [
        ("front", "2026-10-31", "23:00", "2026-10-31T23:00:00+01:00", "1"),  # ada
        ("front", "2026-11-01", "00:00", "2026-11-01T00:00:00+01:00", "1"),  # bob
    ]


def test_the_console_page_is_small() -> None:
    static = REPO / "edge" / "web" / "static"
    size = sum((static / n).stat().st_size for n in ("console.html", "console.js", "console.css"))
    assert size < 100_000, size
