"""OSDP (SIA OSDP v2.2) control panel: readers on an RS-485 bus.

Layers, each usable alone:
- the packet codec: `encode_packet`, `FrameSplitter` (bytes to checked
  frames), `decode_packet`, with CRC-16/AUG-CCITT (`crc16`) or the 8-bit
  checksum (`checksum`, decode only: we always send CRC);
- the secure channel: `session_keys`, the cryptograms, `SecureChannel` (the
  MAC chain and the data encryption), all AES-128 as the spec's Annex D says;
- `OsdpBus`, which owns one serial port and polls every reader on it
  back-to-back, and `OsdpReader`, one reader (PD) at one address.

Why our own CP and not libosdp's: its Python CP polls on a fixed 50 ms cycle
with 20 ms sleeps, drains one event per poll, falls back to plaintext on a
wrong key unless told not to, waits 300 s before retrying a reader
(https://github.com/osdp-dev/libosdp/issues/197), and its refresh thread dies
silently on errors. This one polls as fast as the bus answers, never uses a
reader in clear unless its config allows it, and retries every reader forever
with capped, jittered backoff.

Not here: COMSET, file transfer, biometrics, manufacturer commands, and
osdp_FMT card data (deprecated in v2.2.2; https://github.com/goToMain/libosdp/issues/206).

Tasks: one per bus, `osdp[<bus>].poll`. No threads: the port is opened
non-blocking and read through `loop.add_reader`; a write of one frame (at most
a few hundred bytes) goes straight to the port.

Size: over 600 lines on purpose. The frame codec, the secure channel and the
bus task make up one state machine, and it reads top to bottom against the
sections of the OSDP specification. Split up, a command's path through it
would no longer read as one sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import random
import select
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, Self

import serial  # type: ignore[import-untyped]  # pyserial ships no type hints
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.aio import cancel_and_wait

log = logging.getLogger("drivers.osdp")

SOM = 0x53
MARK = 0xFF  # optional "driver mark" sent before SOM (v2.2)
BROADCAST = 0x7F
MAX_FRAME = 1440  # larger than any reader's receive buffer; a bigger length is noise

CTRL_SQN = 0x03
CTRL_CRC = 0x04
CTRL_SCB = 0x08


class Cmd(IntEnum):
    POLL = 0x60
    ID = 0x61
    CAP = 0x62
    LSTAT = 0x64
    ISTAT = 0x65
    OSTAT = 0x66
    RSTAT = 0x67
    OUT = 0x68
    LED = 0x69
    BUZ = 0x6A
    TEXT = 0x6B
    COMSET = 0x6E
    KEYSET = 0x75
    CHLNG = 0x76
    SCRYPT = 0x77


class Reply(IntEnum):
    ACK = 0x40
    NAK = 0x41
    PDID = 0x45
    PDCAP = 0x46
    LSTATR = 0x48
    ISTATR = 0x49
    OSTATR = 0x4A
    RSTATR = 0x4B
    RAW = 0x50
    FMT = 0x51
    KEYPAD = 0x53
    COM = 0x54
    CCRYPT = 0x76
    RMAC_I = 0x78
    BUSY = 0x79


class Scs(IntEnum):
    """Security block types."""

    CHLNG = 0x11  # CP -> PD: challenge (RND.A)
    CCRYPT = 0x12  # PD -> CP: client cryptogram
    SCRYPT = 0x13  # CP -> PD: server cryptogram
    RMAC_I = 0x14  # PD -> CP: initial R-MAC
    CMD_MAC = 0x15  # CP -> PD: MAC, data in clear (or none)
    REPLY_MAC = 0x16
    CMD_ENC = 0x17  # CP -> PD: MAC and encrypted data
    REPLY_ENC = 0x18


NAK_REASONS = {
    0x01: "bad check character",
    0x02: "command length error",
    0x03: "unknown command",
    0x04: "unexpected sequence number",
    0x05: "secure channel not supported",
    0x06: "secure channel condition not met",
    0x07: "biometric type not supported",
    0x08: "biometric format not supported",
    0x09: "unable to process command record",
}

CardFormat = Literal["unspecified", "wiegand"]
CARD_FORMATS: dict[int, CardFormat] = {0: "unspecified", 1: "wiegand"}

# Keypad bytes: digits as ASCII, '*' as DEL and '#' as CR (spec 7.11 / 6.13).
_KEYPAD = {0x7F: "*", 0x0D: "#"}


class PacketError(ValueError):
    """A frame that is not a well-formed OSDP packet (bad length, CRC, layout).

    `kind` names the cause for the bus's counters (one of PROTOCOL_ERRORS).
    """

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


# What the bus counts in `OsdpBus.counters`, one name per way a frame is refused.
PROTOCOL_ERRORS = (
    "bad_check",  # CRC or checksum wrong (SIA OSDP 2.2 Annex C; OSDP Verified 050-09-16)
    "bad_length",  # length field under 7 or over MAX_FRAME (5.6, 5.9)
    "malformed",  # a frame whose layout does not parse
    "late",  # a reply after its timeout (5.7), or a repeat of one taken (5.9): dropped
    "foreign",  # a reply from another address, or a command echoed (5.9)
    "bad_sequence",  # a reply whose SQN is not the command's (5.9; 050-09-19)
    "checksum_in_secure",  # a checksum reply to a secure reader (050-09-15)
    "plaintext_in_session",  # a clear reply inside the secure channel (Annex D)
    "bad_mac",  # a reply MAC that does not verify (Annex D)
)


class OsdpCommandError(Exception):
    """A command the reader refused (NAK) or could not get (offline, timeout)."""


# --- check characters --------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/AUG-CCITT (poly 0x1021, init 0x1D0F, not reflected), as OSDP specifies."""
    crc = 0x1D0F
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def checksum(data: bytes) -> int:
    """The 8-bit checksum mode: the two's complement of the byte sum."""
    return -sum(data) & 0xFF


# --- packets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    address: int  # 0-127, without the reply bit
    reply: bool
    sqn: int
    code: int
    data: bytes
    scb: bytes | None = None  # the security block, length byte first
    mac: bytes | None = None  # the 4 MAC bytes sent
    crc: bool = True
    raw: bytes = b""  # the frame from SOM to the check character

    @property
    def authenticated(self) -> bytes:
        """The bytes the MAC covers: SOM up to the MAC."""
        return self.raw[: len(self.raw) - (2 if self.crc else 1) - (4 if self.mac else 0)]


def encode_packet(
    address: int,
    code: int,
    data: bytes = b"",
    sqn: int = 0,
    *,
    reply: bool = False,
    scb: bytes | None = None,
    mac: Callable[[bytes], bytes] | None = None,
    use_crc: bool = True,
    mark: bool = True,
) -> bytes:
    """One frame. `mac` (given the bytes from SOM to the data) returns the MAC to append."""
    if not 0 <= address <= BROADCAST:
        raise ValueError(f"address {address} is out of range 0-127")
    scb = scb or b""
    mac_len = 4 if mac is not None else 0
    length = 5 + len(scb) + 1 + len(data) + mac_len + (2 if use_crc else 1)
    ctrl = (sqn & CTRL_SQN) | (CTRL_CRC if use_crc else 0) | (CTRL_SCB if scb else 0)
    head = bytes([SOM, address | (0x80 if reply else 0), length & 0xFF, length >> 8, ctrl])
    msg = head + scb + bytes([code]) + data
    if mac is not None:
        msg += mac(msg)[:4]
    if use_crc:
        msg += crc16(msg).to_bytes(2, "little")
    else:
        msg += bytes([checksum(msg)])
    return (bytes([MARK]) if mark else b"") + msg


def _check_ok(frame: bytes) -> bool:
    if frame[4] & CTRL_CRC:
        return crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")
    return checksum(frame[:-1]) == frame[-1]


def decode_packet(frame: bytes) -> Packet:
    """A frame (SOM to check character, already checked) to a packet."""
    if len(frame) < 7 or frame[0] != SOM:
        raise PacketError(f"not a packet: {frame.hex(' ')}")
    length = frame[2] | frame[3] << 8
    if length != len(frame):
        raise PacketError(f"length field {length} != frame length {len(frame)}")
    if not _check_ok(frame):
        raise PacketError("bad check character", "bad_check")
    ctrl = frame[4]
    crc = bool(ctrl & CTRL_CRC)
    end = len(frame) - (2 if crc else 1)
    pos = 5
    scb = None
    if ctrl & CTRL_SCB:
        n = frame[5]
        if n < 2 or pos + n >= end:
            raise PacketError(f"bad security block length {n}")
        scb = frame[pos : pos + n]
        pos += n
    mac = None
    if scb is not None and scb[1] >= Scs.CMD_MAC:
        if end - 4 <= pos:
            raise PacketError("secure packet too short for its MAC")
        mac = frame[end - 4 : end]
        end -= 4
    if pos >= end:
        raise PacketError("packet without a command or reply code")
    return Packet(
        address=frame[1] & 0x7F,
        reply=bool(frame[1] & 0x80),
        sqn=ctrl & CTRL_SQN,
        code=frame[pos],
        data=frame[pos + 1 : end],
        scb=scb,
        mac=mac,
        crc=crc,
        raw=frame,
    )


class FrameSplitter:
    """A byte stream to frames whose length and check character are right.

    Bytes before a SOM (noise, the mark byte) are skipped; a frame that fails
    its check is reported and the scan resumes after its SOM, so a SOM inside
    garbage cannot hide the next real frame.
    """

    def __init__(self, max_len: int = MAX_FRAME) -> None:
        self.max_len = max_len
        self._buf = bytearray()

    def clear(self) -> None:
        self._buf.clear()

    def missing(self) -> int:
        """Bytes still to come for a frame whose head has arrived (0: none begun)."""
        buf = self._buf
        if len(buf) < 4 or buf[0] != SOM:
            return 0
        length = buf[2] | buf[3] << 8
        return length - len(buf) if 7 <= length <= self.max_len else 0

    def feed(self, data: bytes) -> list[bytes | PacketError]:
        out: list[bytes | PacketError] = []
        buf = self._buf
        buf += data
        while True:
            start = buf.find(SOM)
            if start < 0:
                buf.clear()
                break
            if start:
                del buf[:start]
            if len(buf) < 5:
                break
            length = buf[2] | buf[3] << 8
            if length < 7 or length > self.max_len:
                out.append(PacketError(f"implausible length {length}", "bad_length"))
                del buf[:1]
                continue
            if len(buf) < length:
                break
            frame = bytes(buf[:length])
            if not _check_ok(frame):
                out.append(PacketError(f"bad check character in {frame.hex(' ')}", "bad_check"))
                del buf[:1]
                continue
            del buf[:length]
            out.append(frame)
        return out


# --- secure channel ----------------------------------------------------------------------

SCBK_D = bytes(range(0x30, 0x40))  # the spec's default key, for install mode only


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - single blocks, as the spec says
    return enc.update(block) + enc.finalize()


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


@dataclass(frozen=True, slots=True)
class SessionKeys:
    s_enc: bytes
    s_mac1: bytes
    s_mac2: bytes


def session_keys(scbk: bytes, rnd_a: bytes) -> SessionKeys:
    """S-ENC, S-MAC1, S-MAC2: the SCBK applied to (0x01, type, RND.A[0:6], zeros)."""

    def derive(kind: int) -> bytes:
        return _aes_ecb(scbk, bytes([0x01, kind]) + rnd_a[:6] + bytes(8))

    return SessionKeys(derive(0x82), derive(0x01), derive(0x02))


def client_cryptogram(keys: SessionKeys, rnd_a: bytes, rnd_b: bytes) -> bytes:
    """What the PD proves it holds the key with (in osdp_CCRYPT)."""
    return _aes_ecb(keys.s_enc, rnd_a + rnd_b)


def server_cryptogram(keys: SessionKeys, rnd_a: bytes, rnd_b: bytes) -> bytes:
    """What the CP proves it holds the key with (in osdp_SCRYPT)."""
    return _aes_ecb(keys.s_enc, rnd_b + rnd_a)


def initial_rmac(keys: SessionKeys, server_crypt: bytes) -> bytes:
    return _aes_ecb(keys.s_mac2, _aes_ecb(keys.s_mac1, server_crypt))


class SecureChannel:
    """One session: the MAC chain (each MAC seeds the next) and data encryption.

    A command's MAC starts from the last reply's MAC (R-MAC) and a reply's from
    the last command's (C-MAC); data is AES-CBC with S-ENC, its IV the
    complement of the last MAC the other side sent.
    """

    def __init__(self, keys: SessionKeys, rmac_i: bytes) -> None:
        self.keys = keys
        self.r_mac = rmac_i
        self.c_mac = bytes(16)

    def mac(self, message: bytes, *, command: bool) -> bytes:
        """The full 16-byte MAC of a message; it becomes the chain's last MAC."""
        data = bytearray(message)
        if len(data) % 16 or not data:
            data.append(0x80)
            data += bytes(-len(data) % 16)
        iv = self.r_mac if command else self.c_mac
        if len(data) > 16:
            iv = _aes_cbc(self.keys.s_mac1, iv, bytes(data[:-16]))[-16:]
        result = _aes_cbc(self.keys.s_mac2, iv, bytes(data[-16:]))
        if command:
            self.c_mac = result
        else:
            self.r_mac = result
        return result

    def _iv(self, command: bool) -> bytes:
        last = self.r_mac if command else self.c_mac
        return bytes(~b & 0xFF for b in last)

    def encrypt(self, data: bytes, *, command: bool) -> bytes:
        padded = data + b"\x80" + bytes(-(len(data) + 1) % 16)
        return _aes_cbc(self.keys.s_enc, self._iv(command), padded)

    def decrypt(self, data: bytes, *, command: bool) -> bytes:
        if not data or len(data) % 16:
            raise PacketError(f"encrypted data of {len(data)} bytes is not whole blocks")
        plain = _aes_cbc(self.keys.s_enc, self._iv(command), data, decrypt=True).rstrip(b"\0")
        if not plain.endswith(b"\x80"):
            raise PacketError("encrypted data without its 0x80 end marker")
        return plain[:-1]


def parse_scbk(secret: bytes) -> bytes:
    """A key file's content (32 hex characters) to the 16-byte SCBK."""
    text = secret.decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ValueError("an OSDP key file holds 32 hex characters (a 16-byte AES key)")
    return key


# --- config ------------------------------------------------------------------------------------


class OsdpReaderConfig(BaseModel):
    """One reader (PD) on a bus. The key itself is a secret file named by `key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["osdp"]
    address: int = Field(ge=0, le=126)
    key: str | None = None
    secure: bool = True
    allow_plaintext: bool = False
    install_mode: bool = False

    @model_validator(mode="after")
    def _key_when_secure(self) -> Self:
        if self.secure and self.key is None and not self.install_mode:
            raise ValueError(
                "a secure reader needs `key` (the name of its key file in the secrets "
                "directory), or `install_mode = true` to provision one"
            )
        return self


class OsdpBusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["osdp"]
    port: str  # e.g. /dev/serial/by-id/usb-FTDI_...-if00-port0
    baudrate: int = Field(default=115200, gt=0)
    interframe_gap_ms: float = Field(default=0.0, ge=0)
    reply_timeout_ms: int = Field(default=200, gt=0)
    offline_after_misses: int = Field(default=3, ge=1)
    retry_max_ms: int = Field(default=5000, gt=0)  # backoff cap for offline readers
    frame_log: int = Field(default=64, ge=0)  # raw frames kept for dumps


# --- faults ----------------------------------------------------------------------------------


class FaultLog:
    """A device's current fault: ERROR once, DEBUG while it lasts, INFO when it clears."""

    def __init__(self, prefix: str, initial: str | None = None) -> None:
        self.prefix = prefix
        self.fault: str | None = initial  # an initial fault is not logged until it is set
        self._reported = False

    def set(self, fault: str) -> None:
        if not self._reported:
            log.error("%s: %s", self.prefix, fault)
        elif fault != self.fault:
            log.warning("%s: now %s", self.prefix, fault)
        else:
            log.debug("%s: still %s", self.prefix, fault)
        self.fault = fault
        self._reported = True

    def clear(self, note: str = "back") -> None:
        if self._reported:
            log.info("%s: %s (was: %s)", self.prefix, note, self.fault)
        elif self.fault is not None:
            log.info("%s: %s", self.prefix, note)
        self.fault = None
        self._reported = False


def backoff_s(failures: int, cap_s: float, base_s: float = 0.25) -> float:
    """Capped exponential backoff with ±25 % jitter, so readers do not retry in step."""
    delay: float = min(cap_s, base_s * 2.0 ** min(failures, 16))
    return delay * random.uniform(0.75, 1.25)


# --- readers ----------------------------------------------------------------------------------

ReaderState = Literal["offline", "online", "secure"]
# Wire time allowed for a reply beside the reply timeout (a card read with the
# secure channel is about 40 bytes; text and capability replies are longer).
REPLY_ALLOWANCE_BYTES = 128
COMMANDS_PER_TURN = 4
SC_FAILED = "secure channel failed (wrong key?)"


class _Offline(Exception):
    """The reader stopped answering (or a link-level failure): end its turn."""


@dataclass
class _Pending:
    code: int
    data: bytes
    done: asyncio.Future[Packet]


@dataclass
class ReaderInfo:
    vendor: int = 0
    model: int = 0
    version: int = 0
    serial: int = 0
    firmware: str = ""
    capabilities: dict[int, tuple[int, int]] = field(default_factory=dict)


class OsdpReader:
    """One PD at one address: connection state, callbacks and commands.

    The bus calls `_turn` whenever this reader is due; commands queued by the
    application are sent in the reader's next turn, in place of a poll.
    """

    def __init__(self, bus: OsdpBus, config: OsdpReaderConfig, key: bytes | None) -> None:
        self.bus = bus
        self.config = config
        self.address = config.address
        self.key = key
        self.install_mode = config.install_mode
        self.name = f"{bus.name}/pd{config.address}"
        self.state: ReaderState = "offline"
        self.info = ReaderInfo()
        self.tamper: bool | None = None
        self.power: bool | None = None
        self.outputs: dict[int, bool] = {}  # from the last osdp_OSTATR
        self.on_card: Callable[[int, int, CardFormat], None] | None = None
        self.on_keys: Callable[[str], None] | None = None
        self.on_status: Callable[[bool, bool], None] | None = None
        self.on_online: Callable[[], None] | None = None
        self.on_offline: Callable[[], None] | None = None
        self._fault = FaultLog(self.name, "not connected yet")
        self._sqn = 0
        self._sc: SecureChannel | None = None
        self._last_reply = b""  # the last reply taken, as framed (see OsdpBus._transact)
        self._misses = 0
        self._failures = 0
        self._next_try = 0.0
        self._pending: deque[_Pending] = deque()

    @property
    def fault(self) -> str | None:
        return self._fault.fault

    @property
    def due(self) -> bool:
        return self.state != "offline" or time.monotonic() >= self._next_try

    # --- commands -----------------------------------------------------------------

    async def feedback(self, granted: bool) -> None:
        """Green LED and one beep for a grant, red LED and three beeps for a denial."""
        color = 2 if granted else 1
        led = bytes([0, 0, 2, 10, 0, color, 0]) + (20).to_bytes(2, "little") + bytes(5)
        beeps = 1 if granted else 3
        await self.command(Cmd.LED, led)
        await self.command(Cmd.BUZ, bytes([0, 2, 2, 1, beeps]))

    async def text(self, text: str, row: int = 1, col: int = 1, seconds: int = 0) -> None:
        """Show text; `seconds` > 0 shows it temporarily."""
        data = text.encode("ascii", errors="replace")[:32]
        control = 3 if seconds else 1  # temporary or permanent, no wrap
        header = bytes([0, control, seconds & 0xFF, row, col, len(data)])
        await self.command(Cmd.TEXT, header + data)

    async def output(self, number: int, on: bool, ms: int = 0) -> None:
        """Switch the reader's output (relay); with `ms`, only for that long."""
        if ms:
            code, ticks = (5 if on else 6), max(1, min(0xFFFF, (ms + 99) // 100))
        else:
            code, ticks = (2 if on else 1), 0
        await self.command(Cmd.OUT, bytes([number, code]) + ticks.to_bytes(2, "little"))

    async def install_key(self, new_key: bytes | None = None) -> bytes:
        """Send a new SCBK over the current secure channel (SCBK-D in install mode).

        Returns the key, which the caller must store (and drop `install_mode`
        from the config); the session is then re-established with it. If the
        reply to KEYSET is lost the reader may hold the new key although this
        raises, so a careful caller stores `new_key` before calling and, on
        failure, tries both keys.
        """
        key = new_key or os.urandom(16)
        if len(key) != 16:
            raise ValueError("an SCBK has 16 bytes")
        if self.state != "secure":
            raise OsdpCommandError(f"{self.name}: no secure channel to send a key over")
        await self.command(Cmd.KEYSET, bytes([1, 16]) + key)
        return key

    async def command(self, code: int, data: bytes = b"") -> Packet:
        """Queue a command for the reader's next turn; its reply (ACK or data)."""
        if self.state == "offline":
            raise OsdpCommandError(f"{self.name}: offline ({self.fault})")
        done: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(code, data, done))
        self.bus._wake.set()
        reply = await done
        if reply.code == Reply.NAK:
            reason = NAK_REASONS.get(reply.data[0] if reply.data else 0, "no reason given")
            raise OsdpCommandError(f"{self.name}: command {code:#04x} refused: {reason}")
        return reply

    # --- the bus's side -------------------------------------------------------------

    async def _turn(self) -> None:
        try:
            if self.state == "offline":
                await self._connect()
                return
            # Queued commands (feedback, outputs) go first, a few per turn, and the
            # turn still ends with a poll: a card read waits at most one cycle,
            # not one cycle per command (LED, buzzer and text after each badge).
            for _ in range(COMMANDS_PER_TURN):
                if not self._pending or self._is_offline():
                    break
                await self._run_pending()
            if not self._is_offline():
                reply = await self._exchange(Cmd.POLL)
                self._dispatch(reply)
                if reply.code in (Reply.RAW, Reply.KEYPAD):
                    # Let what the read set off (a strike) run before the next exchange.
                    await asyncio.sleep(0)
        except _Offline as exc:
            self._go_offline(str(exc))

    def _is_offline(self) -> bool:
        # A method, not a comparison in place: commands can take the reader offline.
        return self.state == "offline"

    async def _connect(self) -> None:
        self._sqn = 0  # sequence 0 tells the PD to start afresh (and drop any session)
        self._sc = None
        self._last_reply = b""
        self._misses = self.bus.config.offline_after_misses - 1  # one try per attempt
        pdid = await self._exchange(Cmd.ID, b"\x00")
        if pdid.code == Reply.PDID and len(pdid.data) >= 12:
            d = pdid.data
            self.info.vendor = int.from_bytes(d[0:3], "little")
            self.info.model, self.info.version = d[3], d[4]
            self.info.serial = int.from_bytes(d[5:9], "little")
            self.info.firmware = f"{d[9]}.{d[10]}.{d[11]}"
        pdcap = await self._exchange(Cmd.CAP, b"\x00")
        if pdcap.code == Reply.PDCAP:
            d = pdcap.data
            self.info.capabilities = {d[i]: (d[i + 1], d[i + 2]) for i in range(0, len(d) - 2, 3)}
        if self.config.secure:
            problem = await self._handshake()
            if problem is not None:
                if not self.config.allow_plaintext:
                    raise _Offline(problem)
                log.warning("%s: %s; in clear, as allow_plaintext says", self.name, problem)
                self._sqn = 0
                await self._exchange(Cmd.ID, b"\x00")  # resynchronise after the failed try
        self._go_online("secure" if self._sc is not None else "online")

    async def _handshake(self) -> str | None:
        """Establish a session; None when done, else why not (the PD answered)."""
        scbk = SCBK_D if self.install_mode else self.key
        if scbk is None:
            return "no key for the secure channel"
        key_type = 0 if self.install_mode else 1
        rnd_a = os.urandom(8)
        ccrypt = await self._exchange(
            Cmd.CHLNG, rnd_a, scb=bytes([3, Scs.CHLNG, key_type]), secure=False
        )
        if ccrypt.code == Reply.NAK:
            code = ccrypt.data[0] if ccrypt.data else 0
            if code == 0x05:
                return "reader does not support the secure channel"
            return SC_FAILED
        if ccrypt.code != Reply.CCRYPT or len(ccrypt.data) != 32:
            return f"secure channel failed: unexpected reply {ccrypt.code:#04x} to CHLNG"
        rnd_b, their_crypt = ccrypt.data[8:16], ccrypt.data[16:32]
        keys = session_keys(scbk, rnd_a)
        if not hmac.compare_digest(their_crypt, client_cryptogram(keys, rnd_a, rnd_b)):
            return SC_FAILED
        server = server_cryptogram(keys, rnd_a, rnd_b)
        rmac = await self._exchange(
            Cmd.SCRYPT, server, scb=bytes([3, Scs.SCRYPT, key_type]), secure=False
        )
        expected = initial_rmac(keys, server)
        # The status byte: libosdp and OSDP.Net read the spec as 0x01 = accepted;
        # others read "0 or 0xFF" (https://github.com/osdp-dev/libosdp/issues/245).
        # The R-MAC itself is what proves the session, so take either.
        if (
            rmac.code != Reply.RMAC_I
            or rmac.scb is None
            or len(rmac.scb) < 3
            or rmac.scb[2] not in (0x01, 0xFF)
            or not hmac.compare_digest(rmac.data[:16], expected)
        ):
            return SC_FAILED
        self._sc = SecureChannel(keys, expected)
        return None

    async def _run_pending(self) -> None:
        item = self._pending[0]
        reply = await self._exchange(item.code, item.data)
        self._pending.popleft()
        if item.code == Cmd.KEYSET and reply.code == Reply.ACK:
            # The PD now holds the new key and has dropped the session.
            self.key = item.data[2:18]
            self.install_mode = False
            self._sc = None
            problem = await self._handshake()
            if problem is not None:
                if not item.done.done():
                    item.done.set_result(reply)
                raise _Offline(f"after KEYSET: {problem}")
        if not item.done.done():
            item.done.set_result(reply)
        if reply.code not in (Reply.ACK, Reply.NAK):
            self._dispatch(reply)

    async def _exchange(
        self, code: int, data: bytes = b"", *, scb: bytes | None = None, secure: bool = True
    ) -> Packet:
        """Send one command and return its (verified, decrypted) reply."""
        sc = self._sc if secure else None
        if sc is not None:
            payload = sc.encrypt(data, command=True) if data else b""
            scb = bytes([2, Scs.CMD_ENC if data else Scs.CMD_MAC])
            frame = encode_packet(
                self.address,
                code,
                payload,
                self._sqn,
                scb=scb,
                mac=lambda m: sc.mac(m, command=True),
                mark=True,
            )
        else:
            frame = encode_packet(self.address, code, data, self._sqn, scb=scb)
        busy_left = 10
        while True:
            reply = await self.bus._transact(self, frame)
            if reply is None:
                self._misses += 1
                if self._misses >= self.bus.config.offline_after_misses:
                    raise _Offline("no reply")
                continue  # resend the same frame, same sequence number
            if reply.code == Reply.BUSY and busy_left:
                busy_left -= 1
                await asyncio.sleep(0.02)
                continue
            break
        self._misses = 0
        # A reply carries its command's SQN (5.9); only osdp_BUSY may carry 0 (7.19).
        # Taking 0 from any reply would let a stale answer to osdp_ID pass as one to
        # a poll (OSDP Verified 050-09-19).
        if reply.sqn != self._sqn and not (reply.sqn == 0 and reply.code == Reply.BUSY):
            self.bus._protocol_error(
                f"{self.name}: reply sequence {reply.sqn} != {self._sqn}", "bad_sequence"
            )
            raise _Offline("sequence number mismatch")
        if not reply.crc and self.config.secure and not self.config.allow_plaintext:
            # A secure reader speaks CRC-16 only (OSDP Verified 050-09-15): the
            # one-byte checksum lets a line error through 1 time in 256.
            self.bus._protocol_error(
                f"{self.name}: checksum reply from a secure reader", "checksum_in_secure"
            )
            raise _Offline("checksum reply from a secure reader")
        self._last_reply = reply.raw if reply.code != Reply.BUSY else b""
        self._sqn = self._sqn % 3 + 1
        return self._unwrap(code, reply, sc)

    def _unwrap(self, code: int, reply: Packet, sc: SecureChannel | None) -> Packet:
        if sc is None:
            if reply.scb is not None and reply.scb[1] >= Scs.REPLY_MAC:
                raise _Offline("secured reply outside a session")
            return reply
        if reply.scb is None:
            if reply.code == Reply.NAK:
                # The PD dropped the session (a timeout, a restart): start over.
                self._sc = None
                raise _Offline("secure session lost (plaintext NAK)")
            if code == Cmd.KEYSET and reply.code == Reply.ACK:
                return reply  # some PDs drop the session before answering
            self.bus._protocol_error(
                f"{self.name}: plaintext reply inside the secure channel", "plaintext_in_session"
            )
            raise _Offline("plaintext reply inside the secure channel")
        if reply.mac is None:
            raise _Offline("secure reply without a MAC")
        expected = sc.mac(reply.authenticated, command=False)[:4]
        if not hmac.compare_digest(expected, reply.mac):
            self._sc = None
            self.bus._protocol_error(f"{self.name}: reply MAC mismatch", "bad_mac")
            raise _Offline("secure channel failed (bad MAC)")
        if reply.scb[1] == Scs.REPLY_ENC and reply.data:
            try:
                plain = sc.decrypt(reply.data, command=False)
            except PacketError as exc:
                self._sc = None
                raise _Offline(f"secure channel failed ({exc})") from None
            return dataclasses.replace(reply, data=plain)
        return reply

    def _dispatch(self, reply: Packet) -> None:
        d = reply.data
        try:
            if reply.code == Reply.RAW and len(d) >= 4:
                fmt = CARD_FORMATS.get(d[1], "unspecified")
                bit_count = d[2] | d[3] << 8
                raw = d[4 : 4 + (bit_count + 7) // 8]
                if len(raw) * 8 < bit_count:
                    raise PacketError(f"RAW reply with {bit_count} bits but {len(raw)} bytes")
                bits = int.from_bytes(raw, "big") >> (len(raw) * 8 - bit_count)
                if self.on_card is not None:
                    self.on_card(bits, bit_count, fmt)
            elif reply.code == Reply.KEYPAD and len(d) >= 2:
                keys = "".join(_KEYPAD.get(b, chr(b)) for b in d[2 : 2 + d[1]])
                if self.on_keys is not None:
                    self.on_keys(keys)
            elif reply.code == Reply.LSTATR and len(d) >= 2:
                self.tamper, self.power = bool(d[0]), bool(d[1])
                if self.on_status is not None:
                    self.on_status(self.tamper, self.power)
            elif reply.code == Reply.OSTATR:
                self.outputs = {i: bool(b) for i, b in enumerate(d)}
            elif reply.code == Reply.NAK:
                reason = NAK_REASONS.get(d[0] if d else 0, "no reason given")
                log.warning("%s: NAK to poll: %s", self.name, reason)
                if d and d[0] == 0x04:
                    raise _Offline("sequence out of step")
            elif reply.code not in (Reply.ACK, Reply.ISTATR, Reply.RSTATR):
                log.debug("%s: ignored reply %#04x %s", self.name, reply.code, d.hex())
        except PacketError as exc:
            self.bus._protocol_error(f"{self.name}: {exc}", exc.kind)
        except _Offline:
            raise
        except Exception:
            log.exception("%s: callback failed", self.name)

    def _stopped(self) -> None:
        self.state = "offline"
        self._sc = None
        while self._pending:
            item = self._pending.popleft()
            if not item.done.done():
                item.done.set_exception(OsdpCommandError(f"{self.name}: the bus stopped"))

    def _go_online(self, state: ReaderState) -> None:
        self.state = state
        self._failures = 0
        self._fault.clear("online, secure channel" if state == "secure" else "online, in clear")
        if self.on_online is not None:
            self.on_online()

    def _go_offline(self, cause: str) -> None:
        was = self.state
        self.state = "offline"
        self._sc = None
        self._fault.set(cause)
        self._next_try = time.monotonic() + backoff_s(
            self._failures, self.bus.config.retry_max_ms / 1000
        )
        self._failures += 1
        while self._pending:
            item = self._pending.popleft()
            if not item.done.done():
                item.done.set_exception(OsdpCommandError(f"{self.name}: offline ({cause})"))
        if was != "offline" and self.on_offline is not None:
            self.on_offline()


# --- the bus -----------------------------------------------------------------------------------


class OsdpBus:
    """One serial port, its readers, and the task that polls them."""

    def __init__(self, config: OsdpBusConfig, name: str = "osdp") -> None:
        self.config = config
        self.name = name
        self.readers: dict[int, OsdpReader] = {}
        self.frames: deque[tuple[float, str, bytes]] = deque(maxlen=config.frame_log)
        self._fault = FaultLog(name)
        self._serial: Any = None
        self._fd: int | None = None
        self._splitter = FrameSplitter()
        # Frames (or the port's error) read and not yet taken, and the one waiter:
        # a plain future, so a reply wakes the exchange in the same loop turn.
        self._rx: deque[bytes | OSError] = deque()
        self._rx_waiter: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_io = 0.0
        self._port_failures = 0
        self.last_rx_ns = 0  # when the last whole frame was read (CLOCK_MONOTONIC)
        # Frames refused, by cause (see PROTOCOL_ERRORS): what a bus analyser would count.
        self.counters: Counter[str] = Counter()

    @property
    def fault(self) -> str | None:
        return self._fault.fault

    def add_reader(self, config: OsdpReaderConfig, key: bytes | None = None) -> OsdpReader:
        if config.address in self.readers:
            raise ValueError(f"{self.name}: two readers at address {config.address}")
        if key is not None and len(key) != 16:
            raise ValueError(f"{self.name}/pd{config.address}: an SCBK has 16 bytes")
        if key == SCBK_D and not config.install_mode:
            # SCBK-D is public (Annex D.8): a reader still on it is not secured.
            raise ValueError(
                f"{self.name}/pd{config.address}: the key file holds the default key "
                "SCBK-D, which is for install mode only; provision a key of its own "
                "(install_mode = true, then edgectl osdp install-key)"
            )
        reader = OsdpReader(self, config, key)
        self.readers[config.address] = reader
        return reader

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"osdp[{self.name}].poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._close_port()
        for reader in self.readers.values():
            reader._stopped()

    def recent_frames(self) -> list[str]:
        """The ring buffer, oldest first: `+12.345 tx 53 01 ...`."""
        if not self.frames:
            return []
        t0 = self.frames[0][0]
        return [f"+{t - t0:.3f} {way} {data.hex(' ')}" for t, way, data in self.frames]

    # --- internals ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._fd is None:
                problem = self._open_port()
                if problem is not None:
                    self._fault.set(problem)
                    for reader in self.readers.values():
                        if reader.state != "offline" or reader.fault != problem:
                            reader._go_offline(problem)
                    delay = backoff_s(self._port_failures, self.config.retry_max_ms / 1000)
                    self._port_failures += 1
                    await asyncio.sleep(delay)
                    continue
                self._port_failures = 0
                self._fault.clear("port open")
            did_any = False
            readers = list(self.readers.values())
            # One connection attempt per pass, the longest overdue first: each one
            # that goes unanswered holds the bus for a reply timeout, and a live
            # reader must be polled before its PD gives up on the session (libosdp
            # drops it after well under a second of silence).
            attempt = min(
                (r for r in readers if r.state == "offline" and r.due),
                key=lambda r: r._next_try,
                default=None,
            )
            try:
                for reader in readers:
                    if reader.due and (reader.state != "offline" or reader is attempt):
                        did_any = True
                        await self._guarded_turn(reader)
            except OSError as exc:
                self._port_lost(exc)
                continue
            if not did_any:
                now = time.monotonic()
                wait = min((r._next_try - now for r in self.readers.values()), default=1.0)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.001, min(wait, 1.0)))

    async def _guarded_turn(self, reader: OsdpReader) -> None:
        """A reader's turn; a bug in it takes that reader offline, never the poll task."""
        try:
            await reader._turn()
        except (OSError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("%s: internal error", reader.name)
            reader._go_offline(f"internal error: {exc!r}")

    def _open_port(self) -> str | None:
        try:
            port = serial.Serial(self.config.port, self.config.baudrate, timeout=0, write_timeout=1)
        except (OSError, serial.SerialException) as exc:
            errno = getattr(exc, "errno", None)
            return f"serial port {self.config.port}: {os.strerror(errno) if errno else exc}"
        self._serial = port
        self._fd = port.fileno()
        self._splitter.clear()
        self._rx.clear()  # nothing from the previous port counts
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return None

    def _close_port(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _port_lost(self, exc: OSError) -> None:
        problem = f"serial port {self.config.port}: {exc.strerror or exc}"
        self._close_port()
        self._fault.set(problem)
        for reader in self.readers.values():
            reader._go_offline(problem)

    def _readable(self) -> None:
        assert self._fd is not None
        error: OSError | None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data = b""
            error = exc
        else:
            error = None
            if not data:
                # Readable yet empty is a hang-up, unless the bytes were taken by the
                # exchange's last look at the port after this callback was queued.
                if not select.select([self._fd], [], [], 0)[0]:
                    return
                error = OSError("hung up")
        if error is not None:
            # Unplugged (EIO, or end of file on a hung-up line): stop watching,
            # and let the poll task close the port and retry.
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._push(error)
            return
        self._last_io = time.monotonic()
        self._received(data)

    def _received(self, data: bytes) -> None:
        """Bytes read from the port: whole frames are queued, broken ones reported."""
        for item in self._splitter.feed(data):
            if isinstance(item, PacketError):
                self._protocol_error(str(item), item.kind)
            else:
                self.last_rx_ns = time.monotonic_ns()
                self.frames.append((time.monotonic(), "rx", item))
                self._push(item)

    async def _transact(self, reader: OsdpReader, frame: bytes) -> Packet | None:
        """Send a frame and wait for the addressed reader's reply (None: timeout)."""
        async with self._lock:
            if self._serial is None:
                raise OSError(f"{self.config.port} is closed")
            # At least two character times of idle line before we drive it (5.7), so
            # the last sender's transceiver has turned around.
            idle_s = max(self.config.interframe_gap_ms / 1000, 20 / self.config.baudrate)
            gap = self._last_io + idle_s - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            while self._rx:  # a late reply to an earlier command: absent (5.7)
                stale = self._rx.popleft()
                if isinstance(stale, OSError):
                    raise stale
                self.counters["late"] += 1
                log.debug("%s: late frame dropped: %s", self.name, stale.hex(" "))
            self._splitter.clear()
            self.frames.append((time.monotonic(), "tx", frame))
            self._serial.write(frame)
            self._last_io = time.monotonic()
            # The timeout runs from the command's last byte on the wire, and a reply
            # takes its own wire time: at 9600 baud 60 bytes are 62 ms each way.
            wire_s = (len(frame) + REPLY_ALLOWANCE_BYTES) * 10 / self.config.baudrate
            deadline = self._last_io + wire_s + self.config.reply_timeout_ms / 1000
            missing = 0
            while True:
                remaining = deadline - time.monotonic()
                item = await self._next(remaining) if remaining > 0 else None
                if item is None:
                    # Before calling the reply absent, take what the port already
                    # holds: a busy loop may not yet have read a reply that came in
                    # time, and only the wire's timing counts (5.7).
                    if self._fd is not None and select.select([self._fd], [], [], 0)[0]:
                        self._readable()
                    if not self._rx:
                        # The 200 ms run to a reply's first byte (5.7); a long reply
                        # that has begun gets its wire time, while bytes keep coming
                        # within the 20 ms inter-character timeout (5.8).
                        now_missing = self._splitter.missing()
                        if not now_missing or now_missing == missing:
                            return None
                        missing = now_missing
                        deadline = time.monotonic() + missing * 10 / self.config.baudrate + 0.02
                        continue
                    item = self._rx.popleft()
                if isinstance(item, OSError):
                    raise item
                try:
                    packet = decode_packet(item)
                except PacketError as exc:
                    self._protocol_error(f"{reader.name}: {exc}", exc.kind)
                    continue
                if not packet.reply or packet.address != reader.address:
                    self.counters["foreign"] += 1
                    log.debug("%s: ignored frame %s", self.name, item.hex(" "))
                    continue
                if item == reader._last_reply:
                    # The previous command's reply again: it came late, after we had
                    # resent the command, and the PD answered the resend by repeating
                    # it (5.9). Not this command's answer, and no reason to end the
                    # session; a fresh reply never repeats the last one byte for byte
                    # (its SQN differs, and in the secure channel its MAC).
                    self.counters["late"] += 1
                    log.debug("%s: repeated reply dropped: %s", self.name, item.hex(" "))
                    continue
                return packet

    def _push(self, item: bytes | OSError) -> None:
        self._rx.append(item)
        waiter = self._rx_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self, seconds: float) -> bytes | OSError | None:
        """The next frame read (or the port's error); None after `seconds`."""
        if not self._rx:
            waiter = self._rx_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(seconds):
                    await waiter
            except TimeoutError:
                return None
            finally:
                self._rx_waiter = None
        return self._rx.popleft()

    def _protocol_error(self, what: str, kind: str = "malformed") -> None:
        self.counters[kind] += 1
        log.warning(
            "%s: protocol error: %s; recent frames:\n%s",
            self.name,
            what,
            "\n".join(self.recent_frames()),
        )
