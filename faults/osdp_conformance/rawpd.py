"""A peripheral device written by hand, for the replies libosdp never sends.

libosdp is a well-behaved PD: it cannot be told to send a bad CRC, a wrong
sequence number, a forged MAC, a clear-text card inside a secure session, a
reply from another address or a frame over the size limit. `RawPd` answers on
the far end of a serial line (a `SerialLink` end) from our own codec and
secure channel, played from the PD's side; a `hook` picks, command by command,
what goes on the wire instead of the default answer.

`repeat_replies` makes it answer a command received twice, byte for byte, with
the reply it sent the first time (5.9), which libosdp's PD does only since
its commit 71556a6 (April 2026), not in a release yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import termios
import tty
from collections import deque
from collections.abc import Callable

from drivers.osdp import (
    SCBK_D,
    Cmd,
    FrameSplitter,
    Packet,
    PacketError,
    Reply,
    Scs,
    SecureChannel,
    client_cryptogram,
    decode_packet,
    encode_packet,
    initial_rmac,
    server_cryptogram,
    session_keys,
)

# A hook returns the bytes to send, b"" to stay silent, or None for the default answer.
Hook = Callable[["RawPd", Packet], bytes | None]


class RawPd:
    """One PD at `address`; `key` makes it require the secure channel with that SCBK."""

    def __init__(
        self,
        path: str,
        address: int = 1,
        key: bytes | None = None,
        *,
        delay_s: float = 0.0,
        turnaround_s: float = 0.0,
        use_crc: bool = True,
        repeat_replies: bool = False,
        hook: Hook | None = None,
    ) -> None:
        self.path = path
        self.address = address
        self.key = key
        self.delay_s = delay_s
        self.turnaround_s = turnaround_s  # at least this long between two replies
        self.use_crc = use_crc
        self.repeat_replies = repeat_replies
        self.hook = hook
        self.commands: list[Packet] = []  # every command addressed to us, as received
        self.cards: deque[tuple[int, int]] = deque()  # (bits, bit count) for the next polls
        self.sc: SecureChannel | None = None
        self.sessions = 0  # secure sessions established
        self._rnd: tuple[bytes, bytes, bytes] | None = None  # rnd_a, rnd_b, scbk in use
        self._last: tuple[bytes, bytes] = (b"", b"")  # the last command answered, its reply
        self._free_at = 0.0  # when the line is free for the next reply (loop time)
        self._splitter = FrameSplitter()
        self._fd = -1

    async def __aenter__(self) -> RawPd:
        self._fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd, termios.TCSANOW)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    def stall(self, seconds: float) -> None:
        """Stop reading the line for `seconds`, as a PD busy elsewhere: the commands
        sent meanwhile wait in the line's buffer and are then answered in order."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)

        def resume() -> None:
            if self._fd >= 0:
                loop.add_reader(self._fd, self._readable)

        loop.call_later(seconds, resume)

    def present_card(self, bits: int, bit_count: int) -> None:
        self.cards.append((bits, bit_count))

    def codes(self) -> list[int]:
        return [c.code for c in self.commands]

    # --- building replies ---------------------------------------------------------------

    def reply(
        self,
        cmd: Packet,
        code: int,
        data: bytes = b"",
        *,
        sqn: int | None = None,
        address: int | None = None,
        reply_bit: bool = True,
        use_crc: bool | None = None,
        secure: bool | None = None,
        scb: bytes | None = None,
        bad_mac: bool = False,
    ) -> bytes:
        """A reply frame: by default in the session when the command came in one."""
        sc = self.sc
        in_session = cmd.scb is not None and cmd.scb[1] >= Scs.CMD_MAC
        if secure is None:
            secure = sc is not None and in_session
        mac: Callable[[bytes], bytes] | None = None
        if secure:
            assert sc is not None, "no session to reply in"
            scb = bytes([2, Scs.REPLY_ENC if data else Scs.REPLY_MAC])
            data = sc.encrypt(data, command=False) if data else b""

            def mac(message: bytes) -> bytes:
                assert sc is not None
                value = sc.mac(message, command=False)
                return bytes([value[0] ^ 0xFF]) + value[1:] if bad_mac else value

        return encode_packet(
            self.address if address is None else address,
            code,
            data,
            cmd.sqn if sqn is None else sqn,
            reply=reply_bit,
            scb=scb,
            mac=mac,
            use_crc=self.use_crc if use_crc is None else use_crc,
        )

    def card_data(self, bits: int, bit_count: int) -> bytes:
        n = (bit_count + 7) // 8
        raw = (bits << (n * 8 - bit_count)).to_bytes(n, "big")
        return bytes([0, 1]) + bit_count.to_bytes(2, "little") + raw

    # --- the default behaviour -----------------------------------------------------------

    def check(self, cmd: Packet) -> Packet | bytes:
        """The command with its MAC checked and its data decrypted, or the NAK to send.

        Run before any hook, so the MAC chain stays in step whatever the hook answers.
        """
        scs = cmd.scb[1] if cmd.scb is not None else None
        if scs is not None and scs >= Scs.CMD_MAC:
            sc = self.sc
            if sc is None or cmd.mac is None:
                return self.reply(cmd, Reply.NAK, b"\x06", secure=False)
            if sc.mac(cmd.authenticated, command=True)[:4] != cmd.mac:
                self.sc = None  # a forged or broken command ends the session (Annex D)
                return self.reply(cmd, Reply.NAK, b"\x06", secure=False)
            if scs == Scs.CMD_ENC and cmd.data:
                try:
                    plain = sc.decrypt(cmd.data, command=True)
                except PacketError:
                    self.sc = None
                    return self.reply(cmd, Reply.NAK, b"\x06", secure=False)
                return dataclasses.replace(cmd, data=plain)
        elif scs is None and self.key is not None and cmd.code not in (Cmd.ID, Cmd.CAP):
            # Verified 050-09-18: nothing but ID, CAP (and the handshake) in clear.
            return self.reply(cmd, Reply.NAK, b"\x06")
        return cmd

    def answer(self, cmd: Packet) -> bytes:
        """What a correct PD answers to a checked command (the hook's fallback)."""
        scs = cmd.scb[1] if cmd.scb is not None else None
        if scs == Scs.CHLNG:
            return self._chlng(cmd)
        if scs == Scs.SCRYPT:
            return self._scrypt(cmd)
        if cmd.code == Cmd.ID:
            return self.reply(cmd, Reply.PDID, bytes(12))
        if cmd.code == Cmd.CAP:
            return self.reply(cmd, Reply.PDCAP, bytes([4, 1, 1, 9, 1 if self.key else 0, 1]))
        if cmd.code == Cmd.POLL and self.cards:
            return self.reply(cmd, Reply.RAW, self.card_data(*self.cards.popleft()))
        return self.reply(cmd, Reply.ACK)

    def _chlng(self, cmd: Packet) -> bytes:
        assert cmd.scb is not None
        if self.key is None:
            return self.reply(cmd, Reply.NAK, b"\x05")
        scbk = SCBK_D if len(cmd.scb) > 2 and cmd.scb[2] == 0 else self.key
        rnd_a, rnd_b = cmd.data[:8], os.urandom(8)
        keys = session_keys(scbk, rnd_a)
        self.sc = None
        self._rnd = (rnd_a, rnd_b, scbk)
        data = bytes(8) + rnd_b + client_cryptogram(keys, rnd_a, rnd_b)
        return self.reply(cmd, Reply.CCRYPT, data, scb=bytes([3, Scs.CCRYPT, cmd.scb[2]]))

    def _scrypt(self, cmd: Packet) -> bytes:
        assert cmd.scb is not None
        if self._rnd is None:
            return self.reply(cmd, Reply.NAK, b"\x06")
        rnd_a, rnd_b, scbk = self._rnd
        keys = session_keys(scbk, rnd_a)
        server = server_cryptogram(keys, rnd_a, rnd_b)
        if cmd.data[:16] != server:
            return self.reply(cmd, Reply.NAK, b"\x06")
        rmac = initial_rmac(keys, server)
        self.sc = SecureChannel(keys, rmac)
        self.sessions += 1
        return self.reply(cmd, Reply.RMAC_I, rmac, scb=bytes([3, Scs.RMAC_I, 0x01]))

    # --- the line -----------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        for frame in self._splitter.feed(data):
            if not isinstance(frame, bytes):
                continue
            cmd = decode_packet(frame)
            if cmd.reply or cmd.address not in (self.address, 0x7F):
                continue
            self.commands.append(cmd)
            if self.repeat_replies and frame == self._last[0]:
                self._send(self._last[1])  # a resend: the same reply, MAC chain untouched
                continue
            checked = self.check(cmd)
            if isinstance(checked, bytes):
                out: bytes | None = checked
            else:
                out = self.hook(self, checked) if self.hook is not None else None
                if out is None:
                    out = self.answer(checked)
            if out:
                self._last = (frame, out)
                self._send(out)

    def _send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now + self.delay_s, self._free_at)
        self._free_at = at + self.turnaround_s
        if at > now:
            loop.call_later(at - now, self._write, frame)
        else:
            self._write(frame)

    def _write(self, frame: bytes) -> None:
        with contextlib.suppress(OSError):  # a line gone: the CP hears nothing, as on a cut cable
            os.write(self._fd, frame)
