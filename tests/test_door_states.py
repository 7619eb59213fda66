"""Each door's state on the site broker: retained, published when it changes,
including a relock that no event announces."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hwsim.broker import Mosquitto

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Watcher:
    """A plain MQTT client that keeps every message of the doors' topics."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.log: list[tuple[str, dict[str, Any], bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="door-watcher")

        def on_message(_c: object, _u: object, msg: Any) -> None:
            self.log.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("edge/mitte/doors/+/state", 1)
        self.client.loop_start()

    def last(self, door: str) -> dict[str, Any] | None:
        for t, body, _ in reversed(self.log):
            if t == f"edge/mitte/doors/{door}/state":
                return body
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def site(
    daemon_factory: Any, mosquitto: Mosquitto, example_doc: dict[str, Any], tmp_path: Path
) -> Any:
    config = (
        '[site]\nid = "mitte"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        "[homeassistant]\ndiscovery = true\n"
        "[doors.front]\nunlock_seconds = 1\n"
    )
    d = daemon_factory(config).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))
    return d


def test_door_states_follow_grants_relocks_unlocks_and_lockdown(
    site: Any, mosquitto: Mosquitto
) -> None:
    watcher = Watcher(mosquitto)
    try:
        front = wait_for("front's state", lambda: watcher.last("front"))
        assert front == {
            "door": "front",
            "lock": "locked",
            "cause": None,
            "lockdown": False,
            "contact": None,
            "alarm": None,
            "readers": {},
            "fault": None,
        }
        assert watcher.log[0][2], "retained"
        assert wait_for("every door", lambda: watcher.last("server-room"))

        # A grant unlocks; the relock after unlock_seconds comes from the door's
        # timer alone, with no event to announce it.
        # m-1002: a resident member, any hour.
        granted = site.ctl_json("present", "--door", "front", "--card", "H10306:1000:50001")
        assert granted["granted"], granted
        wait_for("unlocked", lambda: (s := watcher.last("front")) and s["lock"] == "unlocked")
        assert watcher.last("front")["cause"] == "grant"  # type: ignore[index]
        wait_for("relocked", lambda: (s := watcher.last("front")) and s["lock"] == "locked")

        site.ctl("door", "unlock", "front", "--seconds", "1")
        wait_for("admin unlock", lambda: (s := watcher.last("front")) and s["cause"] == "admin")
        wait_for("relocked", lambda: (s := watcher.last("front")) and s["lock"] == "locked")

        site.ctl("lockdown", "on", "front")
        wait_for("lockdown", lambda: (s := watcher.last("front")) and s["lockdown"])
        assert watcher.last("front")["cause"] == "lockdown"  # type: ignore[index]

        # Nothing changes: nothing is published again (no polling tick shows up).
        count = len(watcher.log)
        time.sleep(2.5)
        assert len(watcher.log) == count
    finally:
        watcher.close()
