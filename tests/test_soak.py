"""The soak's CI form (faults/soak): a short run with every part of the long one.

Real daemon, real Mosquitto, the cloud simulator over HTTP, four reader groups
(one of libosdp peripherals on a simulated RS-485 cable, three of Wiegand
readers), badges with a burst, MQTT load, a cloud outage and a SIGKILL with a
restart; then the same checks as `python -m faults.soak`. About 40 s.
"""

from __future__ import annotations

from pathlib import Path

from faults.soak.harness import Plan, Soak


def test_a_short_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    plan = Plan(
        seconds=24,
        readers_per_group=4,
        badge_rate=10,
        burst_rate=100,
        burst_every_s=10,
        burst_s=1,
        mqtt_rate=1000,
        outage_at_s=6,
        outage_events=300,
        outage_max_s=6,
        kill_every_s=14,
        warmup_s=3,
        members=1000,
        drain_timeout_s=60,
        log=lambda line: None,
    )
    f = Soak(tmp_path, plan).run()
    detail = f"{f.result_line()}\n{f.detail_line()}"
    # The load really ran: badges decided, a backlog queued while the cloud was
    # down, one SIGKILL, MQTT messages at close to the rate.
    assert f.kills == 1, detail
    assert f.outage_queued > 0, detail
    assert f.grants_seen > 50, detail
    assert f.mqtt_sent > 0.8 * 1000 * 24, detail
    assert f.events >= f.outage_queued, detail
    # What the soak is for.
    assert f.lost == 0, detail
    assert f.duplicated == 0, detail
    assert f.extra_at_cloud == 0, detail
    assert f.rejected == 0, detail
    assert abs(f.fd_growth) <= 5, detail
