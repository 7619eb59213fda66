"""Who may use the web pages: console accounts, their sessions, and paired panels.

Console accounts live in the gateway's database with an argon2id hash
(argon2-cffi, RFC 9106's second recommended profile: 3 passes over 64 MiB),
made and checked in a worker thread so the loop keeps deciding doors. A wrong
password counts against the account (locked for `lockout_minutes` after
`lockout_after` in a row, kept across restarts) and against the client's
address (`login_per_minute`, then 429). An unknown name costs the same hash
check as a known one.

Sessions are random tokens held in memory only (a restart logs everyone
out), sent in an HttpOnly, SameSite=Strict cookie (Secure over TLS), with a
CSRF token that every state-changing request repeats in a header.

Panels and the reception screen pair once: `edgectl panel pair <room>` makes a
one-time code (only its hash is stored, good for `pairing_minutes`); the
tablet trades it for a token scoped to that room (only its hash is stored).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

from edge.config import WebConfig
from edge.site.recorder import Recorder
from edge.site.state import Actor, GatewayError
from edge.timeutil import iso_instant

log = logging.getLogger("edge.web")

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RECEPTION = "reception"  # the pseudo-room a reception screen pairs to

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
# Unambiguous characters for codes typed on a touch screen (no 0/O, 1/I/L).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8

_hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


class AuthError(Exception):
    """A refused login or token: `status` is the HTTP answer (401, 403, 429)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    created: float
    seen: float

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass
class Pairing:
    id: str
    room: str
    created: str
    paired_at: str | None
    revoked: str | None
    code_expires: float | None = None
    token_hash: str | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        if self.revoked:
            state = "revoked"
        elif self.paired_at:
            state = "paired"
        elif self.code_expires is not None and self.code_expires < time.time():
            state = "expired"
        else:
            state = "waiting for the code"
        return {
            "id": self.id,
            "room": self.room,
            "state": state,
            "created": self.created,
            "paired_at": self.paired_at,
            "revoked": self.revoked,
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_code(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = hash_password("not a password of anyone here")


class Accounts:
    def __init__(
        self, recorder: Recorder, config: WebConfig, rooms: Callable[[], Collection[str]]
    ) -> None:
        self.recorder = recorder
        self.store = recorder.store
        self.config = config
        self.rooms = rooms  # the rooms a panel may pair to
        self.sessions: dict[str, Session] = {}
        self.pairings: dict[str, Pairing] = {}
        self._attempts: dict[str, deque[float]] = {}
        self.on_revoke: list[Callable[[str], None]] = []  # close the pairing's sockets

    async def start(self) -> None:
        rows = await self.store.fetchall(
            "SELECT id, room, created, paired_at, revoked, code_expires, token_hash "
            "FROM panel_pairings"
        )
        self.pairings = {r[0]: Pairing(*r) for r in rows}

    # --- console accounts ------------------------------------------------------------

    async def users(self) -> list[dict[str, Any]]:
        rows = await self.store.fetchall(
            "SELECT name, role, created, failures, locked_until FROM web_users ORDER BY name"
        )
        now = time.time()
        return [
            {
                "name": n,
                "role": r,
                "created": c,
                "failures": f,
                "locked": lu > now,
                "sessions": sum(1 for s in self.sessions.values() if s.user == n),
            }
            for n, r, c, f, lu in rows
        ]

    async def add_user(self, name: str, role: str, password: str, actor: Actor) -> dict[str, Any]:
        _check_name(name)
        _check_role(role)
        _check_password(password)
        if await self.store.fetchone("SELECT 1 FROM web_users WHERE name = ?", (name,)):
            raise GatewayError("exists", f"a console user {name!r} exists already")
        digest = await asyncio.to_thread(hash_password, password)
        await self.store.write(
            [
                (
                    "INSERT INTO web_users (name, role, hash, created) VALUES (?,?,?,?)",
                    (name, role, digest, iso_instant(time.time())),
                )
            ]
        )
        log.info("web: console user %s added with role %s by %s", name, role, actor.name)
        return {"name": name, "role": role}

    async def set_password(self, name: str, password: str, actor: Actor) -> dict[str, Any]:
        await self._user_row(name)
        _check_password(password)
        digest = await asyncio.to_thread(hash_password, password)
        await self.store.write(
            [
                (
                    "UPDATE web_users SET hash = ?, failures = 0, locked_until = 0 WHERE name = ?",
                    (digest, name),
                )
            ]
        )
        ended = self._end_sessions(name)
        log.info("web: password of %s changed by %s (%d sessions ended)", name, actor.name, ended)
        return {"name": name, "sessions_ended": ended}

    async def set_role(self, name: str, role: str, actor: Actor) -> dict[str, Any]:
        await self._user_row(name)
        _check_role(role)
        await self.store.write([("UPDATE web_users SET role = ? WHERE name = ?", (role, name))])
        for s in self.sessions.values():
            if s.user == name:
                s.role = role  # type: ignore[assignment]  # checked above
        log.info("web: role of %s set to %s by %s", name, role, actor.name)
        return {"name": name, "role": role}

    async def remove_user(self, name: str, actor: Actor) -> dict[str, Any]:
        await self._user_row(name)
        await self.store.write([("DELETE FROM web_users WHERE name = ?", (name,))])
        ended = self._end_sessions(name)
        log.info("web: console user %s removed by %s (%d sessions ended)", name, actor.name, ended)
        return {"name": name, "removed": True, "sessions_ended": ended}

    async def _user_row(self, name: str) -> Any:
        _check_name(name)
        row = await self.store.fetchone(
            "SELECT name, role, hash, failures, locked_until FROM web_users WHERE name = ?",
            (name,),
        )
        if row is None:
            raise GatewayError("not_found", f"no console user {name!r}")
        return row

    def _end_sessions(self, name: str) -> int:
        gone = [t for t, s in self.sessions.items() if s.user == name]
        for t in gone:
            del self.sessions[t]
        return len(gone)

    # --- login and sessions ----------------------------------------------------------

    def _rate(self, peer: str, now: float) -> None:
        q = self._attempts.setdefault(peer, deque())
        while q and q[0] < now - 60:
            q.popleft()
        if len(q) >= self.config.login_per_minute:
            retry = int(q[0] + 60 - now) + 1
            raise AuthError(429, f"too many login attempts from {peer}; wait {retry} s", retry)
        q.append(now)
        if len(self._attempts) > 10_000:  # forget idle addresses
            for p in [p for p, d in self._attempts.items() if not d or d[-1] < now - 60]:
                del self._attempts[p]

    async def login(self, name: str, password: str, peer: str) -> Session:
        now = time.time()
        self._rate(peer, now)
        row = None
        if NAME.match(name) and len(password) <= MAX_PASSWORD:
            row = await self.store.fetchone(
                "SELECT role, hash, failures, locked_until FROM web_users WHERE name = ?",
                (name,),
            )
        if row is not None and row[3] > now:
            raise AuthError(
                403,
                f"the account {name!r} is locked after wrong passwords; "
                f"try again in {int(row[3] - now) // 60 + 1} min",
                int(row[3] - now) + 1,
            )
        stored = row[1] if row is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, stored, password[:MAX_PASSWORD])
        if row is None or not ok:
            if row is not None:
                failures = int(row[2]) + 1
                locked = 0.0
                if failures >= self.config.lockout_after:
                    locked = now + 60 * self.config.lockout_minutes
                    failures = 0
                    log.warning(
                        "web: console account %s locked for %d min after %d wrong passwords",
                        name,
                        self.config.lockout_minutes,
                        self.config.lockout_after,
                    )
                await self.store.write(
                    [
                        (
                            "UPDATE web_users SET failures = ?, locked_until = ? WHERE name = ?",
                            (failures, locked, name),
                        )
                    ]
                )
            raise AuthError(401, "wrong user name or password")
        # The check took a while in a thread: a removal or a new password meanwhile wins.
        again = await self.store.fetchone(
            "SELECT role, hash FROM web_users WHERE name = ?", (name,)
        )
        if again is None or again[1] != stored:
            raise AuthError(401, "wrong user name or password")
        if row[2]:
            await self.store.write([("UPDATE web_users SET failures = 0 WHERE name = ?", (name,))])
        session = Session(
            token=secrets.token_urlsafe(32),
            user=name,
            role=again[0],
            csrf=secrets.token_urlsafe(24),
            created=now,
            seen=now,
        )
        self.sessions[session.token] = session
        return session

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self.sessions.get(token)
        if s is None:
            return None
        now = time.time()
        if (
            now - s.seen > 60 * self.config.idle_minutes
            or now - s.created > 3600 * self.config.session_hours
        ):
            del self.sessions[token]
            return None
        s.seen = now
        return s

    def logout(self, token: str) -> None:
        self.sessions.pop(token, None)

    # --- panels -------------------------------------------------------------------

    async def pair(self, room: str, actor: Actor) -> dict[str, Any]:
        rooms = self.rooms()
        if room != RECEPTION and room not in rooms:
            known = ", ".join(sorted(rooms)) or "none"
            raise GatewayError(
                "not_found", f"no room {room!r} on this site (rooms: {known}; or {RECEPTION!r})"
            )
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        pid = secrets.token_hex(4)
        now = time.time()
        expires = now + 60 * self.config.pairing_minutes
        p = Pairing(pid, room, iso_instant(now), None, None, expires)
        await self.store.write(
            [
                (
                    "INSERT INTO panel_pairings (id, room, code_hash, code_expires, created) "
                    "VALUES (?,?,?,?,?)",
                    (pid, room, _digest(code), expires, p.created),
                )
            ]
        )
        self.pairings[pid] = p
        log.info("web: pairing %s made for %s by %s", pid, room, actor.name)
        return {
            "id": pid,
            "room": room,
            "code": f"{code[:4]}-{code[4:]}",
            "expires": iso_instant(expires),
        }

    async def redeem(self, code: str, peer: str) -> tuple[str, Pairing]:
        """Trade a pairing code for the panel's token (once)."""
        now = time.time()
        self._rate(peer, now)
        digest = _digest(normalise_code(code))
        row = await self.store.fetchone(
            "SELECT id FROM panel_pairings WHERE code_hash = ? AND revoked IS NULL "
            "AND code_expires >= ?",
            (digest, now),
        )
        if row is None or row[0] not in self.pairings:
            raise AuthError(401, "unknown or expired pairing code")
        p = self.pairings[row[0]]
        token = secrets.token_urlsafe(32)
        p.token_hash = _digest(token)
        p.paired_at = iso_instant(now)
        p.code_expires = None
        await self.store.write(
            [
                (
                    "UPDATE panel_pairings SET code_hash = NULL, code_expires = NULL, "
                    "token_hash = ?, paired_at = ? WHERE id = ?",
                    (p.token_hash, p.paired_at, p.id),
                )
            ]
        )
        log.info("web: panel for %s paired from %s (pairing %s)", p.room, peer, p.id)
        return token, p

    def panel(self, token: str | None, room: str) -> Pairing:
        """The pairing behind `token`, if it is for `room`; else AuthError."""
        if not token:
            raise AuthError(401, "this screen is not paired (no token)")
        digest = _digest(token)
        for p in self.pairings.values():
            if p.token_hash is not None and hmac.compare_digest(p.token_hash, digest):
                if p.revoked:
                    raise AuthError(401, "this screen's pairing was revoked")
                if p.room != room:
                    raise AuthError(403, f"this screen is paired to {p.room!r}, not {room!r}")
                return p
        raise AuthError(401, "unknown token")

    async def revoke(self, pid: str, actor: Actor) -> dict[str, Any]:
        p = self.pairings.get(pid)
        if p is None:
            raise GatewayError("not_found", f"no pairing {pid!r} (see edgectl panel list)")
        if not p.revoked:
            p.revoked = iso_instant(time.time())
            await self.store.write(
                [
                    (
                        "UPDATE panel_pairings SET revoked = ?, code_hash = NULL WHERE id = ?",
                        (p.revoked, pid),
                    )
                ]
            )
            log.info("web: pairing %s (%s) revoked by %s", pid, p.room, actor.name)
            for close in self.on_revoke:
                close(pid)
        return p.view()

    def pairing_list(self) -> list[dict[str, Any]]:
        return [p.view() for p in sorted(self.pairings.values(), key=lambda p: p.created)]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise GatewayError(
            "bad_request",
            f"user name {name!r}: 1-32 lower-case letters, digits, '.', '-' or '_'",
        )


def _check_role(role: object) -> None:
    if role not in ROLES:
        raise GatewayError("bad_request", f"role {role!r}: one of {', '.join(ROLES)}")


def _check_password(password: object) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise GatewayError(
            "bad_request", f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )
