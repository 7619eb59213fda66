"""End to end: the daemon as a process on the simulated site's wire protocols.

OSDP readers are libosdp peripherals behind a simulated RS-485 cable, the
Wiegand reader sends edges to the daemon's socket, the strikes, contacts and
exit buttons are a pymodbus board over Modbus TCP. Nothing of the gateway is
replaced: what is checked is what the hardware was told.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from drivers.osdp import Reply, encode_packet
from hwsim.site import SimDoor, SimSite, SiteThread
from hwsim.sitegen import example_site, reference_monday

DOORS = (
    SimDoor("front", "osdp", "osdp", unlock_seconds=2, held_open_seconds=2, prealarm_seconds=1),
    SimDoor("server-room", "wiegand", exit_button=False),
    SimDoor("office-12", "osdp", exit_button=False, wrong_key=True),
    SimDoor("room-ada", "osdp", contact=False, exit_button=False, strike="osdp"),
    SimDoor("lobby", "osdp", contact=False, exit_button=False, factory_key=True),
)
RESIDENT = "H10306:1000:50001"  # m-1002, resident, billing ok, any hour
SUSPENDED = "H10301:12:4000"  # m-1003, billing suspended
RADIA = "H10301:12:4005"  # m-1011, server room by card then PIN 9753


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Rig:
    def __init__(self, site: SimSite, thread: SiteThread, daemon: Any) -> None:
        self.site = site
        self.thread = thread
        self.daemon = daemon

    def events(self, prefix: str = "") -> list[dict[str, Any]]:
        args = ["events", "--limit", "200"] + (["--type", prefix] if prefix else [])
        return list(self.daemon.ctl_json(*args))

    def reader(self, name: str) -> dict[str, Any]:
        readers = self.daemon.ctl_json("status")["readers"]
        return next(r for r in readers if r["name"] == name)

    def door(self, door_id: str) -> dict[str, Any]:
        doors = self.daemon.ctl_json("status")["doors"]
        return next(d for d in doors if d["id"] == door_id)

    def coil_history(self, door: str) -> list[bool]:
        assert self.site.board is not None
        coil = self.site.coils[door]
        return [c.on for c in self.site.board.history if c.coil == coil]


def start_rig(
    tmp_path: Path, daemon_factory: Any, site: SimSite, thread: SiteThread, readers: tuple[str, ...]
) -> Rig:
    """The daemon on `site`, with the example site imported and `readers` online."""
    daemon = daemon_factory('[site]\nid = "mitte"\n[log]\nlevel = "info"\n' + site.config())
    site.provision(daemon.state_dir)
    daemon.start()
    doc, _ = example_site(reference_monday(date.today()))
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(doc))
    daemon.ctl("import", str(snapshot))
    rig = Rig(site, thread, daemon)
    wait_for(
        "the secure readers online",
        lambda: all(rig.reader(n)["state"] == "online (secure channel)" for n in readers),
    )
    return rig


@pytest.fixture
def rig(tmp_path: Path, daemon_factory: Any) -> Iterator[Rig]:
    site = SimSite(tmp_path / "site", DOORS)
    (tmp_path / "site").mkdir()
    with SiteThread(site) as thread:
        rig = start_rig(
            tmp_path, daemon_factory, site, thread, ("front-in", "front-out", "room-ada-in")
        )
        yield rig
        rig.daemon.stop()


def test_osdp_card_with_secure_channel_unlocks_and_shows_green(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("front-in", RESIDENT))
    rig.thread.call(rig.site.wait_unlocked("front"))
    wait_for("a green LED", lambda: rig.site.led("front-in") == "green")
    sim = rig.site.reader("front-in").sim
    assert sim is not None
    wait_for("the text", lambda: sim.state.texts and sim.state.texts[-1] == "WELCOME")
    granted = rig.events("access.")[-1]
    assert granted["type"] == "access.granted"
    assert granted["holder"] == "m-1002"
    assert granted["details"]["reader"] == "front-in"
    # Relocked after unlock_seconds (2 s): the strike pulse ends.
    rig.thread.call(rig.site.wait_unlocked("front", False))
    assert rig.coil_history("front")[-2:] == [True, False]


def test_suspended_member_stays_locked_and_sees_red(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("front-in", SUSPENDED))
    wait_for("a red LED", lambda: rig.site.led("front-in") == "red")
    denied = rig.events("access.")[-1]
    assert (denied["type"], denied["reason"]) == ("access.denied", "billing_suspended")
    assert True not in rig.coil_history("front")
    assert not rig.site.unlocked("front")


def test_out_side_reader_decides_for_the_same_door(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("front-out", RESIDENT))
    rig.thread.call(rig.site.wait_unlocked("front"))
    granted = rig.events("access.")[-1]
    assert (granted["details"]["reader"], granted["details"]["side"]) == ("front-out", "out")


def test_wiegand_card_then_pin_on_a_card_and_pin_door(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("server-room-in", RADIA))
    first = wait_for("the card decision", lambda: rig.events("access.")[-1:])
    assert first[0]["reason"] == "pin_required"
    assert not rig.site.unlocked("server-room")
    rig.thread.call(rig.site.pin("server-room-in", "9753"))
    rig.thread.call(rig.site.wait_unlocked("server-room"))
    granted = rig.events("access.")[-1]
    assert (granted["type"], granted["holder"]) == ("access.granted", "m-1011")


def test_wiegand_wrong_pin_after_card_stays_locked(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("server-room-in", RADIA))
    rig.thread.call(rig.site.pin("server-room-in", "0000"))
    wait_for("the PIN decision", lambda: len(rig.events("access.")) >= 2)
    assert rig.events("access.")[-1]["type"] == "access.denied"
    assert True not in rig.coil_history("server-room")


def test_door_opened_without_grant_is_forced(rig: Rig) -> None:
    rig.thread.do(rig.site.open_door, "server-room")
    forced = wait_for("door.forced", lambda: rig.events("door.forced"))
    assert forced[-1]["door"] == "server-room"
    assert rig.door("server-room")["state"] == "locked, FORCED OPEN"
    rig.thread.do(rig.site.close_door, "server-room")
    wait_for("closed", lambda: rig.door("server-room")["state"] == "locked, closed")


def test_exit_button_unlocks_and_opening_is_not_forced(rig: Rig) -> None:
    rig.thread.call(rig.site.press_exit("front"))
    rig.thread.call(rig.site.wait_unlocked("front"))
    rig.thread.do(rig.site.open_door, "front")
    wait_for("open", lambda: "open" in rig.door("front")["state"])
    rig.thread.do(rig.site.close_door, "front")
    wait_for("closed", lambda: rig.door("front")["state"] == "locked, closed")
    assert rig.events("door.forced") == []


def test_door_left_open_raises_held_open(rig: Rig) -> None:
    rig.thread.call(rig.site.badge("front-in", RESIDENT))
    rig.thread.call(rig.site.wait_unlocked("front"))
    rig.thread.do(rig.site.open_door, "front")
    # The pre-alarm (1 s before) turns the door's readers red.
    wait_for("the pre-alarm", lambda: rig.site.led("front-in") == "red")
    held = wait_for("door.held_open", lambda: rig.events("door.held_open"), timeout=10)
    assert held[-1]["door"] == "front"
    assert rig.door("front")["state"].endswith("HELD OPEN")
    assert rig.events("door.forced") == []


def test_reader_with_wrong_key_is_reported_and_never_decides(rig: Rig) -> None:
    reader = wait_for(
        "the wrong-key reader reported",
        lambda: (r := rig.reader("office-12-in"))["fault"] and r,
    )
    assert reader["state"] == "offline"
    assert "secure channel failed" in reader["fault"]
    assert "office-12-in" in rig.door("office-12")["fault"]
    wait_for(
        "its reader.offline",
        lambda: [
            e for e in rig.events("reader.offline") if e["details"]["reader"] == "office-12-in"
        ],
    )
    rig.thread.call(rig.site.badge("office-12-in", RESIDENT))
    time.sleep(1.0)
    assert [e for e in rig.events("access.") if e["door"] == "office-12"] == []
    assert True not in rig.coil_history("office-12")


def test_silent_reader_goes_offline_and_recovers(rig: Rig) -> None:
    rig.thread.call(rig.site.power_off("front-out"))
    wait_for("reader.offline", lambda: rig.reader("front-out")["state"] == "offline")

    # Other readers of the shared rig may have events of their own (an earlier
    # test's wrong-key reader): this reader's are looked for by name.
    def of_front_out(kind: str) -> list[Any]:
        return [e for e in rig.events(kind) if e["details"]["reader"] == "front-out"]

    wait_for("the event", lambda: of_front_out("reader.offline"))
    rig.thread.call(rig.site.power_on("front-out"))
    wait_for(
        "back online",
        lambda: rig.reader("front-out")["state"] == "online (secure channel)",
        timeout=15,
    )
    assert of_front_out("reader.online")
    rig.thread.call(rig.site.badge("front-out", RESIDENT))
    rig.thread.call(rig.site.wait_unlocked("front"))


def test_admin_unlock_and_lockdown_drive_the_strike(rig: Rig) -> None:
    rig.daemon.ctl("door", "unlock", "front", "--seconds", "30")
    rig.thread.call(rig.site.wait_unlocked("front"))
    rig.daemon.ctl("lockdown", "on", "front")
    rig.thread.call(rig.site.wait_unlocked("front", False))
    rig.thread.call(rig.site.badge("front-in", RESIDENT))
    wait_for("a red LED", lambda: rig.site.led("front-in") == "red")
    assert not rig.site.unlocked("front")
    types = [e["type"] for e in rig.events("door.")]
    assert types[-2:] == ["door.unlocked", "door.locked"]


def test_strike_on_the_readers_own_output(rig: Rig) -> None:
    sim = rig.site.reader("room-ada-in").sim
    assert sim is not None
    wait_for("the locked state written", lambda: sim.state.outputs.get(0) is False)
    rig.daemon.ctl("door", "unlock", "room-ada", "--seconds", "1")
    rig.thread.call(rig.site.wait_unlocked("room-ada"))
    rig.thread.call(rig.site.wait_unlocked("room-ada", False))
    types = [e["type"] for e in rig.events("door.") if e["door"] == "room-ada"]
    assert types[-2:] == ["door.unlocked", "door.locked"]


def test_tamper_report_is_an_event(rig: Rig) -> None:
    sim = rig.site.reader("front-out").sim
    assert sim is not None
    sim.report_status(tamper=True, power=False)
    tamper = wait_for("reader.tamper", lambda: rig.events("reader.tamper"))
    assert tamper[-1]["details"] == {"reader": "front-out", "tamper": True, "power_failure": False}


def test_install_mode_enrols_a_new_reader_with_a_key_of_its_own(rig: Rig) -> None:
    sim = rig.site.reader("lobby-in").sim
    assert sim is not None
    key_file = rig.daemon.state_dir / "secrets" / "osdp-lobby-in"
    wait_for("the key installed", lambda: key_file.exists() and sim.state.keys)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = bytes.fromhex(key_file.read_text())
    assert sim.state.keys == [key]
    assert key != rig.site.reader("lobby-in").key  # random, not anything the site chose
    wait_for(
        "back on the new key",
        lambda: rig.reader("lobby-in")["state"] == "online (secure channel)" and sim.sc_active,
    )


def test_osdp_frames_refused_on_the_bus_show_in_status(rig: Rig) -> None:
    """Line noise on the RS-485 cable: counted per cause, shown, and the bus carries on."""

    def bus() -> dict[str, Any]:
        buses = rig.daemon.ctl_json("status")["buses"]
        return next(b for b in buses if b["name"] == "sim-osdp")

    assert bus()["refused"] == {}  # a healthy bus refuses nothing
    ack = encode_packet(1, Reply.ACK, sqn=1, reply=True)
    noise = ack[:-1] + bytes([ack[-1] ^ 0xFF])  # the CRC's last byte wrong

    def refused_after_more_noise() -> bool:
        # Noise that overlaps a real reply may be swallowed by the resync and not
        # counted (one full run timed out at three frames): inject until three are.
        rig.thread.do(rig.site.osdp_link.inject, "b->a", noise)
        time.sleep(0.2)
        return bool(sum(bus()["refused"].values()) >= 3)

    wait_for("the refusals counted", refused_after_more_noise)
    assert set(bus()["refused"]) <= {"bad_check", "late", "malformed", "foreign"}, bus()
    assert "frames refused: " in rig.daemon.ctl("status").stdout
    # The readers are still served: a badge after the noise opens the door.
    rig.thread.call(rig.site.badge("front-in", RESIDENT))
    rig.thread.call(rig.site.wait_unlocked("front"))
    assert bus()["state"] == "online"


def test_strike_on_a_modbus_rtu_board_over_rs485(tmp_path: Path, daemon_factory: Any) -> None:
    """The same door with its relay board on a simulated RS-485 line (RTU at 19,200 baud)."""
    work = tmp_path / "rtu"
    work.mkdir()
    door = SimDoor("front", "osdp", None, exit_button=False, unlock_seconds=1)
    site = SimSite(work, [door], modbus="rtu", modbus_baudrate=19200)
    with SiteThread(site) as thread:
        rig = start_rig(tmp_path, daemon_factory, site, thread, ("front-in",))
        daemon = rig.daemon
        assert {b["name"]: b["state"] for b in daemon.ctl_json("status")["buses"]} == {
            "sim-osdp": "online",
            "sim-io": "online",
        }
        thread.call(site.badge("front-in", RESIDENT))
        thread.call(site.wait_unlocked("front"))
        thread.do(site.open_door, "front")
        wait_for("open", lambda: rig.door("front")["state"].endswith(", open"))
        thread.do(site.close_door, "front")
        thread.call(site.wait_unlocked("front", False))
        daemon.stop()
