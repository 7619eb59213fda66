"""The soak's CI form (faults/soak): a short run with every part of the long one.

Real daemon, real Mosquitto, the cloud simulator over HTTP, four reader groups
(one of libosdp peripherals on a simulated RS-485 cable, three of Wiegand
readers), badges with a burst, MQTT load, a cloud outage and a SIGKILL with a
restart; then the same checks as `python -m faults.soak`. About 40 s.
"""

from __future__ import annotations

from pathlib import Path

from faults.soak.harness import Figures, Plan, Soak


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


def _samples(
    lives: list[tuple[int, float, float, list[float]]],
) -> list[tuple[float, int, float, int]]:
    """(pid, from s, to s, RSS MB at each second) -> the soak's once-a-second samples."""
    out = []
    for pid, start, _end, rss in lives:
        out += [(start + i, pid, mb, 40) for i, mb in enumerate(rss)]
    return out


def _growth(samples: list[tuple[float, int, float, int]], drained_at: float) -> Figures:
    soak = Soak(Path("unused"), Plan(seconds=600, warmup_s=60, log=lambda line: None))
    soak.samples, soak.drained_at = samples, drained_at
    f = Figures(minutes=10)
    soak._growth(f)
    return f


def test_growth_is_measured_after_the_backlog_and_in_the_calm_tail() -> None:
    # Lives of 180 s, then a calm tail of 300 s. The first life (before the backlog
    # drained) is smaller, as when SQLite's page caches are still filling: not growth.
    flat = [(1, 0, 180, [80.0] * 180), (2, 180, 360, [88.0] * 180), (3, 360, 660, [88.0] * 300)]
    f = _growth(_samples(flat), drained_at=170)
    assert f.rss_growth_pct == 0.0, f
    assert f.fd_growth == 0, f
    assert f.rss_mb == (88.0, 88.0)
    # A leak in the long-lived last process shows even though every life starts equal.
    leak = [(1, 0, 180, [88.0] * 180), (2, 180, 360, [88.0] * 180)]
    leak.append((3, 360, 660, [88.0 + 0.05 * i for i in range(300)]))
    f = _growth(_samples(leak), drained_at=100)
    assert f.rss_growth_pct > 5, f
    # Lives that each start larger than the one before: growth across lives.
    creep = [(p, 180 * p, 180 * p + 180, [80.0 + 3 * p] * 180) for p in range(1, 5)]
    f = _growth(_samples(creep), drained_at=100)
    assert f.rss_lives_pct > 5, f
    assert f.rss_growth_pct == f.rss_lives_pct, f
