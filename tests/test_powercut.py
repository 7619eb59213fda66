"""Power cuts (issue 15, item 2), the CI form: 1,000 cuts of the gateway's
database on the simulated disk and every prefix of the gateway's file writes
(about 5 s of CPU; 18 s of wall time on 2 cores loaded ~10x), and the proof that the checkers catch
what is not power-safe. The long form is `python -m faults.powercut`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge.atomicfile import atomic_writer, remove_leftovers, write_atomic
from edge.gateway import Gateway
from faults.powercut import database, files
from tests.conftest import run_async, started_gateway

SEED = 20261206  # fixed: a failure here is reproducible with the same seed


def test_the_database_loses_no_acknowledged_write_in_1000_power_cuts() -> None:
    tally = database.campaign(1000, SEED)
    assert tally.violations == 0, tally.examples
    assert tally.cuts >= 1000
    # The cuts fell where there was something to lose, in every way.
    assert tally.commits > 1000
    assert tally.acked_events > 10_000
    assert set(tally.fates) == {"drop", "tear", "reorder"}
    assert tally.unopenable == tally.corrupt == tally.lost_events == tally.lost_deliveries == 0


def test_the_checker_catches_what_synchronous_off_and_normal_lose() -> None:
    # The same campaign without the fsyncs that FULL asks for must find losses
    # (NORMAL) and damage (OFF); if it did not, the FULL result would mean nothing.
    normal = database.campaign(100, SEED, "NORMAL")
    assert normal.violations > 0
    assert normal.lost_events > 0
    off = database.campaign(100, SEED, "OFF")
    assert off.violations > 0
    assert off.unopenable + off.corrupt > 0


def test_every_prefix_of_the_gateways_file_writes_leaves_old_or_new() -> None:
    tally = files.campaign(SEED, rounds=1, controls=False)
    assert tally.violations == 0, tally.examples
    assert tally.scenarios == len(files.SCENARIOS)
    assert tally.prefixes > 50
    assert tally.states > 1000


@pytest.mark.parametrize("control", files.CONTROLS, ids=lambda sc: sc.name)
def test_the_file_checker_catches_writes_that_are_not_power_safe(
    control: files.Scenario,
) -> None:
    tally = files.FileTally()
    files.run_scenario(control, random.Random(SEED), tally)
    assert tally.by_scenario[control.name] > 0


def test_a_writer_that_goes_around_the_shim_is_refused() -> None:
    # Writes through Python's file objects are not recorded: the campaign must
    # say so rather than check a recording that misses them.
    around = files.Scenario(
        "around",
        ("state/f",),
        act=lambda root: (root / "state/f").write_bytes(b"x"),
        setup=lambda root: (root / "state").mkdir(),
    )
    with pytest.raises(RuntimeError, match="misses some writes"):
        files.run_scenario(around, random.Random(SEED), files.FileTally())


def test_an_interrupted_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_atomic(path, b"old")

    class Boom(Exception):
        pass

    def interrupted() -> None:
        with atomic_writer(path) as f:
            f.write(b"half of the new")
            raise Boom

    with pytest.raises(Boom):
        interrupted()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_atomic(path, b"new", exclusive=True)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_the_gateway_removes_leftover_temporary_files_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    leftovers = [state / ".snapshot.download.json.tmp-1a2b3c4d", state / "secrets/.pin_key.tmp-0f"]
    for p in leftovers:
        p.write_bytes(b"half")
    kept = state / "secrets" / ".hidden-but-not-ours"
    kept.write_bytes(b"keep")

    async def go() -> None:
        gw: Gateway = await started_gateway(state)
        await gw.stop()

    run_async(go())
    assert not any(p.exists() for p in leftovers)
    assert kept.exists()
    assert remove_leftovers(tmp_path / "missing") == []
