"""The kill -9 campaign (faults/kill9) in its CI form, its checker against
planted violations, the fault points, and what the campaign found."""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from edge import faultpoints
from faults.kill9.campaign import Campaign
from hwsim.cloud import CloudSim
from hwsim.sitegen import example_site
from tests.conftest import DAY, REPO
from tests.test_sync import config, decide, start, synced

RESIDENT = "H10306:1000:50001"  # m-1002, resident, billing ok, any hour


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- fault points ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("store.commit", "unknown fault point 'store.commit'"),
        ("store.after_commit:0", "whole number >= 1"),
        ("sync.change_page:x", "whole number >= 1"),
    ],
)
def test_a_bad_fault_point_is_named(spec: str, words: str) -> None:
    with pytest.raises(faultpoints.FaultPointError, match="EDGE_FAULTPOINT") as err:
        faultpoints.parse(spec)
    assert words in str(err.value)


def test_an_armed_point_kills_at_its_nth_pass() -> None:
    code = (
        "from edge import faultpoints\n"
        "for i in range(1, 6):\n"
        "    print(i, flush=True)\n"
        "    faultpoints.hit('sync.change_page')\n"
        "    faultpoints.hit('store.after_commit')\n"
    )
    env = {**os.environ, "EDGE_FAULTPOINT": "store.after_commit:3"}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert (r.returncode, r.stdout.split()) == (-signal.SIGKILL, ["1", "2", "3"])
    unarmed = {k: v for k, v in env.items() if k != "EDGE_FAULTPOINT"}
    r = subprocess.run([sys.executable, "-c", code], env=unarmed, capture_output=True, text=True)
    assert (r.returncode, r.stdout.split()) == (0, ["1", "2", "3", "4", "5"])


# --- found by the campaign ------------------------------------------------------------


def test_a_push_before_the_first_snapshot_asks_for_a_pull(
    daemon_factory: Any, mosquitto: Any
) -> None:
    """A daemon killed before its first snapshot comes back with no site; a pushed
    change then has nothing to apply to. It must pull (and take the snapshot),
    not fail with an alarm."""
    doc, _ = example_site(DAY)
    with CloudSim(doc, mqtt=(mosquitto.host, mosquitto.port)) as cloud:
        cloud.faults.fail_next(100_000, path="/snapshot")
        d = start(daemon_factory, config(cloud, mosquitto))
        wait_for("the push link", lambda: d.ctl_json("sync", "status")["push"]["connected"])
        cloud.suspend_member("m-1002")
        wait_for("the push", lambda: "sync: push changes" in d.output())
        time.sleep(0.5)  # its handling runs after the line
        cloud.faults.clear()
        wait_for("the snapshot", lambda: synced(d, cloud))
        assert decide(d, RESIDENT) == (False, "billing_suspended")
        assert "push_failed" not in d.output()
        alarms = d.ctl_json("events", "--type", "gateway.alarm", "--limit", "100")
        assert [a for a in alarms if a["details"]["alarm"] == "push_failed"] == []


# --- the campaign -------------------------------------------------------------------------


def test_kill9_campaign_ci_form(tmp_path: Path) -> None:
    """200 kills at random moments and at the named points, checked after each
    (about 90 s on 2 busy cores; the long form is `python -m faults.kill9`)."""
    result = Campaign(tmp_path / "kill9", seed=20261206).run(200)
    assert [str(v) for v in result.violations] == []
    assert result.kills == 200
    reached = set(result.at_points) - {"random"}
    assert len(reached) >= 4, result.at_points  # the named points are reached, not only armed
    assert result.events_acked > 0


def test_the_checker_catches_planted_violations(tmp_path: Path) -> None:
    """Each kind of violation, planted in the real system, is reported: an
    acknowledged event deleted from the outbox, data behind the stored cursor, an
    event sent again to the cloud after it was delivered, and a strike the
    checker's schedule says must be shut (the daemon's schedule holds it open)."""
    campaign = Campaign(tmp_path / "kill9", seed=7)
    expect = copy.deepcopy(campaign.doc)
    for door in expect["doors"]:
        if door["id"] == "office-12":
            door.pop("unlock_schedule")
    campaign.expect_doc = expect
    planted: list[str] = []

    def spoil(db_path: Path) -> None:
        assert campaign.cloud is not None
        db = sqlite3.connect(db_path)
        try:
            delivered = db.execute(
                "SELECT id, body FROM outbox WHERE state = 'delivered' ORDER BY seq LIMIT 2"
            ).fetchall()
            gen = db.execute("SELECT value FROM meta WHERE key = 'gen'").fetchone()
            if "lost" not in planted and len(delivered) == 2:
                db.execute("DELETE FROM outbox WHERE id = ?", (delivered[0][0],))  # not [-1]
                db.commit()
                planted.append("lost")
            if "duplicate" not in planted and len(delivered) == 2:
                s = requests.Session()
                s.trust_env = False
                r = s.post(
                    f"{campaign.cloud.url}/sites/mitte/events",
                    json={"events": [json.loads(delivered[-1][1])]},
                    headers={"Authorization": "Bearer sim-token"},
                    timeout=10,
                )
                assert r.status_code == 200, r.text
                planted.append("duplicate")
            if "cursor" not in planted and gen and int(gen[0]):
                # Rows a push kept would stand for the member's: none here.
                db.execute("DELETE FROM push_undo WHERE id = 'm-1004'")
                db.execute(
                    "UPDATE holders SET billing = 'bogus' WHERE gen = ? AND id = 'm-1004'",
                    (int(gen[0]),),
                )
                db.commit()
                planted.append("cursor")
        finally:
            db.close()

    campaign.before_inspect = spoil
    result = campaign.run(20)
    assert sorted(planted) == ["cursor", "duplicate", "lost"]
    kinds = {v.kind for v in result.violations}
    assert {"lost", "duplicate", "cursor", "strike"} <= kinds, result.violations
    assert result.line() == (f"RESULT campaign=kill9 kills=20 violations={len(result.violations)}")
