"""Panel requests: over MQTT (`edge/{site}/rooms/{room}/request/{op}`, read by
`edge.rooms.panels.parse_request`, refusals are `PanelError`) and over the web
panel's WebSocket (`edge.web.panel.PanelPage._message`'s envelope check,
`parse_ws_message`, whose refusal is the reason it returns). The first byte
picks the transport."""

from __future__ import annotations

from edge.rooms.panels import PanelError, parse_request
from edge.web.panel import parse_ws_message
from faults.fuzz.harness import Harness


def run(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        parse_request(data[1:])
    else:
        parse_ws_message(data[1:].decode("utf-8", errors="surrogateescape"))


HARNESS = Harness("panels", run, (PanelError,))
