"""The gateway's TOML configuration, validated by pydantic.

Unknown keys are errors. Every problem is reported as `file: path.to.key:
problem`, never as a traceback: `load_config` raises `ConfigError`, whose
lines the command line prints before exiting with status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_STATE_DIR = Path("/var/lib/edge-gateway")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_ID = re.compile(r"[^\x00-\x1f]{1,64}\Z")


def _identifier(v: str) -> str:
    if not _ID.match(v):
        raise ValueError("must be a non-empty identifier of at most 64 characters")
    return v


Identifier = Annotated[str, AfterValidator(_identifier)]


class SiteConfig(_Section):
    """The site this gateway serves; a snapshot of another site is refused."""

    id: Identifier


class GatewayConfig(_Section):
    id: Identifier = "gw-1"

    # Default: $STATE_DIRECTORY (set by systemd's StateDirectory=), else /var/lib/edge-gateway.
    state_dir: Path | None = None

    @field_validator("state_dir", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return Path(v) if isinstance(v, str) else v


class AdminConfig(_Section):
    socket: Path | None = None  # default: <state_dir>/admin.sock
    socket_mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] = "0660"

    @field_validator("socket", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return Path(v) if isinstance(v, str) else v


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    timestamps: bool = True  # journald adds its own; turn off under systemd if preferred


class EventsConfig(_Section):
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


class DoorsConfig(_Section):
    admin_unlock_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    max_unlock_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600

    @model_validator(mode="after")
    def _default_within_limit(self) -> DoorsConfig:
        if self.admin_unlock_seconds > self.max_unlock_seconds:
            raise ValueError(
                f"admin_unlock_seconds ({self.admin_unlock_seconds}) is above "
                f"max_unlock_seconds ({self.max_unlock_seconds})"
            )
        return self


class Config(_Section):
    site: SiteConfig
    gateway: GatewayConfig = GatewayConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    events: EventsConfig = EventsConfig()
    doors: DoorsConfig = DoorsConfig()

    def state_dir(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        if self.gateway.state_dir is not None:
            return self.gateway.state_dir
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else DEFAULT_STATE_DIR

    def admin_socket(self, state_dir: Path) -> Path:
        return self.admin.socket or state_dir / "admin.sock"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: dict[str, object]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling against config.example.toml)"
    if kind == "missing":
        return "required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def parse_config(text: str, source: str = "config") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{source}: {_path(e['loc'])}: {_problem(dict(e))}"
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(problems) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, str(path))
