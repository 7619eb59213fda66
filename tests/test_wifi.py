"""The guest Wi-Fi schedule and passphrases."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from edge.config import WifiConfig
from edge.rooms.wifi import ALPHABET, new_passphrase, next_rotation

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def test_daily_rotation_is_the_next_rotate_at_in_site_time() -> None:
    cfg = WifiConfig(ssid="Guest", rotate_at="04:00")
    assert next_rotation(cfg, at("2026-11-22T03:59"), BERLIN) == at("2026-11-22T04:00")
    assert next_rotation(cfg, at("2026-11-22T04:00"), BERLIN) == at("2026-11-23T04:00")
    assert next_rotation(cfg, at("2026-11-22T23:00"), BERLIN) == at("2026-11-23T04:00")


def test_weekly_rotation_and_a_daylight_saving_change() -> None:
    cfg = WifiConfig(ssid="Guest", rotate_at="04:00", rotate_days=7)
    assert next_rotation(cfg, at("2026-03-23T12:00"), BERLIN) == at("2026-03-30T04:00")
    # Across the change to summer time (29 March 2026) it is still 04:00 local.
    daily = WifiConfig(ssid="Guest", rotate_at="04:00")
    assert next_rotation(daily, at("2026-03-28T12:00"), BERLIN) == at("2026-03-29T04:00")


def test_passphrases_have_the_configured_groups_and_no_look_alikes() -> None:
    seen = {new_passphrase(3) for _ in range(200)}
    assert len(seen) == 200
    for p in seen:
        assert re.fullmatch(rf"[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{2}}", p)
        assert not set(p) & set("01ilo")
