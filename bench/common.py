"""What every benchmark module shares: RESULT lines, percentiles, the admin socket."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
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
        [
            sys.executable,
            "-m",
            "edge.ops.cli",
            "run",
            "--config",
            str(path),
            "--state-dir",
            str(state),
        ],
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


class DecisionSampler:
    """Back-to-back dry-run decisions on a connection of their own (one every
    2 ms, a random member's card at the front door), in a thread, while the
    benchmark does something else; `latencies` are the round trips in ms."""

    def __init__(self, sock: Path, members: int, seed: int = 3) -> None:
        self.sock = sock
        self.members = members
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench.sampler")

    def __enter__(self) -> DecisionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            reader = s.makefile("rb")
            while not self._done.is_set():
                i = self.rng.randrange(self.members)
                request = {
                    "id": 1,
                    "method": "decide",
                    "params": {"door": "front", "card": f"H10306:{i >> 16}:{i & 0xFFFF}"},
                }
                t0 = time.perf_counter()
                s.sendall(json.dumps(request).encode() + b"\n")
                reader.readline()
                self.latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.002)


class PeakRss:
    """The peak resident set (the kernel's VmHWM) of each process under `pid`,
    while a benchmark runs: the children and grandchildren that
    `/proc/<pid>/task/*/children` lists, polled every 10 ms from a thread.
    VmHWM never decreases, so a late poll still sees a process's peak; `peaks`
    maps its command line to MB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench.peak_rss")

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _children(self, pid: int) -> list[int]:
        out = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                out += [int(c) for c in (task / "children").read_text().split()]
        return out

    def _run(self) -> None:
        while not self._done.wait(0.01):
            pending = self._children(self.pid)
            while pending:
                pid = pending.pop()
                pending += self._children(pid)
                with contextlib.suppress(OSError, ValueError):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            name = cmdline.decode(errors="replace").strip()
                            mb = int(line.split()[1]) / 1024
                            self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
