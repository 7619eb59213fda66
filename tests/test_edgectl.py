"""edgectl against an admin socket that fails: every failure is exit 3 and one line on stderr.

For `present` and `decide`, 0 means granted and 1 denied, so a failure that came out
as 0 or 1 would be read as a verdict. Each test runs a real Unix socket server that
misbehaves in one way (or the real daemon, where it can be made to), and the real
`edgectl` as a process unless the request must be larger than a command line allows.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.ops import edgectl

Behaviour = Callable[[socket.socket], None]


class Server:
    """A Unix socket server of the test's own: each connection gets `behave(conn)`."""

    def __init__(self, path: Path, behave: Behaviour) -> None:
        self.path = path
        self.behave = behave
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.served = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, name="test-admin-socket")
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # closed by stop() before anyone connected
            return
        with conn:
            try:
                self.behave(conn)
            except BaseException as exc:  # reported by stop(), not lost in the thread
                self.errors.append(exc)
            finally:
                self.served.set()

    def stop(self) -> None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect(str(self.path))  # wakes accept() if nobody connected
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Behaviour], Server]]:
    servers: list[Server] = []

    def start(behave: Behaviour) -> Server:
        server = Server(tmp_path / f"s{len(servers)}.sock", behave)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        assert chunk, "the client went away before its request was whole"
        data += chunk
    request: dict[str, Any] = json.loads(data)
    return request


def ctl(socket_path: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.ops.edgectl", "--socket", str(socket_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


PRESENT = ("present", "--door", "front", "--card", "H10301:12:3456")


def assert_unreachable(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == edgectl.EXIT_UNREACHABLE, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edgectl: "), r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert r.stdout == ""


def test_no_socket_file(tmp_path: Path) -> None:
    r = ctl(tmp_path / "nothing.sock", *PRESENT)
    assert_unreachable(r, "cannot reach", "No such file")


def test_connection_refused(tmp_path: Path) -> None:
    # A socket file nobody listens on: what a daemon killed with SIGKILL leaves.
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    r = ctl(path, *PRESENT)
    assert_unreachable(r, "cannot reach", "refused")


def test_connection_reset_while_waiting_for_the_answer(
    serve: Callable[[Behaviour], Server],
) -> None:
    def reset(conn: socket.socket) -> None:
        # Closing with unread bytes in our queue resets the connection (ECONNRESET).
        conn.recv(1)
        time.sleep(0.2)

    server = serve(reset)
    r = ctl(server.path, *PRESENT)
    assert_unreachable(r, "failed while reading the answer", "reset")


def _shut_mid_request(client_done: threading.Event) -> Behaviour:
    """Read part of a request too large for the socket's buffers, then stop reading, as a
    daemon that dies mid-request does: the client's send fails with EPIPE."""

    def behave(conn: socket.socket) -> None:
        got = 0
        while got < 256 * 1024:
            got += len(conn.recv(65536))
        conn.shutdown(socket.SHUT_RDWR)
        # Kept open until the client is done: closing with unread bytes would turn the
        # client's EPIPE into ECONNRESET, a different case (above).
        client_done.wait(10)

    return behave


def test_broken_pipe_while_sending_present_is_not_a_grant(
    serve: Callable[[Behaviour], Server], capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: a request this large does not fit on a command line.
    done = threading.Event()
    server = serve(_shut_mid_request(done))
    code = edgectl.main(
        [
            "--socket",
            str(server.path),
            "present",
            "--door",
            "front",
            "--card",
            "raw:" + "A" * 8_000_000,
        ]
    )
    done.set()
    err = capsys.readouterr().err
    assert code == edgectl.EXIT_UNREACHABLE, err
    assert err.count("\n") == 1, err
    assert "failed while sending" in err, err
    assert "Broken pipe" in err, err


def test_broken_pipe_while_sending_a_payload(
    serve: Callable[[Behaviour], Server], tmp_path: Path
) -> None:
    payload = tmp_path / "big.json"
    payload.write_bytes(b" " * 8_000_000)
    done = threading.Event()
    server = serve(_shut_mid_request(done))
    try:
        r = ctl(server.path, "import", str(payload))
    finally:
        done.set()
    assert_unreachable(r, "failed while sending", "Broken pipe")


def test_closed_before_the_answer(serve: Callable[[Behaviour], Server]) -> None:
    server = serve(read_request)  # reads the request, then closes
    assert_unreachable(ctl(server.path, *PRESENT), "closed the connection")


def test_closed_mid_answer(serve: Callable[[Behaviour], Server]) -> None:
    def half(conn: socket.socket) -> None:
        request = read_request(conn)
        conn.sendall(json.dumps({"id": request["id"], "result": {"granted": True}})[:20].encode())

    server = serve(half)
    assert_unreachable(ctl(server.path, *PRESENT), "mid-answer")


@pytest.mark.parametrize("answer", [b"hello\n", b"\xff\xfe\n", b"[1, 2]\n", b'{"id": 1}\n'])
def test_an_answer_that_is_not_one(serve: Callable[[Behaviour], Server], answer: bytes) -> None:
    def babble(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer)

    server = serve(babble)
    assert_unreachable(ctl(server.path, *PRESENT), "sent an answer")


def test_timeout(serve: Callable[[Behaviour], Server]) -> None:
    done = threading.Event()

    def mute(conn: socket.socket) -> None:
        read_request(conn)
        done.wait(10)

    server = serve(mute)
    try:
        r = ctl(server.path, "--timeout", "0.5", *PRESENT)
    finally:
        done.set()
    assert_unreachable(r, "did not answer in 0.5 s")


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    r = ctl(tmp_path / "x.sock", "--timeout", "0", "status")
    assert r.returncode == edgectl.EXIT_USAGE
    assert "--timeout" in r.stderr


def test_ctrl_c_exits_130(serve: Callable[[Behaviour], Server]) -> None:
    got = threading.Event()
    done = threading.Event()

    def mute(conn: socket.socket) -> None:
        read_request(conn)
        got.set()
        done.wait(10)

    server = serve(mute)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.ops.edgectl", "--socket", str(server.path), *PRESENT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert got.wait(30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == edgectl.EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert out == ""


def test_closed_stdout_is_not_an_error(serve: Callable[[Behaviour], Server]) -> None:
    """`edgectl events | head -1`: the reader goes away; edgectl stops quietly with 0."""
    events = [
        {"id": f"e{i}", "type": "access.granted", "at": "2026-11-16T10:00:00+01:00", "door": "d"}
        for i in range(20000)
    ]

    def answer(conn: socket.socket) -> None:
        request = read_request(conn)
        conn.sendall((json.dumps({"id": request["id"], "result": events}) + "\n").encode())

    server = serve(answer)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.ops.edgectl", "--socket", str(server.path), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline().startswith(b"2026-11-16T10:00:00+01:00 access.granted")
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(30) == edgectl.EXIT_OK, err
    assert err == b""


def test_a_granted_answer_still_exits_0(serve: Callable[[Behaviour], Server]) -> None:
    """The control case: the same server, answering properly."""

    def grant(conn: socket.socket) -> None:
        request = read_request(conn)
        result = {
            "granted": True,
            "reason": "plan",
            "door": "front",
            "holder": "m-1001",
            "details": {},
        }
        conn.sendall((json.dumps({"id": request["id"], "result": result}) + "\n").encode())

    server = serve(grant)
    r = ctl(server.path, *PRESENT)
    assert r.returncode == edgectl.EXIT_OK, r.stderr
    assert r.stdout.startswith("GRANTED at front for m-1001")


# --- the real daemon ------------------------------------------------------------------


def test_real_daemon_stopped_then_killed(daemon_factory: Any) -> None:
    """A daemon that does not answer (SIGSTOP) times out; killed, its socket refuses."""
    d = daemon_factory().start()
    assert d.proc is not None
    sock = d.state_dir / "admin.sock"
    d.proc.send_signal(signal.SIGSTOP)
    try:
        r = ctl(sock, "--timeout", "1", *PRESENT)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert_unreachable(r, "did not answer in 1 s")
    d.stop(sig=signal.SIGKILL)
    assert sock.exists()  # SIGKILL leaves the socket file behind
    assert_unreachable(ctl(sock, *PRESENT), "refused")


def test_kill_campaign_short_form() -> None:
    """The CI form of `python -m faults.edgectl_kill`: two kills of the real daemon while
    edgectl calls run; no call may end in a status that lies. About 15 s."""
    from faults.edgectl_kill import campaign

    # In /tmp, not tmp_path: under pytest-xdist, tmp_path/…/admin.sock can pass the
    # 107 bytes a Unix socket path may have.
    tally = campaign(rounds=2, seed=15)
    assert tally.bad == 0, tally.bad_examples
    assert tally.calls == tally.answered + tally.exit3
    assert tally.exit3 >= 2  # every kill ends at least one call (the last of each caller)
