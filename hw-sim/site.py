"""A simulated site: doors with readers, a relay/IO board and door sensors.

Describe the doors (`SimDoor`), start a `SimSite`, and it gives a daemon what
a real site would: OSDP readers (libosdp peripherals, secure channel, each
with its own key) on a simulated RS-485 cable at the configured baud rate,
Wiegand readers that send D0/D1 edges to the daemon's socket edge source, and
a Modbus relay/IO board whose coils are the strikes and whose inputs are the
door contacts and exit buttons. `config()` writes the `[buses]`,
`[readers]` and `[doors]` sections that point the daemon at it, and
`provision(state_dir)` stores the readers' keys in the daemon's secrets.

People act through `badge`, `pin`, `open_door`, `close_door` and
`press_exit`; what the hardware was told to do is read from `strike`,
`led` and the board's coil history. Used by the README's run command, by the
end-to-end tests and by `bench/`. `SiteThread` runs a site on an event loop
of its own, for code that drives a daemon synchronously.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from drivers.wiegand import Frame, encode_card
from edge.secrets import write_secret
from hwsim.modbus_board import ModbusBoard
from hwsim.osdp_reader import SimOsdpBus, SimReader
from hwsim.serial_link import SerialLink
from hwsim.wiegand import SocketEdgeSender

T = TypeVar("T")
ReaderKind = Literal["osdp", "wiegand"]

LED_COLORS = {0: "off", 1: "red", 2: "green", 3: "amber", 4: "blue"}


@dataclass(frozen=True)
class SimDoor:
    """One door of the simulated site; `id` is the cloud's door id."""

    id: str
    in_reader: ReaderKind | None = "osdp"
    out_reader: ReaderKind | None = None
    contact: bool = True
    exit_button: bool = True
    strike: Literal["modbus", "osdp"] = "modbus"  # "osdp": the in reader's output 0
    fail_mode: Literal["secure", "safe"] = "secure"
    wrong_key: bool = False  # the in reader holds another key than the gateway's
    factory_key: bool = False  # the in reader is new: the gateway must enrol it
    unlock_seconds: float = 3
    held_open_seconds: float = 20
    prealarm_seconds: float = 5


# The example site's doors (hw-sim/sitegen.py) as hardware.
EXAMPLE_DOORS = (
    SimDoor("front", "osdp", "osdp"),
    SimDoor("server-room", "wiegand", exit_button=False),
    SimDoor("office-12", "osdp", contact=True, exit_button=False),
)


@dataclass
class _Reader:
    name: str
    kind: ReaderKind
    door: str
    side: Literal["in", "out"]
    address: int = 0  # OSDP
    key: bytes = b""  # OSDP
    socket: Path | None = None  # Wiegand
    sim: SimReader | None = None
    sender: SocketEdgeSender | None = None


def card_frame(spec: str) -> Frame:
    """`H10301:12:3456` (the CLI's card syntax) to the frame a reader sends."""
    fmt, _, rest = spec.partition(":")
    if fmt == "raw":
        digits = rest.strip()
        return Frame(int(digits, 16), len(digits) * 4)
    facility, _, number = rest.partition(":")
    return encode_card(fmt, int(facility), int(number))


class SimSite:
    def __init__(
        self,
        work: Path,
        doors: Iterable[SimDoor] = EXAMPLE_DOORS,
        *,
        osdp_baudrate: int = 115200,
        modbus: Literal["tcp", "rtu"] = "tcp",
        modbus_baudrate: int = 115200,
        input_poll_ms: int = 50,
        wiegand_formats: tuple[str, ...] | None = None,
    ) -> None:
        self.work = work
        self.doors = {d.id: d for d in doors}
        self.osdp_baudrate = osdp_baudrate
        self.modbus = modbus
        self.modbus_baudrate = modbus_baudrate
        self.input_poll_ms = input_poll_ms
        self.wiegand_formats = wiegand_formats
        self.readers: dict[str, _Reader] = {}
        self.coils: dict[str, int] = {}
        self.contacts: dict[str, int] = {}
        self.exits: dict[str, int] = {}
        address = 1
        inputs = 0
        for door in self.doors.values():
            for side, kind in (("in", door.in_reader), ("out", door.out_reader)):
                if kind is None:
                    continue
                name = f"{door.id}-{side}"
                r = _Reader(name, kind, door.id, side)  # type: ignore[arg-type]
                if kind == "osdp":
                    r.address, address = address, address + 1
                    r.key = os.urandom(16)
                else:
                    r.socket = work / f"wiegand-{name}.sock"
                self.readers[name] = r
            if door.strike == "modbus":
                self.coils[door.id] = len(self.coils)
            if door.contact:
                self.contacts[door.id], inputs = inputs, inputs + 1
            if door.exit_button:
                self.exits[door.id], inputs = inputs, inputs + 1
        self.osdp_link = SerialLink(osdp_baudrate)
        self.modbus_link = SerialLink(modbus_baudrate) if modbus == "rtu" else None
        self.board: ModbusBoard | None = None
        self.osdp_bus: SimOsdpBus | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.osdp_link.start()
        if self.modbus_link is not None:
            await self.modbus_link.start()
        self.board = ModbusBoard(
            unit=1,
            coils=max(8, len(self.coils)),
            inputs=max(8, len(self.contacts) + len(self.exits)),
            tcp_port=0 if self.modbus == "tcp" else None,
            serial_port=self.modbus_link.b if self.modbus_link else None,
            baudrate=self.modbus_baudrate,
        )
        for i in self.contacts.values():
            self.board.set_input(i, True)  # closed: a normally-closed contact reads on
        await self.board.start()
        sims = []
        for r in self.readers.values():
            if r.kind == "osdp":
                door = self.doors[r.door]
                wrong = door.wrong_key and r.side == "in"
                new = door.factory_key and r.side == "in"
                r.sim = SimReader(r.address, None if new else r.key, wrong_key=wrong, name=r.name)
                sims.append(r.sim)
            else:
                assert r.socket is not None
                r.sender = SocketEdgeSender(str(r.socket))
        if sims:
            self.osdp_bus = SimOsdpBus(self.osdp_link.b, sims)
            await self.osdp_bus.start()

    async def stop(self) -> None:
        if self.osdp_bus is not None:
            await self.osdp_bus.stop()
            self.osdp_bus = None
        for r in self.readers.values():
            if r.sender is not None:
                r.sender.close()
                r.sender = None
        if self.board is not None:
            await self.board.stop()
        await self.osdp_link.stop()
        if self.modbus_link is not None:
            await self.modbus_link.stop()

    # --- what the daemon needs ------------------------------------------------------------

    def provision(self, state_dir: Path) -> None:
        """Store each OSDP reader's key where the gateway looks for it."""
        for r in self.readers.values():
            if r.kind == "osdp" and not self._factory(r):
                write_secret(state_dir, f"osdp-{r.name}", r.key.hex().encode())

    def _factory(self, r: _Reader) -> bool:
        return self.doors[r.door].factory_key and r.side == "in"

    def config(self) -> str:
        """The `[buses]`, `[readers]` and `[doors]` sections for this site (after start)."""
        assert self.board is not None
        lines = [
            "[buses.sim-osdp]",
            'type = "osdp"',
            f'port = "{self.osdp_link.a}"',
            f"baudrate = {self.osdp_baudrate}",
            "",
        ]
        if self.modbus_link is not None:
            lines += [
                "[buses.sim-io]",
                'type = "modbus_rtu"',
                f'port = "{self.modbus_link.a}"',
                f"baudrate = {self.modbus_baudrate}",
                "interframe_gap_ms = 1",
            ]
        else:
            lines += [
                "[buses.sim-io]",
                'type = "modbus_tcp"',
                'host = "127.0.0.1"',
                f"port = {self.board.tcp_port}",
            ]
        lines += [f"input_poll_ms = {self.input_poll_ms}", ""]
        for r in self.readers.values():
            lines.append(f"[readers.{r.name}]")
            if r.kind == "osdp":
                lines += [
                    'type = "osdp"',
                    'bus = "sim-osdp"',
                    f"address = {r.address}",
                    f'key = "osdp-{r.name}"',
                ]
                if self._factory(r):
                    lines.append("install_mode = true")
            else:
                lines += ['type = "wiegand"', 'edges = "socket"', f'socket = "{r.socket}"']
                if self.wiegand_formats is not None:
                    lines.append(f"card_formats = {list(self.wiegand_formats)!r}".replace("'", '"'))
            lines.append("")
        for door in self.doors.values():
            lines.append(f"[doors.{door.id}]")
            ins = [r.name for r in self.readers.values() if r.door == door.id and r.side == "in"]
            outs = [r.name for r in self.readers.values() if r.door == door.id and r.side == "out"]
            lines.append(f"in_readers = {ins!r}".replace("'", '"'))
            if outs:
                lines.append(f"out_readers = {outs!r}".replace("'", '"'))
            if door.strike == "modbus":
                coil = self.coils[door.id]
                lines.append(f'strike = {{ type = "modbus", bus = "sim-io", coil = {coil} }}')
            else:
                lines.append(f'strike = {{ type = "osdp", reader = "{door.id}-in", output = 0 }}')
            lines.append(f'fail_mode = "{door.fail_mode}"')
            if door.id in self.contacts:
                lines.append(f'contact = {{ bus = "sim-io", input = {self.contacts[door.id]} }}')
            if door.id in self.exits:
                lines.append(f'exit = {{ bus = "sim-io", input = {self.exits[door.id]} }}')
            lines += [
                f"unlock_seconds = {door.unlock_seconds}",
                f"held_open_seconds = {door.held_open_seconds}",
                f"prealarm_seconds = {door.prealarm_seconds}",
                "",
            ]
        return "\n".join(lines)

    # --- people ------------------------------------------------------------------------------

    def reader(self, name: str) -> _Reader:
        try:
            return self.readers[name]
        except KeyError:
            raise KeyError(f"no reader {name!r} (readers: {', '.join(self.readers)})") from None

    async def badge(self, reader: str, card: str) -> int:
        """Hold a card (`H10301:12:3456`) to a reader; returns when the reader had it
        all (monotonic ns): the last edge for Wiegand, the hand-over to libosdp for OSDP."""
        r = self.reader(reader)
        frame = card_frame(card)
        if r.sim is not None:
            r.sim.present_card(frame.bits, frame.length)
            return time.monotonic_ns()
        assert r.sender is not None
        return await r.sender.send(frame)

    async def pin(self, reader: str, digits: str) -> None:
        """Type a PIN and `#` on a reader's keypad."""
        r = self.reader(reader)
        if r.sim is not None:
            r.sim.press_keys(digits + "#")
        else:
            assert r.sender is not None
            # A person's hand moves from card to keypad: the frames cannot run together.
            await asyncio.sleep(0.1)
            await r.sender.send_keys(digits + "#")

    def open_door(self, door: str) -> None:
        assert self.board is not None
        self.board.set_input(self.contacts[door], False)

    def close_door(self, door: str) -> None:
        assert self.board is not None
        self.board.set_input(self.contacts[door], True)

    async def press_exit(self, door: str, hold_s: float = 0.3) -> None:
        assert self.board is not None
        self.board.set_input(self.exits[door], True)
        await asyncio.sleep(hold_s)
        self.board.set_input(self.exits[door], False)

    async def power_off(self, reader: str) -> None:
        r = self.reader(reader)
        assert self.osdp_bus is not None
        await self.osdp_bus.power_off(r.address)

    async def power_on(self, reader: str) -> None:
        r = self.reader(reader)
        assert self.osdp_bus is not None
        await self.osdp_bus.power_on(r.address)

    # --- what the hardware was told ------------------------------------------------------------

    def strike(self, door: str) -> bool:
        """Whether the door's strike relay is energised now."""
        d = self.doors[door]
        if d.strike == "osdp":
            sim = self.reader(f"{door}-in").sim
            assert sim is not None
            return sim.state.outputs.get(0, False)
        assert self.board is not None
        return self.board.coils[self.coils[door]]

    def unlocked(self, door: str) -> bool:
        energised = self.strike(door)
        return energised if self.doors[door].fail_mode == "secure" else not energised

    def led(self, reader: str) -> str | None:
        """The colour of the last LED command the reader got, if any."""
        sim = self.reader(reader).sim
        if sim is None or not sim.state.leds:
            return None
        return LED_COLORS.get(sim.state.leds[-1].color, "?")

    async def wait_unlocked(self, door: str, unlocked: bool = True) -> None:
        """Until the door's strike is in that state; bound it with asyncio.timeout."""
        d = self.doors[door]
        if d.strike == "modbus":
            assert self.board is not None
            energised = unlocked if d.fail_mode == "secure" else not unlocked
            await self.board.wait_coil(self.coils[door], energised)
            return
        while self.unlocked(door) != unlocked:  # noqa: ASYNC110 (libosdp's thread sets it)
            await asyncio.sleep(0.002)


class SiteThread:
    """A `SimSite` on an event loop in a thread of its own, driven synchronously."""

    def __init__(self, site: SimSite) -> None:
        self.site = site
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hw-sim", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result()

    def do(self, fn: Any, *args: Any) -> Any:
        """Run a plain method of the site on its loop (the board is not thread-safe)."""

        async def wrapped() -> Any:
            return fn(*args)

        return self.call(wrapped())

    def __enter__(self) -> SiteThread:
        self._thread.start()
        try:
            self.call(self.site.start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.site.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
