"""Write the seed corpora (faults/fuzz/corpus/<harness>/) from the example site,
the example config and the wire formats' encoders: `python -m faults.fuzz.seeds`.

The seeds are committed; run this again when a format changes. It needs the
simulators' package (`hwsim`, the hw-sim folder) for the example site.
"""

from __future__ import annotations

import copy
import json
import shutil
import struct
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import (
    ReadCoilsResponse,
    ReadDiscreteInputsResponse,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from drivers.osdp import Reply, encode_packet
from drivers.wiegand import encode_card, encode_key
from faults.fuzz.harness import CORPUS, HARNESSES
from faults.fuzz.harnesses import push

ROOT = Path(__file__).resolve().parents[2]
# A Monday, as the test suite's example site is built for one.
DAY = date(2026, 5, 25)


def _site() -> dict[str, Any]:
    from hwsim.sitegen import example_site  # the simulators: only for writing seeds

    doc: dict[str, Any] = example_site(DAY)[0]
    return doc


def snapshot_seeds(doc: dict[str, Any]) -> dict[str, bytes]:
    minimal = {k: doc[k] for k in ("schema", "cursor", "generated_at", "site")}
    one_each = {k: (v[:1] if isinstance(v, list) else v) for k, v in doc.items()}
    escaped = copy.deepcopy(one_each)
    escaped["members"][0]["name"] = "Ada\\u0007 \u00e9\u20ac"
    return {
        "example.json": json.dumps(doc).encode(),
        "example_pretty.json": json.dumps(doc, indent=1).encode(),
        "minimal.json": json.dumps(minimal).encode(),
        "one_each.json": json.dumps(one_each).encode(),
        "escaped.json": json.dumps(escaped, ensure_ascii=False).encode(),
        "wrong_schema.json": json.dumps({**minimal, "schema": "edge-sync/0"}).encode(),
    }


def _page(changes: list[Any], more: bool = False) -> bytes:
    return json.dumps({"changes": changes, "cursor": "c-000002", "more": more}).encode()


def change_lists(doc: dict[str, Any]) -> dict[str, list[Any]]:
    member = copy.deepcopy(doc["members"][0])
    member["billing"] = {"status": "suspended", "grace_until": None}
    guest = copy.deepcopy(doc["guests"][0])
    booking = doc["bookings"][0]
    return {
        "member_upsert": [{"op": "upsert", "kind": "member", "data": member}],
        "mixed": [
            {"op": "upsert", "kind": "guest", "data": guest},
            {"op": "delete", "kind": "booking", "id": booking["id"]},
            {"op": "upsert", "kind": "door", "data": doc["doors"][0]},
            {"op": "delete", "kind": "plan", "id": doc["plans"][0]["id"]},
        ],
        "refused": [{"op": "upsert", "kind": "member", "data": {"id": "x"}}, {"op": "nope"}],
        "site": [{"op": "upsert", "kind": "site", "data": doc["site"]}],
        "empty": [],
    }


def push_seeds(doc: dict[str, Any]) -> dict[str, bytes]:
    base = {"site": "mitte", "issued_at": "2026-05-28T20:26:40Z"}
    payloads = {
        "changes": {
            **base,
            "type": "changes",
            "nonce": "n1",
            "changes": change_lists(doc)["member_upsert"],
        },
        "sync": {**base, "type": "sync", "nonce": "n2"},
        "command": {
            **base,
            "type": "command",
            "nonce": "n3",
            "command": {"name": "unlock", "door": "front", "seconds": 5},
        },
        "replayed": {**base, "type": "resync", "nonce": "used"},
    }
    out = {}
    for name, body in payloads.items():
        payload = json.dumps(body).encode()
        out[f"signed_{name}"] = b"\x00" + payload
        out[f"envelope_{name}"] = b"\x01" + push.envelope(payload)
    return out


def _edges(bits: str, start_ns: int) -> list[tuple[int, int]]:
    return [(int(b), start_ns + i * 2_000_000) for i, b in enumerate(bits)]


def _datagram(setup: int, frames: Iterable[str]) -> bytes:
    edges: list[tuple[int, int]] = []
    t = 1_000_000_000
    for bits in frames:
        edges += _edges(bits, t)
        t += len(bits) * 2_000_000 + 40_000_000  # then the line is quiet
    return bytes([setup]) + b"".join(struct.pack("<BQ", line, ns) for line, ns in edges)


def wiegand_seeds() -> dict[str, bytes]:
    card = encode_card("H10301", 12, 3456).as_text()
    c1000 = encode_card("C1000", 100, 12345).as_text()
    keys4 = [encode_key(k, 4).as_text() for k in "1234#"]
    keys8 = [encode_key(k, 8).as_text() for k in "98*76#"]
    return {
        "card_26": _datagram(0, [card]),
        "card_35": _datagram(0, [c1000]),
        "raw_32": _datagram(1, ["10" * 16]),
        "pin_4bit": _datagram(0, keys4),
        "pin_8bit": _datagram(2, keys8),
        "card_then_pin": _datagram(0, [card, *keys4]),
    }


def modbus_seeds() -> dict[str, bytes]:
    replies = [
        WriteSingleCoilResponse(address=3, bits=[True]),
        ReadCoilsResponse(bits=[True, False, True, False, False, False, False, True]),
        ReadDiscreteInputsResponse(bits=[False] * 12 + [False] * 4),
        ReadHoldingRegistersResponse(registers=[215, 0, 1, 65535]),
        ReadInputRegistersResponse(registers=[42]),
        WriteSingleRegisterResponse(address=7, registers=[215]),
        WriteMultipleRegistersResponse(address=10, count=3),
    ]
    out = {}
    for i, pdu in enumerate(replies):
        pdu.dev_id = 1
        rtu = FramerRTU(DecodePDU(False)).buildFrame(pdu)
        out[f"{i}_{type(pdu).__name__}_rtu"] = bytes([i, 0]) + rtu
        out[f"{i}_{type(pdu).__name__}_rtu_fixed"] = bytes([i, 1]) + rtu[:-2]
        pdu.transaction_id = 0
        out[f"{i}_{type(pdu).__name__}_tcp"] = bytes([i, 2]) + FramerSocket(
            DecodePDU(False)
        ).buildFrame(pdu)
    out["exception_rtu"] = bytes([1, 1, 1, 0x81, 0x02])
    return out


def _reply(code: int, data: bytes, sqn: int) -> bytes:
    return encode_packet(1, code, data, sqn, reply=True, mark=False)


def _answers(frames: list[bytes]) -> bytes:
    return b"".join(bytes([len(f)]) + f for f in frames)


PDID = bytes([0x5C, 0x26, 0x23, 2, 1, 1, 0, 0, 0, 1, 2, 3])
PDCAP = bytes([1, 2, 1, 3, 1, 0, 4, 1, 1, 9, 1, 0])
RAW_CARD = bytes([0, 1, 26, 0]) + (encode_card("H10301", 12, 3456).bits << 6).to_bytes(4, "big")
KEYPAD = bytes([0, 5]) + b"1234\x0d"


def osdp_frames_seeds() -> dict[str, bytes]:
    connect = [_reply(Reply.PDID, PDID, 0), _reply(Reply.PDCAP, PDCAP, 1)]
    return {
        "connect_card": _answers([*connect, _reply(Reply.RAW, RAW_CARD, 2)]),
        "connect_keys": _answers([*connect, _reply(Reply.KEYPAD, KEYPAD, 2)]),
        "connect_status": _answers(
            [*connect, _reply(Reply.LSTATR, b"\x01\x00", 2), _reply(Reply.OSTATR, b"\x01\x00", 3)]
        ),
        "nak_busy": _answers(
            [*connect, _reply(Reply.NAK, b"\x04", 2), b"", _reply(Reply.BUSY, b"", 2)]
        ),
        "noise": _answers([b"\xff\xff\x53\x81\x00", *connect]),
    }


def _steps(steps: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(bytes([how, code, len(body)]) + body for how, code, body in steps)


def osdp_secure_seeds() -> dict[str, bytes]:
    handshake = [
        (0, Reply.PDID, PDID),
        (0, Reply.PDCAP, PDCAP),
        (0, 0, bytes(range(8))),  # CCRYPT: RND.B
        (0, 0, b"\x01"),  # RMAC_I, status 0x01
    ]
    return {
        "card": _steps([*handshake, (0, Reply.RAW, RAW_CARD), (0, Reply.ACK, b"")]),
        "keys": _steps([*handshake, (0, Reply.KEYPAD, KEYPAD)]),
        "status_ff": _steps([*handshake[:3], (0, 0, b"\x00"), (0, Reply.LSTATR, b"\x00\x01")]),
        "bad_mac": _steps([*handshake, (1, Reply.RAW, RAW_CARD)]),
        "bad_ccrypt": _steps([*handshake[:2], (1, 0, bytes(range(8)))]),
        "lost": _steps([*handshake, (3, 0, b""), (0, Reply.NAK, b"\x06")]),
    }


def text_seeds() -> dict[str, dict[str, bytes]]:
    return {
        "door_commands": {
            "unlock": b"UNLOCK",
            "lock": b"lock",
            "unlock_json": b'{"action": "unlock", "seconds": 5, "by": "ha"}',
            "lock_json": b'{"action": "LOCK", "by": "Front desk"}',
        },
        "admin": {
            "decide": b'{"id": 1, "method": "decide", "params": {"door": "front", '
            b'"card": "H10301:12:3456", "pin": "1234", "at": "2026-05-28T10:00:00+02:00"}}\n',
            "present_raw": b'{"id": "a", "method": "present", "params": {"door": "side", '
            b'"card": "raw:3fff"}}\n',
            "import": b'{"id": 2, "method": "import", "params": {"payload_bytes": 10}}\n',
            "status": b'{"id": 3, "method": "status"}\n',
        },
        "panels": {
            "mqtt_book": b'\x01{"transaction": "t1", "minutes": 30, "pin": "1234"}',
            "mqtt_card": b'\x01{"transaction": 7, "card": "H10301:12:3456"}',
            "mqtt_empty": b"\x01",
            "ws_book": b'\x00{"type": "request", "id": 3, "op": "book", "minutes": 30, '
            b'"badge": true}',
            "ws_cancel": b'\x00{"type": "cancel", "id": 3}',
            "ws_ping": b'\x00{"type": "ping"}',
        },
        "mqtt_devices": {
            "tasmota_power": b"\x00ON",
            "tasmota_result": b'\x06{"POWER1": "ON"}',
            "tasmota_lwt": b"\x0cOffline",
            "z2m_state": b'\x01{"state": "OFF", "brightness": 3}',
            "z2m_availability": b'\x04{"state": "online"}',
            "json_state": b'\x02{"state": "1"}',
            "json_availability": b"\x05offline",
        },
        "config": {
            "example.toml": (ROOT / "config.example.toml").read_bytes(),
            "minimal.toml": b'[site]\nid = "mitte"\n',
        },
    }


def main() -> None:
    doc = _site()
    sets: dict[str, dict[str, bytes]] = {
        "snapshot": snapshot_seeds(doc),
        "changes": {name: _page(c) for name, c in change_lists(doc).items()},
        "push": push_seeds(doc),
        "wiegand": wiegand_seeds(),
        "modbus": modbus_seeds(),
        "osdp_frames": osdp_frames_seeds(),
        "osdp_secure": osdp_secure_seeds(),
        **text_seeds(),
    }
    sets["changes"]["more"] = _page([], more=True)
    assert set(sets) == set(HARNESSES), set(HARNESSES) ^ set(sets)
    for name, seeds in sets.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file, data in seeds.items():
            (folder / file).write_bytes(data)
        print(f"{folder}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
