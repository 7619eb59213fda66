"""The simulated serial cable: bytes intact, in order, no faster than the wire."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.serial_link import Direction, SerialLink
from tests.conftest import run_async


class Port:
    """One end of the link as a program sees it: the slave device, read on the loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.received = bytearray()
        self._more = asyncio.Event()

    async def __aenter__(self) -> Port:
        self.fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)

    def _readable(self) -> None:
        try:
            self.received += os.read(self.fd, 4096)
        except BlockingIOError:
            return
        self._more.set()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    async def read_until(self, done: Callable[[bytes], bool], within: float = 10) -> bytes:
        async with asyncio.timeout(within):
            while not done(bytes(self.received)):
                self._more.clear()
                await self._more.wait()
        return bytes(self.received)

    async def read_exactly(self, n: int) -> bytes:
        return (await self.read_until(lambda got: len(got) >= n))[:n]


async def until(predicate: Callable[[], bool], within: float = 5) -> None:
    """Wait for a state the link has no event for."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling a test condition on purpose
            await asyncio.sleep(0.005)


def test_every_byte_value_arrives_intact_both_ways() -> None:
    # Raw mode matters: a line discipline would eat ^C, ^S, ^Q, ^D and turn CR into LF.
    payload = bytes(range(256)) * 2

    async def scenario() -> tuple[bytes, bytes]:
        link = SerialLink(115200)
        await link.start()
        try:
            async with Port(link.a) as a, Port(link.b) as b:
                a.write(payload)
                b.write(payload[::-1])
                return await b.read_exactly(len(payload)), await a.read_exactly(len(payload))
        finally:
            await link.stop()

    at_b, at_a = run_async(scenario())
    assert at_b == payload
    assert at_a == payload[::-1]


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.binary(min_size=1, max_size=40)),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=25, deadline=None)
def test_order_is_kept_per_direction_whatever_the_writes(writes: list[tuple[str, bytes]]) -> None:
    sent = {"a": b"".join(d for end, d in writes if end == "a")}
    sent["b"] = b"".join(d for end, d in writes if end == "b")
    observed: dict[Direction, bytearray] = {"a->b": bytearray(), "b->a": bytearray()}

    async def scenario() -> tuple[bytes, bytes]:
        link = SerialLink(115200)
        link.observer = lambda direction, data, ns: observed[direction].extend(data)
        await link.start()
        try:
            async with Port(link.a) as a, Port(link.b) as b:
                ports = {"a": a, "b": b}
                for end, data in writes:
                    ports[end].write(data)
                    await asyncio.sleep(0)  # interleave writes with deliveries
                return (
                    await b.read_exactly(len(sent["a"])),
                    await a.read_exactly(len(sent["b"])),
                )
        finally:
            await link.stop()

    at_b, at_a = run_async(scenario())
    assert at_b == sent["a"]
    assert at_a == sent["b"]
    assert bytes(observed["a->b"]) == sent["a"]
    assert bytes(observed["b->a"]) == sent["b"]


@pytest.mark.parametrize(("baudrate", "bits"), [(9600, 10), (9600, 11), (115200, 10)])
def test_bytes_take_at_least_their_wire_time(baudrate: int, bits: int) -> None:
    n = 96

    async def scenario() -> tuple[float, list[int], int]:
        link = SerialLink(baudrate, bits_per_byte=bits)
        times: list[int] = []
        link.observer = lambda direction, data, ns: times.extend([ns] * len(data))
        await link.start()
        try:
            async with Port(link.a) as a, Port(link.b) as b:
                start = time.monotonic_ns()
                a.write(bytes(n))
                await b.read_exactly(n)
                return (time.monotonic_ns() - start) / 1e9, times, start
        finally:
            await link.stop()

    elapsed, times, start = run_async(scenario())
    assert elapsed >= n * bits / baudrate
    # and byte k reaches the far end no earlier than (k + 1) wire times after the write
    byte_ns = bits * 1_000_000_000 / baudrate
    assert all(t - start >= (k + 1) * byte_ns for k, t in enumerate(times))


def test_pyserial_opens_both_ends() -> None:
    async def scenario() -> bytes:
        link = SerialLink(9600)
        await link.start()
        a = serial.Serial(link.a, 9600, timeout=0, exclusive=True)
        b = serial.Serial(link.b, 9600, timeout=0, exclusive=True)
        try:
            a.write(b"\x01\x03\x00\x00\x00\x01\x84\x0a")
            got = b""
            async with asyncio.timeout(5):
                while len(got) < 8:
                    await asyncio.sleep(0.005)
                    got += b.read(64)
            return got
        finally:
            a.close()
            b.close()
            await link.stop()

    assert run_async(scenario()) == b"\x01\x03\x00\x00\x00\x01\x84\x0a"


def test_a_cut_cable_loses_bytes_until_restored() -> None:
    async def scenario() -> tuple[bytes, int]:
        link = SerialLink(115200)
        await link.start()
        try:
            async with Port(link.a) as a, Port(link.b) as b:
                link.cut()
                assert not link.connected
                a.write(b"lost in the void")
                await until(lambda: link.dropped == 16)
                link.restore()
                a.write(b"<hello>")
                got = await b.read_until(lambda got: got.endswith(b">"))
                return got, link.dropped
        finally:
            await link.stop()

    got, dropped = run_async(scenario())
    assert got == b"<hello>"
    assert dropped == 16


def test_a_cut_loses_the_bytes_in_flight() -> None:
    payload = bytes(range(200)) * 2  # 3.3 s on the wire at 1200 baud

    async def scenario() -> bytes:
        link = SerialLink(1200)
        await link.start()
        try:
            async with Port(link.a) as a, Port(link.b) as b:
                a.write(payload)
                await b.read_exactly(1)
                link.cut()
                link.restore()
                a.write(b"<end>")
                return await b.read_until(lambda got: got.endswith(b"<end>"))
        finally:
            await link.stop()

    got = run_async(scenario())
    head = got.removesuffix(b"<end>")
    assert 1 <= len(head) < len(payload)
    assert payload.startswith(head)


def test_lifecycle() -> None:
    async def scenario() -> None:
        link = SerialLink(9600)
        with pytest.raises(RuntimeError, match="not started"):
            _ = link.a
        await link.start()
        assert link.a != link.b
        fd = os.open(link.a, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        assert os.isatty(fd)
        os.close(fd)
        with pytest.raises(RuntimeError, match="already started"):
            await link.start()
        await link.stop()
        await link.stop()  # idempotent

    run_async(scenario())
    with pytest.raises(ValueError, match="positive"):
        SerialLink(0)
