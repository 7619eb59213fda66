"""Rooms end to end: the daemon as a process, a real Mosquitto, simulated Tasmota
plug, Zigbee2MQTT light, panel and Modbus HVAC unit, bookings on the real clock."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hwsim.broker import Mosquitto
from hwsim.devices import SimPanel, SimTasmotaPlug, SimZigbee2Mqtt
from hwsim.hvac import SimHvac
from hwsim.modbus_board import ModbusBoard
from hwsim.sitegen import example_site
from tests.conftest import DAY, Daemon

T = TypeVar("T")
BOOKER_CARD = "raw:0A0B0C0D"  # m-1008: nonmember, no credits, no company
ACME_CARD = "H10301:12:4003"  # m-1009: ACME employee, the company has 40 credits
UNKNOWN_CARD = "H10301:99:9999"
COMFORT, STANDBY = 1, 2


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class LoopThread:
    """An event loop in a thread, for the asyncio simulators (the HVAC unit)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop")

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class Site:
    """The room side of a site: broker, devices, HVAC, a panel and the daemon."""

    def __init__(self, tmp: Path, broker: Mosquitto, loop: LoopThread, daemon_factory: Any):
        self.tmp = tmp
        self.broker = broker
        self.loop = loop
        self.tv = SimTasmotaPlug(broker.host, broker.port, "ada_tv")
        self.z2m = SimZigbee2Mqtt(broker.host, broker.port)
        self.hvac = SimHvac(unit=10, mode=STANDBY, setpoint_c=17.0)
        self.panel = SimPanel(broker.host, broker.port, "mitte", "ada")
        self.doc, _ = example_site(DAY)
        for room in self.doc["rooms"]:
            room.update(checkin_early_min=0, no_show_release_min=1)
        self.doc["rooms"].append(
            {
                "id": "babbage",
                "name": "Babbage room",
                "door": None,
                "capacity": 4,
                "no_show_release_min": 1,
                "checkin_early_min": 0,
                "credits_per_hour": 2,
            }
        )
        self.doc["bookings"] = []
        self.daemon_factory = daemon_factory
        self.d: Daemon | None = None

    def start(self, extra: str = "", **room: float) -> Site:
        self.tv.start()
        self.z2m.start()
        self.light = self.z2m.add_light("ada/ceiling")
        self.loop.call(self.hvac.start())
        rc = {
            "preconditioning_min": 0.1,
            "ending_warning_min": 0.1,
            "grace_min": 0.05,
            "overtime_unit_min": 1,
            **room,
        }
        rooms = "".join(f"{k} = {v}\n" for k, v in rc.items())
        b = self.broker
        text = f"""
[site]
id = "mitte"
[log]
level = "debug"
[mqtt]
host = "{b.host}"
port = {b.port}
[buses.hvac]
type = "modbus_tcp"
host = "127.0.0.1"
port = {self.hvac.tcp_port}
[rooms.ada]
{rooms}
[rooms.babbage]
[devices.ada-tv]
type = "tasmota"
room = "ada"
topic = "ada_tv"
role = "tv"
confirm_timeout_s = 0.5
retries = 2
[devices.ada-light]
type = "zigbee2mqtt"
room = "ada"
name = "ada/ceiling"
role = "light"
[devices.ada-hvac]
type = "modbus_hvac"
room = "ada"
bus = "hvac"
unit = 10
poll_s = 0
{extra}
"""
        self.d = self.daemon_factory(text)
        self.d.start()
        self.panel.start()
        self.publish()
        return self

    def stop(self) -> None:
        for dev in (self.panel, self.z2m, self.tv):
            dev.stop()
        if self.d is not None:
            self.d.stop()
        self.loop.call(self.hvac.stop())

    @property
    def daemon(self) -> Daemon:
        assert self.d is not None
        return self.d

    def publish(self) -> None:
        """The site document as it stands, imported like a snapshot."""
        path = self.tmp / "site.json"
        path.write_text(json.dumps(self.doc))
        self.daemon.ctl("import", str(path))

    def book(self, bid: str, start: float, end: float, room: str = "ada", **kw: Any) -> None:
        self.doc["bookings"].append(
            {
                "id": bid,
                "room": room,
                "member": "m-1008",
                "attendees": [],
                "start": iso(start),
                "end": iso(end),
                "status": "confirmed",
                "invoiced": False,
                "recurrence_id": None,
                **kw,
            }
        )
        self.publish()

    def room(self, rid: str = "ada") -> dict[str, Any]:
        rooms = self.daemon.ctl_json("rooms")
        return next(r for r in rooms if r["room"] == rid)

    def events(self, type_: str) -> list[dict[str, Any]]:
        return list(self.daemon.ctl_json("events", "--type", type_, "--limit", "1000"))

    def present(self, card: str, door: str = "room-ada") -> dict[str, Any]:
        return dict(self.daemon.ctl_json("present", "--door", door, "--card", card, check=False))

    def hvac_at(self, mode: int, setpoint: float) -> bool:
        return self.hvac.mode == mode and math.isclose(self.hvac.setpoint_c, setpoint)

    def panel_state(self, state: str) -> dict[str, Any]:
        return wait_for(
            f"the panel to show {state}",
            lambda: (s := self.panel.state) and s.get("state") == state and s,
            timeout=30,
        )


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Any) -> Iterator[Site]:
    with LoopThread() as loop:
        s = Site(tmp_path, mosquitto, loop, daemon_factory)
        try:
            yield s
        finally:
            s.stop()


def test_a_bookings_whole_life(site: Site) -> None:
    site.start()
    assert site.tv.wait_on(False, 10)
    assert site.light.wait_on(False, 10)
    start = math.ceil(time.time()) + 9
    site.book("b-life", start, start + 20)
    # Pre-conditioning: HVAC to comfort before the start; nothing else on.
    site.panel_state("upcoming")
    wait_for("HVAC at comfort", lambda: site.hvac_at(COMFORT, 21.0))
    assert not site.tv.on
    assert not site.light.on
    state = site.panel_state("awaiting_checkin")
    assert state["status"] == "awaiting_checkin"
    assert state["booking"]["id"] == "b-life"
    # Check-in by badge at the room's door: the door opens, devices come on.
    decision = site.present(BOOKER_CARD)
    assert decision["granted"]
    assert decision["reason"] == "booking"
    assert site.tv.wait_on(True, 10)
    assert site.light.wait_on(True, 10)
    state = site.panel_state("in_use")
    assert state["status"] == "busy"
    assert state["minutes_left"] >= 1
    [checked] = site.events("booking.checked_in")
    assert checked["details"]["booking"] == "b-life"
    # The warning, the end, the grace period, then everything off.
    assert site.panel_state("ending")["warning"] is True
    site.panel_state("ended")
    assert site.tv.on
    assert site.light.on
    site.panel_state("free")
    assert site.tv.wait_on(False, 10)
    assert site.light.wait_on(False, 10)
    wait_for("HVAC back to standby", lambda: site.hvac_at(STANDBY, 17.0))
    view = site.room()
    assert view["devices"]["ada-hvac"]["confirmed"] == "standby"
    assert not site.events("usage.room_overtime")  # nobody stayed


def test_a_no_show_is_released_at_the_minute_and_an_invoiced_one_kept(site: Site) -> None:
    site.start()
    start = math.floor(time.time()) - 54  # released 60 s after its start: in about 6 s
    site.book("b-noshow", start, start + 600)
    site.book("b-invoiced", start, start + 600, room="babbage", invoiced=True)
    assert site.room()["state"] == "awaiting_checkin"
    assert site.room("babbage")["state"] == "awaiting_checkin"
    [released] = wait_for("the release", lambda: site.events("booking.released"), timeout=30)
    assert released["details"]["booking"] == "b-noshow"
    assert instant(released["at"]) >= start + 60
    assert instant(released["details"]["release_at"]) == start + 60
    site.panel_state("free")
    # The released booking no longer opens the door.
    decision = site.present(BOOKER_CARD)
    assert not decision["granted"]
    # A dry run at an instant before the release still sees the booking.
    before = site.daemon.ctl_json(
        "decide", "--door", "room-ada", "--card", BOOKER_CARD, "--at", iso(start + 10)
    )
    assert before["reason"] == "booking"
    # The invoiced one keeps its room, and its door, until its end.
    assert site.room("babbage")["state"] == "awaiting_checkin"
    assert [e["details"]["booking"] for e in site.events("booking.released")] == ["b-noshow"]
    # A restart does not release anything twice.
    site.daemon.stop()
    site.daemon.start()
    assert site.room()["state"] == "free"
    assert len(site.events("booking.released")) == 1


def test_an_adhoc_booking_is_paid_in_credits_and_refused_without(site: Site) -> None:
    site.start()
    site.panel_state("free")
    refused = site.panel.request("book", card=BOOKER_CARD, minutes=30)
    assert refused["status"] == "error"
    assert refused["error"] == "no_credits"
    unknown = site.panel.request("book", card=UNKNOWN_CARD, minutes=30)
    assert unknown["status"] == "error"
    assert unknown["error"] == "not_authorised"
    assert not site.events("booking.created")
    assert not site.events("usage.credits")
    ok = site.panel.request("book", card=ACME_CARD, minutes=30)
    assert ok["status"] == "ok", ok
    assert ok["data"]["credits"] == 1
    assert ok["data"]["paid_by"] == "company"
    bid = ok["data"]["booking"]
    [created] = site.events("booking.created")
    [paid] = site.events("usage.credits")
    assert created["details"]["booking"] == bid
    assert created["holder"] == "m-1009"
    assert paid["details"] == {
        "credits": 1,
        "booking": bid,
        "room": "ada",
        "minutes": 30,
        "reason": "book",
        "source": "company",
        "company": "acme",
    }
    assert site.tv.wait_on(True, 10)
    assert site.light.wait_on(True, 10)
    assert site.panel_state("in_use")["booking"]["adhoc"] is True
    busy = site.panel.request("book", card=ACME_CARD, minutes=30)
    assert busy["status"] == "error"
    assert busy["error"] == "room_busy"
    # The booker's card opens the room's door for the booking.
    assert site.present(ACME_CARD)["reason"] == "booking"
    # Extend (paid too), then end early: devices off at once.
    longer = site.panel.request("extend", card=ACME_CARD, minutes=15)
    assert longer["status"] == "ok"
    assert longer["data"]["credits"] == 1
    ended = site.panel.request("end", card=ACME_CARD)
    assert ended["status"] == "ok"
    [early] = site.events("booking.ended_early")
    assert early["details"]["booking"] == bid
    site.panel_state("free")
    assert site.tv.wait_on(False, 10)
    assert site.light.wait_on(False, 10)
    assert len(site.events("usage.credits")) == 2
    # Survives a restart: the booking stays ended, the credits spent.
    site.daemon.stop()
    site.daemon.start()
    assert site.room()["state"] == "free"


def test_overtime_is_billed_in_units(site: Site) -> None:
    site.start(grace_min=0.1)
    start = math.floor(time.time()) - 5
    site.book("b-over", start, start + 10)
    assert site.present(BOOKER_CARD)["granted"]  # checks in
    site.panel_state("ended")
    # Presence after the end: a badge at the door (the booking no longer opens it).
    assert site.present(BOOKER_CARD)["granted"] is False
    site.panel_state("overtime")
    touch = site.panel.request("activity")  # and the panel touched
    assert touch["status"] == "ok"
    site.panel_state("free")
    [over] = wait_for("overtime", lambda: site.events("usage.room_overtime"))
    assert over["details"]["minutes"] == 1
    assert over["details"]["booking"] == "b-over"
    assert over["holder"] == "m-1008"
    assert site.tv.wait_on(False, 10)
    site.daemon.stop()
    site.daemon.start()
    time.sleep(1)
    assert len(site.events("usage.room_overtime")) == 1


def test_a_tv_switched_on_in_a_free_room_is_switched_off(site: Site) -> None:
    site.start()
    site.panel_state("free")
    assert site.tv.wait_on(False, 10)
    site.tv.press()  # someone at the TV's own button
    assert site.tv.wait_on(True, 5)
    assert site.tv.wait_on(False, 5)
    site.z2m.press("ada/ceiling")
    assert site.light.wait_on(False, 5)
    wait_for(
        "the log line",
        lambda: "ada-tv switched on while the room is free" in site.daemon.output(),
    )
    assert site.room()["switched_off"] >= 2


def test_a_device_that_does_not_confirm_is_retried_and_reported(site: Site) -> None:
    site.start()
    site.panel_state("free")
    site.tv.mute = True
    ok = site.panel.request("book", card=ACME_CARD, minutes=30)
    assert ok["status"] == "ok"
    assert site.light.wait_on(True, 10)
    dev = wait_for(
        "the TV reported unavailable",
        lambda: (d := site.room()["devices"]["ada-tv"]) and not d["available"] and d,
    )
    assert "did not confirm ON" in dev["fault"]
    assert site.tv.commands >= 3
    site.tv.mute = False
    assert site.tv.wait_on(True, 30)
    wait_for("the TV available again", lambda: site.room()["devices"]["ada-tv"]["available"])


def test_after_a_broker_restart_rooms_and_devices_converge(site: Site) -> None:
    site.start()
    start = math.floor(time.time()) - 5
    site.book("b-short", start, start + 12)
    assert site.present(BOOKER_CARD)["granted"]
    assert site.tv.wait_on(True, 10)
    assert site.light.wait_on(True, 10)
    site.broker.stop()
    # The booking ends while nobody can be told; the broker loses its retained state.
    time.sleep(max(0.0, start + 12 + 3 + 1 - time.time()))
    assert site.tv.on
    assert site.light.on
    site.broker.start()
    assert site.tv.wait_on(False, 30)
    assert site.light.wait_on(False, 30)
    site.panel_state("free")  # republished, retained again
    wait_for(
        "every device available again",
        lambda: all(d["available"] for d in site.room()["devices"].values()),
    )
    wait_for("HVAC at standby", lambda: site.hvac_at(STANDBY, 17.0))


def test_malformed_panel_requests_get_an_error_and_change_nothing(site: Site) -> None:
    site.start()
    site.panel_state("free")
    before = len(site.daemon.ctl_json("events", "--limit", "1000"))
    cases: list[tuple[str, bytes, str]] = [
        ("book", b"not json", "bad_request"),
        ("book", b"[1, 2]", "bad_request"),
        ("book", b'{"transaction": "t1", "card": 12}', "bad_request"),
        ("book", b'{"transaction": "t2", "card": "H10301:12:4003", "minutes": "x"}', "bad_request"),
        (
            "book",
            b'{"transaction": "t3", "card": "H10301:12:4003", "minutes": 5000}',
            "bad_request",
        ),
        ("book", b'{"transaction": "t4", "card": "nonsense"}', "bad_request"),
        ("book", b'{"transaction": "t5", "pin": "12ab"}', "bad_request"),
        ("check_in", b'{"transaction": "t6"}', "not_authorised"),
        ("dance", b'{"transaction": "t7"}', "bad_request"),
        ("book", b"x" * 5000, "bad_request"),
    ]
    for op, payload, code in cases:
        site.panel.send_raw(op, payload)
        answer = site.panel.wait_response(op, lambda a, c=code: a.get("error") == c, timeout=10)
        assert answer["status"] == "error", (op, payload)
        assert answer["message"], (op, payload)
    assert len(site.daemon.ctl_json("events", "--limit", "1000")) == before
    assert site.room()["state"] == "free"
    assert site.daemon.ctl_json("status")["ready"]


class Watcher:
    """A plain MQTT client that keeps the last message of every topic it sees."""

    def __init__(self, broker: Mosquitto, pattern: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen: dict[str, bytes] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")

        def on_message(_c: object, _u: object, msg: Any) -> None:
            self.seen[msg.topic] = bytes(msg.payload)

        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(pattern, 1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_wifi_availability_and_home_assistant_discovery(site: Site) -> None:
    site.start('[wifi]\nssid = "Mitte Guest"\n[homeassistant]\ndiscovery = true\n')
    watcher = Watcher(site.broker, "#")
    try:
        gateway = "edge/mitte/gateway/gw-1/state"
        wait_for("the gateway online", lambda: watcher.seen.get(gateway) == b'{"state":"online"}')
        wifi = wait_for("the passphrase", lambda: watcher.seen.get("edge/mitte/wifi/guest"))
        first = json.loads(wifi)["passphrase"]
        assert json.loads(wifi)["ssid"] == "Mitte Guest"
        assert wait_for("the panel's Wi-Fi", lambda: (s := site.panel.state) and s.get("wifi"))
        config = wait_for(
            "the room's discovery",
            lambda: watcher.seen.get("homeassistant/sensor/edge_mitte_gw_1_room_ada/config"),
        )
        assert json.loads(config)["state_topic"] == "edge/mitte/rooms/ada/state"
        assert "homeassistant/binary_sensor/edge_mitte_gw_1_device_ada_tv/config" in watcher.seen
        # Rotation: a new passphrase, published, shown on the panel; kept across a restart.
        rotated = site.daemon.ctl_json("wifi", "rotate")["passphrase"]
        assert rotated != first
        wait_for(
            "the new passphrase",
            lambda: json.loads(watcher.seen["edge/mitte/wifi/guest"])["passphrase"] == rotated,
        )
        wait_for(
            "the panel's new passphrase",
            lambda: (site.panel.state or {}).get("wifi", {}).get("passphrase") == rotated,
        )
        site.daemon.stop()
        wait_for("the gateway offline", lambda: watcher.seen.get(gateway) == b'{"state":"offline"}')
        site.daemon.start()
        assert site.daemon.ctl_json("wifi")["passphrase"] == rotated
        # Killed without a goodbye: the broker publishes the last will.
        wait_for("the gateway online", lambda: watcher.seen.get(gateway) == b'{"state":"online"}')
        site.daemon.stop(sig=9)
        wait_for("the last will", lambda: watcher.seen.get(gateway) == b'{"state":"offline"}', 60)
    finally:
        watcher.close()


def test_the_room_doors_contact_keeps_overtime_going_but_never_starts_it(site: Site) -> None:
    """The room's door contact and exit button (on a Modbus IO board) are presence in an
    overtime; alone, after the end or in a free room, they are people leaving."""
    board = ModbusBoard(unit=1)
    site.loop.call(board.start())
    try:
        extra = f"""
[buses.doorio]
type = "modbus_tcp"
host = "127.0.0.1"
port = {board.tcp_port}
input_poll_ms = 50
[doors.room-ada]
contact = {{ bus = "doorio", unit = 1, input = 0, open_when = "on" }}
exit = {{ bus = "doorio", unit = 1, input = 1, pressed_when = "on" }}
"""
        site.start(extra, grace_min=0.1)

        def through_the_door() -> None:
            """Exit button, door open, door closed: as someone leaving does."""
            closed = site.daemon.output().count("door room-ada: closed") + 1
            for address, value in ((1, True), (1, False), (0, True), (0, False)):
                board.set_input(address, value)
                time.sleep(0.3)  # a few input polls: each change is seen on its own
            wait_for(
                "the door closed again, at the daemon",
                lambda: site.daemon.output().count("door room-ada: closed") >= closed,
            )

        # A free room: nothing.
        through_the_door()
        assert site.room()["state"] == "free"

        # The end of a booking, then people leave: no overtime.
        start = math.floor(time.time()) - 5
        site.book("b-leave", start, start + 20)  # room for a slow import
        checkin = site.present(BOOKER_CARD)
        assert checkin["granted"], checkin  # checks in
        site.panel_state("ended")
        through_the_door()
        wait_for(
            "the exit read as leaving",
            lambda: "ada: door contact opened after the end: leaving" in site.daemon.output(),
        )
        site.panel_state("free")

        # An overtime (a badge after the end), then the door used inside the hold: it
        # goes on, and is billed up to the door's use, not the badge.
        start = math.floor(time.time()) - 5
        site.book("b-stay", start, start + 20)
        assert site.present(BOOKER_CARD)["granted"]
        site.panel_state("ended")
        assert site.present(BOOKER_CARD)["granted"] is False  # presence after the end
        site.panel_state("overtime")
        badge = time.time()
        time.sleep(1)
        moved = time.time()
        through_the_door()
        wait_for(
            "the contact as presence",
            lambda: "ada: presence in overtime (door contact opened)" in site.daemon.output(),
        )
        site.panel_state("free")
        [over] = wait_for("overtime", lambda: site.events("usage.room_overtime"))
        assert over["details"]["booking"] == "b-stay"
        assert instant(over["details"]["last_presence"]) >= moved > badge + 0.5
        assert not [
            e for e in site.events("usage.room_overtime") if e["details"]["booking"] == "b-leave"
        ]
    finally:
        site.loop.call(board.stop())
