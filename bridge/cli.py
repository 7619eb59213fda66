"""`edge-bridge`: run the platform bridge, check its configuration, ask it how it is.

    edge-bridge run --config bridge.toml [--state-dir DIR]
    edge-bridge check-config bridge.toml
    edge-bridge --config bridge.toml status [--json]
    edge-bridge --config bridge.toml sync now [--platform P] [--full] [--allow-deletes]
    edge-bridge --config bridge.toml outbox retry [--all | EVENT ...]
    edge-bridge keygen FILE        (a push signing key; prints the public key)

Exit status: 0 done, 1 a sync that failed, 2 a wrong command, argument or
configuration, 3 the bridge cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from bridge.config import Config, load_config
from edge.atomicfile import write_atomic
from edge.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _setup_logging(config: Config) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if config.log.timestamps:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=config.log.level.upper(), format=fmt, stream=sys.stderr)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Unreachable(Exception):
    pass


def call(path: Path, method: str, params: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise Unreachable(f"cannot reach the bridge at {path}: {exc.strerror or exc}") from None
    try:
        sock.sendall((json.dumps({"id": 1, "method": method, "params": params}) + "\n").encode())
        with sock.makefile("rb") as f:
            line = f.readline()
    finally:
        sock.close()
    if not line:
        raise Unreachable(f"the bridge at {path} closed the connection")
    reply: dict[str, Any] = json.loads(line)
    return reply


def _print_status(status: dict[str, Any]) -> None:
    print(f"listening: {status['listening']}")
    for sid, s in status["sites"].items():
        ready = "ready" if s["ready"] else "NOT READY"
        objects = ", ".join(f"{n} {k}" for k, n in sorted(s["objects"].items()))
        print(f"\nsite {sid} ({s['platform']}): {ready}, cursor {s['cursor']}")
        print(f"  objects: {objects or 'none'}")
        if "problem" in s:
            print(f"  PROBLEM: {s['problem']}")
        if "push" in s:
            p = s["push"]
            state = p.get("fault") or ("connected" if p.get("connected") else "not connected")
            print(f"  push: {p['topic']} ({state}), {p['pushes_sent']} sent")
        if s["refused"]:
            print(f"  refused ({s['refused_count']}):")
            for text in s["refused"]:
                print(f"    {text}")
    for name, p in status["platforms"].items():
        print(f"\nplatform {name}: initial read {p['initial_read']}; now {p['doing']}")
        for entity, e in p["entities"].items():
            line = (
                f"  {entity}: {e['records']} records; full read {e['last_full_read'] or 'never'}; "
                f"updated-since read {e['last_incremental_read'] or 'never'}"
            )
            print(line)
            if "error" in e:
                print(f"    ERROR ({e['error_at']}): {e['error']}")
            if "held" in e:
                print(f"    HELD: {e['held']}")
        if p["bad_records"]:
            print(f"  malformed records skipped ({len(p['bad_records'])}):")
            for b in p["bad_records"]:
                print(f"    {b['entity']} {b['id']}: {b['field']}: {b['reason']}")
        api = p["api"]
        remaining = ", ".join(f"{k}={v}" for k, v in api["platform_remaining"].items())
        print(
            f"  API: {api['calls']} calls, {api['throttled']} throttled, {api['failures']} failed; "
            f"budget {api['budget_left']}/{api['budget_per_s']} per s"
            + (f"; platform says {remaining}" if remaining else "")
        )
        w = p["webhooks"]
        print(f"  webhooks: {w['accepted']} accepted, {w['refused']} refused")
        o = p["outbox"]
        counts = ", ".join(f"{n} {k}" for k, n in sorted(o["counts"].items())) or "empty"
        print(f"  outbox: {counts}")
        if o["last_error"]:
            print(f"    last error: {o['last_error']}")
        for r in o["rejected"]:
            print(f"    REJECTED {r['type']} {r['event']} ({r['site']}): {r['error']}")
        for r in o["retrying"]:
            print(f"    retrying {r['type']} {r['event']} ({r['state']}): {r['error']}")


def _keygen(path: Path) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from bridge.push import public_key_text

    if path.exists():
        print(f"{path}: exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    # Whole or absent after a power cut; exclusive: a key is never overwritten.
    write_atomic(path, (seed.hex() + "\n").encode(), 0o600, exclusive=True)
    print(f"wrote {path}; the gateways' [cloud.keys] entry:\n{public_key_text(key)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-bridge", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="the bridge's TOML configuration")
    parser.add_argument("--state-dir", type=Path, help="overrides bridge.state_dir")
    parser.add_argument("--socket", type=Path, help="the admin socket (default from the config)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the bridge")
    run_p.add_argument("--config", dest="run_config", type=Path)
    run_p.add_argument("--state-dir", dest="run_state_dir", type=Path)
    check_p = sub.add_parser("check-config", help="validate a configuration and exit")
    check_p.add_argument("file", type=Path)
    status_p = sub.add_parser("status", help="reads, refusals, outbox and API budget")
    status_p.add_argument("--json", action="store_true")
    sync_p = sub.add_parser("sync", help="sync now")
    sync_p.add_argument("what", choices=["now"])
    sync_p.add_argument("--platform")
    sync_p.add_argument("--full", action="store_true", help="read everything whole (a sweep)")
    sync_p.add_argument(
        "--allow-deletes", action="store_true", help="apply a sweep's held deletions"
    )
    out_p = sub.add_parser("outbox", help="the usage outbox")
    out_p.add_argument("what", choices=["retry"])
    out_p.add_argument("events", nargs="*", help="rejected event ids to send again")
    out_p.add_argument("--all", action="store_true", help="every rejected event")
    key_p = sub.add_parser("keygen", help="write a new push signing key")
    key_p.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "keygen":
        return _keygen(args.file)
    config_path = (
        args.file
        if args.command == "check-config"
        else (getattr(args, "run_config", None) or args.config)
    )
    state_override = getattr(args, "run_state_dir", None) or args.state_dir
    config: Config | None = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EXIT_USAGE
    if args.command == "check-config":
        assert config is not None
        sites = ", ".join(f"{s} ({c.platform})" for s, c in config.sites.items())
        print(f"{args.file}: ok (sites: {sites})")
        return EXIT_OK
    if args.command == "run":
        if config is None:
            print("edge-bridge run: --config is required", file=sys.stderr)
            return EXIT_USAGE
        from bridge.service import run

        _setup_logging(config)
        try:
            return asyncio.run(run(config, config.state_dir(state_override)))
        except OSError as exc:
            logging.getLogger("bridge.service").error("bridge: cannot start: %s", exc)
            return EXIT_FAILED

    if args.socket is not None:
        sock = args.socket
    elif config is not None:
        sock = config.admin_socket(config.state_dir(state_override))
    elif state_override is not None:
        sock = state_override / "admin.sock"
    else:
        print("edge-bridge: give --config, --state-dir or --socket", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "status":
            reply = call(sock, "status", {})
            if "error" in reply:
                print(f"edge-bridge: {reply['error']['message']}", file=sys.stderr)
                return EXIT_FAILED
            if args.json:
                print(json.dumps(reply["result"], indent=2))
            else:
                _print_status(reply["result"])
            return EXIT_OK
        if args.command == "outbox":
            reply = call(sock, "outbox.retry", {"events": args.events, "all": args.all})
            if "error" in reply:
                print(f"edge-bridge: {reply['error']['message']}", file=sys.stderr)
                return EXIT_USAGE
            print(f"{reply['result']['requeued']} event(s) will be sent again")
            return EXIT_OK
        params: dict[str, Any] = {"full": args.full, "allow_deletes": args.allow_deletes}
        if args.platform:
            params["platform"] = args.platform
        reply = call(sock, "sync_now", params)
    except Unreachable as exc:
        print(f"edge-bridge: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if "error" in reply:
        print(f"edge-bridge: {reply['error']['message']}", file=sys.stderr)
        return EXIT_USAGE if reply["error"]["code"] in ("bad_request", "not_found") else EXIT_FAILED
    for name, outcome in reply["result"].items():
        print(f"{name}: {outcome}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
