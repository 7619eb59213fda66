"""Config files: `edge.config.load_config` on a file holding the input, the way
`edge-gateway run` and `check-config` read theirs (UTF-8 text, TOML, the
pydantic models, the cross checks). Every problem is a `ConfigError`."""

from __future__ import annotations

import functools
from pathlib import Path

from edge.config import ConfigError, load_config
from faults.fuzz.harness import Harness, scratch


@functools.cache
def _path() -> Path:
    # A file in the harness's scratch folder, rewritten for each input.
    return scratch() / "config.toml"


def run(data: bytes) -> None:
    path = _path()
    path.write_bytes(data)
    load_config(path)


HARNESS = Harness("config", run, (ConfigError,), max_len=16384, prepare=_path)
