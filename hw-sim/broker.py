"""A real Mosquitto broker on loopback, for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class Mosquitto:
    """A real Mosquitto on loopback, on a free port that a restart keeps."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(exe, os.X_OK):
            raise RuntimeError("mosquitto is not installed: ./scripts/bootstrap installs it")
        self.exe = exe
        self.host = "127.0.0.1"
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port: int = s.getsockname()[1]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            # As docs/mosquitto-site.conf: without it the broker holds messages ~40 ms.
            "set_tcp_nodelay true\n"
        )
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (again, on the same port) and return once it accepts connections."""
        if self.proc is not None:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                log_text = self.log_path.read_text(errors="replace")
                raise AssertionError(f"mosquitto exited with {code}:\n{log_text}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"mosquitto not up on port {self.port} in 10 s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
