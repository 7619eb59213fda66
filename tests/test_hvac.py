"""HVAC units: the driver against a simulated unit served by pymodbus, over TCP
and over RTU through the simulated cable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.hvac import HvacUnit, ModbusHvacConfig
from drivers.modbus import Backoff, ModbusBus, ModbusRtuBus, ModbusTcpBus
from hwsim.hvac import COMFORT, OFF, STANDBY, HvacWrite, SimHvac
from hwsim.serial_link import SerialLink
from tests.conftest import run_async

TRANSPORTS = ["tcp", "rtu-115200"]
FAST = Backoff(initial_s=0.02, max_s=0.1)
UNIT = 3


@dataclass(frozen=True)
class Seen:
    """What `on_change` was called with, and the simulated unit's writes at that moment."""

    confirmed: str | None
    available: bool
    fault: str | None
    temperature_c: float | None
    writes: int


@dataclass
class Rig:
    sim: SimHvac
    bus: ModbusBus
    unit: HvacUnit
    seen: list[Seen] = field(default_factory=list)


@contextlib.asynccontextmanager
async def rig(
    transport: str = "tcp", *, sim: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Rig]:
    """A simulated unit, the bus to it and the driver; all stopped after."""
    async with contextlib.AsyncExitStack() as stack:
        bus_config: ModbusRtuBus | ModbusTcpBus
        sim_options: dict[str, Any] = {"unit": UNIT, "rate_c_per_s": 0, **(sim or {})}
        if transport == "tcp":
            unit_sim = SimHvac(**sim_options)
            await unit_sim.start()
            stack.push_async_callback(unit_sim.stop)
            assert unit_sim.tcp_port is not None
            bus_config = ModbusTcpBus(
                type="modbus_tcp", host="127.0.0.1", port=unit_sim.tcp_port, timeout_s=0.3
            )
        else:
            baudrate = int(transport.removeprefix("rtu-"))
            link = SerialLink(baudrate)
            await link.start()
            stack.push_async_callback(link.stop)
            unit_sim = SimHvac(tcp_port=None, serial_port=link.b, baudrate=baudrate, **sim_options)
            await unit_sim.start()
            stack.push_async_callback(unit_sim.stop)
            bus_config = ModbusRtuBus(
                type="modbus_rtu", port=link.a, baudrate=baudrate, timeout_s=0.3, retries=0
            )
        bus = ModbusBus("bus1", bus_config, units=[UNIT], backoff=FAST)
        await bus.start()
        stack.push_async_callback(bus.stop)
        cfg = ModbusHvacConfig.model_validate(
            {"type": "modbus_hvac", "room": "r1", "bus": "bus1", "unit": UNIT, **config}
        )
        seen: list[Seen] = []

        def on_change(u: HvacUnit) -> None:
            seen.append(Seen(u.confirmed, u.available, u.fault, u.temperature_c, unit_sim.writes))

        unit = HvacUnit("hvac1", cfg, bus, on_change, backoff=FAST)
        await unit.start()
        stack.push_async_callback(unit.stop)
        yield Rig(unit_sim, bus, unit, seen)


async def until(predicate: Callable[[], bool], within: float = 5) -> None:
    """Wait for a state the simulator and the driver have no event for."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling a test condition on purpose
            await asyncio.sleep(0.01)


def confirmed(r: Rig, target: str) -> Callable[[], bool]:
    return lambda: r.unit.confirmed == target and r.unit.available and r.unit.target == target


def writes(history: list[HvacWrite]) -> list[tuple[int, float, str]]:
    return [(w.mode, w.setpoint_c, w.by) for w in history]


# --- commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_comfort_is_written_read_back_and_confirmed(transport: str) -> None:
    async def scenario() -> tuple[Rig, dict[str, object]]:
        async with rig(transport, sim={"temperature_c": 19.5}) as r:
            await until(lambda: r.unit.available)  # the first read, before any command
            assert r.unit.confirmed is None  # off at 20 °C: no target's setpoint
            r.unit.want("comfort")
            await until(confirmed(r, "comfort"))
            return r, r.unit.view()

    r, view = run_async(scenario())
    assert (r.sim.mode, r.sim.setpoint_c) == (COMFORT, 21.0)
    assert writes(r.sim.history) == [(COMFORT, 21.0, "modbus")]  # both registers in one write
    assert view == {
        "type": "modbus_hvac",
        "target": "comfort",
        "confirmed": "comfort",
        "mode": "comfort",
        "setpoint_c": 21.0,
        "temperature_c": 19.5,
        "available": True,
        "fault": None,
    }
    assert r.seen[-1] == Seen("comfort", True, None, 19.5, 1)


def test_standby_then_off() -> None:
    async def scenario() -> list[HvacWrite]:
        async with rig(comfort_c=22.5, standby_c=16) as r:
            r.unit.want("standby")
            await until(confirmed(r, "standby"))
            assert (r.sim.mode, r.sim.setpoint_c) == (STANDBY, 16.0)
            r.unit.want("comfort")
            await until(confirmed(r, "comfort"))
            assert (r.sim.mode, r.sim.setpoint_c) == (COMFORT, 22.5)
            r.unit.want("off")
            await until(confirmed(r, "off"))
            assert r.unit.mode == "off"
            return r.sim.history

    # Off keeps the standby setpoint: switched on at the wall, the unit starts from standby.
    assert writes(run_async(scenario())) == [
        (STANDBY, 16.0, "modbus"),
        (COMFORT, 22.5, "modbus"),
        (OFF, 16.0, "modbus"),
    ]


@pytest.mark.parametrize(
    ("mode_at", "setpoint_at", "expected"),
    [
        (0, 1, [(COMFORT, 21.0)]),  # one write of both
        (7, 6, [(COMFORT, 21.0)]),  # one write of both, setpoint first in the range
        (0, 5, [(OFF, 21.0), (COMFORT, 21.0)]),  # two: the setpoint first, then the mode
    ],
)
def test_register_layouts(
    mode_at: int, setpoint_at: int, expected: list[tuple[int, float]]
) -> None:
    async def scenario() -> list[HvacWrite]:
        sim = {"mode_address": mode_at, "setpoint_address": setpoint_at, "temperature_address": 9}
        async with rig(
            sim=sim, mode_register=mode_at, setpoint_register=setpoint_at, temperature_register=9
        ) as r:
            r.unit.want("comfort")
            await until(confirmed(r, "comfort"))
            return r.sim.history

    assert [(w.mode, w.setpoint_c) for w in run_async(scenario())] == expected


def test_a_new_target_is_written_even_if_the_unit_is_there_already() -> None:
    async def scenario() -> list[HvacWrite]:
        async with rig(sim={"mode": COMFORT, "setpoint_c": 21.0}) as r:
            await until(lambda: r.unit.confirmed == "comfort")  # read at start
            r.unit.want("comfort")
            await until(lambda: r.sim.history != [])
            await until(confirmed(r, "comfort"))
            r.unit.want("comfort")  # the same again: nothing to do
            return r.sim.history

    assert writes(run_async(scenario())) == [(COMFORT, 21.0, "modbus")]


def test_unknown_targets_are_refused() -> None:
    async def scenario() -> None:
        async with rig() as r:
            with pytest.raises(ValueError, match="'warm': not one of comfort, standby, off"):
                r.unit.want("warm")  # type: ignore[arg-type]

    run_async(scenario())


# --- temperature -----------------------------------------------------------------------------


def test_the_temperature_is_read_on_each_poll() -> None:
    async def scenario() -> tuple[float | None, list[Seen]]:
        async with rig(poll_s=0.1, sim={"temperature_c": 20.0}) as r:
            await until(lambda: r.unit.temperature_c == 20.0)
            r.sim.set_temperature(23.4)
            await until(lambda: r.unit.temperature_c == 23.4)
            r.sim.set_temperature(-5.5)  # a unit outdoors; the register is signed
            await until(lambda: r.unit.temperature_c == -5.5)
            return r.unit.temperature_c, r.seen

    temperature, seen = run_async(scenario())
    assert temperature == -5.5
    assert [s.temperature_c for s in seen] == [20.0, 23.4, -5.5]  # one call for each change


def test_the_simulated_room_drifts_towards_the_setpoint() -> None:
    async def scenario() -> tuple[float, float]:
        async with rig(poll_s=0.1, sim={"temperature_c": 18.0, "rate_c_per_s": 20}) as r:
            r.unit.want("comfort")
            await until(lambda: r.unit.temperature_c == 21.0)
            warm = r.sim.temperature_c
            r.unit.want("off")  # back towards the ambient 15 °C
            await until(lambda: r.unit.temperature_c == 15.0)
            return warm, r.sim.temperature_c

    assert run_async(scenario()) == (21.0, 15.0)


def test_a_unit_without_a_sensor() -> None:
    async def scenario() -> tuple[float | None, int]:
        async with rig(temperature_register=None) as r:
            await until(lambda: r.unit.available)
            r.unit.want("standby")
            await until(confirmed(r, "standby"))
            return r.unit.temperature_c, r.sim.requests

    temperature, requests = run_async(scenario())
    assert temperature is None
    # The bus's probe, the first read, the write and its read-back: no input register read.
    assert requests == 4


# --- faults ----------------------------------------------------------------------------------


def test_a_stuck_unit_is_retried_then_unavailable_then_confirmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.hvac")

    async def scenario() -> tuple[Rig, str | None]:
        async with rig(retries=2) as r:
            await until(lambda: r.unit.available)
            r.sim.stuck = True
            r.unit.want("comfort")
            await until(lambda: not r.unit.available)
            fault = r.unit.fault
            await until(lambda: r.sim.writes >= 6)  # retried with backoff
            assert r.unit.confirmed is None
            r.sim.stuck = False
            await until(confirmed(r, "comfort"))
            return r, fault

    r, fault = run_async(scenario())
    assert fault == (
        "comfort not confirmed: unit 3 reads back off at 20 °C after comfort at 21 °C was written"
    )
    down = next(s for s in r.seen if not s.available and s.writes > 0)
    assert down.writes == 3  # the first attempt and 2 retries, then unavailable
    assert (r.sim.mode, r.sim.setpoint_c) == (COMFORT, 21.0)
    assert writes(r.sim.history) == [(COMFORT, 21.0, "modbus")]  # stuck writes were kept out
    ours = [rec for rec in caplog.records if rec.name == "drivers.hvac"]
    errors = [rec.getMessage() for rec in ours if rec.levelno == logging.ERROR]
    assert errors == [f"hvac1: unavailable: {fault}"]  # once, however often it was retried
    infos = [rec.getMessage() for rec in ours if rec.levelno == logging.INFO]
    assert infos[-1].startswith("hvac1: available again after ")
    assert infos[-1].endswith(f"(was: {fault})")


def test_a_refused_command_is_a_fault() -> None:
    async def scenario() -> tuple[str | None, int]:
        async with rig(mode_comfort=7) as r:  # the unit knows modes 0-2 only
            await until(lambda: r.unit.available)
            r.unit.want("comfort")
            await until(lambda: not r.unit.available)
            return r.unit.fault, r.sim.refused

    fault, refused = run_async(scenario())
    assert fault is not None
    assert fault.startswith("comfort not confirmed: unit 3: write registers 0+2 = [7, 210]")
    assert fault.endswith("exception 3 (illegal data value)")
    assert refused >= 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_unit_that_goes_away_and_comes_back_is_set_again(transport: str) -> None:
    async def scenario() -> tuple[str | None, list[HvacWrite]]:
        async with rig(transport, poll_s=0.1) as r:
            r.unit.want("comfort")
            await until(confirmed(r, "comfort"))
            await r.sim.stop()
            await until(lambda: not r.unit.available)  # found by the next poll
            fault = r.unit.fault
            r.sim.set_by_hand(OFF, 20.0)  # it lost its settings with its power
            await r.sim.start()
            await until(confirmed(r, "comfort"))
            return fault, r.sim.history

    fault, history = run_async(scenario())
    assert fault is not None
    if transport == "tcp":
        assert fault.startswith("bus1: c")  # connection lost, or cannot connect
    else:
        assert fault == "bus1: unit 3 does not answer"
    assert writes(history) == [
        (COMFORT, 21.0, "modbus"),
        (OFF, 20.0, "hand"),
        (COMFORT, 21.0, "modbus"),
    ]


def test_a_unit_that_answers_too_late() -> None:
    async def scenario() -> tuple[str | None, bool]:
        async with rig() as r:
            await until(lambda: r.unit.available)
            r.sim.delay_s = 0.5  # the bus waits 0.3 s
            r.unit.want("standby")
            await until(lambda: not r.unit.available)
            fault = r.unit.fault
            r.sim.delay_s = 0
            await until(confirmed(r, "standby"))
            return fault, r.unit.available

    fault, available = run_async(scenario())
    assert fault == "bus1: unit 3 does not answer"
    assert available


def test_a_change_at_the_wall_is_put_back_at_the_next_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[HvacWrite]:
        async with rig(poll_s=0.1) as r:
            r.unit.want("standby")
            await until(confirmed(r, "standby"))
            r.sim.set_by_hand(COMFORT, 25.0)
            await r.sim.wait_for(STANDBY, 17.0)
            await until(confirmed(r, "standby"))
            return r.sim.history

    assert writes(run_async(scenario())) == [
        (STANDBY, 17.0, "modbus"),
        (COMFORT, 25.0, "hand"),
        (STANDBY, 17.0, "modbus"),
    ]
    warnings = [
        rec.getMessage()
        for rec in caplog.records
        if rec.name == "drivers.hvac" and rec.levelno == logging.WARNING
    ]
    assert warnings == [
        "hvac1: changed outside the gateway (now comfort at 25 °C); setting standby again"
    ]


def test_a_wanted_state_waits_for_a_unit_that_is_not_there_yet() -> None:
    async def scenario() -> tuple[bool, list[HvacWrite]]:
        async with rig() as r:
            await r.sim.stop()
            r.unit.want("comfort")
            await until(lambda: r.unit.fault is not None and r.unit.fault.startswith("bus1:"))
            available = r.unit.available
            await r.sim.start()
            await until(confirmed(r, "comfort"))
            return available, r.sim.history

    available, history = run_async(scenario())
    assert not available
    assert writes(history) == [(COMFORT, 21.0, "modbus")]


def test_the_unit_runs_in_a_named_task() -> None:
    async def scenario() -> set[str]:
        async with rig():
            return {t.get_name() for t in asyncio.all_tasks()}

    assert "hvac[hvac1]" in run_async(scenario())


# --- the simulated unit ------------------------------------------------------------------------


def test_the_simulated_unit_refuses_what_a_real_one_refuses() -> None:
    async def scenario() -> list[int]:
        unit = SimHvac(unit=UNIT)
        await unit.start()
        assert unit.tcp_port is not None
        config = ModbusTcpBus(type="modbus_tcp", host="127.0.0.1", port=unit.tcp_port)
        bus = ModbusBus("bus1", config, units=[UNIT])
        await bus.start()
        codes = []
        try:
            for request in (
                bus.write_register(UNIT, 0, 3),  # mode 3
                bus.write_register(UNIT, 1, 40),  # 4 °C
                bus.write_registers(UNIT, 0, [1, 351]),  # 35.1 °C: nothing of it applied
                bus.read_holding_registers(UNIT, 2, 1),
                bus.write_register(UNIT, 7, 1),
                bus.read_input_registers(UNIT, 1, 1),
                bus.read_holding_registers(UNIT, 0, 3),
                bus.read_coils(UNIT, 0, 1),
            ):
                try:
                    await request
                except Exception as exc:
                    codes.append(getattr(exc, "code", -1))
            assert await bus.read_holding_registers(UNIT, 0, 2) == [OFF, 200]
            return codes
        finally:
            await bus.stop()
            await unit.stop()

    assert run_async(scenario()) == [3, 3, 3, 2, 2, 2, 2, 1]


def test_set_by_hand_checks_its_values_too() -> None:
    unit = SimHvac()
    with pytest.raises(ValueError, match="mode 5"):
        unit.set_by_hand(5, 20)
    with pytest.raises(ValueError, match="setpoint 36"):
        unit.set_by_hand(COMFORT, 36)
    assert unit.history == []


# --- configuration ------------------------------------------------------------------------------

BASE = {"type": "modbus_hvac", "room": "meeting-1", "bus": "rs485", "unit": 3}


def test_config_defaults() -> None:
    assert ModbusHvacConfig.model_validate(BASE) == ModbusHvacConfig(
        type="modbus_hvac",
        room="meeting-1",
        bus="rs485",
        unit=3,
        mode_register=0,
        setpoint_register=1,
        temperature_register=0,
        scale=10,
        mode_off=0,
        mode_comfort=1,
        mode_standby=2,
        comfort_c=21.0,
        standby_c=17.0,
        retries=2,
        poll_s=60,
    )
    whole = ModbusHvacConfig.model_validate({**BASE, "comfort_c": 22, "standby_c": 22})
    assert whole.comfort_c == whole.standby_c == 22.0  # TOML integers are fine
    never = ModbusHvacConfig.model_validate({**BASE, "poll_s": 0, "temperature_register": None})
    assert (never.poll_s, never.temperature_register) == (0, None)
    # TOML has no null: `temperature_register = false` is how a config says "no sensor".
    no_sensor = ModbusHvacConfig.model_validate({**BASE, "temperature_register": False})
    assert no_sensor.temperature_register is None


@pytest.mark.parametrize(
    ("change", "loc", "kind", "says"),
    [
        ({"comfort_c": 36}, ("comfort_c",), "less_than_equal", "35"),
        ({"standby_c": 4.5}, ("standby_c",), "greater_than_equal", "5"),
        (
            {"comfort_c": 18, "standby_c": 19.5},
            ("standby_c",),
            "value_error",
            "19.5 °C is above comfort_c (18 °C)",
        ),
        ({"comfort_c": "21"}, ("comfort_c",), "float_type", "number"),
        ({"unit": 0}, ("unit",), "greater_than_equal", "1"),
        ({"unit": 248}, ("unit",), "less_than_equal", "247"),
        ({"unit": "3"}, ("unit",), "int_type", "integer"),
        ({"setpoint_register": 0}, ("setpoint_register",), "value_error", "mode_register"),
        ({"mode_register": 70000}, ("mode_register",), "less_than_equal", "65535"),
        ({"temperature_register": -1}, ("temperature_register",), "greater_than_equal", "0"),
        ({"temperature_register": True}, ("temperature_register",), "value_error", "or false"),
        ({"temperature_register": "0"}, ("temperature_register",), "int_type", "integer"),
        ({"mode_comfort": 0}, ("mode_comfort",), "value_error", "0 is mode_off too"),
        ({"mode_standby": 1}, ("mode_standby",), "value_error", "1 is mode_comfort too"),
        ({"scale": 0}, ("scale",), "greater_than_equal", "1"),
        ({"retries": -1}, ("retries",), "greater_than_equal", "0"),
        ({"poll_s": 0.01}, ("poll_s",), "value_error", "at least 0.1 s"),
        ({"poll_s": -1}, ("poll_s",), "greater_than_equal", "0"),
        ({"setpoint": 21}, ("setpoint",), "extra_forbidden", "not permitted"),
        ({"room": ""}, ("room",), "string_too_short", "at least 1"),
    ],
)
def test_bad_config_names_the_key(
    change: dict[str, Any], loc: tuple[str, ...], kind: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusHvacConfig.model_validate({**BASE, **change})
    errors = caught.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)]
    assert says in errors[0]["msg"]


def test_missing_keys_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusHvacConfig.model_validate({"type": "modbus_hvac"})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("room",), "missing"),
        (("bus",), "missing"),
        (("unit",), "missing"),
    ]
