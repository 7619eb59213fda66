"""Every topic of the gateway is in one table, and docs/mqtt.md lists them all."""

from __future__ import annotations

from pathlib import Path

from edge.mqtt.topics import TOPICS, subscription, topic

DOC = Path(__file__).resolve().parent.parent / "docs" / "mqtt.md"


def test_the_docs_list_every_topic() -> None:
    text = DOC.read_text()
    for name, t in TOPICS.items():
        assert f"`{t.pattern}`" in text, name


def test_topics_and_subscriptions() -> None:
    assert topic("room_state", site="mitte", room="ada") == "edge/mitte/rooms/ada/state"
    assert subscription("room_request", site="mitte") == "edge/mitte/rooms/+/request/+"
    assert topic("gateway_state", site="m", gateway="gw-1") == "edge/m/gateway/gw-1/state"
