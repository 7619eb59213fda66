"""`edge-gateway`: run the daemon or check a configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from edge.config import Config, ConfigError, load_config


def _setup_logging(config: Config) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if config.log.timestamps:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=config.log.level.upper(), format=fmt, stream=sys.stderr)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines per pull otherwise
    # pymodbus logs every timeout and lost connection as an error of its own; our
    # Modbus driver reports each fault once, in words, and when it clears.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the gateway daemon")
    run_p.add_argument("--config", required=True, type=Path, help="the TOML configuration")
    run_p.add_argument("--state-dir", type=Path, help="overrides gateway.state_dir")
    check_p = sub.add_parser("check-config", help="validate a configuration and exit")
    check_p.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config if args.command == "run" else args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.file}: ok (site {config.site.id}, gateway {config.gateway.id})")
        return 0

    from edge.ops.daemon import StateDirBusy, lock_state_dir, run

    _setup_logging(config)
    state_dir = config.state_dir(args.state_dir)
    try:
        lock = lock_state_dir(state_dir)
    except (OSError, StateDirBusy) as exc:
        logging.getLogger("edge.daemon").error("daemon: cannot start: %s", exc)
        return 1
    try:
        return asyncio.run(run(config, state_dir))
    except OSError as exc:
        logging.getLogger("edge.daemon").error("daemon: cannot start: %s", exc)
        return 1
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
