"""The gateway's own files under power cuts: record the file-system calls of one
real write, then replay every prefix of them onto a model of a disk with a
volatile cache and check what a cut there could leave.

The recording shim wraps `os.open`, `os.write`, `os.fsync`, `os.close`,
`os.replace`, `os.rename`, `os.link`, `os.unlink` and `os.mkdir` while the
gateway's real code writes into a scratch directory; calls outside it pass
untouched. After the write, the model's view must equal the real directory
(else some write went around the shim, and the check would mean nothing).

The model follows the pessimistic reading of POSIX that ext4 and others
allow: a file's data is durable only after an fsync of that file, a name
(create, rename, link, unlink, mkdir) only after an fsync of its directory.
At each prefix of the calls, the cut's variants are: each in-order prefix of
the unsynced name changes plus one random subset of them, times the unsynced
data kept, dropped, or torn or reordered at 512 B / 4 KiB (`disk.Fate`).
In every variant each target must hold its old content or its new one, whole
(a missing file counts as old only where there was none), and once the call
returned, the new one.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.powercut.disk import Disk, Fate, SimFile

Contents = dict[str, bytes | None]  # target (relative path) -> content, None if missing


@dataclass
class Call:
    op: str  # open, write, fsync, close, replace, link, unlink, mkdir
    path: str = ""
    path2: str = ""
    fd: int = -1
    flags: int = 0
    data: bytes = b""


_WRAPPED = ("open", "write", "fsync", "close", "replace", "rename", "link", "unlink", "mkdir")


@contextlib.contextmanager
def recording(root: Path) -> Iterator[list[Call]]:
    """Record the calls on files under `root` while the block runs."""
    calls: list[Call] = []
    fds: set[int] = set()
    real: dict[str, Any] = {name: getattr(os, name) for name in _WRAPPED}
    top = os.path.abspath(root)

    def inside(path: Any) -> str | None:
        """The path relative to `root` ("" for the root itself), or None."""
        full = os.path.abspath(os.fspath(path))
        if full == top:
            return ""
        return full[len(top) + 1 :] if full.startswith(top + os.sep) else None

    def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        fd: int = real["open"](path, flags, mode, **kw)
        rel = inside(path)
        if rel is not None and "dir_fd" not in kw:
            fds.add(fd)
            calls.append(Call("open", rel, fd=fd, flags=flags))
        return fd

    def write(fd: int, data: Any) -> int:
        n: int = real["write"](fd, data)
        if fd in fds:
            calls.append(Call("write", fd=fd, data=bytes(memoryview(data)[:n])))
        return n

    def fsync(fd: Any) -> None:
        real["fsync"](fd)
        if fd in fds:
            calls.append(Call("fsync", fd=fd))

    def close(fd: int) -> None:
        real["close"](fd)
        if fd in fds:
            fds.discard(fd)
            calls.append(Call("close", fd=fd))

    def two_paths(op: str) -> Callable[..., None]:
        def call(src: Any, dst: Any, **kw: Any) -> None:
            real[op](src, dst, **kw)
            a, b = inside(src), inside(dst)
            if a is not None and b is not None:
                calls.append(Call("link" if op == "link" else "replace", a, b))

        return call

    def one_path(op: str) -> Callable[..., None]:
        def call(path: Any, *args: Any, **kw: Any) -> None:
            real[op](path, *args, **kw)
            rel = inside(path)
            if rel is not None:
                calls.append(Call(op, rel))

        return call

    wrappers: dict[str, Any] = {
        "open": open_,
        "write": write,
        "fsync": fsync,
        "close": close,
        "replace": two_paths("replace"),
        "rename": two_paths("rename"),
        "link": two_paths("link"),
        "unlink": one_path("unlink"),
        "mkdir": one_path("mkdir"),
    }
    for name, fn in wrappers.items():
        setattr(os, name, fn)
    try:
        yield calls
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)


def _parent(path: str) -> str:
    return os.path.dirname(path)


@dataclass
class Model:
    """Files as inodes with durable and current data, names as a volatile and a
    durable table; `pending` holds the name changes not yet durable, in order."""

    inodes: dict[int, SimFile] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)  # current
    durable: dict[str, int] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {""})
    durable_dirs: set[str] = field(default_factory=lambda: {""})
    pending: list[tuple[str, str, int]] = field(default_factory=list)  # (op, path, inode)
    fd_inode: dict[int, int] = field(default_factory=dict)
    fd_dir: dict[int, str] = field(default_factory=dict)
    fd_pos: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, files: dict[str, bytes], dirs: set[str]) -> Model:
        """A model whose files and directories are all durable."""
        m = cls()
        m.dirs |= dirs
        m.durable_dirs |= dirs
        for ino, (rel, data) in enumerate(sorted(files.items())):
            m.inodes[ino] = SimFile(bytearray(data), bytearray(data))
            m.names[rel] = m.durable[rel] = ino
        return m

    def _name(self, op: str, path: str, ino: int = -1) -> None:
        if op == "set":
            self.names[path] = ino
        elif op == "del":
            self.names.pop(path, None)
        else:
            self.dirs.add(path)
        self.pending.append((op, path, ino))

    def apply(self, c: Call) -> None:
        if c.op == "open":
            if c.flags & os.O_DIRECTORY:
                self.fd_dir[c.fd] = c.path
                return
            ino = self.names.get(c.path)
            if ino is None:  # O_CREAT: a new inode and a new name
                ino = len(self.inodes)
                self.inodes[ino] = SimFile()
                self._name("set", c.path, ino)
            elif c.flags & os.O_TRUNC:
                self.inodes[ino].truncate(0)
            self.fd_inode[c.fd] = ino
            self.fd_pos[c.fd] = 0
        elif c.op == "write":
            pos = self.fd_pos[c.fd]
            self.inodes[self.fd_inode[c.fd]].write(pos, c.data)
            self.fd_pos[c.fd] = pos + len(c.data)
        elif c.op == "fsync":
            if c.fd in self.fd_dir:
                self._sync_dir(self.fd_dir[c.fd])
            else:
                self.inodes[self.fd_inode[c.fd]].sync()
        elif c.op == "close":
            self.fd_dir.pop(c.fd, None)
            self.fd_inode.pop(c.fd, None)
        elif c.op == "replace":
            ino = self.names[c.path]
            self._name("del", c.path)
            self._name("set", c.path2, ino)
        elif c.op == "link":
            self._name("set", c.path2, self.names[c.path])
        elif c.op == "unlink":
            self._name("del", c.path)
        elif c.op == "mkdir":
            self._name("mkdir", c.path)

    def _sync_dir(self, directory: str) -> None:
        rest = []
        for op in self.pending:
            if _parent(op[1]) == directory:
                _apply_name(self.durable, self.durable_dirs, op)
            else:
                rest.append(op)
        self.pending = rest

    def current(self) -> dict[str, bytes]:
        return {p: bytes(self.inodes[i].current) for p, i in self.names.items()}

    def after_cuts(self, rng: random.Random) -> Iterator[dict[str, bytes]]:
        """The files a cut now could leave, variant by variant."""
        n = len(self.pending)
        name_sets = [self.pending[:k] for k in range(n + 1)]
        if n > 1:
            name_sets.append([op for op in self.pending if rng.random() < 0.5])
        for ops in name_sets:
            names, dirs = dict(self.durable), set(self.durable_dirs)
            for op in ops:
                _apply_name(names, dirs, op)
            visible = {p: i for p, i in names.items() if _reachable(p, dirs)}
            used = set(visible.values())
            yield {p: bytes(self.inodes[i].current) for p, i in visible.items()}  # all kept
            for fate in (Fate.DROP, Fate.TEAR, Fate.TEAR, Fate.REORDER, Fate.REORDER):
                disk = Disk()
                disk.files = {str(i): self.inodes[i] for i in used}
                after, _ = disk.after_cut(rng, fate)
                yield {p: bytes(after.files[str(i)].durable) for p, i in visible.items()}


def _reachable(path: str, dirs: set[str]) -> bool:
    """Whether every directory above `path` exists (a file in a directory
    whose own entry was lost is lost with it)."""
    parent = _parent(path)
    while parent:
        if parent not in dirs:
            return False
        parent = _parent(parent)
    return True


def _apply_name(names: dict[str, int], dirs: set[str], op: tuple[str, str, int]) -> None:
    kind, path, ino = op
    if kind == "set":
        names[path] = ino
    elif kind == "del":
        names.pop(path, None)
    else:
        dirs.add(path)


# --- the gateway's writers, as scenarios ---------------------------------------------


@dataclass
class Scenario:
    """One write of the gateway: `setup` makes the files before it (durable),
    `act` is the write, recorded; `targets` are the files it must keep whole."""

    name: str
    targets: tuple[str, ...]
    act: Callable[[Path], object]
    setup: Callable[[Path], object] = lambda root: None
    # A rule between targets (the certificate never without its key), or None.
    rule: Callable[[Contents, Contents, Contents], str | None] | None = None
    expect_violations: bool = False  # a control: the checker must catch it


@dataclass
class FileTally:
    scenarios: int = 0
    prefixes: int = 0
    states: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    by_scenario: dict[str, int] = field(default_factory=dict)  # violations per scenario


def check_state(
    sc: Scenario, state: Contents, old: Contents, new: Contents, done: bool
) -> str | None:
    for t in sc.targets:
        got = state[t]
        if done and got != new[t]:
            return f"{t}: after the write returned, {_describe(got, old[t], new[t])}"
        if got != old[t] and got != new[t]:
            return f"{t}: {_describe(got, old[t], new[t])}"
    return sc.rule(state, old, new) if sc.rule is not None else None


def _describe(got: bytes | None, old: bytes | None, new: bytes | None) -> str:
    if got is None:
        return "missing"
    if got == old:
        return "still the old content"
    return f"{len(got)} bytes, neither the old ({_size(old)}) nor the new ({_size(new)})"


def _size(b: bytes | None) -> str:
    return "none" if b is None else f"{len(b)} bytes"


def _scan(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_dir():
            dirs.add(rel)
        else:
            files[rel] = path.read_bytes()
    return files, dirs


def run_scenario(sc: Scenario, rng: random.Random, tally: FileTally) -> None:
    with tempfile.TemporaryDirectory(prefix=f"powercut-{sc.name}-") as tmp:
        root = Path(tmp)
        sc.setup(root)
        before = _scan(root)
        old: Contents = {t: before[0].get(t) for t in sc.targets}
        with recording(root) as calls:
            sc.act(root)
        after = _scan(root)
    new: Contents = {t: after[0].get(t) for t in sc.targets}
    whole = Model.of(*before)
    for c in calls:
        whole.apply(c)
    if whole.current() != after[0]:
        raise RuntimeError(
            f"{sc.name}: the recording misses some writes (the model does not match "
            "the directory): a writer went around os.open and os.write"
        )
    found = states = 0
    for prefix in range(len(calls) + 1):
        model = Model.of(*before)
        for c in calls[:prefix]:
            model.apply(c)
        done = prefix == len(calls)
        for files in model.after_cuts(rng):
            states += 1
            state: Contents = {t: files.get(t) for t in sc.targets}
            problem = check_state(sc, state, old, new, done)
            if problem is not None:
                found += 1
                if len(tally.examples) < 8 and not sc.expect_violations:
                    tally.examples.append(f"{sc.name}, cut after call {prefix}: {problem}")
    tally.by_scenario[sc.name] = tally.by_scenario.get(sc.name, 0) + found
    if not sc.expect_violations:  # the controls' figures are theirs alone
        tally.scenarios += 1
        tally.prefixes += len(calls) + 1
        tally.states += states
        tally.violations += found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


STATE = "state"
PIN_KEY = f"{STATE}/secrets/pin_key"
TLS_KEY, TLS_CERT = f"{STATE}/web/key.pem", f"{STATE}/web/cert.pem"
SNAPSHOT = f"{STATE}/snapshot.download.json"
BRIDGE_KEY = "bridge/signing.key"
PLAIN = f"{STATE}/plain.txt"


def _put(root: Path, rel: str, data: bytes) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


def _write_secret(root: Path) -> None:
    from edge.secrets import write_secret

    write_secret(root / STATE, "pin_key", secrets.token_hex(32).encode())


def _tls(root: Path) -> None:
    from edge.config import parse_config
    from edge.web.tls import ensure_self_signed

    ensure_self_signed(parse_config('[site]\nid = "powercut"\n'), root / STATE)


def _cert_needs_key(state: Contents, old: Contents, new: Contents) -> str | None:
    if state[TLS_CERT] == new[TLS_CERT] and state[TLS_KEY] != new[TLS_KEY]:
        return f"{TLS_CERT} is the new certificate but {TLS_KEY} is not its key"
    return None


def _snapshot(root: Path) -> None:
    from edge.sync.cloud import CloudClient
    from hwsim.cloud import CloudSim

    sim = CloudSim().start()
    try:
        client = CloudClient(sim.url, sim.site, sim.token, 10.0)
        client.session.trust_env = False  # loopback, whatever proxy the environment names
        try:
            client.snapshot(root / SNAPSHOT)
        finally:
            client.close()
    finally:
        sim.stop()


def _keygen(root: Path) -> None:
    from bridge.cli import _keygen as keygen

    with contextlib.redirect_stdout(io.StringIO()):
        if keygen(root / BRIDGE_KEY) != 0:
            raise RuntimeError("edge-bridge keygen failed")


# Controls: writes that are not power-safe. The checker must find them out.


def _plain_write(root: Path) -> None:
    fd = os.open(root / PLAIN, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"new " * 2000)
    os.close(fd)


def _rename_unsynced(root: Path) -> None:
    temp = root / f"{PLAIN}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"new " * 2000)
    os.close(fd)
    os.replace(temp, root / PLAIN)
    dfd = os.open(root / STATE, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)


def _no_directory_fsync(root: Path) -> None:
    temp = root / f"{PLAIN}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"new " * 2000)
    os.fsync(fd)
    os.close(fd)
    os.replace(temp, root / PLAIN)


def _new_directory_unsynced(root: Path) -> None:
    from edge.atomicfile import write_atomic

    os.mkdir(root / STATE)  # its entry in the root is never fsynced
    write_atomic(root / PLAIN, b"new " * 2000)


def _old_plain(root: Path) -> None:
    _put(root, PLAIN, b"old " * 1500)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("secret-new", (PIN_KEY,), _write_secret),
    Scenario(
        "secret-replace", (PIN_KEY,), _write_secret, lambda r: _put(r, PIN_KEY, b"0" * 64 + b"\n")
    ),
    Scenario("tls-new", (TLS_KEY, TLS_CERT), _tls, rule=_cert_needs_key),
    Scenario(
        "tls-key-without-cert",
        (TLS_KEY, TLS_CERT),
        _tls,
        lambda r: _put(r, TLS_KEY, b"a key whose certificate a crash lost\n"),
        rule=_cert_needs_key,
    ),
    Scenario("snapshot-new", (SNAPSHOT,), _snapshot, lambda r: (r / STATE).mkdir()),
    Scenario(
        "snapshot-replace", (SNAPSHOT,), _snapshot, lambda r: _put(r, SNAPSHOT, b'{"old": 1}')
    ),
    Scenario("bridge-keygen", (BRIDGE_KEY,), _keygen, lambda r: (r / "bridge").mkdir()),
)

CONTROLS: tuple[Scenario, ...] = (
    Scenario("control-plain-write", (PLAIN,), _plain_write, _old_plain, expect_violations=True),
    Scenario(
        "control-rename-unsynced", (PLAIN,), _rename_unsynced, _old_plain, expect_violations=True
    ),
    Scenario(
        "control-no-dir-fsync", (PLAIN,), _no_directory_fsync, _old_plain, expect_violations=True
    ),
    Scenario("control-new-dir-unsynced", (PLAIN,), _new_directory_unsynced, expect_violations=True),
)


def campaign(seed: int, rounds: int = 1, controls: bool = True) -> FileTally:
    """Every prefix of every writer's calls, `rounds` times (the torn and
    reordered variants are drawn anew each round)."""
    rng = random.Random(seed)
    tally = FileTally()
    for _ in range(rounds):
        for sc in SCENARIOS + (CONTROLS if controls else ()):
            run_scenario(sc, rng, tally)
    return tally
