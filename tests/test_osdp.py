"""OSDP: the codec and secure channel against the spec's vectors, and the
control panel end to end against libosdp peripheral devices (an independent
implementation) on a simulated serial line."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.osdp import (
    SC_FAILED,
    SCBK_D,
    Cmd,
    FrameSplitter,
    OsdpBus,
    OsdpBusConfig,
    OsdpCommandError,
    OsdpReader,
    OsdpReaderConfig,
    Packet,
    PacketError,
    Reply,
    Scs,
    SecureChannel,
    checksum,
    client_cryptogram,
    crc16,
    decode_packet,
    encode_packet,
    initial_rmac,
    parse_scbk,
    server_cryptogram,
    session_keys,
)
from faults.osdp_conformance.cases import raw_rig
from faults.osdp_conformance.rawpd import RawPd
from hwsim.osdp_reader import SimOsdpBus, SimReader
from hwsim.serial_link import SerialLink
from tests.conftest import run_async

KEY1 = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
KEY2 = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
CARD_26 = 0x2A5A5A5  # any 26 bits: the PD carries bits, it does not check parity


# --- check characters: SIA OSDP Annex E ---------------------------------------------------


def test_crc16_is_aug_ccitt() -> None:
    assert crc16(b"123456789") == 0xE5CC  # the catalogued check value of CRC-16/AUG-CCITT


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("53 7F 0D 00 04 6E 00 80 25 00 00", "6E 38"),  # Annex E, CRC example 1 (COMSET)
        ("53 00 09 00 04 61 00", "C0 66"),  # Annex E, CRC example 2 (ID)
    ],
)
def test_crc16_annex_e(message: str, expected: str) -> None:
    assert crc16(bytes.fromhex(message)).to_bytes(2, "little") == bytes.fromhex(expected)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("53 7F 0C 00 00 6E 00 80 25 00 00", 0x0F),
        ("53 00 08 00 00 61 00", 0x44),
    ],
)
def test_checksum_annex_e(message: str, expected: int) -> None:
    assert checksum(bytes.fromhex(message)) == expected


def test_annex_e_id_command_encodes_byte_for_byte() -> None:
    frame = encode_packet(0, Cmd.ID, b"\x00", sqn=0, mark=False)
    assert frame == bytes.fromhex("53 00 09 00 04 61 00 C0 66")
    frame = encode_packet(0, Cmd.ID, b"\x00", sqn=0, mark=False, use_crc=False)
    assert frame == bytes.fromhex("53 00 08 00 00 61 00 44")


# --- packets ------------------------------------------------------------------------------


@given(
    address=st.integers(0, 127),
    code=st.integers(0, 255),
    data=st.binary(max_size=200),
    sqn=st.integers(0, 3),
    reply=st.booleans(),
    use_crc=st.booleans(),
    mark=st.booleans(),
    noise=st.binary(max_size=8).filter(lambda b: 0x53 not in b),
    cut=st.integers(0, 300),
)
def test_packet_round_trip(
    address: int,
    code: int,
    data: bytes,
    sqn: int,
    reply: bool,
    use_crc: bool,
    mark: bool,
    noise: bytes,
    cut: int,
) -> None:
    frame = encode_packet(address, code, data, sqn, reply=reply, use_crc=use_crc, mark=mark)
    stream = noise + frame
    splitter = FrameSplitter()
    cut = min(cut, len(stream))
    out = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
    assert len(out) == 1
    assert isinstance(out[0], bytes)
    packet = decode_packet(out[0])
    assert (packet.address, packet.reply, packet.sqn, packet.code, packet.data) == (
        address,
        reply,
        sqn,
        code,
        data,
    )
    assert packet.crc == use_crc
    assert packet.scb is None
    assert packet.mac is None


@given(frame_data=st.binary(max_size=40), flip=st.integers(0, 10_000))
def test_a_corrupted_frame_is_never_delivered(frame_data: bytes, flip: int) -> None:
    frame = bytearray(encode_packet(5, Reply.RAW, frame_data, 1, reply=True, mark=False))
    bit = flip % (len(frame) * 8)
    if bit < 8:
        return  # a broken SOM is just noise before the stream resyncs
    frame[bit // 8] ^= 1 << (bit % 8)
    good = encode_packet(5, Reply.ACK, b"", 2, reply=True)
    out = FrameSplitter().feed(bytes(frame) + good)
    frames = [f for f in out if isinstance(f, bytes)]
    # Whatever survives is only the intact frame that follows, never the damaged one.
    assert all(f == good[1:] for f in frames)


def test_decode_rejects_bad_frames() -> None:
    frame = encode_packet(1, Cmd.POLL, mark=False)
    with pytest.raises(PacketError):
        decode_packet(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(PacketError):
        decode_packet(b"\x53\x01\x08\x00\x04\x60")


def test_secure_packet_layout() -> None:
    keys = session_keys(KEY1, bytes(8))
    sc = SecureChannel(keys, bytes(16))
    scb = bytes([2, Scs.CMD_ENC])
    mac = lambda m: sc.mac(m, command=True)  # noqa: E731
    frame = encode_packet(3, Cmd.LED, b"x" * 16, 2, scb=scb, mac=mac, mark=False)
    packet = decode_packet(frame)
    assert packet.scb == bytes([2, Scs.CMD_ENC])
    assert packet.mac == sc.c_mac[:4]
    assert packet.data == b"x" * 16
    assert packet.authenticated == frame[:-6]


# --- secure channel: SIA OSDP Annex E (SCBK-D session) --------------------------------------

RND_A = bytes.fromhex("B0B1B2B3B4B5B6B7")  # the CP's random
RND_B = bytes.fromhex("A0A1A2A3A4A5A6A7")  # the PD's random


def test_session_keys_annex_e() -> None:
    keys = session_keys(SCBK_D, RND_A)
    assert keys.s_enc == bytes.fromhex("BF8DC2A8329ACB8C67C6D0CD9A451682")
    assert keys.s_mac1 == bytes.fromhex("5E86C676603BDEE2D8BEAFE178637332")
    assert keys.s_mac2 == bytes.fromhex("6FDA86E857777E81132035758239172E")


def test_cryptograms_and_rmac_annex_e() -> None:
    keys = session_keys(SCBK_D, RND_A)
    assert client_cryptogram(keys, RND_A, RND_B) == bytes.fromhex(
        "FDE5D2F428EC16312471EA3C02BD7796"
    )
    server = server_cryptogram(keys, RND_A, RND_B)
    assert server == bytes.fromhex("26D3356E07762D262801FC8E6665A891")
    assert initial_rmac(keys, server) == bytes.fromhex("B2A30057EB98BA2229EC1F875662B524")


@given(data=st.binary(min_size=1, max_size=70), message=st.binary(max_size=70))
def test_secure_channel_peers_agree(data: bytes, message: bytes) -> None:
    """A CP and a PD holding the same session stay in step through the MAC chain."""
    keys = session_keys(KEY1, RND_A)
    rmac = initial_rmac(keys, server_cryptogram(keys, RND_A, RND_B))
    cp, pd = SecureChannel(keys, rmac), SecureChannel(keys, rmac)
    for _ in range(2):
        sealed = cp.encrypt(data, command=True)
        assert len(sealed) % 16 == 0
        assert sealed != data
        assert pd.decrypt(sealed, command=True) == data
        assert cp.mac(message, command=True) == pd.mac(message, command=True)
        sealed = pd.encrypt(data, command=False)
        assert cp.decrypt(sealed, command=False) == data
        assert pd.mac(message, command=False) == cp.mac(message, command=False)


def test_decrypt_with_the_wrong_chain_fails() -> None:
    keys = session_keys(KEY1, RND_A)
    cp, pd = SecureChannel(keys, bytes(16)), SecureChannel(keys, b"\x01" * 16)
    with pytest.raises(PacketError):
        pd.decrypt(cp.encrypt(b"0123456789", command=True), command=True)


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"address": 127, "key": "k"}, "address"),
        ({"address": -1, "key": "k"}, "address"),
        ({"address": 1, "key": "k", "colour": "red"}, "colour"),
        ({"address": 1}, ""),  # secure without a key
        ({"address": 1, "key": "k", "type": "wiegand"}, "type"),
    ],
)
def test_bad_reader_config(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as err:
        OsdpReaderConfig.model_validate({"type": "osdp", **fields})
    assert {".".join(map(str, e["loc"])) for e in err.value.errors()} == {path}


def test_reader_config_defaults() -> None:
    cfg = OsdpReaderConfig(type="osdp", address=0, key="door1.scbk")
    assert (cfg.secure, cfg.allow_plaintext, cfg.install_mode) == (True, False, False)
    assert OsdpReaderConfig(type="osdp", address=0, install_mode=True).key is None
    bus = OsdpBusConfig(type="osdp", port="/dev/ttyUSB0")
    assert bus.baudrate == 115200
    with pytest.raises(ValidationError):
        OsdpBusConfig.model_validate({"type": "osdp", "port": "/dev/x", "baud": 9600})


def test_parse_scbk() -> None:
    assert parse_scbk(KEY1.hex().encode() + b"\n") == KEY1
    with pytest.raises(ValueError, match="32 hex"):
        parse_scbk(b"abc")


# --- end to end against libosdp ------------------------------------------------------------------


async def until(cond: Callable[[], bool], what: str, give_up_s: float = 10.0) -> None:
    """Wait for a condition (a guard against hangs, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


class Events:
    def __init__(self, reader: OsdpReader) -> None:
        self.cards: list[tuple[int, int, str]] = []
        self.keys: list[str] = []
        self.online = 0
        self.offline = 0
        reader.on_card = lambda bits, n, fmt: self.cards.append((bits, n, fmt))
        reader.on_keys = self.keys.append
        reader.on_online = self._up
        reader.on_offline = self._down

    def _up(self) -> None:
        self.online += 1

    def _down(self) -> None:
        self.offline += 1


@contextlib.asynccontextmanager
async def rig(
    sims: list[SimReader], readers: list[tuple[OsdpReaderConfig, bytes | None]]
) -> AsyncIterator[tuple[OsdpBus, SimOsdpBus, list[OsdpReader]]]:
    link = SerialLink(115200)
    await link.start()
    sim_bus = SimOsdpBus(link.b, sims)
    bus = OsdpBus(OsdpBusConfig(type="osdp", port=link.a, retry_max_ms=400), "bus1")
    added = [bus.add_reader(cfg, key) for cfg, key in readers]
    try:
        await sim_bus.start()
        await bus.start()
        yield bus, sim_bus, added
    finally:
        await bus.stop()
        await sim_bus.stop()
        await link.stop()


def reader_cfg(address: int = 1, **kw: Any) -> OsdpReaderConfig:
    return OsdpReaderConfig(type="osdp", address=address, key="k", **kw)


def test_plaintext_poll_and_card() -> None:
    sim = SimReader(1, KEY1, secure=False)

    async def main() -> None:
        async with rig([sim], [(reader_cfg(secure=False), None)]) as (_, _, [reader]):
            ev = Events(reader)
            await until(lambda: reader.state == "online", "online")
            assert reader.fault is None
            assert reader.info.vendor == 0xFEBABE  # libosdp's default id, 3 bytes of it
            sim.present_card(CARD_26, 26)
            await until(lambda: bool(ev.cards), "a card")
            assert ev.cards == [(CARD_26, 26, "wiegand")]

    run_async(main())


def test_secure_channel_card_keys_and_feedback() -> None:
    sim = SimReader(1, KEY1)

    async def main() -> None:
        async with rig([sim], [(reader_cfg(), KEY1)]) as (bus, _, [reader]):
            ev = Events(reader)
            await until(lambda: reader.state == "secure", "secure channel")
            assert sim.sc_active
            bits = 0x1_2345_6789  # 34 bits
            sim.present_card(bits, 34, "unspecified")
            await until(lambda: bool(ev.cards), "a card")
            assert ev.cards == [(bits, 34, "unspecified")]
            # The card crossed the wire encrypted: the RAW reply had an SCS_18 block.
            replies = [decode_packet(f) for t, way, f in bus.frames if way == "rx"]
            raw = [p for p in replies if p.scb is not None and p.scb[1] == Scs.REPLY_ENC]
            assert raw
            assert all(bits.to_bytes(5, "big")[:4] not in p.raw for p in raw)

            statuses: list[tuple[bool, bool]] = []
            reader.on_status = lambda tamper, power: statuses.append((tamper, power))
            sim.report_status(tamper=True, power=False)
            sim.report_status(tamper=False, power=True)
            await until(lambda: len(statuses) == 2, "status reports")
            assert statuses == [(True, False), (False, True)]
            assert (reader.tamper, reader.power) == (False, True)

            sim.press_keys("12#")
            sim.press_keys("*")
            await until(lambda: len(ev.keys) == 2, "keys")
            assert ev.keys == ["12#", "*"]

            await reader.feedback(granted=True)
            await reader.feedback(granted=False)
            leds = [(led.color, led.temporary) for led in sim.state.leds]
            assert leds == [(2, True), (1, True)]  # green, then red
            assert sim.state.beeps == [1, 3]

            await reader.text("Welcome")
            await reader.output(0, on=True, ms=3000)
            await reader.output(1, on=True)
            await reader.output(1, on=False)
            assert sim.state.texts == ["Welcome"]
            assert sim.state.outputs == {0: True, 1: False}
            assert sim.state.output_timers[0] == 30
            assert reader.state == "secure"
            assert ev.offline == 0

    run_async(main())


def test_wrong_key_is_offline_and_never_read_in_clear(caplog: pytest.LogCaptureFixture) -> None:
    sim = SimReader(1, KEY1, wrong_key=True)

    async def main() -> None:
        async with rig([sim], [(reader_cfg(), KEY1)]) as (bus, _, [reader]):
            ev = Events(reader)
            await until(lambda: reader.fault == SC_FAILED, "the SC fault")
            sim.present_card(CARD_26, 26)

            # Several more attempts, each refused at the cryptogram.
            def challenges() -> int:
                sent = [decode_packet(f[1:]) for _, way, f in bus.frames if way == "tx"]
                return sum(1 for p in sent if p.code == Cmd.CHLNG)

            await until(lambda: challenges() >= 3, "more attempts")
            assert reader.state == "offline"
            assert reader.fault == SC_FAILED
            assert ev.cards == []
            assert ev.online == 0
            sent = [decode_packet(f[1:]) for _, way, f in bus.frames if way == "tx"]
            assert {p.code for p in sent} <= {Cmd.ID, Cmd.CAP, Cmd.CHLNG}

    with caplog.at_level(logging.DEBUG, logger="drivers.osdp"):
        run_async(main())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"bus1/pd1: {SC_FAILED}"]  # logged once


def test_wrong_key_with_allow_plaintext_falls_back_to_clear() -> None:
    sim = SimReader(1, KEY1, secure=False, wrong_key=True)

    async def main() -> None:
        cfg = reader_cfg(allow_plaintext=True)
        async with rig([sim], [(cfg, KEY1)]) as (_, _, [reader]):
            ev = Events(reader)
            await until(lambda: reader.state == "online", "online in clear")
            sim.present_card(CARD_26, 26)
            await until(lambda: bool(ev.cards), "a card")

    run_async(main())


def test_reader_that_stops_goes_offline_and_comes_back() -> None:
    sim = SimReader(1, KEY1)

    async def main() -> None:
        async with rig([sim], [(reader_cfg(), KEY1)]) as (_, sim_bus, [reader]):
            ev = Events(reader)
            await until(lambda: reader.state == "secure", "secure channel")
            await sim_bus.stop()
            await until(lambda: reader.state == "offline", "offline")
            assert reader.fault == "no reply"
            assert ev.offline == 1
            with pytest.raises(OsdpCommandError, match="offline"):
                await reader.feedback(granted=True)
            await sim_bus.start()
            await until(lambda: reader.state == "secure", "secure again")
            assert reader.fault is None
            assert ev.online == 2
            sim.present_card(CARD_26, 26)
            await until(lambda: bool(ev.cards), "a card after the restart")

    run_async(main())


def test_two_readers_on_one_bus() -> None:
    sims = [SimReader(1, KEY1), SimReader(7, KEY2)]

    async def main() -> None:
        cfgs = [(reader_cfg(1), KEY1), (reader_cfg(7), KEY2)]
        async with rig(sims, cfgs) as (_, _, readers):
            evs = [Events(r) for r in readers]
            await until(lambda: all(r.state == "secure" for r in readers), "both secure")
            sims[1].present_card(0x777, 12)
            sims[0].present_card(0x111, 12)
            sims[1].press_keys("7")
            await until(lambda: all(ev.cards for ev in evs) and bool(evs[1].keys), "cards")
            assert evs[0].cards == [(0x111, 12, "wiegand")]
            assert evs[0].keys == []
            assert evs[1].cards == [(0x777, 12, "wiegand")]
            assert evs[1].keys == ["7"]
            await readers[1].feedback(granted=False)
            assert sims[1].state.beeps == [3]
            assert sims[0].state.beeps == []

    run_async(main())


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12")
def test_reader_commands_take_no_reference_from_none() -> None:
    """libosdp's binding drops a reference it does not own for every command a
    peripheral handles (see `SimReader._on_command`). When the simulator answered
    with a constant `(0, None)`, that reference was None's: this count fell by one
    per command, and a soak with 16 simulated readers on a bus died with "Fatal
    Python error: none_dealloc" after some 35,000 commands."""
    sim = SimReader(1, KEY1, secure=False)
    feedbacks = 200  # a LED and a buzzer command each

    async def main() -> None:
        async with rig([sim], [(reader_cfg(secure=False), None)]) as (_, _, [reader]):
            await until(lambda: reader.state == "online", "online")
            await reader.feedback(granted=True)  # every path warm before counting
            gc.collect()
            first = len(sim.state.commands)
            before = sys.getrefcount(None)
            for _ in range(feedbacks):
                try:
                    await reader.feedback(granted=True)
                except OsdpCommandError:  # a reply late on a loaded machine: not the point
                    await until(lambda: reader.state == "online", "online again")
            gc.collect()
            lost = before - sys.getrefcount(None)
            handled = len(sim.state.commands) - first
            assert handled >= feedbacks
            # Other threads hold and drop references to None too: allow some noise,
            # far below the one reference per command the bug takes.
            assert lost < handled // 4, f"None lost {lost} references in {handled} commands"

    run_async(main())


def test_install_mode_moves_reader_to_a_new_key() -> None:
    sim = SimReader(4, None)  # a reader fresh from the box: install mode, SCBK-D

    async def main() -> None:
        cfg = OsdpReaderConfig(type="osdp", address=4, install_mode=True)
        async with rig([sim], [(cfg, None)]) as (_, sim_bus, [reader]):
            ev = Events(reader)
            await until(lambda: reader.state == "secure", "secure channel with SCBK-D")
            key = await reader.install_key()
            assert len(key) == 16
            assert key != SCBK_D
            assert sim.current_key == key
            assert reader.key == key
            assert not reader.install_mode
            # The session was rebuilt with the new key, and it carries cards.
            assert reader.state == "secure"
            sim.present_card(CARD_26, 26)
            await until(lambda: bool(ev.cards), "a card under the new key")
            # After a power cycle the reader keeps the new key and refuses SCBK-D.
            sim.scbk = key
            await sim_bus.stop()
            await until(lambda: reader.state == "offline", "offline")
            await sim_bus.start()
            await until(lambda: reader.state == "secure", "secure with the stored key")

    run_async(main())


def test_missing_serial_port_is_a_fault_not_an_exception() -> None:
    async def main() -> None:
        bus = OsdpBus(OsdpBusConfig(type="osdp", port="/dev/serial/by-id/nothing-here"), "bus9")
        reader = bus.add_reader(reader_cfg(2), KEY1)
        await bus.start()
        try:
            await until(lambda: bus.fault is not None, "the port fault")
            assert "nothing-here" in (bus.fault or "")
            assert reader.state == "offline"
            assert reader.fault == bus.fault
        finally:
            await bus.stop()

    run_async(main())


def test_unplugged_port_takes_readers_offline() -> None:
    sim = SimReader(1, KEY1)

    async def main() -> None:
        link = SerialLink(115200)
        await link.start()
        sim_bus = SimOsdpBus(link.b, [sim])
        bus = OsdpBus(OsdpBusConfig(type="osdp", port=link.a, retry_max_ms=400), "bus1")
        reader = bus.add_reader(reader_cfg(), KEY1)
        ev = Events(reader)
        try:
            await sim_bus.start()
            await bus.start()
            await until(lambda: reader.state == "secure", "secure channel")
            port = link.a
            await sim_bus.stop()
            await link.stop()  # the adapter is gone, and with it the device node
            await until(lambda: bus.fault is not None, "the port fault")
            assert port in (bus.fault or "")
            assert reader.state == "offline"
            assert ev.offline == 1
        finally:
            await bus.stop()
            await sim_bus.stop()
            await link.stop()

    run_async(main())


def test_checksum_replies_busy_and_frame_dump(caplog: pytest.LogCaptureFixture) -> None:
    state = {"busy": 1, "garbled": False}

    def answer(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code in (Cmd.ID, Cmd.CAP):
            return None  # the default answer, with checksums (use_crc=False)
        if cmd.code == Cmd.LED:
            if state["busy"]:
                state["busy"] -= 1
                return pd.reply(cmd, Reply.BUSY, sqn=0, use_crc=True)
            return pd.reply(cmd, Reply.ACK)
        if state["garbled"]:
            frame = bytearray(pd.reply(cmd, Reply.ACK))
            frame[-1] ^= 0xFF
            return bytes(frame)
        return pd.reply(cmd, Reply.OSTATR, b"\x01\x00")

    async def main() -> None:
        link = SerialLink(115200)
        await link.start()
        bus = OsdpBus(OsdpBusConfig(type="osdp", port=link.a, retry_max_ms=400), "bus2")
        reader = bus.add_reader(reader_cfg(5, secure=False), None)
        try:
            async with RawPd(link.b, address=5, use_crc=False, hook=answer) as pd:
                await bus.start()
                await until(lambda: reader.state == "online", "online")
                await until(lambda: reader.outputs == {0: True, 1: False}, "output status")
                await reader.feedback(granted=True)  # the LED is BUSY once, then ACKed
                leds = [c for c in pd.commands if c.code == Cmd.LED]
                assert len(leds) == 2
                assert leds[0].raw == leds[1].raw  # resent as it was, same sequence number
                state["garbled"] = True
                await until(lambda: reader.state == "offline", "offline on garbage")
        finally:
            await bus.stop()
            await link.stop()

    with caplog.at_level(logging.WARNING, logger="drivers.osdp"):
        run_async(main())
    dumps = [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]
    assert dumps
    assert "bad check character" in dumps[0]
    assert " tx ff 53 05 " in dumps[0]  # the recent frames, as hex


def test_a_late_reply_and_its_repeat_keep_the_session() -> None:
    """A PD busy for 300 ms answers a poll after the CP has resent it, then answers the
    resend by repeating that reply (5.9): the CP takes the first, drops the repeat as
    late, and the secure session goes on. Before, the repeat was read as the answer
    to the next command, a sequence mismatch that cost a session rebuild."""
    polls = {"n": 0}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if pd.sc is not None and cmd.code == Cmd.POLL:
            polls["n"] += 1
            if polls["n"] == 5:
                pd.stall(0.3)  # the next poll (and its resend) wait in the line
        return None

    async def main() -> None:
        rig = raw_rig(
            reader_cfg(2), KEY1, key=KEY1, repeat_replies=True, turnaround_s=0.03, hook=hook
        )
        async with rig as (bus, reader, seen, pd, _):
            await until(lambda: reader.state == "secure", "the secure channel")
            await until(lambda: polls["n"] > 8, "polls after the stall")
            resent = [a for a, b in itertools.pairwise(pd.commands) if a.raw == b.raw]
            assert len(resent) == 1, "the CP did not resend the poll during the stall"
            assert bus.counters["late"] == 1  # the repeat, dropped
            pd.present_card(CARD_26, 26)
            await until(lambda: bool(seen.cards), "a card after the stall")
            assert (seen.online, seen.offline, pd.sessions) == (1, 0, 1)
            assert bus.counters["bad_sequence"] == 0

    run_async(main())


def test_reply_decoding() -> None:
    bus = OsdpBus(OsdpBusConfig(type="osdp", port="/dev/null"), "bus3")
    reader = bus.add_reader(reader_cfg(3, secure=False), None)
    ev = Events(reader)

    def deliver(code: int, data: bytes) -> None:
        frame = encode_packet(3, code, data, 1, reply=True, mark=False)
        reader._dispatch(decode_packet(frame))

    # 26 bits, left-aligned in 4 bytes, as a reader sends them.
    deliver(Reply.RAW, bytes([0, 1, 26, 0]) + (CARD_26 << 6).to_bytes(4, "big"))
    deliver(Reply.RAW, bytes([0, 0, 8, 0, 0xA5]))
    deliver(Reply.KEYPAD, bytes([0, 4]) + b"9\x7f\x0d0")
    deliver(Reply.RAW, bytes([0, 1, 40, 0, 1]))  # claims 40 bits, carries 8: refused
    assert ev.cards == [(CARD_26, 26, "wiegand"), (0xA5, 8, "unspecified")]
    assert ev.keys == ["9*#0"]
