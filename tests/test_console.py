"""The console's accounts and API over real HTTPS: logins, lockouts, roles, CSRF,
unlock and lockdown audited with the account's name, panel pairing codes.

The daemon runs as a process; accounts are made with the real `edgectl`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.test_web import free_port, web_config

PASSWORD = "correct horse battery"


@pytest.fixture
def console(daemon_factory: Any, example_doc: dict[str, Any], tmp_path: Path) -> Any:
    port = free_port()
    extra = "lockout_after = 3\nlockout_minutes = 5\nlogin_per_minute = 8\n"
    d = daemon_factory(web_config(port, extra)).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))
    d.base = f"https://127.0.0.1:{port}"
    d.cert = str(d.state_dir / "web" / "cert.pem")
    for name, role in (("olga", "operator"), ("vic", "viewer"), ("ada", "admin")):
        d.ctl("user", "add", name, "--role", role, "--password-stdin", input=PASSWORD + "\n")
    return d


def client(d: Any) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment replaces `verify`
    s.verify = d.cert
    return s


def login(d: Any, name: str, password: str = PASSWORD) -> tuple[requests.Session, str]:
    s = client(d)
    r = s.post(f"{d.base}/api/login", json={"name": name, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return s, r.json()["csrf"]


def events(d: Any) -> int:
    return len(d.ctl_json("events", "--limit", "10000"))


def test_accounts_are_listed_and_the_password_never_stored_or_logged(console: Any) -> None:
    users = {u["name"]: u for u in console.ctl_json("user", "list")}
    assert users["olga"]["role"] == "operator"
    assert not users["olga"]["locked"]
    audit = console.ctl_json("audit", "--limit", "20")
    adds = [a for a in audit if a["method"] == "user.add"]
    assert len(adds) == 3
    assert all(a["params"]["password"] == "***" for a in adds)
    assert PASSWORD not in console.output()
    db = b"".join(p.read_bytes() for p in console.state_dir.glob("gateway.db*"))
    assert PASSWORD.encode() not in db
    assert b"$argon2id$" in db
    # Bad names, roles and short passwords are refused with the reason.
    r = console.ctl("user", "add", "Bad Name", "--password-stdin", input=PASSWORD, check=False)
    assert r.returncode == 2
    assert "user name" in r.stderr
    r = console.ctl("user", "add", "tim", "--password-stdin", input="short\n", check=False)
    assert r.returncode == 2
    assert "10 to 1024" in r.stderr
    r = console.ctl("user", "add", "olga", "--password-stdin", input=PASSWORD, check=False)
    assert "exists already" in r.stderr


def test_login_lockout_and_rate_limit(console: Any) -> None:
    s = client(console)
    url = f"{console.base}/api/login"
    assert s.post(url, json={"name": "nobody", "password": "x" * 12}, timeout=30).status_code == 401
    for _ in range(3):
        r = s.post(url, json={"name": "vic", "password": "wrong password"}, timeout=30)
        assert r.status_code == 401
        assert "wrong user name or password" in r.reason
    # Locked now: even the right password is refused, and says why.
    r = s.post(url, json={"name": "vic", "password": PASSWORD}, timeout=30)
    assert r.status_code == 403
    assert "locked" in r.reason
    assert {u["name"]: u for u in console.ctl_json("user", "list")}["vic"]["locked"]
    # The lockout survives a restart.
    console.stop()
    console.start()
    r = s.post(url, json={"name": "vic", "password": PASSWORD}, timeout=30)
    assert r.status_code == 403
    # A new password (by an operator over SSH) lifts it.
    console.ctl("user", "passwd", "vic", "--password-stdin", input=PASSWORD + "!\n")
    assert s.post(url, json={"name": "vic", "password": PASSWORD + "!"}, timeout=30).ok
    # One address gets login_per_minute attempts a minute, then 429 with Retry-After.
    codes = [
        s.post(url, json={"name": "olga", "password": "wrong"}, timeout=30).status_code
        for _ in range(8)
    ]
    assert codes[-1] == 429, codes
    refused = [a for a in console.ctl_json("audit", "--limit", "100") if a["method"] == "web login"]
    assert refused
    assert all(a["actor"].startswith("web:") for a in refused)
    assert "wrong user name or password" in console.output()


def test_roles_csrf_and_audited_unlock_and_lockdown(console: Any) -> None:
    s, csrf = login(console, "olga")
    doors = s.get(f"{console.base}/api/doors", timeout=30).json()["doors"]
    assert {d["id"] for d in doors} >= {"front"}
    url = f"{console.base}/api/doors/front/unlock"
    before = events(console)
    # No CSRF header, a wrong one, or a foreign Origin: refused, nothing happens.
    assert s.post(url, json={"seconds": 5}, timeout=30).status_code == 403
    assert (
        s.post(url, json={"seconds": 5}, headers={"X-CSRF-Token": "x"}, timeout=30).status_code
        == 403
    )
    evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert s.post(url, json={"seconds": 5}, headers=evil, timeout=30).status_code == 403
    assert events(console) == before
    r = s.post(url, json={"seconds": 5}, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["door"] == "front"
    action = console.ctl_json("events", "--type", "admin.action")[-1]
    assert action["details"]["by"] == "web:olga"
    assert action["door"] == "front"
    # Lockdown needs a confirmation.
    lock = f"{console.base}/api/lockdown"
    h = {"X-CSRF-Token": csrf}
    r = s.post(lock, json={"on": True, "doors": ["front"]}, headers=h, timeout=30)
    assert r.status_code == 400
    assert "confirm" in r.reason
    r = s.post(lock, json={"on": True, "doors": ["front"], "confirm": True}, headers=h, timeout=30)
    assert r.ok
    doors = s.get(f"{console.base}/api/doors", timeout=30).json()["doors"]
    front = next(d for d in doors if d["id"] == "front")
    assert front["state"]["lockdown"]
    assert front["state"]["lock"] == "locked"
    # Unlocking a door in lockdown is refused with the reason, and audited as refused.
    r = s.post(url, json={"seconds": 5}, headers=h, timeout=30)
    assert r.status_code == 409
    assert "lockdown" in r.reason
    s.post(lock, json={"on": False, "doors": ["front"], "confirm": True}, headers=h, timeout=30)
    audit = [a for a in console.ctl_json("audit", "--limit", "50") if a["actor"] == "web:olga"]
    methods = [(a["method"], a["outcome"].split(":")[0]) for a in audit]
    assert ("web POST /api/doors/front/unlock", "ok") in methods
    assert ("web POST /api/doors/front/unlock", "refused") in methods
    assert methods.count(("web POST /api/lockdown", "ok")) == 2
    # A viewer reads but cannot act; the audit log is for admins.
    v, vcsrf = login(console, "vic")
    assert v.get(f"{console.base}/api/doors", timeout=30).ok
    r = v.post(url, json={"seconds": 5}, headers={"X-CSRF-Token": vcsrf}, timeout=30)
    assert r.status_code == 403
    assert "operator" in r.reason
    assert v.get(f"{console.base}/api/audit", timeout=30).status_code == 403
    a, _ = login(console, "ada")
    rows = a.get(f"{console.base}/api/audit", timeout=30).json()["audit"]
    assert any(x["actor"] == "web:olga" for x in rows)
    # Stored in UTC, shown in the site's zone (Europe/Berlin) like the rest of the console.
    berlin = ZoneInfo("Europe/Berlin")
    for x in rows:
        at = datetime.fromisoformat(x["at"])
        assert at.utcoffset() == berlin.utcoffset(at.replace(tzinfo=None)), x["at"]
    # Without a session: 401 everywhere.
    anon = client(console)
    for path in ("/api/doors", "/api/events", "/api/members?q=x", "/api/sync", "/api/rooms"):
        assert anon.get(console.base + path, timeout=30).status_code == 401, path


def test_sessions_end_with_logout_password_change_and_removal(console: Any) -> None:
    s, csrf = login(console, "olga")
    s2, _ = login(console, "olga")
    assert s.get(f"{console.base}/api/session", timeout=30).json()["role"] == "operator"
    assert s.post(f"{console.base}/api/logout", headers={"X-CSRF-Token": csrf}, timeout=30).ok
    assert s.get(f"{console.base}/api/session", timeout=30).status_code == 401
    assert s2.get(f"{console.base}/api/session", timeout=30).ok
    console.ctl("user", "passwd", "olga", "--password-stdin", input=PASSWORD + "2\n")
    assert s2.get(f"{console.base}/api/session", timeout=30).status_code == 401
    s3, _ = login(console, "olga", PASSWORD + "2")
    console.ctl("user", "remove", "olga")
    assert s3.get(f"{console.base}/api/session", timeout=30).status_code == 401
    r = client(console).post(
        f"{console.base}/api/login", json={"name": "olga", "password": PASSWORD + "2"}, timeout=30
    )
    assert r.status_code == 401


def test_member_lookup_says_why_in_words_and_events_filter(console: Any) -> None:
    s, _ = login(console, "vic")
    console.ctl("present", "--door", "front", "--card", "H10301:12:65000", check=False)
    r = s.get(f"{console.base}/api/events", params={"type": "access.", "door": "front"}, timeout=30)
    evs = r.json()["events"]
    assert evs
    assert evs[0]["reason"] == "unknown_credential"
    assert evs[0]["why"] == "this card or PIN belongs to no one on this site"
    found = s.get(f"{console.base}/api/members", params={"q": "linus"}, timeout=30).json()
    assert [m["id"] for m in found["members"]] == ["m-1003"]
    assert found["members"][0]["name"] == "Linus Suspended"
    m = s.get(f"{console.base}/api/members/m-1003", timeout=30).json()
    assert all(d["why"] for d in m["doors"])
    assert any("invoices are overdue" in d["why"] for d in m["doors"])
    assert s.get(f"{console.base}/api/members/nobody", timeout=30).status_code == 404
    assert s.get(f"{console.base}/api/events", params={"limit": "x"}, timeout=30).status_code == 400


def test_pairing_codes_work_once_and_tokens_reach_nothing_else(console: Any) -> None:
    r = console.ctl("panel", "pair", "nowhere", check=False)
    assert r.returncode == 2
    assert "no room 'nowhere'" in r.stderr
    out = console.ctl("panel", "pair", "reception").stdout
    assert "SHA-256" in out
    code = out.split(": ", 1)[1].split()[0]
    s = client(console)
    r = s.post(
        f"{console.base}/api/pair", json={"code": code.lower().replace("-", " ")}, timeout=30
    )
    assert r.status_code == 200
    assert r.json()["page"] == "/reception"
    assert s.cookies.get("edge_panel")
    # The code is spent; a wrong one is refused.
    again = client(console).post(f"{console.base}/api/pair", json={"code": code}, timeout=30)
    assert again.status_code == 401
    # The panel's token opens no console API.
    for path in ("/api/doors", "/api/events", "/api/audit", "/api/session"):
        assert s.get(console.base + path, timeout=30).status_code == 401, path
    r = s.post(f"{console.base}/api/doors/front/unlock", json={}, timeout=30)
    assert r.status_code in (401, 403)
    listed = console.ctl_json("panel", "list")
    assert listed[0]["state"] == "paired"
    assert listed[0]["room"] == "reception"
    console.ctl("panel", "revoke", listed[0]["id"])
    assert console.ctl_json("panel", "list")[0]["state"] == "revoked"
    audit = [a["method"] for a in console.ctl_json("audit", "--limit", "50")]
    assert "panel.pair" in audit
    assert "panel.revoke" in audit
    assert code not in console.output()


def test_bad_bodies_are_refused_and_change_nothing(console: Any) -> None:
    s, csrf = login(console, "olga")
    before = events(console)
    h = {"X-CSRF-Token": csrf}
    url = f"{console.base}/api/lockdown"
    big = b'{"on": true, "pad": "' + b"x" * 70_000 + b'"}'
    h_json = {**h, "Content-Type": "application/json"}
    assert s.post(url, data=big, headers=h_json, timeout=30).status_code == 413
    assert s.post(url, data=b"{not json", headers=h_json, timeout=30).status_code == 400
    assert s.post(url, data=b"[1]", headers=h_json, timeout=30).status_code == 400
    assert s.post(url, data=b"on=1", headers=h, timeout=30).status_code == 415
    r = s.post(url, json={"on": "yes", "confirm": True}, headers=h, timeout=30)
    assert r.status_code == 400
    r = s.post(f"{console.base}/api/doors/nowhere/unlock", json={}, headers=h, timeout=30)
    assert r.status_code == 404
    assert "nowhere" in r.reason
    r = s.post(f"{console.base}/api/login", data=b"x" * 70_000, timeout=30)
    assert r.status_code == 413
    assert events(console) == before
    out = console.output()
    assert "refused: 413" in out
    assert "refused: 415" in out


def test_reports_as_json_and_csv_and_the_weekly_event(console: Any) -> None:
    s, _ = login(console, "vic")
    granted = console.ctl_json("present", "--door", "front", "--card", "H10306:1000:50001")
    assert granted["granted"], granted
    today = granted["at"][:10]
    url = f"{console.base}/api/reports/visitors"
    r = s.get(url, params={"from": today, "to": today}, timeout=30)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["start"] == today
    assert report["columns"][0] == "date"
    assert report["rows"][0][0] == today
    assert sum(report["rows"][0][1:]) >= 1
    csv = s.get(url, params={"from": today, "to": today, "format": "csv"}, timeout=30)
    assert csv.headers["Content-Type"].startswith("text/csv")
    assert f"{today}.csv" in csv.headers["Content-Disposition"]
    assert csv.text.splitlines()[1].startswith(today)
    # Bad kinds, dates and periods are refused in words.
    assert s.get(f"{console.base}/api/reports/nothing", timeout=30).status_code == 404
    r = s.get(url, params={"from": "yesterday"}, timeout=30)
    assert r.status_code == 400
    assert "a date like" in r.reason
    r = s.get(url, params={"from": "2026-12-01", "to": "2026-11-01"}, timeout=30)
    assert r.status_code == 400
    # Sending the weekly report is for admins; it lands in the outbox.
    v_csrf = login(console, "vic")[1]
    r = s.post(f"{console.base}/api/reports/weekly", headers={"X-CSRF-Token": v_csrf}, timeout=30)
    assert r.status_code in (403, 401)
    a, a_csrf = login(console, "ada")
    r = a.post(f"{console.base}/api/reports/weekly", headers={"X-CSRF-Token": a_csrf}, timeout=30)
    assert r.status_code == 200, r.text
    weekly = console.ctl_json("events", "--type", "site.report.weekly")
    assert weekly[-1]["id"] == r.json()["id"]
    assert set(weekly[-1]["details"]) >= {"start", "end", "visitors", "rooms", "companies"}
