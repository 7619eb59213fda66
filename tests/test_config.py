"""Configuration: the example validates, and every mistake names file, key and problem."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.config import Config, ConfigError, load_config, parse_config
from tests.conftest import REPO


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.toml")
    assert isinstance(config, Config)
    assert config.site.id == "mitte"


def _models(annotation: object) -> list[type[BaseModel]]:
    """The config models an annotation can hold (through unions, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models(arg)
    return out


def test_example_config_documents_every_option() -> None:
    """Every option of every section appears in the example (commented out or set)."""
    text = (REPO / "config.example.toml").read_text()
    seen: set[type[BaseModel]] = set()
    todo = [(name, m) for name, f in Config.model_fields.items() for m in _models(f.annotation)]
    for section_name, _ in todo:
        assert f"[{section_name}" in text, section_name
    while todo:
        where, model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for key, field in model.model_fields.items():
            # An option is `key = ...`, or for a table of its own, a `[section.key]` header.
            pattern = rf"(^|[\s{{,#]){key} =|^\[[\w.-]*\.{key}\]"
            assert re.search(pattern, text, re.M), f"{where}: {key}"
            todo += [(f"{where}.{key}", m) for m in _models(field.annotation)]


SITE = '[site]\nid = "m"\n'
OSDP_BUS = '[buses.rs]\ntype = "osdp"\nport = "/dev/x"\n'
MODBUS_BUS = '[buses.io]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
READER_A = '[readers.a]\ntype = "osdp"\nbus = "rs"\naddress = 1\nkey = "k"\n'
STRIKE_IO = 'strike = { type = "modbus", bus = "io", coil = 0 }\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OSDP_BUS + "baudrate = 1234\n", "buses.rs.baudrate: Input should be 9600"),
        ('[buses.rs]\ntype = "can"\n', "buses.rs: Input tag 'can' found using 'type'"),
        (
            OSDP_BUS + '[readers.a]\ntype = "osdp"\nbus = "rs"\naddress = 1\n',
            "readers.a: a secure reader needs `key`",
        ),
        (
            OSDP_BUS + READER_A + READER_A.replace(".a]", ".b]").replace('"k"', '"k2"'),
            "readers.b.address: 1 is already reader 'a' on bus 'rs'",
        ),
        (READER_A, "readers.a.bus: no bus 'rs' in [buses] (known: none configured)"),
        (
            '[readers.w]\ntype = "wiegand"\nedges = "socket"\n',
            'readers.w: edges = "socket" needs `socket`',
        ),
        (
            '[readers.w]\ntype = "wiegand"\nd0 = 3\nd1 = 3\n',
            "readers.w: d0 and d1 must be different lines",
        ),
        (
            OSDP_BUS + READER_A + '[doors.front]\nin_readers = ["a", "zz"]\n',
            "doors.front.in_readers[1]: no reader 'zz' in [readers] (known: a)",
        ),
        (
            OSDP_BUS
            + READER_A
            + '[doors.front]\nin_readers = ["a"]\n[doors.back]\nout_readers = ["a"]\n',
            "doors.back.out_readers[0]: reader 'a' already serves door 'front'",
        ),
        (
            OSDP_BUS + "[doors.front]\n" + STRIKE_IO.replace('"io"', '"rs"'),
            "doors.front.strike.bus: bus 'rs' is osdp; a Modbus strike needs modbus_rtu",
        ),
        (
            MODBUS_BUS + "[doors.front]\n" + STRIKE_IO + "[doors.back]\n" + STRIKE_IO,
            "doors.back.strike: coil 0 of unit 1 on 'io' already drives door 'front'",
        ),
        (
            '[doors.front]\nstrike = { type = "osdp", reader = "x" }\n',
            "doors.front.strike.reader: 'x' is not an OSDP reader",
        ),
        (
            MODBUS_BUS + '[doors.front]\ncontact = { bus = "io", input = 0, open_when = "open" }\n',
            "doors.front.contact.open_when: Input should be 'on' or 'off'",
        ),
        (
            "[doors.front]\nheld_open_seconds = 10\nprealarm_seconds = 10\n",
            "doors.front: prealarm_seconds (10) must be below held_open_seconds (10)",
        ),
        ("[doors.front]\nunlock_secs = 3\n", "doors.front.unlock_secs: unknown key"),
    ],
)
def test_hardware_mistakes_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(SITE + text, "cfg.toml")
    assert any(p.startswith(f"cfg.toml: {expected}") for p in err.value.problems), (
        err.value.problems
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "cfg.toml: site: required"),
        ('[site]\nid = "mitte"\n[sitee]\nx = 1\n', "cfg.toml: sitee: unknown key"),
        ('[site]\nid = "mitte"\nname = "x"\n', "cfg.toml: site.name: unknown key"),
        ('[site]\nid = ""\n', "cfg.toml: site.id: must be a non-empty identifier"),
        ("[site]\nid = 12\n", "cfg.toml: site.id: Input should be a valid string"),
        ('[site]\nid = "m"\n[log]\nlevel = "loud"\n', "cfg.toml: log.level: Input should be"),
        (
            '[site]\nid = "m"\n[events]\nretention_days = 0\n',
            "cfg.toml: events.retention_days: Input should be greater than or equal to 1",
        ),
        (
            '[site]\nid = "m"\n[access]\nadmin_unlock_seconds = "5"\n',
            "cfg.toml: access.admin_unlock_seconds: Input should be a valid integer",
        ),
        (
            '[site]\nid = "m"\n[admin]\nsocket_mode = "0999"\n',
            "cfg.toml: admin.socket_mode: String should match pattern",
        ),
        (
            '[site]\nid = "m"\n[log]\ntimestamps = "yes"\n',
            "cfg.toml: log.timestamps: Input should be a valid boolean",
        ),
        ('[site\nid = "m"\n', "cfg.toml: "),
        (
            '[site]\nid = "m"\n[access]\nadmin_unlock_seconds = 600\nmax_unlock_seconds = 60\n',
            "cfg.toml: access: admin_unlock_seconds (600) is above max_unlock_seconds (60)",
        ),
        ('[site]\nid = "m"\n[gateway]\nid = ""\n', "cfg.toml: gateway.id: must be a non-empty"),
    ],
    ids=[
        "missing-site",
        "unknown-section",
        "unknown-key",
        "empty-id",
        "id-not-string",
        "bad-level",
        "retention-zero",
        "seconds-as-string",
        "bad-mode",
        "bool-as-string",
        "toml-syntax",
        "unlock-above-limit",
        "empty-gateway-id",
    ],
)
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "cfg.toml")
    assert any(p.startswith(expected) for p in exc.value.problems), exc.value.problems


def test_check_config_cli(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "edge.ops.cli", "check-config", str(REPO / "config.example.toml")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0
    assert "ok" in good.stdout
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[site]\nid = "m"\n[access]\nadmin_unlock_seconds = 0\nfoo = 1\n')
    bad = subprocess.run(
        [sys.executable, "-m", "edge.ops.cli", "check-config", str(bad_file)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert lines == [
        f"{bad_file}: access.admin_unlock_seconds: Input should be greater than or equal to 1",
        f"{bad_file}: access.foo: unknown key (check the spelling against config.example.toml)",
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "edge.ops.cli", "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_edgectl_default_socket_follows_the_config_default() -> None:
    from edge.config import DEFAULT_STATE_DIR
    from edge.ops.edgectl import _socket_path, build_parser

    args = build_parser().parse_args(["status"])
    assert _socket_path(args) == DEFAULT_STATE_DIR / "admin.sock"


def test_an_hvac_unit_without_a_temperature_sensor() -> None:
    """TOML has no null: `temperature_register = false` says the unit has no sensor."""
    base = SITE + MODBUS_BUS + "[rooms.ada]\n"
    hvac = '[devices.h]\ntype = "modbus_hvac"\nroom = "ada"\nbus = "io"\nunit = 10\n'
    no_sensor = parse_config(base + hvac + "temperature_register = false\n").devices["h"]
    assert getattr(no_sensor, "temperature_register", "missing") is None
    default = parse_config(base + hvac).devices["h"]
    assert getattr(default, "temperature_register", "missing") == 0
    with pytest.raises(ConfigError) as caught:
        parse_config(base + hvac + "temperature_register = true\n")
    assert any(
        "devices.h.temperature_register" in p and "or false" in p for p in caught.value.problems
    ), caught.value.problems
