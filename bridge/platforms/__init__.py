"""One module per platform, registered in one explicit table."""

from __future__ import annotations

from bridge.platforms.base import Platform
from bridge.platforms.nexudus import Nexudus
from bridge.platforms.officernd import OfficeRnd

PLATFORMS: dict[str, type[Platform]] = {
    "nexudus": Nexudus,
    "officernd": OfficeRnd,
}
