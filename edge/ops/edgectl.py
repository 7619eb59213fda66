"""`edgectl`: the operator's command line, a client of the admin socket.

Exit status: 0 done (for `decide`: granted), 1 denied or refused, 2 a wrong
command or argument, 3 the gateway cannot be reached or the connection failed
before a whole answer came back, 130 interrupted (Ctrl-C).

Every failure of the admin socket (refused, missing, reset, a broken pipe
while sending, closed mid-answer, an answer that is not JSON, no answer in
time) becomes `Unreachable` inside `Client`, so it can never be mistaken for
an answer: for `present`, 0 means granted and 1 denied.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from edge.site.events import log_line

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
DEFAULT_TIMEOUT = 600.0  # seconds; an import of a large site takes minutes


class Unreachable(Exception):
    pass


class RemoteError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """A blocking client: edgectl runs one command and exits."""

    def __init__(self, path: Path, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise Unreachable(
                f"cannot reach the gateway at {path}: {exc.strerror or exc}"
            ) from None
        self.file = self.sock.makefile("rb")

    def _lost(self, exc: OSError, doing: str) -> Unreachable:
        if isinstance(exc, TimeoutError):
            waited = self.sock.gettimeout()  # a caller may have changed it
            return Unreachable(f"the gateway at {self.path} did not answer in {waited or 0:g} s")
        return Unreachable(
            f"the connection to the gateway at {self.path} failed while {doing}: "
            f"{exc.strerror or exc}"
        )

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(
        self, method: str, params: dict[str, Any] | None = None, payload: Path | None = None
    ) -> int:
        request_id = next(self._ids)
        params = dict(params or {})
        if payload is not None:
            params["payload_bytes"] = payload.stat().st_size
        line = json.dumps({"id": request_id, "method": method, "params": params}) + "\n"
        # A daemon that dies while we send gives BrokenPipeError or ConnectionResetError
        # here; left to main(), a broken pipe would pass for `edgectl events | head`.
        try:
            self.sock.sendall(line.encode())
            if payload is not None:
                with payload.open("rb") as f:
                    self.sock.sendfile(f)
        except OSError as exc:
            if payload is not None and exc.filename is not None:
                raise  # the payload file itself, not the socket
            raise self._lost(exc, "sending") from None
        return request_id

    def receive(self) -> dict[str, Any]:
        try:
            line = self.file.readline()
        except OSError as exc:
            raise self._lost(exc, "reading the answer") from None
        if not line:
            raise Unreachable(f"the gateway at {self.path} closed the connection")
        if not line.endswith(b"\n"):
            raise Unreachable(f"the gateway at {self.path} closed the connection mid-answer")
        try:
            message = json.loads(line)
        except ValueError:  # also UnicodeDecodeError
            message = None
        if not isinstance(message, dict):
            raise Unreachable(
                f"the gateway at {self.path} sent an answer that is not a JSON object: "
                f"{line[:80]!r}"
            )
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, payload: Path | None = None
    ) -> Any:
        self.send(method, params, payload)
        reply = self.receive()
        err = reply.get("error")
        if isinstance(err, dict):
            raise RemoteError(str(err.get("code", "error")), str(err.get("message", "")))
        if "result" not in reply:
            raise Unreachable(f"the gateway at {self.path} sent an answer with no result")
        return reply["result"]


class BadConfig(Exception):
    """The --config file cannot be used; the message lists its problems."""


def _socket_path(args: argparse.Namespace) -> Path:
    if getattr(args, "socket", None):
        return Path(args.socket)
    if getattr(args, "config", None):
        # Imported here: the config pulls in the drivers, which edgectl otherwise never needs.
        from edge.config import ConfigError, load_config

        try:
            config = load_config(Path(args.config))
        except ConfigError as exc:
            raise BadConfig("\n".join(exc.problems)) from None
        return config.admin_socket(
            config.state_dir(getattr(args, "state_dir", None) and Path(args.state_dir))
        )
    state_dir = getattr(args, "state_dir", None) or os.environ.get("EDGE_STATE_DIR")
    return Path(state_dir or "/var/lib/edge-gateway") / "admin.sock"  # config's default


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _human_status(s: dict[str, Any]) -> None:
    print(f"ready:       {'yes' if s['ready'] else 'no'}")
    print(f"site:        {s['site'] or '(no snapshot imported)'}  gateway {s['gateway']}")
    print(
        f"snapshot:    generation {s['generation']}, cursor {s['cursor']}, "
        f"generated {s['snapshot_generated_at']}"
    )
    print(
        f"holders:     {s['members']} members, {s['guests']} guests, {s['credentials']} credentials"
    )
    print(f"PIN key:     {'provisioned' if s['pin_key'] else 'MISSING (PIN entry refused)'}")
    if s["lockdown"]:
        print("LOCKDOWN:    whole site")
    storage = s.get("storage")
    if storage and storage["state"] != "ok":
        print(
            f"STORAGE:     failing since {storage['since']}, last error {storage['error']} "
            f"({storage['failed_commits']} commits failed; events NOT RECORDED meanwhile)"
        )
    web = s.get("web")
    if web:
        tls_note = f"  (certificate SHA-256 {web['fingerprint']})" if web["fingerprint"] else ""
        print(f"web:         {web['url']}{tls_note}")
    if s.get("synced_at"):
        print(f"synced:      {s['synced_at']} ({_duration(s['cache_age_s'])} ago)")
    cloud = s.get("cloud")
    if cloud:
        if cloud["stopped"]:
            print(f"cloud:       STOPPED: {cloud['stopped']}")
        elif cloud["last_error"]:
            print(f"cloud:       FAILING: {cloud['last_error']}")
        else:
            print(f"cloud:       {cloud['url']} ok")
    if s.get("offline"):
        off = s["offline"]
        policies = off.get("policies") or {}
        doors = ", ".join(f"{d} {m}" for d, m in policies.items()) or "no door (all on cache)"
        print(f"OFFLINE:     {off['reason']}: offline policy at {doors}")
    if s.get("database_set_aside"):
        print(f"DATABASE:    unreadable at start, set aside as {s['database_set_aside']}")
    if s.get("clock_step_s") is not None:
        print(
            f"CLOCK:       the system clock is {s['clock_step_s']:+.0f} s off the time doors "
            "decide at (stepped; not followed until the cloud vouches for a time)"
        )
    if s["doors"]:
        print("doors:")
        for d in s["doors"]:
            mode = d["mode"] or "(not in the site document)"
            print(f"  {d['id']:<16} {mode:<13} {d['state']}")
            if d.get("unlocked_until"):
                print(f"  {'':<16} unlocked until {d['unlocked_until']}")
            if d.get("fault"):
                print(f"  {'':<16} FAULT: {d['fault']}")
        if s.get("readers"):
            print("readers:")
            for r in s["readers"]:
                where = f"{r['door']} ({r['side']})" if r["door"] else "no door"
                line = f"  {r['name']:<16} {r['kind']:<8} {where:<20} {r['state']}"
                print(line + (f": {r['fault']}" if r["fault"] else ""))
        if s.get("buses"):
            print("buses:")
            for b in s["buses"]:
                line = f"  {b['name']:<16} {b['kind']:<11} {b['state']}"
                print(line + (f": {b['fault']}" if b["fault"] else ""))
                if b.get("refused"):
                    counts = ", ".join(f"{k} {n}" for k, n in b["refused"].items())
                    print(f"  {'':<16} frames refused: {counts}")


def _human_decision(d: dict[str, Any]) -> None:
    verdict = "GRANTED" if d["granted"] else "DENIED"
    who = d["holder"] or "unknown holder"
    extra = ", ".join(f"{k}={v}" for k, v in d["details"].items())
    print(f"{verdict} at {d['door']} for {who}: {d['reason']}" + (f" ({extra})" if extra else ""))
    if d.get("recorded") is False:
        print(f"NOT RECORDED ({d['record_error']})")


def _human_member(m: dict[str, Any]) -> None:
    print(f"{m['id']} ({m['kind']}) {m['name']}  at {m['at']}")
    print(f"  plan {m['plan']}, company {m['company']}, contract {m['contract']}")
    print(
        f"  billing {m['billing']} -> {'allows' if m['billing_allows_access'] else 'DENIES'}"
        " own access"
    )
    for c in m["credentials"]:
        state = "active" if c["active"] else "disabled"
        print(f"  credential {c['id']}: {c['card'] or 'PIN'} ({state})")
    print(
        f"  day passes: {len(m['day_passes'])} explicit, balance {m['day_pass_balance']} "
        f"(used here, not yet synced: {m['day_pass_balance_used_here']}), "
        f"today: {m['day_pass_used_today'] or 'none used'}"
    )
    for b in m["bookings"]:
        print(f"  booking {b['id']} room {b['room']} {b['start']} - {b['end']} {b['status']}")
    print("  doors now:")
    for d in m["doors"]:
        print(f"    {d['door']:<16} {'yes' if d['granted'] else 'no ':<4} {d['reason']}")


def _event_line(ev: dict[str, Any]) -> str:
    return f"{ev.get('at', '')} {log_line(ev)}"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help="the gateway's state directory (its admin.sock is used)",
    )
    common.add_argument("--socket", default=argparse.SUPPRESS, help="the admin socket")
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g}); exit 3 after",
    )
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="the gateway's config file (its admin socket is used)",
    )

    parser = argparse.ArgumentParser(
        prog="edgectl", parents=[common], description="Operate a running edge gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="readiness, site, counts, doors")
    sub.add_parser("methods", parents=[common], help="the admin socket's methods")
    p = sub.add_parser("import", parents=[common], help="import an edge-sync/1 snapshot")
    p.add_argument("file", type=Path)
    for name, help_ in (
        ("decide", "dry run: would this credential open this door?"),
        ("present", "present a credential for real (recorded, consumes)"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("--door", required=True)
        p.add_argument("--card", help="FORMAT:FIELDS, e.g. H10301:12:3456 or raw:04A1B2C3")
        p.add_argument("--pin", help="PIN digits (with --card: card then PIN)")
        if name == "decide":
            p.add_argument("--at", help="instant, RFC 3339 with offset (default: now)")
    p = sub.add_parser("member", parents=[common], help="members and guests")
    msub = p.add_subparsers(dest="member_command", required=True)
    p = msub.add_parser("show", parents=[common], help="entitlements and why")
    p.add_argument("id")
    p.add_argument("--at", help="instant, RFC 3339 with offset (default: now)")
    p = sub.add_parser("events", parents=[common], help="recent events")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--type", help="only events whose type starts with this")
    p = sub.add_parser("lockdown", parents=[common], help="lockdown on|off [DOOR...]")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("doors", nargs="*")
    p = sub.add_parser("door", parents=[common], help="door actions")
    dsub = p.add_subparsers(dest="door_command", required=True)
    p = dsub.add_parser("unlock", parents=[common], help="unlock a door for some seconds")
    p.add_argument("door")
    p.add_argument("--seconds", type=int)
    p = sub.add_parser("audit", parents=[common], help="the admin audit log")
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("sync", parents=[common], help="cloud sync: now | status")
    ssub = p.add_subparsers(dest="sync_command", required=True)
    p = ssub.add_parser("now", parents=[common], help="pull and upload now")
    p.add_argument("--snapshot", action="store_true", help="take a whole snapshot first")
    ssub.add_parser("status", parents=[common], help="cursor, last success, errors, backlog")
    sub.add_parser("rooms", parents=[common], help="rooms: phase, booking, devices")
    p = sub.add_parser("wifi", parents=[common], help="guest Wi-Fi: show | rotate")
    p.add_argument("wifi_command", nargs="?", choices=["show", "rotate"], default="show")
    p = sub.add_parser("outbox", parents=[common], help="events not yet delivered to the cloud")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--state", choices=["pending", "rejected"])
    p = sub.add_parser("user", parents=[common], help="web console accounts")
    usub = p.add_subparsers(dest="user_command", required=True)
    usub.add_parser("list", parents=[common], help="accounts, roles, lockouts")
    for name, help_ in (("add", "add an account"), ("passwd", "set an account's password")):
        p = usub.add_parser(name, parents=[common], help=help_)
        p.add_argument("name")
        if name == "add":
            p.add_argument("--role", choices=["viewer", "operator", "admin"], default="viewer")
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = usub.add_parser("role", parents=[common], help="set an account's role")
    p.add_argument("name")
    p.add_argument("role", choices=["viewer", "operator", "admin"])
    p = usub.add_parser("remove", parents=[common], help="remove an account")
    p.add_argument("name")
    p = sub.add_parser("panel", parents=[common], help="room panels and the reception screen")
    psub = p.add_subparsers(dest="panel_command", required=True)
    p = psub.add_parser("pair", parents=[common], help="a one-time pairing code for a tablet")
    p.add_argument("room", help="the room's id, or 'reception' for the lobby screen")
    psub.add_parser("list", parents=[common], help="pairings and their state")
    p = psub.add_parser("revoke", parents=[common], help="revoke a pairing (by its id)")
    p.add_argument("id")
    return parser


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


class UsageError(Exception):
    pass


def run(args: argparse.Namespace, client: Client) -> int:
    as_json = getattr(args, "json", False)
    out = _print_json if as_json else None
    cmd = args.command
    if cmd == "status":
        result = client.call("status")
        (out or _human_status)(result)
    elif cmd == "methods":
        result = client.call("list_methods")
        if out:
            out(result)
        else:
            for m in result:
                print(f"{m['method']:<16} {'(changes) ' if m['changes'] else ''}{m['help']}")
    elif cmd == "import":
        if not args.file.is_file():
            print(f"edgectl: {args.file}: no such file", file=sys.stderr)
            return EXIT_USAGE
        result = client.call("import", {}, payload=args.file)
        if out:
            out(result)
        else:
            print(
                f"imported generation {result['generation']} (cursor {result['cursor']}): "
                f"{result['members']} members, {result['guests']} guests, "
                f"{result['credentials']} credentials in {result['seconds']} s"
            )
    elif cmd in ("decide", "present"):
        given = {k: getattr(args, k, None) for k in ("door", "card", "pin", "at")}
        result = client.call(cmd, {k: v for k, v in given.items() if v is not None})
        verdict = EXIT_OK if result["granted"] else EXIT_DENIED
        try:
            (out or _human_decision)(result)
        except BrokenPipeError:  # `edgectl present ... | head -0`: the verdict still stands
            _silence_stdout()
        return verdict
    elif cmd == "member":
        result = client.call("member.show", {"id": args.id, **({"at": args.at} if args.at else {})})
        (out or _human_member)(result)
    elif cmd == "events":
        query: dict[str, Any] = {"limit": args.limit}
        if args.type:
            query["type"] = args.type
        recent = client.call("events", query)
        if as_json and not args.follow:
            _print_json(recent)  # one array; with --follow, one JSON object per line
        else:
            for ev in recent:
                print(json.dumps(ev) if as_json else _event_line(ev), flush=True)
        if args.follow:
            client.sock.settimeout(None)
            client.call("events.follow")
            while True:
                message = client.receive()
                ev = message.get("event")
                if ev:
                    print(json.dumps(ev) if as_json else _event_line(ev), flush=True)
    elif cmd == "lockdown":
        result = client.call("lockdown", {"on": args.state == "on", "doors": args.doors})
        if out:
            out(result)
        else:
            print(f"lockdown {args.state} for {', '.join(args.doors) or 'all doors'}")
    elif cmd == "door":
        unlock: dict[str, Any] = {"door": args.door}
        if args.seconds is not None:
            unlock["seconds"] = args.seconds
        result = client.call("door.unlock", unlock)
        if out:
            out(result)
        else:
            print(f"{result['door']} unlocked until {result['unlocked_until']}")
    elif cmd == "audit":
        result = client.call("audit", {"limit": args.limit})
        if out:
            out(result)
        else:
            for a in result:
                print(
                    f"{a['at']} {a['actor'] or 'uid=' + str(a['uid'])} {a['method']} "
                    f"{json.dumps(a['params'])} "
                    f"-> {a['outcome']}"
                )
    elif cmd == "sync":
        if args.sync_command == "now":
            result = client.call("sync.now", {"snapshot": args.snapshot})
        else:
            result = client.call("sync.status")
        (out or _human_sync)(result)
        if args.sync_command == "now" and (result["stopped"] or result["pull"]["failures"]):
            return EXIT_DENIED
    elif cmd == "rooms":
        result = client.call("rooms")
        (out or _human_rooms)(result)
    elif cmd == "wifi":
        result = client.call("wifi.rotate" if args.wifi_command == "rotate" else "wifi")
        if out:
            out(result)
        else:
            print(f"ssid:        {result['ssid']}")
            print(f"passphrase:  {result['passphrase']}")
            print(f"since:       {result['since']}")
            print(f"next:        {result['until']}")
    elif cmd == "outbox":
        query = {"limit": args.limit, **({"state": args.state} if args.state else {})}
        result = client.call("outbox", query)
        if out:
            out(result)
        else:
            print(f"{result['pending']} pending, {result['rejected']} rejected")
            for e in result["events"]:
                why = f"  REJECTED: {e['error']}" if e["state"] == "rejected" else ""
                print(f"  {_event_line(e['event'])}{why}")
    elif cmd == "user":
        _user(args, client, out)
    elif cmd == "panel":
        _panel(args, client, out)
    return EXIT_OK


def _user(args: argparse.Namespace, client: Client, out: Any) -> None:
    ucmd = args.user_command
    if ucmd == "list":
        users = client.call("user.list")
        if out:
            out(users)
            return
        for u in users:
            locked = "  LOCKED" if u["locked"] else ""
            print(f"{u['name']:<20} {u['role']:<9} {u['sessions']} sessions{locked}")
        if not users:
            print("no console accounts (edgectl user add NAME --role admin)")
        return
    if ucmd == "add":
        params = {"name": args.name, "role": args.role, "password": _password(args)}
    elif ucmd == "passwd":
        params = {"name": args.name, "password": _password(args)}
    elif ucmd == "role":
        params = {"name": args.name, "role": args.role}
    else:
        params = {"name": args.name}
    result = client.call(f"user.{ucmd}", params)
    if out:
        out(result)
    elif ucmd == "add":
        print(f"console account {result['name']} added ({result['role']})")
    elif ucmd == "remove":
        print(f"console account {result['name']} removed")
    elif ucmd == "role":
        print(f"{result['name']} is now {result['role']}")
    else:
        print(f"password of {result['name']} set; {result['sessions_ended']} sessions ended")


def _panel(args: argparse.Namespace, client: Client, out: Any) -> None:
    pcmd = args.panel_command
    if pcmd == "pair":
        r = client.call("panel.pair", {"room": args.room})
        if out:
            out(r)
            return
        web = r.get("web")
        print(f"pairing code for {r['room']}: {r['code']}  (good until {r['expires']})")
        if web:
            print(f"on the tablet, open {web['url']}pair and type the code")
            if web["fingerprint"]:
                print(f"the gateway's certificate: SHA-256 {web['fingerprint']}")
        else:
            print("the web server is off: set [web] enabled = true first")
        return
    if pcmd == "list":
        pairings = client.call("panel.list")
        if out:
            out(pairings)
            return
        for p in pairings:
            print(f"{p['id']}  {p['room']:<16} {p['state']:<22} since {p['created']}")
        if not pairings:
            print("no panels paired (edgectl panel pair ROOM)")
        return
    r = client.call("panel.revoke", {"id": args.id})
    if out:
        out(r)
    else:
        print(f"pairing {r['id']} ({r['room']}) revoked")


def _human_rooms(rooms: list[dict[str, Any]]) -> None:
    if not rooms:
        print("no rooms on this site")
    for r in rooms:
        b = r.get("booking")
        line = f"{r['room']:<14} {r['state']:<17}"
        if b:
            line += f" {b['id']} {b['start'][11:16]}-{b['end'][11:16]}"
            if "minutes_left" in r:
                line += f" ({r['minutes_left']} min left)"
        print(line)
        for n in r.get("next", []):
            print(f"{'':<14} next: {n['id']} {n['start'][11:16]}-{n['end'][11:16]}")
        for name, d in r.get("devices", {}).items():
            on = d.get("on")
            state = (
                d.get("confirmed") if "confirmed" in d else {True: "on", False: "off"}.get(on, "?")
            )
            fault = f"  UNAVAILABLE: {d['fault']}" if not d.get("available", True) else ""
            print(f"{'':<14} {name}: {state}{fault}")


def _human_sync(s: dict[str, Any]) -> None:
    age = s["age_s"]
    print(f"cloud:       {s['url']}")
    print(f"cursor:      {s['cursor']}")
    print(
        f"last sync:   {s['last_success'] or 'never'}"
        + (f" ({_duration(age)} ago)" if age is not None else "")
    )
    if s["stopped"]:
        print(f"STOPPED:     {s['stopped']}")
    for side in ("pull", "upload"):
        h = s[side]
        if h["failures"]:
            retry = f"; retry at {h['retry_at']}" if h["retry_at"] else ""
            print(f"{side + ':':<12} FAILING ({h['failures']}x): {h['last_error']}{retry}")
        elif h["last_error"]:
            print(f"{side + ':':<12} ok (last error {h['last_error_at']}: {h['last_error']})")
        else:
            print(f"{side + ':':<12} ok")
    backlog = ", ".join(f"{t} {n}" for t, n in s["backlog"].items()) or "none"
    print(f"backlog:     {s['backlog_total']} undelivered ({backlog})")
    if s["rejected_events"]:
        print(f"rejected:    {s['rejected_events']} events (see `edgectl outbox --state rejected`)")
    push = s["push"]
    if push["enabled"]:
        state = "connected" if push.get("connected") else f"NOT CONNECTED: {push.get('fault')}"
        print(
            f"push:        {push['topic']} on {push.get('broker')} {state}; "
            f"{push['accepted']} accepted, {push['rejected']} refused"
        )
    for r in s["refused_changes"]:
        print(f"refused:     {r['at']} ({r['source']}) {r['path']}: {r['error']}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not fail on the closed pipe
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    if timeout <= 0:
        print(f"edgectl: --timeout {timeout:g}: must be more than 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = Client(_socket_path(args), timeout)
    except BadConfig as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        return run(args, client)
    except RemoteError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        # A wrong argument (bad value, unknown door or member) is the caller's to fix.
        return EXIT_USAGE if exc.code in ("bad_request", "not_found") else EXIT_DENIED
    except Unreachable as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except UsageError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # Only stdout is left to break here (`edgectl events | head`): the socket's
        # failures are Unreachable by now.
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
