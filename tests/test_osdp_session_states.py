"""The OSDP session of our control panel as a stateful system (hypothesis).

The CP is the gateway's own `OsdpReader` (connect, handshake, MAC chain,
encryption, KEYSET, going offline); the peripheral is a model written here
from the spec (SIA OSDP 2.2, Annex D) out of the codec's primitives, behind
the bus's one seam, `OsdpBus._transact` (a frame in, a reply or silence out).
libosdp on a pty is what tests/test_osdp.py uses; here the PD must misbehave
on command (tampered MACs, lost replies, restarts), step by step.

Invariants: the CP is secure only in a session the PD holds too, under the
key the PD holds; a reply whose MAC the chain does not expect is never
accepted (the session ends); after a failure there is no session until a new
handshake; data sent encrypted arrives as sent; no command goes in clear
while the reader is secure.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from drivers.osdp import (
    SCBK_D,
    Cmd,
    OsdpBus,
    OsdpBusConfig,
    OsdpReader,
    OsdpReaderConfig,
    Packet,
    Reply,
    Scs,
    SecureChannel,
    _Pending,
    client_cryptogram,
    decode_packet,
    encode_packet,
    initial_rmac,
    server_cryptogram,
    session_keys,
)
from tests.props import state_settings

KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))


class PeripheralModel:
    """A PD at address 1: answers one frame at a time, as the spec says."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.sc: SecureChannel | None = None
        self._pending_keys: Any = None  # (keys, rnd_a, rnd_b) between CHLNG and SCRYPT
        self.online = True
        self.tamper_next_reply = False
        self.lose_next_reply = False
        self.received: list[tuple[int, bytes]] = []  # secured commands accepted, decrypted
        self.plaintext_while_secure: list[int] = []

    def restart(self) -> None:
        self.sc = None
        self._pending_keys = None

    def answer(self, frame: bytes) -> Packet | None:
        if not self.online:
            return None
        cmd = decode_packet(frame.lstrip(b"\xff"))
        reply = self._handle(cmd)
        if reply is None:
            return None
        if self.lose_next_reply:
            self.lose_next_reply = False
            return None
        return decode_packet(reply.lstrip(b"\xff"))

    def _reply(
        self, cmd: Packet, code: int, data: bytes = b"", *, plain_scb: bytes | None = None
    ) -> bytes:
        sc = self.sc
        if sc is None or plain_scb is not None:
            return encode_packet(1, code, data, cmd.sqn, reply=True, scb=plain_scb)
        enc = bool(data)
        payload = sc.encrypt(data, command=False) if enc else b""
        scb = bytes([2, Scs.REPLY_ENC if enc else Scs.REPLY_MAC])

        def mac(m: bytes) -> bytes:
            full = sc.mac(m, command=False)
            if self.tamper_next_reply:
                self.tamper_next_reply = False
                return bytes([full[0] ^ 0x01]) + full[1:]
            return full

        return encode_packet(1, code, payload, cmd.sqn, reply=True, scb=scb, mac=mac)

    def _handle(self, cmd: Packet) -> bytes | None:
        if cmd.sqn == 0:
            self.sc = None  # sequence 0: the CP starts afresh
        scs = cmd.scb[1] if cmd.scb else None
        if cmd.code == Cmd.CHLNG and scs == Scs.CHLNG:
            key = SCBK_D if cmd.scb is not None and cmd.scb[2] == 0 else self.key
            rnd_a, rnd_b = cmd.data[:8], os.urandom(8)
            keys = session_keys(key, rnd_a)
            self._pending_keys = (keys, rnd_a, rnd_b)
            data = b"\x00" * 8 + rnd_b + client_cryptogram(keys, rnd_a, rnd_b)
            return self._reply(cmd, Reply.CCRYPT, data, plain_scb=bytes([3, Scs.CCRYPT, 1]))
        if cmd.code == Cmd.SCRYPT and scs == Scs.SCRYPT:
            if self._pending_keys is None:
                return self._reply(cmd, Reply.NAK, b"\x06", plain_scb=None)
            keys, rnd_a, rnd_b = self._pending_keys
            self._pending_keys = None
            if not hmac.compare_digest(cmd.data[:16], server_cryptogram(keys, rnd_a, rnd_b)):
                return self._reply(cmd, Reply.NAK, b"\x06")
            rmac = initial_rmac(keys, cmd.data[:16])
            self.sc = SecureChannel(keys, rmac)
            return self._reply(cmd, Reply.RMAC_I, rmac, plain_scb=bytes([3, Scs.RMAC_I, 1]))
        if scs in (Scs.CMD_MAC, Scs.CMD_ENC):
            sc = self.sc
            if sc is None or cmd.mac is None:
                return self._reply(cmd, Reply.NAK, b"\x06")
            if not hmac.compare_digest(sc.mac(cmd.authenticated, command=True)[:4], cmd.mac):
                self.sc = None  # a MAC mismatch ends the session: NAK in clear
                return self._reply(cmd, Reply.NAK, b"\x06")
            data = sc.decrypt(cmd.data, command=True) if scs == Scs.CMD_ENC else cmd.data
            self.received.append((cmd.code, data))
            if cmd.code == Cmd.KEYSET:
                ack = self._reply(cmd, Reply.ACK)
                self.key = data[2:18]
                self.sc = None  # the new key takes effect for the next session
                return ack
            return self._reply(cmd, Reply.ACK)
        # In clear.
        if self.sc is not None:
            self.plaintext_while_secure.append(cmd.code)
            self.sc = None
            return self._reply(cmd, Reply.NAK, b"\x06")
        if cmd.code == Cmd.ID:
            return self._reply(cmd, Reply.PDID, bytes(12))
        if cmd.code == Cmd.CAP:
            return self._reply(cmd, Reply.PDCAP, bytes([9, 1, 0]))
        return self._reply(cmd, Reply.ACK)


class ModelBus(OsdpBus):
    """An `OsdpBus` whose wire is the peripheral model."""

    pd: PeripheralModel

    async def _transact(self, reader: OsdpReader, frame: bytes) -> Packet | None:
        return self.pd.answer(frame)


class Session(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.bus = ModelBus(OsdpBusConfig(type="osdp", port="/dev/null"), "bus1")
        self.bus.pd = self.pd = PeripheralModel(KEY_A)
        self.reader = self.bus.add_reader(
            OsdpReaderConfig(type="osdp", address=1, key="pd1"), KEY_A
        )
        self.cp_key = KEY_A  # the key the gateway stores for the reader
        self.failed_since_handshake = False
        self.sent: list[bytes] = []

    def turn(self) -> None:
        self.loop.run_until_complete(self.reader._turn())
        # Right after an exchange the CP's idea of the session is the PD's (between
        # turns the PD may drop it unannounced: a restart, another reader).
        r = self.reader
        if r.state == "secure":
            assert r._sc is not None
            assert self.pd.sc is not None, "secure without the PD"
            assert r.key == self.pd.key, "secure with a key the PD does not hold"
            assert r._sc.keys == self.pd.sc.keys
            assert r._sc.c_mac == self.pd.sc.c_mac
            assert r._sc.r_mac == self.pd.sc.r_mac

    # --- rules -----------------------------------------------------------------------

    @rule()
    def poll(self) -> None:
        was_secure = self.reader.state == "secure"
        accepted_before = len(self.pd.received)
        self.turn()
        if was_secure and self.reader.state == "secure":
            assert len(self.pd.received) > accepted_before  # the poll went secured

    @rule(data=st.binary(min_size=1, max_size=40))
    def command(self, data: bytes) -> None:
        if self.reader.state != "secure":
            return
        done: asyncio.Future[Packet] = self.loop.create_future()
        self.reader._pending.append(_Pending(Cmd.TEXT, data, done))
        before = len(self.pd.received)
        self.turn()
        if self.reader.state == "secure" or (done.done() and not done.exception()):
            # Whatever the PD accepted is what was sent, decrypted intact.
            assert self.pd.received[before] == (Cmd.TEXT, data)
        if done.done() and done.exception() is not None:
            done.exception()  # retrieved: the reader went offline

    @rule()
    def reply_mac_tampered(self) -> None:
        self.pd.tamper_next_reply = True
        was_secure = self.reader.state == "secure"
        self.turn()
        if was_secure:
            assert self.reader.state == "offline", "a reply with a bad MAC was accepted"
            assert self.reader._sc is None
        self.pd.tamper_next_reply = False

    @rule()
    def reply_lost(self) -> None:
        self.pd.lose_next_reply = True
        self.turn()
        self.pd.lose_next_reply = False

    @rule(online=st.booleans())
    def pd_power(self, online: bool) -> None:
        self.pd.online = online

    @rule()
    def pd_restarts(self) -> None:
        self.pd.restart()

    @rule()
    def key_change(self) -> None:
        if self.reader.state != "secure":
            return
        new = KEY_B if self.cp_key == KEY_A else KEY_A
        done: asyncio.Future[Packet] = self.loop.create_future()
        self.reader._pending.append(_Pending(Cmd.KEYSET, bytes([1, 16]) + new, done))
        self.turn()
        if self.pd.key == new:
            self.cp_key = new
        if done.done() and done.exception() is not None:
            done.exception()

    @rule()
    def pd_reset_to_other_key(self) -> None:
        """The reader is swapped for one holding another key: no session may follow."""
        self.pd.key = os.urandom(16)
        self.pd.restart()

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def no_session_while_offline(self) -> None:
        r = self.reader
        assert (r.state == "secure") == (r._sc is not None), (r.state, r._sc)

    @invariant()
    def no_clear_command_in_a_session(self) -> None:
        assert not self.pd.plaintext_while_secure or self.reader.state != "secure"

    def teardown(self) -> None:
        self.reader._stopped()
        self.loop.close()


def test_osdp_session_states() -> None:
    Session.TestCase.settings = state_settings("fast")
    Session.TestCase().runTest()
