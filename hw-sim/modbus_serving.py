"""The pymodbus servers of one simulated Modbus device: TCP on loopback, RTU on
a serial device, or both at once, for the relay board and the HVAC unit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimDevice

# A trace hook for outgoing frames, given where the unit id sits in them (TCP: 6, RTU: 0).
Outgoing = Callable[[int], Callable[[bool, bytes], bytes]]


class ModbusServing:
    def __init__(self) -> None:
        self._servers: list[ModbusTcpServer | ModbusSerialServer] = []

    @property
    def running(self) -> bool:
        return bool(self._servers)

    async def start(
        self,
        devices: Callable[[], list[SimDevice]],
        outgoing: Outgoing,
        tcp_port: int | None,
        serial_port: str | None,
        baudrate: int,
        parity: str,
        stopbits: int,
    ) -> int | None:
        """Serve; returns the TCP port (a free one when `tcp_port` is 0)."""
        if self._servers:
            raise RuntimeError("already started")
        try:
            if tcp_port is not None:
                tcp = ModbusTcpServer(
                    devices(), address=("127.0.0.1", tcp_port), trace_packet=outgoing(6)
                )
                self._servers.append(tcp)
                await tcp.serve_forever(background=True)
                server: Any = tcp.transport  # an asyncio.Server once listening
                tcp_port = int(server.sockets[0].getsockname()[1])
            if serial_port is not None:
                rtu = ModbusSerialServer(
                    devices(),
                    port=serial_port,
                    baudrate=baudrate,
                    parity=parity,
                    stopbits=stopbits,
                    trace_packet=outgoing(0),
                )
                self._servers.append(rtu)
                await rtu.serve_forever(background=True)
        except BaseException:
            await self.stop()
            raise
        return tcp_port

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.shutdown()
        # pymodbus handles each request in a task of its own; let any started
        # one finish (it finds the transport closed) before the loop is checked.
        for _ in range(3):
            await asyncio.sleep(0)
