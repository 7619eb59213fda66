"""What a harness is, the table of harnesses, and the check every input goes through."""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
# Set by the runner for its child: a folder it removes when the child ends
# (libFuzzer ends the child with exit(), which skips Python's atexit).
SCRATCH_ENV = "FAULTS_FUZZ_SCRATCH"

# The harnesses, in the order `--harness all` runs them, with the packages whose
# code atheris instruments for coverage (the gateway's own, and a library that
# parses in Python on the gateway's behalf). An explicit table, not a folder
# scan, so that a harness cannot go missing quietly.
OURS = ("edge", "drivers")
HARNESSES: dict[str, tuple[str, ...]] = {
    "osdp_frames": OURS,
    "osdp_secure": OURS,
    "wiegand": OURS,
    "modbus": (*OURS, "pymodbus"),
    "snapshot": OURS,
    "changes": OURS,
    "push": OURS,
    "mqtt_devices": OURS,
    "panels": OURS,
    "door_commands": OURS,
    "admin": OURS,
    "config": (*OURS, "tomllib"),
}


@dataclass(frozen=True)
class Harness:
    """One parser under fuzzing.

    `run` feeds one input to the parser's real entry point; `expected` are the
    error types the parser documents for bad input (anything else it raises
    is a finding). `max_len` bounds an input (libFuzzer -max_len).
    `prepare` builds what `run` needs once (an index, keys) before fuzzing starts.
    """

    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    max_len: int = 4096
    prepare: Callable[[], object] | None = None


class Finding(AssertionError):
    """An input made a parser fail in an undocumented way."""


@functools.cache
def scratch() -> Path:
    """A private folder for a harness's files (a config file, an index's database)."""
    given = os.environ.get(SCRATCH_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def load(name: str) -> Harness:
    if name not in HARNESSES:
        raise KeyError(f"no harness {name!r} (one of: {', '.join(HARNESSES)})")
    harness: Harness = importlib.import_module(f"faults.fuzz.harnesses.{name}").HARNESS
    return harness


def check(harness: Harness, data: bytes) -> None:
    """Feed one input; a documented refusal is fine, any other exception propagates."""
    with contextlib.suppress(*harness.expected):
        harness.run(data)
