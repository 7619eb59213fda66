"""End to end: `edge-gateway run` as a process, driven by the real `edgectl`."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import DAY, REPO, raw_replies

TEN = f"{DAY}T10:00:00+01:00"


def _always_day_passes(doc: dict[str, Any]) -> dict[str, Any]:
    """The example site, with day passes valid at any hour (real presentations happen now)."""
    doc["site"]["day_pass_access"] = [{"group": "members", "schedule": "always"}]
    return doc


@pytest.fixture
def daemon(daemon_factory: Any, example_doc: dict[str, Any], tmp_path: Path) -> Any:
    d = daemon_factory().start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(_always_day_passes(example_doc)))
    d.ctl("import", str(snapshot))
    return d


def test_status_reports_ready_and_counts(daemon: Any) -> None:
    status = daemon.ctl_json("status")
    assert status["ready"] is True
    assert status["site"] == "mitte"
    assert status["members"] == 12
    assert status["guests"] == 1
    assert status["credentials"] == 16
    assert {d["id"] for d in status["doors"]} == {"front", "office-12", "server-room", "room-ada"}
    human = daemon.ctl("status").stdout
    assert "ready:       yes" in human


@pytest.mark.parametrize(
    ("args", "granted", "reason", "holder"),
    [
        (["--door", "front", "--card", "H10301:12:3456"], True, "plan", "m-1001"),
        (["--door", "front", "--card", "H10301:12:4000"], False, "billing_suspended", "m-1003"),
        (["--door", "front", "--card", "raw:0A0B0C0D"], True, "day_pass", "m-1008"),
        (["--door", "server-room", "--card", "H10301:12:4005"], False, "pin_required", "m-1011"),
        (
            ["--door", "server-room", "--card", "H10301:12:4005", "--pin", "9753"],
            True,
            "grant",
            "m-1011",
        ),
        (
            ["--door", "server-room", "--card", "H10301:12:4005", "--pin", "1234"],
            False,
            "wrong_pin",
            "m-1011",
        ),
        (["--door", "front", "--pin", "1111"], True, "guest", "g-9"),
        (["--door", "front", "--card", "H10301:200:1"], False, "unknown_credential", None),
    ],
    ids=[
        "plan",
        "suspended",
        "day-pass",
        "pin-required",
        "card-then-pin",
        "wrong-pin",
        "guest-pin",
        "unknown",
    ],
)
def test_decide_dry_run(
    daemon: Any, args: list[str], granted: bool, reason: str, holder: str | None
) -> None:
    r = daemon.ctl("decide", *args, "--at", TEN, "--json", check=False)
    assert r.returncode == (0 if granted else 1), r.stderr
    d = json.loads(r.stdout)
    assert (d["granted"], d["reason"], d["holder"]) == (granted, reason, holder)


def test_dry_run_consumes_and_records_nothing(daemon: Any) -> None:
    before = daemon.ctl_json("events", "--limit", "1000")
    for _ in range(3):
        d = json.loads(
            daemon.ctl(
                "decide", "--door", "front", "--card", "raw:0a0b0c0d", "--at", TEN, "--json"
            ).stdout
        )
        assert d["details"]["consumed"] is True  # would consume, every time: nothing applied
    after = daemon.ctl_json("events", "--limit", "1000")
    assert len(after) == len(before)
    assert daemon.ctl_json("member", "show", "m-1008")["day_pass_balance_used_here"] == 0


def test_real_presentation_consumes_once_per_day_and_records(daemon: Any) -> None:
    first = json.loads(
        daemon.ctl("present", "--door", "front", "--card", "raw:0a0b0c0d", "--json").stdout
    )
    assert first["granted"]
    assert first["reason"] == "day_pass"
    assert first["details"]["consumed"] is True
    second = json.loads(
        daemon.ctl("present", "--door", "front", "--card", "raw:0a0b0c0d", "--json").stdout
    )
    assert second["granted"]
    assert second["details"]["consumed"] is False
    usage = daemon.ctl_json("events", "--type", "usage.")
    assert [e["type"] for e in usage] == ["usage.day_pass"]
    assert usage[0]["holder"] == "m-1008"
    assert usage[0]["details"]["source"] == "balance"
    member = daemon.ctl_json("member", "show", "m-1008")
    assert member["day_pass_balance_used_here"] == 1
    assert member["day_pass_used_today"] == "balance"


def test_usage_event_survives_kill_9(daemon: Any) -> None:
    r = daemon.ctl("present", "--door", "front", "--card", "raw:0a0b0c0d", "--json")
    assert json.loads(r.stdout)["details"]["consumed"] is True
    daemon.stop(sig=signal.SIGKILL)
    daemon.start()
    usage = daemon.ctl_json("events", "--type", "usage.")
    assert [(e["type"], e["holder"]) for e in usage] == [("usage.day_pass", "m-1008")]
    # The consumption itself survived too: the same day, no second pass is taken.
    again = json.loads(
        daemon.ctl("present", "--door", "front", "--card", "raw:0a0b0c0d", "--json").stdout
    )
    assert again["granted"]
    assert again["details"]["consumed"] is False


def test_member_show_explains(daemon: Any) -> None:
    m = daemon.ctl_json("member", "show", "m-1001", "--at", TEN)
    doors = {d["door"]: (d["granted"], d["reason"]) for d in m["doors"]}
    assert doors["front"] == (True, "plan")
    assert doors["office-12"] == (True, "company")
    assert doors["server-room"] == (False, "no_access")
    assert [c["id"] for c in m["credentials"]] == ["m-1001-card", "m-1001-pin"]
    assert all("pin_hmac" not in json.dumps(c) for c in m["credentials"])
    r = daemon.ctl("member", "show", "nobody", check=False)
    assert r.returncode == 2
    assert "no member or guest 'nobody'" in r.stderr


def test_lockdown_site_and_doors_audited_with_uid(daemon: Any) -> None:
    card = ["--card", "H10306:1000:50001"]
    daemon.ctl("lockdown", "on", "office-12")
    assert daemon.ctl("decide", "--door", "front", *card, check=False).returncode == 0
    daemon.ctl("lockdown", "on")
    d = json.loads(daemon.ctl("decide", "--door", "front", *card, "--json", check=False).stdout)
    assert (d["granted"], d["reason"]) == (False, "lockdown")
    assert all(door["state"] == "lockdown" for door in daemon.ctl_json("status")["doors"])
    daemon.ctl("lockdown", "off")
    assert daemon.ctl("decide", "--door", "front", *card, check=False).returncode == 0
    r = daemon.ctl("lockdown", "on", "no-such-door", check=False)
    assert r.returncode == 2
    assert "unknown door(s) no-such-door" in r.stderr
    audit = daemon.ctl_json("audit")
    assert [a["method"] for a in audit[-4:]] == ["lockdown"] * 4
    assert all(a["uid"] == os.getuid() for a in audit)
    assert audit[-1]["outcome"].startswith("refused")
    # Stored in UTC, shown in the site's zone like every other time (the example site is
    # in Europe/Berlin); the same instant as the events of the same calls.
    berlin = ZoneInfo("Europe/Berlin")
    for a in audit:
        at = datetime.fromisoformat(a["at"])
        assert at.utcoffset() == berlin.utcoffset(at.replace(tzinfo=None)), a["at"]
    human = daemon.ctl("audit").stdout.splitlines()[-1]
    assert human.startswith(audit[-1]["at"])


def test_lockdown_survives_restart(daemon: Any) -> None:
    daemon.ctl("lockdown", "on", "front")
    daemon.stop()
    daemon.start()
    d = json.loads(
        daemon.ctl(
            "decide", "--door", "front", "--card", "H10306:1000:50001", "--json", check=False
        ).stdout
    )
    assert d["reason"] == "lockdown"


def test_door_unlock_relocks_and_is_refused_in_lockdown(daemon: Any) -> None:
    r = daemon.ctl_json("door", "unlock", "office-12", "--seconds", "1")
    assert r["door"] == "office-12"
    states = {d["id"]: d["state"] for d in daemon.ctl_json("status")["doors"]}
    assert states["office-12"] == "unlocked (admin)"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        types = [e["type"] for e in daemon.ctl_json("events", "--type", "door.")]
        if "door.locked" in types:
            break
        time.sleep(0.1)
    assert types[-2:] == ["door.unlocked", "door.locked"]
    daemon.ctl("lockdown", "on", "office-12")
    r = daemon.ctl("door", "unlock", "office-12", check=False)
    assert r.returncode == 1
    assert "lockdown" in r.stderr
    r = daemon.ctl("door", "unlock", "office-12", "--seconds", "999999", check=False)
    assert r.returncode == 2


def test_events_follow_streams_new_events(daemon: Any) -> None:
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.ops.edgectl",
            "--state-dir",
            str(daemon.state_dir),
            "events",
            "--follow",
            "--limit",
            "1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        follower.stdout.readline()  # the one recent event
        time.sleep(0.3)  # let it subscribe
        daemon.ctl("present", "--door", "front", "--card", "H10306:1000:50001")
        event = json.loads(follower.stdout.readline())
        assert (event["type"], event["holder"]) == ("access.granted", "m-1002")
    finally:
        follower.terminate()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_bad_commands_are_refused_clearly(daemon: Any) -> None:
    r = daemon.ctl("decide", "--door", "front", "--card", "H10301:999:1", check=False)
    assert r.returncode == 2
    assert "does not fit 8 bits" in r.stderr
    r = daemon.ctl("decide", "--door", "front", "--card", "HID:1:2", check=False)
    assert r.returncode == 2
    assert "unknown card format" in r.stderr
    r = daemon.ctl("decide", "--door", "front", "--pin", "12a4", check=False)
    assert r.returncode == 2
    r = daemon.ctl(
        "decide", "--door", "front", "--card", "H10301:12:3456", "--at", "tomorrow", check=False
    )
    assert r.returncode == 2
    assert "params.at" in r.stderr
    r = daemon.ctl("decide", "--door", "nowhere", "--card", "H10301:12:3456", "--json", check=False)
    assert json.loads(r.stdout)["reason"] == "unknown_door"
    r = daemon.ctl("import", "/does/not/exist.json", check=False)
    assert r.returncode == 2
    # Garbage on the socket gets an error reply; the daemon keeps deciding.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.state_dir / "admin.sock"))
        s.sendall(b'this is not json\n{"id": 7, "method": "nope"}\n')
        s.settimeout(30)
        replies_file = s.makefile()  # one buffer for both: the replies may arrive together
        replies = replies_file.readline(), replies_file.readline()
    assert "bad_request" in replies[0]
    # A line over the limit (1 MiB) is answered, then the connection closes.
    too_long = raw_replies(daemon.state_dir / "admin.sock", b'{"id": 1' + b" " * (1 << 20) + b"}\n")
    assert too_long == [
        {"id": None, "error": {"code": "bad_request", "message": "request line too long"}}
    ]
    assert (
        daemon.ctl(
            "decide", "--door", "front", "--card", "H10306:1000:50001", check=False
        ).returncode
        == 0
    )


def test_refused_import_keeps_deciding(
    daemon: Any, example_doc: dict[str, Any], tmp_path: Path
) -> None:
    example_doc["members"][1]["billing"]["status"] = "suspended"
    example_doc["access_groups"][0]["doors"].append("back-door")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(example_doc))
    r = daemon.ctl("import", str(bad), check=False)
    assert r.returncode == 1
    assert "access_groups[0].doors[1]: unknown door 'back-door'" in r.stderr
    assert (
        daemon.ctl(
            "decide", "--door", "front", "--card", "H10306:1000:50001", check=False
        ).returncode
        == 0
    )
    assert daemon.ctl_json("status")["generation"] == 1


def test_sigterm_stops_cleanly_and_removes_socket(daemon: Any) -> None:
    sock = daemon.state_dir / "admin.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert daemon.stop(sig=signal.SIGTERM) == 0
    assert not sock.exists()
    assert "daemon: stopped" in daemon.output()
    r = daemon.ctl("status", check=False)
    assert r.returncode == 3
    assert "cannot reach the gateway" in r.stderr


def test_systemd_notify_ready_watchdog_stopping(daemon_factory: Any, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        d = daemon_factory(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        d.start(wait=False)
        messages: list[str] = []
        while not any(m.startswith("WATCHDOG=1") for m in messages) or not any(
            m.startswith("READY=1") for m in messages
        ):
            messages.append(listener.recv(4096).decode())
        d.stop(sig=signal.SIGTERM)
        while not any(m.startswith("STOPPING=1") for m in messages):
            messages.append(listener.recv(4096).decode())
    assert messages.index(next(m for m in messages if m.startswith("READY=1"))) < messages.index(
        next(m for m in messages if m.startswith("STOPPING=1"))
    )


def test_starts_without_pin_key_and_refuses_pins(
    daemon_factory: Any, example_doc: Any, tmp_path: Path
) -> None:
    d = daemon_factory(pin_key=False).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))
    assert d.ctl_json("status")["pin_key"] is False
    r = d.ctl("decide", "--door", "front", "--pin", "1111", check=False)
    assert r.returncode == 1
    assert "no site PIN key" in r.stderr
    assert (
        d.ctl("decide", "--door", "front", "--card", "H10306:1000:50001", check=False).returncode
        == 0
    )
    assert "no site PIN key provisioned" in d.output()


def test_example_config_runs_as_is(daemon_factory: Any) -> None:
    d = daemon_factory((REPO / "config.example.toml").read_text()).start()
    status = d.ctl_json("status")
    assert status["ready"] is True
    assert status["gateway"] == "gw-1"
    assert status["site"] is None  # nothing imported yet; decisions are served anyway
    r = d.ctl("decide", "--door", "front", "--card", "H10301:12:3456", "--json", check=False)
    assert json.loads(r.stdout)["reason"] == "no_site"
    # Its hardware is not on this machine: every device is a fault in words, not a crash.
    buses = {b["name"]: b for b in status["buses"]}
    assert buses["relays"]["state"] == "offline"
    assert "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0" in buses["relays"]["fault"]
    readers = {r["name"]: r for r in status["readers"]}
    assert readers["front-in"]["state"] == "offline"
    assert "key file" in readers["front-in"]["fault"]  # no key provisioned for it here
    assert readers["server-room"]["fault"] == (
        "cannot open /dev/gpiochip0 lines 17 (D0) and 27 (D1): No such file or directory"
    )
    doors = {door["id"]: door for door in status["doors"]}
    assert doors["front"]["fault"].startswith(
        "strike not switched: relays: port /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0 "
        "not found; door contact not read: "
    )
    text = d.ctl("status").stdout
    assert "FAULT:" in text
    assert d.stop() == 0


def test_site_lockdown_ends_admin_unlocks(daemon: Any) -> None:
    daemon.ctl("door", "unlock", "office-12", "--seconds", "600")
    daemon.ctl("lockdown", "on")
    daemon.ctl("lockdown", "off")
    states = {d["id"]: d["state"] for d in daemon.ctl_json("status")["doors"]}
    assert states["office-12"] == "locked"
    types = [e["type"] for e in daemon.ctl_json("events", "--type", "door.")]
    assert types[-2:] == ["door.unlocked", "door.locked"]


def test_dry_run_with_a_pin_is_audited_and_masked(daemon: Any) -> None:
    daemon.ctl("decide", "--door", "front", "--pin", "1111", "--at", TEN)
    daemon.ctl("decide", "--door", "front", "--card", "H10306:1000:50001")
    audit = daemon.ctl_json("audit")
    assert [a["method"] for a in audit] == ["import", "decide"]
    assert audit[-1]["params"]["pin"] == "***"
    assert "1111" not in json.dumps(audit)


def test_edgectl_finds_the_socket_through_the_config(daemon: Any) -> None:
    config = daemon.state_dir.parent / "with-socket.toml"
    config.write_text(f'[site]\nid = "mitte"\n[gateway]\nstate_dir = "{daemon.state_dir}"\n')
    r = subprocess.run(
        [sys.executable, "-m", "edge.ops.edgectl", "--config", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ready"] is True
    config.write_text("[site]\nid = 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "edge.ops.edgectl", "--config", str(config), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "site.id" in r.stderr


def test_a_second_gateway_on_the_same_state_directory_refuses_to_start(daemon: Any) -> None:
    assert daemon.proc is not None
    second = subprocess.run(
        [
            *(sys.executable, "-m", "edge.ops.cli", "run"),
            *("--config", str(daemon.config), "--state-dir", str(daemon.state_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon.env,
    )
    assert second.returncode == 1, second.stderr
    assert f"another gateway (pid {daemon.proc.pid}) is running" in second.stderr
    # The first one did not notice: it still answers, its socket still in place.
    assert daemon.ctl_json("status")["ready"] is True
    # A SIGKILL leaves the lock file behind but not the lock: the restart starts.
    daemon.stop(sig=signal.SIGKILL)
    assert (daemon.state_dir / "gateway.lock").exists()
    daemon.start()
    assert daemon.ctl_json("status")["ready"] is True
