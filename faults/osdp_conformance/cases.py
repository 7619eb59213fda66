"""The conformance cases: our control panel (CP) against a PD on a serial line.

Each case is one requirement, cited by the section of SIA OSDP v2.2 and, where
there is one, the OSDP Verified test id (github.com/Security-Industry-Association/
osdp-verified, test-descriptions/osdp-verified-test-cases.md). Where a PD must
behave well, the PD is libosdp (`hwsim.osdp_reader`), an independent
implementation; where it must misbehave, it is `RawPd`, since libosdp cannot be
made to send bad check characters, wrong sequence numbers, forged MACs or
oversized frames.

A case raises AssertionError when the CP does not conform.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from drivers.osdp import (
    MAX_FRAME,
    SC_FAILED,
    SCBK_D,
    Cmd,
    OsdpBus,
    OsdpBusConfig,
    OsdpCommandError,
    OsdpReader,
    OsdpReaderConfig,
    Packet,
    Reply,
    Scs,
    decode_packet,
)
from faults.osdp_conformance.rawpd import RawPd
from hwsim.osdp_reader import SimOsdpBus, SimReader
from hwsim.serial_link import SerialLink

KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
CARD = 0x2A5A5A5  # 26 bits
OTHER_CARD = 0x155A5A5


CaseFn = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Case:
    name: str
    requirement: str  # the spec section, and the OSDP Verified test id
    run: CaseFn


CASES: list[Case] = []


def case(requirement: str) -> Callable[[CaseFn], CaseFn]:
    def register(fn: CaseFn) -> CaseFn:
        CASES.append(Case(fn.__name__.removeprefix("case_"), requirement, fn))
        return fn

    return register


# --- the rig -----------------------------------------------------------------------------------


async def until(cond: Callable[[], bool], what: str, give_up_s: float = 10.0) -> None:
    """Wait for a condition (a guard against hangs, not a timing assertion)."""
    deadline = time.monotonic() + give_up_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


class Seen:
    """What the CP handed up from one reader."""

    def __init__(self, reader: OsdpReader) -> None:
        self.cards: list[int] = []
        self.online = 0
        self.offline = 0
        self.causes: list[str | None] = []  # the reader's fault at each loss
        self._reader = reader
        reader.on_card = lambda bits, n, fmt: self.cards.append(bits)
        reader.on_online = self._up
        reader.on_offline = self._down

    def _up(self) -> None:
        self.online += 1

    def _down(self) -> None:
        self.offline += 1
        self.causes.append(self._reader.fault)


def reader_cfg(address: int = 1, **kw: Any) -> OsdpReaderConfig:
    return OsdpReaderConfig(type="osdp", address=address, key="k", **kw)


@contextlib.asynccontextmanager
async def cp(
    link: SerialLink,
    cfg: OsdpReaderConfig,
    key: bytes | None = None,
    *,
    absent: tuple[int, ...] = (),
    retry_max_ms: int = 400,
) -> AsyncIterator[tuple[OsdpBus, OsdpReader, Seen]]:
    """Our CP with the reader `cfg`, and readers at `absent` addresses nobody answers."""
    bus = OsdpBus(
        OsdpBusConfig(
            type="osdp",
            port=link.a,
            baudrate=link.baudrate,
            retry_max_ms=retry_max_ms,
            frame_log=4096,
        ),
        "bus1",
    )
    reader = bus.add_reader(cfg, key)
    for address in absent:
        bus.add_reader(reader_cfg(address, secure=False), None)
    seen = Seen(reader)
    await bus.start()
    try:
        yield bus, reader, seen
    finally:
        await bus.stop()


@contextlib.asynccontextmanager
async def raw_rig(
    cfg: OsdpReaderConfig, cp_key: bytes | None = None, baudrate: int = 115200, **pd_kw: Any
) -> AsyncIterator[tuple[OsdpBus, OsdpReader, Seen, RawPd, SerialLink]]:
    """Our CP (holding `cp_key`) on one end of a simulated cable, a `RawPd` on the other."""
    link = SerialLink(baudrate)
    await link.start()
    try:
        async with (
            RawPd(link.b, cfg.address, **pd_kw) as pd,
            cp(link, cfg, cp_key) as (
                bus,
                reader,
                seen,
            ),
        ):
            yield bus, reader, seen, pd, link
    finally:
        await link.stop()


@contextlib.asynccontextmanager
async def libosdp_rig(
    sim: SimReader, cfg: OsdpReaderConfig, key: bytes | None, **cp_kw: Any
) -> AsyncIterator[tuple[OsdpBus, OsdpReader, Seen, SimOsdpBus]]:
    """Our CP against a libosdp PD."""
    link = SerialLink(115200)
    await link.start()
    sim_bus = SimOsdpBus(link.b, [sim])
    try:
        await sim_bus.start()
        async with cp(link, cfg, key, **cp_kw) as (bus, reader, seen):
            yield bus, reader, seen, sim_bus
    finally:
        await sim_bus.stop()
        await link.stop()


def sent(bus: OsdpBus) -> list[Packet]:
    """The commands the CP put on the wire, oldest first (the ring buffer, mark byte off)."""
    return [decode_packet(f[1:]) for _, way, f in bus.frames if way == "tx"]


async def failure(action: Awaitable[object], kind: type[Exception]) -> str:
    """The message of the `kind` error `action` must fail with."""
    try:
        await action
    except kind as exc:
        return str(exc)
    raise AssertionError(f"expected {kind.__name__}, it passed")


def errors(bus: OsdpBus) -> dict[str, int]:
    return {k: v for k, v in bus.counters.items() if v}


# --- timing (5.7) -------------------------------------------------------------------------------


@case("5.7 reply within 200 ms; Verified 050-04-01, 050-07-01")
async def case_reply_within_limit() -> None:
    """The CP waits at least the 200 ms a PD is allowed: a reply at 150 ms is taken."""
    assert OsdpBusConfig(type="osdp", port="x").reply_timeout_ms >= 200
    async with raw_rig(reader_cfg(secure=False), delay_s=0.15) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online with slow replies")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "the card")
        assert seen.cards == [CARD]
        assert seen.offline == 0, "a reply inside 200 ms was counted as missing"
        assert errors(bus) == {}, errors(bus)


@case("5.7 a reply after the timeout is absent; Verified 050-04-01")
async def case_late_reply_is_absent() -> None:
    """Replies 300 ms late: never taken, the reader stays offline, the frames are dropped."""
    async with raw_rig(reader_cfg(secure=False), delay_s=0.30) as (bus, reader, seen, pd, _):
        await until(lambda: pd.codes().count(Cmd.ID) >= 4, "four connection attempts")
        assert seen.online == 0, "a late reply brought the reader online"
        assert reader.state == "offline"
        assert reader.fault == "no reply"
        assert bus.counters["late"] >= 2, errors(bus)  # seen, counted, dropped
        assert Cmd.CAP not in pd.codes(), "a late PDID was taken as the answer"


@case("5.7 a reply on time is taken even when the CP was busy")
async def case_reply_on_time_while_busy() -> None:
    """The gateway's loop stalls for 300 ms just as a reply reaches the port (a slow
    SD card, a big sync page): the reply came in time on the wire, so it is the
    answer; the command is not resent and nothing is counted late."""
    stalled = {"done": False}

    def stall(way: str, data: bytes, ns: int) -> None:
        if way == "b->a" and not stalled["done"]:
            stalled["done"] = True
            time.sleep(0.3)  # blocks the loop with the reply already in the port

    async with raw_rig(reader_cfg(secure=False)) as (bus, reader, seen, pd, link):
        await until(lambda: reader.state == "online", "online")
        before = list(pd.commands)
        link.observer = stall
        await until(lambda: stalled["done"], "the stall")
        await asyncio.sleep(0.2)
        link.observer = None
        after = pd.commands[len(before) :]
        repeats = sum(a.raw == b.raw for a, b in itertools.pairwise(after))
        assert repeats == 0, "a command answered in time was sent again"
        assert bus.counters["late"] == 0, errors(bus)
        assert seen.offline == 0, (seen.causes, bus.recent_frames()[-8:])


@case("5.7 line turnaround >= 2 characters, mark byte; Verified 050-07-01, 050-08-01")
async def case_turnaround_and_poll_cadence() -> None:
    """At 9600 baud: every command starts with the 0xFF mark, at least two character
    times after the reply's last byte, and the CP polls the PD without pause."""
    arrivals: list[tuple[str, int, bytes]] = []
    async with raw_rig(reader_cfg(secure=False), baudrate=9600) as (bus, reader, _, pd, link):
        link.observer = lambda way, data, ns: arrivals.append((way, ns, data))
        await until(lambda: reader.state == "online", "online")
        start = len(pd.commands)
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        polls = len(pd.commands) - start
        elapsed = time.monotonic() - t0
        link.observer = None
    byte_ns = link.byte_ns
    gaps = []
    for prev, cur in itertools.pairwise(arrivals):
        if prev[0] == "b->a" and cur[0] == "a->b":
            assert cur[2][0] == 0xFF, f"a command without its mark byte: {cur[2].hex(' ')}"
            # The command's first byte left the CP one byte time before it arrived.
            gaps.append(cur[1] - byte_ns - prev[1])
    assert len(gaps) >= 10, f"only {len(gaps)} turnarounds seen"
    assert min(gaps) >= 2 * byte_ns * 0.95, f"line turned around in {min(gaps) / 1e6:.2f} ms"
    # A poll and its ACK are 19 bytes on the wire (~20 ms at 9600): the CP polls
    # back to back, far inside the 8 s after which a PD drops a silent CP's session.
    assert polls / elapsed >= 10, f"{polls} polls in {elapsed:.1f} s"
    assert all(f[:2] == b"\xff\x53" for _, way, f in bus.frames if way == "tx")


@case("5.7 poll cadence; Annex D session kept (a PD drops a silent CP's session)")
async def case_poll_cadence_with_absent_readers() -> None:
    """Six configured readers that never answer share the bus with a secure libosdp
    reader: each connection attempt costs a 200 ms timeout, yet the live reader is
    polled often enough that its session never lapses (libosdp drops a session left
    silent for its OSDP_PD_SC_TIMEOUT_MS, 400 or 800 ms depending on the version)."""
    sim = SimReader(1, KEY)
    absent = (2, 3, 4, 5, 6, 7)
    async with libosdp_rig(sim, reader_cfg(), KEY, absent=absent, retry_max_ms=1000) as (
        bus,
        reader,
        seen,
        _,
    ):
        await until(lambda: reader.state == "secure", "secure channel")
        t0 = time.monotonic()
        await asyncio.sleep(4.0)
        times = [t for t, way, f in bus.frames if way == "tx" and t >= t0 and f[2] == 1]
        sim.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card")
    assert seen.offline == 0, f"the session lapsed: {seen.causes}"
    assert sum(f.code == Cmd.CHLNG for f in sent(bus) if f.address == 1) == 1
    longest = max(b - a for a, b in itertools.pairwise(times))
    # At most one unanswered attempt (a 200 ms timeout) between two of its polls.
    assert longest < 0.45, f"the live reader waited {longest:.2f} s for a poll"


# --- check characters (Annex C, E) ----------------------------------------------------------------


def _damage(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x5A])


@case("5.9, Annex C/E bad CRC in a reply; Verified 050-09-16, 070-03-04")
async def case_bad_crc_reply_rejected() -> None:
    """Two card replies with a broken CRC: refused and counted; the card arrives once,
    from the resent poll's good reply (5.4 retry, same frame)."""
    budget = {"bad": 2}
    tries: list[bytes] = []  # the polls the card was answered to

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards:
            tries.append(cmd.raw)
            card = pd.card_data(*pd.cards[0])
            if budget["bad"]:
                budget["bad"] -= 1
                return _damage(pd.reply(cmd, Reply.RAW, card))
            pd.cards.popleft()
            return pd.reply(cmd, Reply.RAW, card)
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "the card after the retries")
        await asyncio.sleep(0.1)
        assert seen.cards == [CARD]
        assert bus.counters["bad_check"] == 2, errors(bus)
        # The two refused replies were followed by the same poll, byte for byte.
        assert len(tries) == 3, tries
        assert len(set(tries)) == 1, "the retry was not the same frame"


@case("5.9, Annex B checksum mode; Verified 050-09-11")
async def case_bad_checksum_reply_rejected() -> None:
    """A reader in checksum mode: a wrong checksum is refused and counted like a bad CRC."""
    budget = {"bad": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["bad"]:
            budget["bad"] -= 1
            return _damage(pd.reply(cmd, Reply.RAW, pd.card_data(*pd.cards[0])))
        return None

    cfg = reader_cfg(secure=False)
    async with raw_rig(cfg, use_crc=False, hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online in checksum mode")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "the card")
        await asyncio.sleep(0.1)
        assert seen.cards == [CARD]
        assert bus.counters["bad_check"] == 1, errors(bus)


@case("Annex C; Verified 050-09-15 only CRC with the secure channel")
async def case_checksum_refused_for_secure_reader() -> None:
    """A secure reader answering with the 8-bit checksum is refused before any handshake."""
    async with raw_rig(reader_cfg(), KEY, key=KEY, use_crc=False) as (bus, reader, seen, pd, _):
        await until(lambda: bus.counters["checksum_in_secure"] >= 2, "two refusals")
        assert seen.online == 0
        assert Cmd.CHLNG not in pd.codes()
        assert reader.fault == "checksum reply from a secure reader"


# --- sequence numbers (5.9) ---------------------------------------------------------------------


@case("5.9 SQN; Verified 050-09-19 a wrong sequence number is a failure")
async def case_wrong_sequence_rejected() -> None:
    """A card reply with the next SQN instead of the poll's: refused, counted, and the
    CP starts over from SQN 0 (5.9); the card is not taken."""
    budget = {"bad": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["bad"]:
            budget["bad"] -= 1
            bits, n = pd.cards.popleft()
            return pd.reply(cmd, Reply.RAW, pd.card_data(bits, n), sqn=cmd.sqn % 3 + 1)
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(OTHER_CARD, 26)
        await until(lambda: bus.counters["bad_sequence"] == 1, "the refusal")
        at = len(pd.commands)
        await until(lambda: seen.online == 2, "back online")
        assert (pd.commands[at].code, pd.commands[at].sqn) == (Cmd.ID, 0), "no restart at 0"
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card after the restart")
        assert seen.cards == [CARD], "the card with the wrong SQN was taken"


@case("5.9 SQN 0 only restarts; 7.19 BUSY; Verified 050-09-19")
async def case_sequence_zero_reply_to_poll_rejected() -> None:
    """A card reply with SQN 0 to a poll with SQN 1-3 (a stale answer to osdp_ID looks
    like this) is refused; only osdp_BUSY may carry 0."""
    budget = {"zero": 1, "busy": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["busy"]:
            budget["busy"] -= 1
            return pd.reply(cmd, Reply.BUSY, sqn=0)
        if cmd.code == Cmd.POLL and pd.cards and budget["zero"]:
            budget["zero"] -= 1
            bits, n = pd.cards.popleft()
            return pd.reply(cmd, Reply.RAW, pd.card_data(bits, n), sqn=0)
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(OTHER_CARD, 26)
        await until(lambda: bus.counters["bad_sequence"] == 1, "the refusal")
        await until(lambda: seen.online == 2, "back online")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card after the restart")
        assert seen.cards == [CARD]


@case("5.9 SQN cycle; Verified 050-09-02 process sequence 0, 050-04-02 retry")
async def case_sequence_numbers_cycle() -> None:
    """Against libosdp: the first command has SQN 0, then 1, 2, 3, 1, ... and 0 never
    again in the session; a repeat is the same frame."""
    sim = SimReader(1, KEY)
    async with libosdp_rig(sim, reader_cfg(), KEY) as (bus, reader, seen, _):
        await until(lambda: reader.state == "secure", "secure channel")
        sim.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card")
        await reader.feedback(granted=True)
        frames = sent(bus)
    assert (frames[0].code, frames[0].sqn) == (Cmd.ID, 0), "the first command is not SQN 0"
    for prev, cur in itertools.pairwise(frames):
        if cur.sqn == prev.sqn:
            assert cur.raw == prev.raw, "a repeated SQN on a different frame"
        else:
            assert cur.sqn == prev.sqn % 3 + 1, f"SQN {prev.sqn} then {cur.sqn}"
    assert seen.offline == 0


# --- NAK (7.3) ---------------------------------------------------------------------------------


@case("7.3 NAK 0x04; Verified 070-03-07 resynchronise")
async def case_nak_sequence_resyncs() -> None:
    """A PD that NAKs a poll as out of sequence gets a fresh start at SQN 0."""
    budget = {"nak": 1, "at": -1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["nak"]:
            budget["nak"] -= 1
            budget["at"] = len(pd.commands)  # the index of the command after this one
            return pd.reply(cmd, Reply.NAK, b"\x04")
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (_bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(CARD, 26)
        await until(lambda: seen.online == 2, "back online after the NAK")
        nxt = pd.commands[budget["at"]]
        assert (nxt.code, nxt.sqn) == (Cmd.ID, 0), (
            f"after NAK 0x04 came {nxt.code:#x} SQN {nxt.sqn}"
        )
        await until(lambda: bool(seen.cards), "the card after the restart")
        assert seen.cards == [CARD]


@case("7.3 NAK to a command; Verified 070-03-01, 070-03-03, 070-03-06")
async def case_nak_refuses_the_command() -> None:
    """A NAKed command fails with the reason, is not resent, and the reader stays up."""

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.LED:
            return pd.reply(cmd, Reply.NAK, b"\x03")
        if cmd.code == Cmd.BUZ:
            return pd.reply(cmd, Reply.NAK, b"")  # no reason: still a refusal
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (_bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        for code, reason in ((Cmd.LED, "unknown command"), (Cmd.BUZ, "no reason given")):
            refusal = await failure(reader.command(code, b"\x00" * 5), OsdpCommandError)
            assert reason in refusal, refusal
        assert pd.codes().count(Cmd.LED) == 1
        assert pd.codes().count(Cmd.BUZ) == 1
        assert reader.state == "online"
        assert seen.offline == 0


@case("5.4, 7.19 BUSY then resend; Verified 050-04-03")
async def case_busy_is_retried() -> None:
    """osdp_BUSY: the same command again, byte for byte, until it is answered."""
    budget = {"busy": 2}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.OUT and budget["busy"]:
            budget["busy"] -= 1
            return pd.reply(cmd, Reply.BUSY, sqn=0)
        return None

    async with raw_rig(reader_cfg(secure=False), hook=hook) as (_bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        await reader.output(0, on=True)
        outs = [c.raw for c in pd.commands if c.code == Cmd.OUT]
        assert len(outs) == 3, outs
        assert len(set(outs)) == 1, outs
        assert seen.offline == 0


# --- the secure channel (Annex D) -----------------------------------------------------------------


CLEAR_ALLOWED = {Cmd.ID, Cmd.CAP}  # and the handshake's CHLNG and SCRYPT (SCS_11, SCS_13)


@case("Annex D.1; Verified 050-09-18 clear text only ID, CAP, CHLNG; 050-06-01")
async def case_no_cleartext_in_session() -> None:
    """Against libosdp (which enforces the secure channel): in clear only ID, CAP and the
    handshake; every other command MAC'd (SCS_15/17), with CRC, within 128 bytes."""
    sim = SimReader(1, KEY)
    async with libosdp_rig(sim, reader_cfg(), KEY) as (bus, reader, seen, _):
        await until(lambda: reader.state == "secure", "secure channel")
        sim.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card")
        await reader.feedback(granted=True)
        await reader.text("Welcome")
        await reader.output(0, on=True, ms=3000)
        frames = sent(bus)
    handshake = {Scs.CHLNG, Scs.SCRYPT}
    for f in frames:
        assert f.crc, "a command with a checksum"
        assert len(f.raw) <= 128, f"a {len(f.raw)}-byte command (a PD must take only 128)"
        if f.scb is None:
            assert f.code in CLEAR_ALLOWED, f"{f.code:#x} sent in clear"
        elif f.scb[1] not in handshake:
            assert f.scb[1] in (Scs.CMD_MAC, Scs.CMD_ENC)
            assert f.mac is not None
    assert sum(1 for f in frames if f.scb and f.scb[1] in (Scs.CMD_MAC, Scs.CMD_ENC)) >= 5


@case("Annex D.1, D.4; Verified 050-09-08 security block")
async def case_clear_reply_in_session_refused() -> None:
    """A clear-text card reply inside the session is refused (counted), the session is
    rebuilt and the card is not taken."""
    budget = {"clear": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["clear"]:
            budget["clear"] -= 1
            bits, n = pd.cards.popleft()
            return pd.reply(cmd, Reply.RAW, pd.card_data(bits, n), secure=False)
        return None

    async with raw_rig(reader_cfg(), KEY, key=KEY, hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "secure", "secure channel")
        pd.present_card(OTHER_CARD, 26)
        await until(lambda: pd.sessions == 2 and reader.state == "secure", "a new session")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card in the new session")
        assert seen.cards == [CARD]
        assert bus.counters["plaintext_in_session"] == 1, errors(bus)


@case("Annex D.4 reply MAC; a mismatch ends the session")
async def case_reply_mac_mismatch_ends_session() -> None:
    """A card reply whose MAC does not verify: not taken, counted, the session ends and
    the CP builds a new one (a new CHLNG) before it trusts the reader again."""
    budget = {"forge": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["forge"]:
            budget["forge"] -= 1
            bits, n = pd.cards.popleft()
            return pd.reply(cmd, Reply.RAW, pd.card_data(bits, n), bad_mac=True)
        return None

    async with raw_rig(reader_cfg(), KEY, key=KEY, hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "secure", "secure channel")
        pd.present_card(OTHER_CARD, 26)
        await until(lambda: bus.counters["bad_mac"] == 1, "the refusal")
        await until(lambda: pd.sessions == 2 and reader.state == "secure", "a new session")
        assert pd.codes().count(Cmd.CHLNG) == 2
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card in the new session")
        assert seen.cards == [CARD]


@case("Annex D.4 command MAC, against libosdp; the PD ends the session")
async def case_command_mac_mismatch_recovers() -> None:
    """The CP's MAC chain broken (as by a corrupted frame both sides took): libosdp
    refuses the command and drops the session; the CP notices and builds a new one."""
    sim = SimReader(1, KEY)
    async with libosdp_rig(sim, reader_cfg(), KEY) as (bus, reader, seen, _):
        await until(lambda: reader.state == "secure", "secure channel")
        sc = reader._sc
        assert sc is not None
        real_mac = sc.mac

        def forged(message: bytes, *, command: bool) -> bytes:
            # The command's MAC goes out wrong; the chain itself stays right.
            value = real_mac(message, command=command)
            return bytes([value[0] ^ 0xFF]) + value[1:] if command else value

        sc.mac = forged  # type: ignore[method-assign]
        await until(lambda: seen.offline == 1, "the session dropped")
        assert seen.causes == ["secure session lost (plaintext NAK)"], seen.causes
        await until(lambda: reader.state == "secure" and sim.sc_active, "a new session")
        chlngs = [f for f in sent(bus) if f.code == Cmd.CHLNG]
        assert len(chlngs) == 2
        sim.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "a card in the new session")


@case("Annex D.8 SCBK-D only in install mode; Verified 060-16-02")
async def case_default_key_refused_outside_install_mode() -> None:
    """A reader still on SCBK-D (install mode) and a CP that holds its key: no session,
    never in clear, every CHLNG asks for the paired key; a key file holding SCBK-D is
    refused outside install mode."""
    offline_bus = OsdpBus(OsdpBusConfig(type="osdp", port="x"), "b")

    async def add() -> None:
        offline_bus.add_reader(reader_cfg(), SCBK_D)

    refusal = await failure(add(), ValueError)
    assert "SCBK-D" in refusal, refusal
    assert "b/pd1" in refusal, refusal  # it names the reader
    sim = SimReader(1, None)  # fresh from the box: SCBK-D
    async with libosdp_rig(sim, reader_cfg(), KEY) as (bus, reader, seen, _):
        await until(lambda: reader.fault == SC_FAILED, "the refusal")
        await until(lambda: sum(f.code == Cmd.CHLNG for f in sent(bus)) >= 2, "a retry")
        frames = sent(bus)
    assert seen.online == 0
    assert {f.code for f in frames} <= {Cmd.ID, Cmd.CAP, Cmd.CHLNG}
    assert all(f.scb is not None and f.scb[2] == 1 for f in frames if f.code == Cmd.CHLNG)


# --- addresses and sizes (5.6, 5.9) ------------------------------------------------------------


@case("5.9 ADDR; Verified 050-09-04, 050-09-05 0x7F")
async def case_other_addresses_ignored() -> None:
    """A card reply from address 2, and a frame without the reply bit, are not the
    reader's answer; the CP never sends to 0x7F and refuses it in the config."""
    budget = {"foreign": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code == Cmd.POLL and pd.cards and budget["foreign"]:
            budget["foreign"] -= 1
            data = pd.card_data(OTHER_CARD, 26)
            return pd.reply(cmd, Reply.RAW, data, address=2) + pd.reply(
                cmd, Reply.RAW, data, reply_bit=False
            )
        return None

    async def configure_broadcast() -> None:
        reader_cfg(0x7F)

    await failure(configure_broadcast(), ValidationError)  # 0x7F is no reader's address
    async with raw_rig(reader_cfg(secure=False), hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "the card from the right address")
        assert seen.cards == [CARD]
        assert bus.counters["foreign"] == 2, errors(bus)
        assert all(f.address != 0x7F for f in sent(bus))


@case("5.6 packet size, 5.7 REPLY_DELAY to the first byte; Verified 050-06-02")
async def case_max_frame_length() -> None:
    """At 38,400 baud a 1440-byte reply takes 375 ms on the wire: it began within
    200 ms, so it is taken whole. One that says 1441 bytes is noise (counted) and its
    card is not taken."""
    budget = {"big": 1, "over": 1}

    def hook(pd: RawPd, cmd: Packet) -> bytes | None:
        if cmd.code != Cmd.POLL or not pd.cards:
            return None
        bits, n = pd.cards[0]
        card = pd.card_data(bits, n)
        for key, size in (("big", MAX_FRAME), ("over", MAX_FRAME + 1)):
            if budget[key]:
                budget[key] -= 1
                # RAW data may run past the bits it counts: pad the frame to `size`.
                pad = size - (len(pd.reply(cmd, Reply.RAW, card)) - 1)  # no mark byte
                frame = pd.reply(cmd, Reply.RAW, card + bytes(pad))
                assert len(frame) - 1 == size  # without the mark byte
                if key == "big":
                    pd.cards.popleft()
                return frame
        return None  # the resent poll gets the card in a frame of normal size

    cfg = reader_cfg(secure=False)
    async with raw_rig(cfg, baudrate=38400, hook=hook) as (bus, reader, seen, pd, _):
        await until(lambda: reader.state == "online", "online")
        pd.present_card(CARD, 26)
        await until(lambda: bool(seen.cards), "the card in a 1440-byte frame")
        assert seen.cards == [CARD]
        assert seen.offline == 0
        pd.present_card(OTHER_CARD, 26)
        await until(lambda: bus.counters["bad_length"] >= 1, "the oversized frame refused")
        await until(lambda: len(seen.cards) == 2, "the card from the resent poll")
        await asyncio.sleep(0.1)
        # Once each: the oversized frame's card was not taken, only the resend's.
        assert seen.cards == [CARD, OTHER_CARD], seen.cards
