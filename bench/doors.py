"""Door benchmarks: badge to strike through the daemon, an OSDP bus of 16 readers,
and our OSDP control panel beside libosdp's on the same simulated reader and link.

Times are CLOCK_MONOTONIC nanoseconds, which every process on the machine
shares: the Wiegand sender's edge timestamps, the simulated cable's delivery
times, the relay board's record of each coil write, and the daemon's own.
"Gateway" latency runs from the last bit or byte of the credential reaching
the gateway (the daemon reading the datagram with the last Wiegand edge, or
the last byte of the OSDP reply, by its own stamp) to the daemon
sending the strike command (its own stamp, read from `status`). "From the
wire" starts earlier, when the datagram or byte left the simulator, so it adds
the kernel's delivery and the daemon's process waking up. "End to end"
runs from the presentation at the simulated reader to the simulated board
applying the command (so it includes the Modbus TCP hop and the board).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import statistics
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import _rpc, percentile, result, start_daemon, stop_daemon

from drivers.osdp import FrameSplitter, OsdpBus, OsdpBusConfig, OsdpReaderConfig
from drivers.wiegand import Frame
from edge.access.policy import NO_EFFECTS, Presentation, decide
from edge.site.index import load_index
from edge.site.runtime import RuntimeState
from hwsim.osdp_reader import SimOsdpBus, SimReader
from hwsim.serial_link import SerialLink
from hwsim.site import SimDoor, SimSite, SiteThread, card_frame
from hwsim.wiegand import wire_ns

BADGES = int(os.environ.get("BENCH_BADGES", "1000"))


def granted_cards(state: Path, members: int, want: int = 300) -> list[str]:
    """Cards the front door grants now on the plan alone (no pass consumed, no fsync)."""
    ix = load_index(state / "gateway.db", 1)
    st = RuntimeState()
    rng = random.Random(11)
    out: list[str] = []
    now = time.time()
    while len(out) < want:
        i = rng.randrange(members)
        card = f"H10306:{i >> 16}:{i & 0xFFFF}"
        d = decide(ix, st, Presentation("front", now, cards=(card,)))
        if d.granted and d.effects == NO_EFFECTS:
            out.append(card)
    return out


@dataclass
class Traffic:
    """Whole OSDP frames on the simulated cable, with the time their last byte arrived."""

    frames: list[tuple[str, int, bytes]] = field(default_factory=list)  # (dir, ns, frame)
    _split: dict[str, FrameSplitter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, direction: str, data: bytes, ns: int) -> None:
        splitter = self._split.setdefault(direction, FrameSplitter())
        for item in splitter.feed(data):
            if isinstance(item, bytes):
                with self.lock:
                    self.frames.append((direction, ns, item))

    def last_reply_before(self, ns: int) -> tuple[int, bytes, bytes] | None:
        """The last reply (PD to CP) before `ns`, and the command it answered."""
        with self.lock:
            frames = list(self.frames)
        for i in range(len(frames) - 1, -1, -1):
            d, at, frame = frames[i]
            if d == "b->a" and at <= ns:
                command = next((f for dd, _, f in reversed(frames[:i]) if dd == "a->b"), b"")
                return at, frame, command
        return None


def _readers_online(status: dict[str, Any]) -> bool:
    readers = status["readers"]
    return bool(
        status["ready"] and readers and all(r["state"].startswith("online") for r in readers)
    )


def _run_badges(
    hw: SiteThread,
    cards: list[str],
    door: str,
    reader: str,
    n: int,
    traffic: Traffic | None,
    sock: Path,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(gateway ms, end-to-end ms, wire ms, from-the-wire ms) per badge."""
    site = hw.site
    assert site.board is not None
    coil = site.coils[door]
    gateway, e2e, wire, from_wire = [], [], [], []
    rng = random.Random(5)
    for k in range(n):
        card = cards[k % len(cards)]
        before = len(site.board.history)
        texts = len(site.reader(reader).sim.state.texts) if site.reader(reader).sim else 0
        t0 = time.monotonic_ns()
        hw.call(site.badge(reader, card))
        hw.call(site.wait_unlocked(door), timeout=5)
        on = next(c for c in site.board.history[before:] if c.coil == coil and c.on)
        frame = card_frame(card)
        # When the daemon sent the strike command (its status says, in CLOCK_MONOTONIC).
        status = _rpc(sock, "status")["result"]
        sent_ns = next(d for d in status["doors"] if d["id"] == door)["strike"]["command_ns"]
        read_ns = next(r for r in status["readers"] if r["name"] == reader)["read_ns"]
        gateway.append((sent_ns - read_ns) / 1e6)
        if traffic is None:  # Wiegand: the frame's own time on the wire
            sender = site.reader(reader).sender
            assert sender is not None
            from_wire.append((sent_ns - sender.last_sent_ns) / 1e6)
            wire.append(wire_ns(frame) / 1e6)
        else:
            seen = traffic.last_reply_before(on.ns)
            assert seen is not None
            at, reply, command = seen
            from_wire.append((sent_ns - at) / 1e6)
            wire.append((len(reply) + len(command)) * site.osdp_link.byte_ns / 1e6)
        e2e.append((on.ns - t0) / 1e6)
        hw.call(site.wait_unlocked(door, False), timeout=5)
        sim = site.reader(reader).sim
        if sim is not None:  # the reader shows its feedback before the next person badges
            deadline = time.monotonic() + 2
            while len(sim.state.texts) < texts + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))  # over a poll cycle: badges fall at any phase
    return gateway, e2e, wire, from_wire


def bench_badge(members: int, state_for: Callable[[str], Path], base_config: str) -> None:
    cards: list[str] | None = None
    for variant, kind, baud in (
        ("wiegand", "wiegand", 115200),
        ("osdp-115200", "osdp", 115200),
        ("osdp-9600", "osdp", 9600),
    ):
        state = state_for(f"badge-{variant}")
        if cards is None:
            cards = granted_cards(state, members)
        work = state / "site"
        work.mkdir(exist_ok=True)
        door = SimDoor("front", kind, None, contact=False, exit_button=False, unlock_seconds=0.05)  # type: ignore[arg-type]
        site = SimSite(work, [door], osdp_baudrate=baud, wiegand_formats=("H10306",))
        traffic = Traffic() if kind == "osdp" else None
        if traffic is not None:
            site.osdp_link.observer = traffic.observe
        with SiteThread(site) as hw:
            site.provision(state)
            proc, _ = start_daemon(state, base_config + "\n" + site.config(), _readers_online)
            try:
                _run_badges(
                    hw, cards, "front", "front-in", 20, traffic, state / "admin.sock"
                )  # warm up
                gw, e2e, wire, from_wire = _run_badges(
                    hw, cards, "front", "front-in", BADGES, traffic, state / "admin.sock"
                )
            finally:
                stop_daemon(proc)
        floor = statistics.median(wire)
        result(
            bench="badge",
            reader=variant,
            members=members,
            badges=len(gw),
            gateway_p50_ms=f"{statistics.median(gw):.2f}",
            gateway_p99_ms=f"{percentile(gw, 0.99):.2f}",
            from_wire_p50_ms=f"{statistics.median(from_wire):.2f}",
            from_wire_p99_ms=f"{percentile(from_wire, 0.99):.2f}",
            end_to_end_p50_ms=f"{statistics.median(e2e):.1f}",
            end_to_end_p99_ms=f"{percentile(e2e, 0.99):.1f}",
            wire_ms=f"{floor:.1f}",
            ratio_p99=f"{percentile(e2e, 0.99) / floor:.2f}",
        )


def bench_osdp_bus(members: int, state_for: Callable[[str], Path], base_config: str) -> None:
    state = state_for("osdp-bus")
    cards = granted_cards(state, members)
    work = state / "site"
    work.mkdir(exist_ok=True)
    doors = [
        SimDoor(f"d{i}", "osdp", None, contact=False, exit_button=False, unlock_seconds=0.05)
        for i in range(16)
    ]
    doors[0] = SimDoor("front", "osdp", None, contact=False, exit_button=False, unlock_seconds=0.05)
    site = SimSite(work, doors, osdp_baudrate=115200)
    traffic = Traffic()
    site.osdp_link.observer = traffic.observe
    badges = max(100, BADGES // 4)
    with SiteThread(site) as hw:
        site.provision(state)
        proc, _ = start_daemon(state, base_config + "\n" + site.config(), _readers_online)
        try:
            time.sleep(1.0)
            start = len(traffic.frames)
            time.sleep(3.0)
            with traffic.lock:
                polls = [(ns, f[1]) for d, ns, f in traffic.frames[start:] if d == "a->b"]
            by_addr: dict[int, list[int]] = {}
            for ns, addr in polls:
                by_addr.setdefault(addr, []).append(ns)
            cycles = [
                (b - a) / 1e6 for times in by_addr.values() for a, b in itertools.pairwise(times)
            ]
            # The "front" door only: the others' doors in the config are not in the site document.
            _, e2e, _, _ = _run_badges(
                hw, cards, "front", "front-in", badges, traffic, state / "admin.sock"
            )
        finally:
            stop_daemon(proc)
    result(
        bench="osdp-bus",
        readers=16,
        baud=115200,
        secure=1,
        poll_cycle_ms=f"{statistics.median(cycles):.1f}",
        poll_cycle_p99_ms=f"{percentile(cycles, 0.99):.1f}",
        badges=len(e2e),
        badge_p50_ms=f"{statistics.median(e2e):.1f}",
        badge_p99_ms=f"{percentile(e2e, 0.99):.1f}",
    )


# --- our control panel against libosdp's, on one simulated reader ---------------------------


class _FdChannel:
    """A serial device for libosdp's control panel (its refresh thread calls these)."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        self.fd = fd

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, bytes(buf))
        except BlockingIOError:
            return 0

    def flush(self) -> None:
        with contextlib.suppress(termios.error):
            termios.tcflush(self.fd, termios.TCIFLUSH)

    def close(self) -> None:
        os.close(self.fd)


def _samples(
    reader: SimReader, got: threading.Event, stamp: list[int], n: int
) -> tuple[list[float], int]:
    """Card read to credential event, per card; and how many events never came (in 5 s)."""
    rng = random.Random(9)
    frame = Frame(0x1_2345_6789 & ((1 << 34) - 1), 34)
    out: list[float] = []
    lost = 0
    while len(out) < n:
        time.sleep(rng.uniform(0.02, 0.08))
        got.clear()
        t0 = time.monotonic_ns()
        reader.present_card(frame.bits, frame.length)
        if got.wait(5):
            out.append((stamp[0] - t0) / 1e6)
        else:
            lost += 1
            if lost >= 5:  # the control panel has given up on the reader (libosdp: 300 s)
                break
    return out, lost


def bench_osdp_vs_libosdp() -> None:
    import osdp

    n = max(100, BADGES // 5)
    key = os.urandom(16)
    link = SerialLink(115200)
    sim = SimReader(1, key)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench.link", daemon=True)
    thread.start()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    on_loop(link.start())
    pd_bus = SimOsdpBus(link.b, [sim])
    on_loop(pd_bus.start())
    got, stamp = threading.Event(), [0]
    try:
        # libosdp's first, then ours, each on a freshly started reader.
        channel = _FdChannel(link.a)

        def on_event(pd: int, event: dict[str, Any]) -> int:
            if event.get("event") == osdp.Event.CardRead:
                stamp[0] = time.monotonic_ns()
                got.set()
            return 0

        info = osdp.PDInfo(1, channel, scbk=key, flags=[osdp.LibFlag.EnforceSecure])
        cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error, event_handler=on_event)
        cp.start()
        try:
            if not cp.sc_wait_all(timeout=10):
                raise RuntimeError("libosdp's control panel did not open a secure channel")
            theirs, their_lost = _samples(sim, got, stamp, n)
        finally:
            cp.teardown()
            channel.close()
        on_loop(pd_bus.stop())
        on_loop(pd_bus.start())  # the reader restarts: a fresh session for our CP
        # Ours, on an event loop of its own in this thread.

        async def ours() -> tuple[list[float], int]:
            bus = OsdpBus(OsdpBusConfig(type="osdp", port=link.a, baudrate=115200))
            reader = bus.add_reader(OsdpReaderConfig(type="osdp", address=1, key="k"), key)

            def on_card(bits: int, count: int, fmt: str) -> None:
                stamp[0] = time.monotonic_ns()
                got.set()

            secure = asyncio.Event()
            reader.on_card = on_card
            reader.on_online = secure.set
            await bus.start()
            try:
                await asyncio.wait_for(secure.wait(), 10)
                return await asyncio.to_thread(_samples, sim, got, stamp, n)
            finally:
                await bus.stop()

        mine, my_lost = asyncio.run(ours())

    finally:
        on_loop(pd_bus.stop())
        on_loop(link.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    result(
        bench="osdp-vs-libosdp",
        baud=115200,
        samples=n,
        ours_p50_ms=f"{statistics.median(mine):.1f}",
        ours_p99_ms=f"{percentile(mine, 0.99):.1f}",
        libosdp_p50_ms=f"{statistics.median(theirs):.1f}",
        libosdp_p99_ms=f"{percentile(theirs, 0.99):.1f}",
        libosdp_samples=len(theirs),
        ratio_p99=f"{percentile(mine, 0.99) / percentile(theirs, 0.99):.2f}",
        ours_lost=my_lost,
        libosdp_lost=their_lost,
    )
