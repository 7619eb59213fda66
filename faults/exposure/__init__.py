"""The systemd units' exposure: `systemd-analyze security --offline=true` scores
each unit in systemd/ (lower is better; the campaign's bar is 1.5) and
`systemd-analyze verify` must find nothing to say about it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
# The bar of issue 15, item 6.
MAX_SCORE = 1.5

_OVERALL = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
# The units name the installed venv (/opt/edge-gateway/.venv/bin/...); verify
# checks that ExecStart= is executable, so it is pointed at this interpreter's.
_EXEC = re.compile(r"^ExecStart=/opt/edge-gateway/\.venv/bin/(\S+)", re.MULTILINE)


class AnalyzeError(Exception):
    """systemd-analyze is missing or said something we cannot read."""


@dataclass(frozen=True)
class UnitReport:
    unit: str
    score: float
    # What `systemd-analyze verify` printed: nothing when the unit is clean.
    verify: str


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AnalyzeError("systemd-analyze is not installed (Debian package: systemd)")
    return path


def units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def score(unit: Path) -> float:
    """The overall exposure level, as `systemd-analyze security` prints it."""
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = _OVERALL.search(proc.stdout)
    if match is None:
        raise AnalyzeError(
            f"{unit.name}: no overall exposure level in systemd-analyze's output "
            f"(exit {proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}"
        )
    return float(match.group(1))


def verify(unit: Path) -> str:
    """systemd-analyze verify's complaints about the unit, empty when clean."""
    bindir = Path(sys.executable).parent
    text = _EXEC.sub(lambda m: f"ExecStart={bindir / m.group(1)}", unit.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        # The same file name: verify checks the unit by its name.
        copy = Path(tmp) / unit.name
        copy.write_text(text)
        proc = subprocess.run(
            [systemd_analyze(), "verify", "--man=no", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and not out:
        out = f"systemd-analyze verify exited {proc.returncode}"
    return out


def report(unit: Path) -> UnitReport:
    return UnitReport(unit.name, score(unit), verify(unit))
