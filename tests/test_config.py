"""Configuration: the example validates, and every mistake names file, key and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import Config, ConfigError, load_config, parse_config
from tests.conftest import REPO


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.toml")
    assert isinstance(config, Config)
    assert config.site.id == "mitte"


def test_example_config_documents_every_option() -> None:
    """Every option of every section appears in the example (commented out or set)."""
    text = (REPO / "config.example.toml").read_text()
    for section_name, field in Config.model_fields.items():
        assert f"[{section_name}]" in text, section_name
        section = field.annotation
        for key in section.model_fields:  # type: ignore[union-attr]
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section_name}.{key}"


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
            '[site]\nid = "m"\n[doors]\nadmin_unlock_seconds = "5"\n',
            "cfg.toml: doors.admin_unlock_seconds: Input should be a valid integer",
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
            '[site]\nid = "m"\n[doors]\nadmin_unlock_seconds = 600\nmax_unlock_seconds = 60\n',
            "cfg.toml: doors: admin_unlock_seconds (600) is above max_unlock_seconds (60)",
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
        [sys.executable, "-m", "edge.cli", "check-config", str(REPO / "config.example.toml")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0
    assert "ok" in good.stdout
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[site]\nid = "m"\n[doors]\nadmin_unlock_seconds = 0\nfoo = 1\n')
    bad = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", str(bad_file)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert lines == [
        f"{bad_file}: doors.admin_unlock_seconds: Input should be greater than or equal to 1",
        f"{bad_file}: doors.foo: unknown key (check the spelling against config.example.toml)",
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
