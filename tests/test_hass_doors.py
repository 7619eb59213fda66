"""Doors in Home Assistant and over MQTT: discovery of locks, contacts, readers
and occupancy; door commands through a real Mosquitto with a password file and
the shipped ACL (docs/mosquitto-acl.example), audited; occupancy from grants."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from edge.config import ConfigError, parse_config
from edge.gateway import Gateway
from edge.mqtt.door_commands import Command, CommandError, parse_command
from edge.mqtt.hass_doors import CONTACT_OPEN_ON, LOCK_STATE, UNLOCKED_ON, door_discovery
from edge.mqtt.occupancy import CHUNK
from edge.secrets import write_secret
from edge.site.events import make_event
from edge.site.presence import Presence, day_end
from edge.site.recorder import outbox_op
from edge.site.sqlite import SqlOp
from hwsim.broker import Mosquitto
from hwsim.sitegen import EXAMPLE_PIN_KEY
from tests.conftest import DAY, REPO, TZ, at, run_async

T = TypeVar("T")
ACL = REPO / "docs" / "mosquitto-acl.example"
GRACE = "H10306:1000:50001"  # m-1002: resident, any hour
RADIA = "H10301:12:4005"  # m-1011: resident, any hour at the front door
LINUS = "H10301:12:4000"  # m-1003: billing suspended, denied


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- occupancy, as the doors can tell (pure) ------------------------------------------


def test_presence_counts_each_person_once_in_the_area_of_their_latest_entry() -> None:
    p = Presence(8 * 3600)
    t = at(DAY, "09:00")
    assert p.entered("m-1", "front", t, TZ)
    assert not p.entered("m-1", "front", t, TZ), "the same event again changes nothing"
    assert p.entered("m-2", "front", t + 60, TZ)
    assert p.entered("m-1", "server-room", t + 120, TZ)
    assert not p.entered("m-1", "front", t + 30, TZ), "an older entry changes nothing"
    assert p.summary(t + 130) == {"count": 2, "by_area": {"front": 1, "server-room": 1}}
    assert not p.left("m-1", t + 100), "an exit before the latest entry changes nothing"
    assert p.left("m-2", t + 200)
    assert p.summary(t + 200) == {"count": 1, "by_area": {"server-room": 1}}


def test_a_stay_ends_with_the_window_or_the_site_s_day() -> None:
    p = Presence(8 * 3600)
    p.entered("m-1", "front", at(DAY, "09:00"), TZ)
    p.entered("m-2", "front", at(DAY, "20:00"), TZ)
    assert p.next_expiry() == at(DAY, "17:00")
    assert not p.expire(at(DAY, "16:59"))
    assert p.expire(at(DAY, "17:00"))
    assert p.summary(at(DAY, "20:30"))["count"] == 1
    midnight = at(DAY + timedelta(days=1), "00:00")
    assert p.next_expiry() == midnight == day_end(at(DAY, "20:00"), TZ)
    assert p.summary(midnight) == {"count": 0, "by_area": {}}


def test_each_stay_ends_at_its_own_day_s_midnight_across_days_and_dst() -> None:
    # A day's entries share one computed midnight; the next day, or another
    # zone, must not reuse it. 2026-10-25 is 25 hours long in Berlin.
    p = Presence(30 * 3600)
    days = [date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26)]
    for n, day in enumerate(days):
        for hhmm in ("00:00", "12:00", "23:59"):
            p.entered(f"m-{n}-{hhmm}", "front", at(day, hhmm), TZ)
    for n, day in enumerate(days):
        for hhmm in ("00:00", "12:00", "23:59"):
            assert p.stays[f"m-{n}-{hhmm}"].until == day_end(at(day, hhmm), TZ)
    assert day_end(at(days[1], "00:00"), TZ) - at(days[1], "00:00") == 25 * 3600
    tokyo = ZoneInfo("Asia/Tokyo")
    p.entered("m-tokyo", "front", at(days[2], "12:00"), tokyo)
    assert p.stays["m-tokyo"].until == day_end(at(days[2], "12:00"), tokyo)
    assert p.stays["m-tokyo"].until != day_end(at(days[2], "12:00"), TZ)


def test_presence_follows_recorded_grants_only() -> None:
    p = Presence(3600)

    def ev(type_: str, holder: str | None, hhmm: str, side: str | None = None) -> dict[str, Any]:
        iso = datetime.fromtimestamp(at(DAY, hhmm), TZ).isoformat(timespec="milliseconds")
        details = {} if side is None else {"reader": "r", "side": side}
        out: dict[str, Any] = {"type": type_, "door": "front", "at": iso, "details": details}
        if holder is not None:
            out["holder"] = holder
        return out

    assert not p.apply(ev("access.denied", "m-1", "09:00"), TZ)
    assert not p.apply(ev("access.granted", None, "09:00"), TZ)
    assert not p.apply({**ev("access.granted", "m-1", "09:00"), "at": "yesterday"}, TZ)
    assert p.apply(ev("access.granted", "m-1", "09:00", "in"), TZ)
    assert p.apply(ev("access.granted", "m-1", "09:30", "out"), TZ)
    assert p.summary(at(DAY, "09:31"))["count"] == 0


# --- command payloads -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "command"),
    [
        (b"UNLOCK", Command("unlock")),
        (b" lock\n", Command("lock")),
        (b'{"action": "unlock"}', Command("unlock")),
        (b'{"action": "UNLOCK", "seconds": 30, "by": "alice"}', Command("unlock", 30, "alice")),
        (b'{"action": "lock", "by": "bob"}', Command("lock", None, "bob")),
    ],
)
def test_door_commands_parse(payload: bytes, command: Command) -> None:
    assert parse_command(payload) == command


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "is not a command"),
        (b"OPEN", "'OPEN' is not a command"),
        (b"[1]", "is not a command"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"U" * 300, "300 bytes (at most 256)"),
        (b'{"action": "open"}', 'action: expected "unlock" or "lock"'),
        (b'{"seconds": 5}', "action:"),
        (b'{"action": "unlock", "seconds": "5"}', "seconds: expected a whole number"),
        (b'{"action": "unlock", "seconds": true}', "seconds: expected a whole number"),
        (b'{"action": "unlock", "seconds": 2.5}', "seconds: expected a whole number"),
        (b'{"action": "lock", "seconds": 5}', "seconds: only with unlock"),
        (b'{"action": "unlock", "door": "front"}', "unknown field(s) door"),
        (b'{"action": "unlock", "by": ""}', "by: expected a name"),
    ],
)
def test_bad_door_commands_say_what_is_wrong(payload: bytes, problem: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_command(payload)
    assert problem in str(err.value)


# --- discovery ------------------------------------------------------------------------

HARDWARE = """
[site]
id = "mitte"
[buses.relays]
type = "modbus_tcp"
host = "127.0.0.1"
port = 1502
[buses.readers]
type = "osdp"
port = "/dev/ttyUSB9"
[readers.front-in]
type = "osdp"
bus = "readers"
address = 1
key = "osdp-front-in"
[readers.front-out]
type = "osdp"
bus = "readers"
address = 2
key = "osdp-front-out"
[doors.front]
in_readers = ["front-in"]
out_readers = ["front-out"]
contact = { bus = "relays", unit = 1, input = 0 }
unlock_seconds = 2.5
[doors.server-room]
unlock_seconds = 3
[homeassistant]
discovery = true
"""
DOORS = {"front": "Front door", "server-room": "Server room", "office-12": "Office 12"}
NODE = "edge_mitte_gw_1"


def test_discovery_announces_locks_contacts_readers_and_occupancy() -> None:
    cfg = parse_config(HARDWARE + "door_commands = true\n")
    messages, clear = door_discovery(cfg, DOORS)
    by_topic = dict(messages)
    assert sorted(by_topic) == [
        f"homeassistant/binary_sensor/{NODE}_door_front_contact/config",
        f"homeassistant/binary_sensor/{NODE}_reader_front_in/config",
        f"homeassistant/binary_sensor/{NODE}_reader_front_out/config",
        f"homeassistant/lock/{NODE}_door_front/config",
        f"homeassistant/lock/{NODE}_door_office_12/config",
        f"homeassistant/lock/{NODE}_door_server_room/config",
        f"homeassistant/sensor/{NODE}_occupancy/config",
    ], "a contact only where one is wired, readers only where configured"
    availability = {
        "availability_topic": "edge/mitte/gateway/gw-1/state",
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    device = {
        "identifiers": [NODE],
        "name": "Edge gateway mitte/gw-1",
        "manufacturer": "edge-gateway",
    }
    for t, body in messages:
        assert t.split("/")[2] == body["unique_id"], "the object id is the unique id"
        assert body["device"] == device
        assert {k: body[k] for k in availability} == availability, t
    ids = [b["unique_id"] for _, b in messages]
    assert len(set(ids)) == len(ids)

    lock = by_topic[f"homeassistant/lock/{NODE}_door_front/config"]
    assert lock["name"] == "Front door"
    assert lock["state_topic"] == lock["json_attributes_topic"] == "edge/mitte/doors/front/state"
    assert lock["command_topic"] == "edge/mitte/doors/front/command"
    assert lock["value_template"] == LOCK_STATE
    assert (lock["state_locked"], lock["state_unlocked"], lock["state_jammed"]) == (
        "LOCKED",
        "UNLOCKED",
        "JAMMED",
    )
    assert (lock["payload_lock"], lock["payload_unlock"], lock["retain"]) == (
        "LOCK",
        "UNLOCK",
        False,
    )
    contact = by_topic[f"homeassistant/binary_sensor/{NODE}_door_front_contact/config"]
    assert contact["device_class"] == "door"
    assert contact["value_template"] == CONTACT_OPEN_ON
    reader = by_topic[f"homeassistant/binary_sensor/{NODE}_reader_front_out/config"]
    assert reader["device_class"] == "connectivity"
    assert reader["state_topic"] == "edge/mitte/doors/front/state"
    assert (
        reader["value_template"] == "{{ 'ON' if value_json.readers.get(\"front-out\") else 'OFF' }}"
    )
    occupancy = by_topic[f"homeassistant/sensor/{NODE}_occupancy/config"]
    assert occupancy["state_topic"] == occupancy["json_attributes_topic"] == "edge/mitte/occupancy"
    assert occupancy["value_template"] == "{{ value_json.count }}"
    # The other form of each door's lock is cleared, for a run with the other setting.
    assert sorted(clear) == sorted(
        f"homeassistant/binary_sensor/{NODE}_door_{d}/config"
        for d in ("front", "office_12", "server_room")
    )

    again, _ = door_discovery(parse_config(HARDWARE + "door_commands = true\n"), DOORS)
    assert again == messages, "stable: the same site gives the same ids and bodies"


def test_without_door_commands_a_door_is_a_read_only_lock_sensor() -> None:
    cfg = parse_config(HARDWARE)
    messages, clear = door_discovery(cfg, DOORS)
    by_topic = dict(messages)
    assert not any("/lock/" in t for t in by_topic)
    assert not any("command_topic" in body for body in by_topic.values())
    front = by_topic[f"homeassistant/binary_sensor/{NODE}_door_front/config"]
    assert front["unique_id"] == f"{NODE}_door_front", "the same unique id as the lock"
    assert front["device_class"] == "lock"
    assert front["value_template"] == UNLOCKED_ON
    assert f"homeassistant/lock/{NODE}_door_front/config" in clear


def test_without_door_commands_the_gateway_does_not_subscribe(tmp_path: Path) -> None:
    for allowed in (False, True):
        cfg = parse_config(HARDWARE + f"door_commands = {'true' if allowed else 'false'}\n")
        gw = Gateway(cfg, tmp_path / f"state-{allowed}")
        assert gw.mqtt is not None
        subscribed = "edge/mitte/doors/+/command" in gw.mqtt._subs
        assert subscribed is allowed
        assert (gw.door_commands is not None) is allowed
    # door_commands alone is enough to use the site broker.
    assert parse_config('[site]\nid = "m"\n[homeassistant]\ndoor_commands = true\n').uses_mqtt


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("door_commands = 1", "homeassistant.door_commands: Input should be a valid boolean"),
        ("occupancy_hours = 0", "homeassistant.occupancy_hours: Input should be greater than 0"),
        ("occupancy_hours = 25", "homeassistant.occupancy_hours: Input should be less than"),
        ("door_command = true", "homeassistant.door_command: unknown key"),
    ],
)
def test_bad_home_assistant_options_name_their_path(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'[site]\nid = "mitte"\n[homeassistant]\n{line}\n', "gw.toml")
    assert f"gw.toml: {problem}" in str(err.value)


# --- end to end: the daemon, Mosquitto with passwords and the shipped ACL ---------------


class Client:
    """An MQTT client logged in as one of the broker's users; keeps what it hears."""

    def __init__(self, broker: Mosquitto, user: str, subscribe: tuple[str, ...] = ()) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client_id = f"test-{user}"
        self.log: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        self.client.username_pw_set(user, f"{user}-secret")

        def on_message(_c: object, _u: object, msg: Any) -> None:
            self.log.append((msg.topic, bytes(msg.payload)))

        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        for t in subscribe:
            self.client.subscribe(t, 1)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def last(self, topic: str) -> Any:
        for t, body in reversed(self.log):
            if t == topic:
                return json.loads(body) if body else None
        return None

    def all(self, topic: str) -> list[Any]:
        return [json.loads(body) for t, body in self.log if t == topic and body]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto with a password file and docs/mosquitto-acl.example, nothing anonymous."""
    work = tmp_path / "broker"
    work.mkdir()
    passwd = work / "passwd"
    for i, user in enumerate(("edge-gateway", "homeassistant", "dashboard")):
        flags = ["-c"] if i == 0 else []
        cmd = ["mosquitto_passwd", *flags, "-b", str(passwd), user, f"{user}-secret"]
        subprocess.run(cmd, check=True, capture_output=True)
    broker = Mosquitto(work)
    broker.config.write_text(
        # Started as root, Mosquitto reads these files as its own user, who cannot
        # enter the test's private directory: keep root's rights then.
        ("user root\n" if os.geteuid() == 0 else "") + f"listener {broker.port} {broker.host}\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {ACL}\n"
        "persistence false\nset_tcp_nodelay true\nlog_type all\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def audit(d: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = d.ctl_json("audit", "--limit", "100")
    return rows


def events(d: Any, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = d.ctl_json("events", "--type", prefix, "--limit", "100")
    return found


def test_only_an_admin_user_can_unlock_and_every_command_is_audited(
    daemon_factory: Any, acl_broker: Mosquitto, example_doc: dict[str, Any], tmp_path: Path
) -> None:
    config = (
        '[site]\nid = "mitte"\n'
        f'[mqtt]\nhost = "{acl_broker.host}"\nport = {acl_broker.port}\n'
        'username = "edge-gateway"\npassword_secret = "mqtt_password"\n'
        "[homeassistant]\ndiscovery = true\ndoor_commands = true\n"
        "[doors.front]\nunlock_seconds = 2\n"
    )
    d = daemon_factory(config)
    write_secret(d.state_dir, "mqtt_password", b"edge-gateway-secret\n")
    d.start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))

    ha = Client(acl_broker, "homeassistant", ("homeassistant/#", "edge/mitte/doors/+/state"))
    dashboard = Client(acl_broker, "dashboard")
    front, server = "edge/mitte/doors/front", "edge/mitte/doors/server-room"
    try:
        lock = wait_for(
            "the front door's lock", lambda: ha.last(f"homeassistant/lock/{NODE}_door_front/config")
        )
        assert lock["command_topic"] == f"{front}/command"
        wait_for("server-room's state", lambda: ha.last(f"{server}/state"))

        # A client that is no admin: the broker drops its UNLOCK. The admin's bad
        # payload after it is the mark that the gateway has heard everything before.
        dashboard.publish(f"{server}/command", "UNLOCK")
        ha.publish(f"{server}/command", "BANANA")
        refused = wait_for(
            "the bad payload's audit row",
            lambda: [r for r in audit(d) if r["method"] == "mqtt.command"],
        )
        assert refused[0]["params"]["door"] == "server-room"
        assert refused[0]["params"]["payload"] == "BANANA"
        assert refused[0]["outcome"].startswith("refused: payload 'BANANA' is not a command")
        assert not [r for r in audit(d) if r["method"] == "mqtt.unlock"]
        assert [s["lock"] for s in ha.all(f"{server}/state")] == ["locked"]
        assert f"Denied PUBLISH from {dashboard.client_id}" in acl_broker.log_path.read_text()
        assert (
            f"mqtt: {server}/command: command refused, nothing changed: payload 'BANANA'"
            in d.output()
        )

        # The admin's UNLOCK: the door's own unlock time, as an admin unlock.
        ha.publish(f"{front}/command", "UNLOCK")
        wait_for(
            "front unlocked",
            lambda: any(s["cause"] == "admin" for s in ha.all(f"{front}/state")),
        )
        row = wait_for(
            "the unlock's audit row", lambda: [r for r in audit(d) if r["method"] == "mqtt.unlock"]
        )[0]
        assert row["outcome"] == "ok"
        assert row["params"] == {"door": "front", "seconds": 2, "topic": f"{front}/command"}
        assert row.get("actor", "mqtt:ha") == "mqtt:ha"  # where the audit log keeps actors
        action = next(e for e in events(d, "admin.action") if e.get("door") == "front")
        assert action["details"] | {"uid": None} == {
            "action": "unlock",
            "seconds": 2,
            "by": "mqtt:ha",
            "uid": None,
        }
        wait_for("relocked", lambda: ha.last(f"{front}/state")["lock"] == "locked")

        # A longer unlock by a named admin, ended by LOCK.
        ha.publish(f"{front}/command", '{"action": "unlock", "seconds": 600, "by": "alice"}')
        wait_for("unlocked again", lambda: ha.last(f"{front}/state")["lock"] == "unlocked")
        ha.publish(f"{front}/command", "LOCK")
        wait_for("locked by LOCK", lambda: ha.last(f"{front}/state")["lock"] == "locked")
        methods = [(r["method"], r["outcome"]) for r in audit(d) if r["method"] != "import"]
        assert ("mqtt.lock", "ok") in methods
        by = [e["details"].get("by") for e in events(d, "admin.action")]
        assert "mqtt:alice" in by
        assert [e["details"] for e in events(d, "door.locked") if e.get("door") == "front"]

        # An unknown door, and seconds over the limit: logged, audited, nothing changes.
        ha.publish("edge/mitte/doors/nope/command", "UNLOCK")
        ha.publish(f"{front}/command", '{"action": "unlock", "seconds": 999999}')

        def unlocks() -> list[dict[str, Any]]:
            return [r for r in audit(d) if r["method"] == "mqtt.unlock"]

        wait_for("two refused unlocks", lambda: len(unlocks()) == 4)
        outcomes = sorted(r["outcome"] for r in unlocks() if r["outcome"] != "ok")
        assert outcomes[0].startswith("refused: seconds must be between 1 and 3600")
        assert outcomes[1].startswith("refused: unknown door(s) nope")
        assert "mqtt: edge/mitte/doors/nope/command: unlock by mqtt:ha refused" in d.output()
        assert ha.last(f"{front}/state")["lock"] == "locked"

        # A command published retained runs once, live; at the next connect the
        # broker hands it over again (retained) and it is not run again.
        ha.client.publish(
            f"{front}/command", '{"action": "unlock", "seconds": 1}', qos=1, retain=True
        ).wait_for_publish(10)
        wait_for("the live one ran", lambda: len(unlocks()) == 5)
        d.stop()
        d.start()
        wait_for("ignored", lambda: "a retained message here is ignored" in d.output())
        assert len(unlocks()) == 5
        ha.client.publish(f"{front}/command", b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        ha.close()
        dashboard.close()


def test_occupancy_reads_grants_back_a_chunk_at_a_time(tmp_path: Path) -> None:
    """Grants over several chunks, an exit and a body that is not JSON at a chunk's
    edge, other events and grants outside the window between them: every grant in
    the window counts once, and nothing recorded after the read started."""
    write_secret(tmp_path, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    config = '[site]\nid = "mitte"\n[homeassistant]\ndiscovery = true\n[mqtt]\nport = 9\n'
    gw = Gateway(parse_config(config), tmp_path)  # built, not started: no broker needed
    people = 3 * CHUNK + 7

    async def main() -> None:
        await gw.site.start()
        try:
            occupancy = gw.occupancy
            assert occupancy is not None
            tz = gw.site.index.tz
            now = time.time()

            def grant(holder: str, at: float, **details: Any) -> SqlOp:
                fields = {"door": "front", "holder": holder, "reason": "plan", "details": details}
                return outbox_op(
                    make_event("access.granted", at, tz, "mitte", "gw-1", **fields), at
                )

            held = outbox_op(
                make_event("door.held_open", now, tz, "mitte", "gw-1", door="front"), now
            )

            ops = [grant("m-old", now - occupancy.presence.window_s - 600)]
            for i in range(people):
                ops.append(grant(f"m-{i}", now - 60 + i / people))
                if i % 100 == 0:
                    ops.append(held)
            await gw.site.store.write(ops)
            await gw.site.store.write(
                [
                    (
                        "UPDATE outbox SET body = '{not json' WHERE type = 'access.granted' "
                        "AND json_extract(body, '$.holder') = ?",
                        (f"m-{CHUNK - 1}",),
                    )
                ]
            )
            await gw.site.store.write([grant("m-1", now, side="out")])
            await occupancy._load(now)
            assert len(occupancy.presence.stays) == people - 2  # m-1 left, one unreadable
            assert "m-old" not in occupancy.presence.stays

            # A grant stored once the read has its bounds comes by the queue only.
            occupancy.presence.stays.clear()
            real = gw.site.store.fetchone
            late = [grant("m-late", now)]

            async def then_record(sql: str, params: Any = ()) -> Any:
                row = await real(sql, params)
                if late:
                    await gw.site.store.write([late.pop()])
                return row

            gw.site.store.fetchone = then_record  # type: ignore[method-assign]
            await occupancy._load(now)
            assert "m-late" not in occupancy.presence.stays
            assert len(occupancy.presence.stays) == people - 2
        finally:
            await gw.site.store.stop()

    run_async(main())


def test_occupancy_is_published_after_grants(
    daemon_factory: Any, mosquitto: Mosquitto, example_doc: dict[str, Any], tmp_path: Path
) -> None:
    config = (
        '[site]\nid = "mitte"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        "[homeassistant]\ndiscovery = true\n"
    )
    d = daemon_factory(config).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))
    watcher = Client(mosquitto, "watcher", ("edge/mitte/occupancy", "homeassistant/#"))
    try:
        assert wait_for("nobody yet", lambda: watcher.last("edge/mitte/occupancy")) == {
            "count": 0,
            "by_area": {},
        }
        lock = wait_for(
            "the read-only lock",
            lambda: watcher.last(f"homeassistant/binary_sensor/{NODE}_door_front/config"),
        )
        assert "command_topic" not in lock
        for card, granted in ((GRACE, True), (LINUS, False), (RADIA, True), (GRACE, True)):
            decision = d.ctl_json("present", "--door", "front", "--card", card, check=False)
            assert decision["granted"] is granted, decision
        wait_for(
            "two people",
            lambda: watcher.last("edge/mitte/occupancy") == {"count": 2, "by_area": {"front": 2}},
        )
        counts = [o["count"] for o in watcher.all("edge/mitte/occupancy")]
        assert counts == sorted(counts), "the denied card and the repeat count for nobody"
    finally:
        watcher.close()

    # A restart reads the day's grants back from the outbox.
    d.stop()
    d.start()
    again = Client(mosquitto, "watcher2", ("edge/mitte/occupancy",))
    try:
        wait_for(
            "the same two after a restart",
            lambda: again.last("edge/mitte/occupancy") == {"count": 2, "by_area": {"front": 2}},
        )
    finally:
        again.close()

    # Read back field by field: an exit grant ends a stay, a body that is not
    # JSON (or whose fields are not strings) is skipped and named once.
    d.stop()
    now = time.time()
    rows = [
        (
            "x-out",
            json.dumps(
                {
                    "type": "access.granted",
                    "holder": "m-1011",
                    "door": "front",
                    "at": datetime.fromtimestamp(now, TZ).isoformat(),
                    "details": {"side": "out"},
                }
            ),
        ),
        ("x-bad", "{not json"),
        (
            "x-odd",
            json.dumps(
                {
                    "type": "access.granted",
                    "holder": {"id": "m-9"},
                    "door": "front",
                    "at": datetime.fromtimestamp(now, TZ).isoformat(),
                }
            ),
        ),
    ]
    with contextlib.closing(sqlite3.connect(d.state_dir / "gateway.db")) as db, db:
        db.executemany(
            "INSERT INTO outbox (id, type, at, body, state, created) "
            "VALUES (?, 'access.granted', '', ?, 'delivered', ?)",
            [(i, body, now) for i, body in rows],
        )
    d.start()
    third = Client(mosquitto, "watcher3", ("edge/mitte/occupancy",))
    try:
        wait_for(
            "one left through the exit reader",
            lambda: third.last("edge/mitte/occupancy") == {"count": 1, "by_area": {"front": 1}},
        )
        assert "occupancy: 1 outbox event(s) are not JSON; skipped" in d.output()
    finally:
        third.close()
