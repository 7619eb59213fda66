"""Wiegand: formats and parity, keypads, PIN entry, and edges to frames."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.wiegand import (
    BY_NAME,
    Edge,
    Frame,
    FrameAssembler,
    FrameError,
    PinEntry,
    Presented,
    SocketEdgeSource,
    WiegandReader,
    decode_card,
    decode_key,
    encode_card,
    encode_key,
)
from hwsim.wiegand import SimEdgeSource, SocketEdgeSender, edges
from tests.conftest import run_async

FIELDS = {"H10301": (8, 16), "H10306": (16, 16), "C1000": (12, 20), "H10304": (16, 19)}


@st.composite
def cards(draw: st.DrawFn) -> tuple[str, int, int]:
    fmt = draw(st.sampled_from(sorted(FIELDS)))
    fw, nw = FIELDS[fmt]
    return fmt, draw(st.integers(0, (1 << fw) - 1)), draw(st.integers(0, (1 << nw) - 1))


def test_h10301_known_frame() -> None:
    # Facility 90, card 324: a published example of the 26-bit format.
    assert encode_card("H10301", 90, 324).as_text() == "00101101000000001010001000"
    read = decode_card(Frame(int("00101101000000001010001000", 2), 26))
    assert (read.format, read.facility, read.number) == ("H10301", 90, 324)
    assert read.keys() == ("H10301:90:324", "raw:0b40288")


def _c1000_by_masks(company: int, number: int) -> int:
    """Corporate 1000 as usually published: 32-bit masks over the low word."""

    def even(x: int) -> int:
        return bin(x).count("1") & 1

    def odd(x: int) -> int:
        return even(x) ^ 1

    bot = (number & 0xFFFFF) << 1 | (company & 0x7FF) << 21
    mid = (company & 0x800) >> 11
    mid |= even((mid & 1) ^ (bot & 0xB6DB6DB6)) << 1
    bot |= odd((mid & 3) ^ (bot & 0x6DB6DB6C))
    mid |= odd((mid & 3) ^ bot) << 2
    return (mid << 32) | bot


@given(st.integers(0, 4095), st.integers(0, (1 << 20) - 1))
@settings(max_examples=300, deadline=None)
def test_c1000_matches_the_mask_formulation(company: int, number: int) -> None:
    assert encode_card("C1000", company, number).bits == _c1000_by_masks(company, number)


@given(cards())
@settings(max_examples=400, deadline=None)
def test_every_valid_frame_round_trips(card: tuple[str, int, int]) -> None:
    fmt, facility, number = card
    frame = encode_card(fmt, facility, number)
    assert frame.length == BY_NAME[fmt].length
    read = decode_card(frame)
    assert (read.format, read.facility, read.number) == card


@given(cards(), st.data())
@settings(max_examples=400, deadline=None)
def test_no_single_bit_error_decodes(card: tuple[str, int, int], data: st.DataObject) -> None:
    frame = encode_card(*card)
    t = data.draw(st.integers(0, frame.length - 1))
    corrupted = Frame(frame.bits ^ (1 << (frame.length - 1 - t)), frame.length)
    with pytest.raises(FrameError) as exc:
        decode_card(corrupted)
    assert exc.value.problem == "bad_parity"


@given(cards(), st.sampled_from(["drop-first", "drop-last", "extra"]))
@settings(max_examples=300, deadline=None)
def test_a_frame_that_lost_or_gained_a_bit_never_reads_as_its_card(
    card: tuple[str, int, int], how: str
) -> None:
    frame = encode_card(*card)
    if how == "drop-first":
        bad = Frame(frame.bits & ((1 << (frame.length - 1)) - 1), frame.length - 1)
    elif how == "drop-last":
        bad = Frame(frame.bits >> 1, frame.length - 1)
    else:
        bad = Frame(frame.bits << 1, frame.length + 1)
    try:
        read = decode_card(bad)
    except FrameError as exc:
        problem: str = exc.problem
    else:
        problem = "decoded"
    if problem != "decoded":
        # Lengths of no format are refused as such; 34 and 36 bits are other formats.
        assert problem in ("wrong_length", "bad_parity")
        return
    # A 35-bit frame less one bit is 34 bits long: it can be a valid H10306 frame,
    # which is then that (other) card, never the one that was sent.
    assert read.length in (26, 34, 35, 37)
    assert read.keys()[0] != f"{card[0]}:{card[1]}:{card[2]}"


def test_raw_lengths_only_where_allowed() -> None:
    frame = Frame(0xDEADBEEF, 32)
    with pytest.raises(FrameError) as exc:
        decode_card(frame)
    assert exc.value.problem == "wrong_length"
    read = decode_card(frame, raw_lengths=frozenset({32}))
    assert read.keys() == ("raw:deadbeef",)
    # A format's own length is never read as raw, even when its parity is wrong.
    bad = Frame(encode_card("H10301", 1, 1).bits ^ 1, 26)
    with pytest.raises(FrameError):
        decode_card(bad, raw_lengths=frozenset({26}))


def test_encode_refuses_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="8-bit facility"):
        encode_card("H10301", 256, 1)
    with pytest.raises(ValueError, match="unknown format"):
        encode_card("H99999", 1, 1)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("key", list("0123456789*#"))
def test_keys_round_trip(key: str, bits: int) -> None:
    assert decode_key(encode_key(key, bits)) == key  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (Frame(0b0000_0001, 8), "bad_parity"),  # halves do not complement
        (Frame(0b1100, 4), "bad_parity"),  # code 12 is no key
        (Frame(0b10110, 5), "wrong_length"),
    ],
    ids=["8-bit-halves", "4-bit-code-12", "5-bits"],
)
def test_bad_keys_are_refused(frame: Frame, problem: str) -> None:
    with pytest.raises(FrameError) as exc:
        decode_key(frame)
    assert exc.value.problem == problem


def test_pin_entry() -> None:
    entry = PinEntry(timeout_ns=5_000_000_000, max_digits=6)
    s = 1_000_000_000
    assert [entry.key(k, i * s // 10) for i, k in enumerate("1234")] == [None] * 4
    assert entry.key("#", s) == "1234"
    assert not entry.pending
    for k in "99":
        entry.key(k, 2 * s)
    assert entry.key("*", 2 * s) is None  # clears
    assert entry.key("#", 2 * s) is None  # nothing to submit
    for k in "12345678":
        entry.key(k, 3 * s)
    assert entry.key("#", 3 * s) == "123456"  # at most max_digits
    entry.key("7", 4 * s)
    assert entry.key("#", 10 * s) is None  # the 7 timed out before the #
    entry.key("5", 11 * s)
    assert entry.expire(17 * s)
    assert not entry.pending


def _assemble(stream: list[Edge], assembler: FrameAssembler) -> list[Frame | FrameError]:
    out: list[Frame | FrameError] = []
    for e in stream:
        done = assembler.feed(e)
        if done is not None:
            out.append(done)
    last = assembler.poll(stream[-1].ns + assembler.gap_ns + 1)
    if last is not None:
        out.append(last)
    return out


@given(cards(), st.integers(0, 400_000))
@settings(max_examples=200, deadline=None)
def test_edges_with_jitter_assemble_to_the_frame(card: tuple[str, int, int], jitter: int) -> None:
    frame = encode_card(*card)
    stream = edges(frame, 10**9, jitter_ns=jitter, rng=random.Random(jitter))
    assert _assemble(stream, FrameAssembler()) == [frame]


def test_frames_are_split_by_the_gap() -> None:
    a, b = encode_card("H10301", 1, 2), encode_card("H10306", 3, 4)
    stream = edges(a, 0) + edges(b, 100_000_000)
    assert _assemble(stream, FrameAssembler(gap_ns=25_000_000)) == [a, b]


@given(cards(), st.integers(1, 3), st.integers(0, 1000))
@settings(max_examples=200, deadline=None)
def test_noise_spoils_the_frame(card: tuple[str, int, int], noise: int, seed: int) -> None:
    frame = encode_card(*card)
    stream = edges(frame, 0, noise=noise, rng=random.Random(seed))
    [result] = _assemble(stream, FrameAssembler())
    assert isinstance(result, FrameError)
    assert result.problem == "noise"


@given(cards(), st.integers(1, 3), st.integers(0, 1000))
@settings(max_examples=200, deadline=None)
def test_bit_errors_on_the_wire_never_decode_to_a_card(
    card: tuple[str, int, int], flips: int, seed: int
) -> None:
    frame = encode_card(*card)
    [result] = _assemble(edges(frame, 0, flip=flips, rng=random.Random(seed)), FrameAssembler())
    assert isinstance(result, Frame)
    if flips == 1:
        with pytest.raises(FrameError):
            decode_card(result)
    else:
        # Several flips can cancel out in a parity group; they must still never
        # produce a card other than a correctly encoded one.
        try:
            read = decode_card(result)
        except FrameError:
            return
        assert encode_card(read.format, read.facility, read.number) == result  # type: ignore[arg-type]


def test_both_lines_at_once_is_noise() -> None:
    stream = [Edge(0, 0), Edge(1, 2_000), *edges(encode_card("H10301", 1, 1), 2_000_000)]
    [result] = _assemble(stream, FrameAssembler())
    assert isinstance(result, FrameError)


def test_sim_source_delivers_in_real_time() -> None:
    async def scenario() -> list[Frame | FrameError]:
        source = SimEdgeSource()
        assembler = FrameAssembler(gap_ns=15_000_000)
        got: list[Frame | FrameError] = []

        def on_edges(batch: list[Edge]) -> None:
            for e in batch:
                done = assembler.feed(e)
                if done is not None:
                    got.append(done)

        await source.start(on_edges)
        last = await source.send(encode_card("C1000", 100, 70001), interval_ns=1_000_000)
        await asyncio.sleep(0.03)
        done = assembler.poll(last + 20_000_000)
        if done is not None:
            got.append(done)
        await source.stop()
        return got

    [frame] = run_async(scenario())
    assert isinstance(frame, Frame)
    read = decode_card(frame)
    assert read.keys()[0] == "C1000:100:70001"


def _reader_scenario(tmp_path: Path, script: Any) -> tuple[list[Presented], WiegandReader]:
    got: list[Presented] = []
    path = str(tmp_path / "edges.sock")

    async def run() -> WiegandReader:
        reader = WiegandReader(
            "front-in",
            SocketEdgeSource(path),
            got.append,
            gap_ns=10_000_000,
            raw_lengths=frozenset({32}),
        )
        await reader.start()
        sender = SocketEdgeSender(path)
        try:
            await script(sender)
            await asyncio.sleep(0.05)  # longer than the gap: the last frame ends
        finally:
            sender.close()
            await reader.stop()
        return reader

    reader = run_async(run())
    return got, reader


def test_reader_reads_cards_and_pins_through_the_socket(tmp_path: Path) -> None:
    async def script(sender: SocketEdgeSender) -> None:
        await sender.send(encode_card("H10301", 12, 3456), interval_ns=1_000_000)
        await asyncio.sleep(0.03)
        await sender.send(Frame(0x0A0B0C0D, 32), interval_ns=1_000_000)
        await asyncio.sleep(0.03)
        await sender.send_keys("1234#", bits=8)

    got, reader = _reader_scenario(tmp_path, script)
    assert [(p.cards, p.pin) for p in got] == [
        (("H10301:12:3456", "raw:0181b01"), None),
        (("raw:0a0b0c0d",), None),
        ((), "1234"),
    ]
    assert reader.refused == {}


def test_reader_refuses_bad_frames_and_counts_them(tmp_path: Path) -> None:
    async def script(sender: SocketEdgeSender) -> None:
        # In bursts: a stall of this loop mid-frame (a loaded machine) would
        # split a frame in two, as a reader must, and change the counts.
        card = encode_card("H10306", 1000, 50001)
        kw: dict[str, Any] = {"interval_ns": 1_000_000, "burst": True}
        await sender.send(card, flip=1, rng=random.Random(1), **kw)
        await asyncio.sleep(0.08)
        await sender.send(card, noise=1, rng=random.Random(2), **kw)
        await asyncio.sleep(0.08)
        await sender.send(Frame(0x1FFFF, 17), **kw)
        await asyncio.sleep(0.08)
        await sender.send(card, **kw)

    got, reader = _reader_scenario(tmp_path, script)
    assert [p.cards[0] for p in got] == ["H10306:1000:50001"]  # only the clean read
    assert reader.refused == {"bad_parity": 1, "noise": 1, "wrong_length": 1}
    assert reader.frames == 3  # whole frames: the flipped one, the 17-bit one, the good one
