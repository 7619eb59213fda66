"""Door commands over MQTT (`edge/{site}/doors/{door}/command`): the payload parser
`edge.mqtt.door_commands.parse_command`, which refuses with `CommandError` only."""

from __future__ import annotations

from edge.mqtt.door_commands import CommandError, parse_command
from faults.fuzz.harness import Harness


def run(data: bytes) -> None:
    parse_command(data)


HARNESS = Harness("door_commands", run, (CommandError,), max_len=1024)
