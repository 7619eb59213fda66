"""The OSDP secure channel, both directions. The harness is the reader (PD): it
reads every command the control panel sends as a PD does (`decode_packet`, the
command MAC checked and the data decrypted with a PD-side `SecureChannel`),
and answers as the input says: correctly (the client cryptogram, the initial
R-MAC, replies MACed and encrypted with the session keys), with one byte of
the MAC, cryptogram or ciphertext flipped, with raw bytes, or not at all. The
control panel (`drivers.osdp.OsdpReader`) runs its handshake, MAC chain and
decryption on those answers; it refuses by going offline, never by an
exception. A PD-side check of the CP's own commands failing is a finding.

Input: steps of [how, code, length, data...], one per command: how % 4 = 0 right,
1 one byte flipped (at data[0]), 2 the data as raw bytes on the line, 3 no
answer. A repeated command gets the last reply again, as from a real PD."""

from __future__ import annotations

import hmac

from drivers.osdp import (
    Cmd,
    Packet,
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
from faults.fuzz.harness import Finding, Harness
from faults.fuzz.harnesses._osdp import ADDRESS, reader_on_line, turns

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # a test key, not a secret


class _Pd:
    """The reader's side of the line, scripted by the input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.rnd_a = b""
        self.rnd_b = b""
        self.sc: SecureChannel | None = None
        self.last_command = b""
        self.last_reply = b""

    def _step(self) -> tuple[int, int, bytes] | None:
        if self.at + 3 > len(self.data):
            return None
        how, code, n = self.data[self.at : self.at + 3]
        body = self.data[self.at + 3 : self.at + 3 + n]
        self.at += 3 + n
        return how % 4, code, body

    def answer(self, frame: bytes) -> bytes | None:
        step = self._step()
        if frame == self.last_command:
            # A repeated command (its reply was lost): a PD sends its last reply
            # again without processing the command a second time (the MAC chain
            # has moved on).
            reply = self.last_reply
        else:
            cmd = decode_packet(frame[1:])  # the CP sends the mark byte first
            plain = self._read_command(cmd)
            if step is None:
                return None
            reply = self._reply(cmd, plain, step[1], step[2])
            self.last_command, self.last_reply = frame, reply
        if step is None or step[0] == 3:
            return None
        how, _, body = step
        if how == 2:
            return body
        if how == 1 and reply:
            at = 1 + (body[0] if body else 0) % (len(reply) - 1)
            reply = reply[:at] + bytes([reply[at] ^ 0x5A]) + reply[at + 1 :]
        return reply

    def _read_command(self, cmd: Packet) -> bytes:
        """What a PD makes of the CP's command; the CP must always get this right."""
        if cmd.scb is None or cmd.scb[1] < Scs.CMD_MAC:
            return cmd.data
        if self.sc is None:
            raise Finding(f"the CP sent a secure command {cmd.code:#04x} without a session")
        mac = self.sc.mac(cmd.authenticated, command=True)[:4]
        if cmd.mac is None or not hmac.compare_digest(mac, cmd.mac):
            raise Finding(f"the CP's MAC on command {cmd.code:#04x} does not verify")
        if cmd.scb[1] == Scs.CMD_ENC:
            return self.sc.decrypt(cmd.data, command=True)
        return cmd.data

    def _reply(self, cmd: Packet, plain: bytes, code: int, body: bytes) -> bytes:
        if cmd.code == Cmd.CHLNG:
            self.rnd_a, self.rnd_b, self.sc = plain[:8], (body + bytes(8))[:8], None
            keys = session_keys(KEY, self.rnd_a)
            crypt = client_cryptogram(keys, self.rnd_a, self.rnd_b)
            return encode_packet(
                ADDRESS,
                Reply.CCRYPT,
                bytes(8) + self.rnd_b + crypt,
                cmd.sqn,
                reply=True,
                scb=bytes([3, Scs.CCRYPT, 1]),
                mark=False,
            )
        if cmd.code == Cmd.SCRYPT:
            keys = session_keys(KEY, self.rnd_a)
            if plain != server_cryptogram(keys, self.rnd_a, self.rnd_b):
                raise Finding("the CP's server cryptogram does not verify")
            rmac = initial_rmac(keys, plain)
            self.sc = SecureChannel(keys, rmac)
            status = 0x01 if not body or body[0] & 1 else 0xFF
            return encode_packet(
                ADDRESS,
                Reply.RMAC_I,
                rmac,
                cmd.sqn,
                reply=True,
                scb=bytes([3, Scs.RMAC_I, status]),
                mark=False,
            )
        if self.sc is None or (cmd.code in (Cmd.ID, Cmd.CAP) and cmd.scb is None):
            return encode_packet(ADDRESS, code, body, cmd.sqn, reply=True, mark=False)
        sc = self.sc
        payload = sc.encrypt(body, command=False) if body else b""
        return encode_packet(
            ADDRESS,
            code,
            payload,
            cmd.sqn,
            reply=True,
            scb=bytes([2, Scs.REPLY_ENC if body else Scs.REPLY_MAC]),
            mac=lambda m: sc.mac(m, command=False),
            mark=False,
        )


def run(data: bytes) -> None:
    pd = _Pd(data)
    reader = reader_on_line(pd.answer, secure=True, key=KEY)
    turns(reader, 8)


HARNESS = Harness("osdp_secure", run, (), max_len=1024)
