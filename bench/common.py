"""What every benchmark module shares: RESULT lines, percentiles, the admin socket."""

from __future__ import annotations

import json
import socket
import subprocess
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


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(60)
