"""What every benchmark module shares: RESULT lines, percentiles, the admin socket."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def result(**fields: Any) -> None:
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _rpc(sock_path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(json.dumps({"id": 1, "method": method, "params": params or {}}).encode() + b"\n")
        return json.loads(s.makefile().readline())


def start_daemon(
    state: Path,
    config: str,
    ready: Callable[[dict[str, Any]], bool] = lambda status: bool(status["ready"]),
    timeout_s: float = 120,
) -> tuple[subprocess.Popen[bytes], float]:
    """`edge-gateway run` on `state` with `config`; returns once `ready(status)`,
    with the seconds from spawning it (status polled every 5 ms)."""
    path = state / "bench.toml"
    path.write_text(config)
    sock = state / "admin.sock"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(path), "--state-dir", str(state)],
        stderr=subprocess.DEVNULL,
    )
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if ready(_rpc(sock, "status")["result"]):
                return proc, time.monotonic() - started
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the daemon was not ready in {timeout_s:.0f} s")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(60)
