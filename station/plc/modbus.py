"""The station as a Modbus TCP server (pymodbus 3.16 simulator datastore).

pymodbus 3.16's classic ``ModbusSequentialDataBlock`` datastore raises
``TypeError``; its ``SimDevice``/``SimData`` datastore with an ``action``
callback works and is what this module uses. The action runs on every request
before the server answers: reads refresh the discrete inputs and registers from
a :class:`~kanjian.station.plc.handshake.HandshakeState` snapshot (so a read is
never stale and never torn), writes to the coils drive the handshake edges.

Malformed requests are answered with Modbus exceptions by pymodbus and by the
action: an address outside the map gets ILLEGAL_ADDRESS (02), a write to a
read-only register ILLEGAL_ADDRESS, an unknown function code ILLEGAL_FUNCTION
(01). The server runs on its own thread and asyncio loop, so a slow or hostile
client never touches the inspection loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from kanjian.station.plc.config import ModbusConfig, PlcServerError
from kanjian.station.plc.handshake import Handshake
from kanjian.station.plc.registers import (
    COIL_RESULT_ACK,
    COIL_TRIGGER,
    HR_RECIPE,
    N_HOLDING,
    N_INPUT,
    encode_bits,
    encode_registers,
)
from kanjian.station.plc.servers import register_server

log = logging.getLogger(__name__)

_READ_COILS, _READ_DISCRETE, _READ_HOLDING, _READ_INPUT = 1, 2, 3, 4
_WRITE_COILS = (5, 15)
_HOLDING_FCS = (3, 6, 16, 22, 23)
_START_TIMEOUT_S = 10.0


def _bits_to_word(bits: list[bool]) -> int:
    return sum(1 << i for i, b in enumerate(bits) if b)


class _ExceptionFunctionCode:
    """Puts the request's function code back into ILLEGAL_FUNCTION answers.

    pymodbus 3.16 answers an unknown function code with function code 0x80
    (it has lost the request's code by then); the standard says ``fc | 0x80``,
    and a PLC may take 0x80 for a garbled frame. As the server's packet tracer
    this sees every received MBAP frame (transaction id -> function code) and
    patches the answer on its way out.
    """

    _KEEP = 1024

    def __init__(self) -> None:
        self._fc: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if sending:
            if len(data) >= 9 and data[7] == 0x80:
                with self._lock:
                    fc = self._fc.get(bytes(data[0:2]))
                if fc is not None:
                    return bytes(data[:7]) + bytes([fc | 0x80]) + bytes(data[8:])
            return data
        at = 0
        with self._lock:
            while len(data) - at >= 8:  # MBAP header (7 bytes) + function code
                self._fc[bytes(data[at : at + 2])] = data[at + 7] & 0x7F
                at += 6 + int.from_bytes(data[at + 4 : at + 6], "big")
            if len(self._fc) > self._KEEP:
                self._fc.clear()
        return data


class ModbusPlcServer:
    """Serves one :class:`Handshake` over Modbus TCP.

    Args:
        handshake: the shared handshake state machine.
        config: bind address, port, unit id.
        buffer_size: the handshake's result slots (shown in BUFFER_SIZE).
    """

    protocol = "modbus"

    def __init__(self, handshake: Handshake, config: ModbusConfig, buffer_size: int) -> None:
        self._hs = handshake
        self._cfg = config
        self._buffer_size = buffer_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._port = config.port
        self.requests = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the port is known once started)."""
        return self._cfg.host, self._port

    def _device(self) -> SimDevice:
        bits16 = [False] * 16
        return SimDevice(
            id=self._cfg.device_id,
            simdata=(
                [SimData(0, values=bits16, datatype=DataType.BITS)],
                [SimData(0, values=bits16, datatype=DataType.BITS)],
                [
                    SimData(0, count=HR_RECIPE, datatype=DataType.REGISTERS, readonly=True),
                    SimData(HR_RECIPE, count=N_HOLDING - HR_RECIPE, datatype=DataType.REGISTERS),
                ],
                [SimData(0, count=N_INPUT, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this on every request, before it reads or writes ``registers``.

        For bit tables ``registers`` holds 16 bits per word and ``count`` is in
        words; ``set_values`` is one entry per bit / register written.
        """
        self.requests += 1
        try:
            if set_values is not None:
                return self._write(function_code, address, set_values)
            if function_code == _READ_DISCRETE:
                registers[0] = _bits_to_word(encode_bits(self._hs.snapshot()))
            elif function_code in _HOLDING_FCS or function_code == _READ_INPUT:
                regs = encode_registers(self._hs.snapshot(), self._buffer_size)
                n = N_HOLDING if function_code != _READ_INPUT else N_INPUT
                registers[:n] = regs[:n]
        except Exception:  # never let one request take the server down
            log.exception("Modbus request fc=%d address=%d failed", function_code, address)
            return ExcCodes.DEVICE_FAILURE
        return None

    def _write(self, fc: int, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        if fc in _WRITE_COILS:
            targets = range(address, address + len(values))
            if any(a not in (COIL_TRIGGER, COIL_RESULT_ACK) for a in targets):
                return ExcCodes.ILLEGAL_ADDRESS
            for a, v in zip(targets, values, strict=True):
                if a == COIL_TRIGGER:
                    self._hs.set_trigger(bool(v))
                else:
                    self._hs.set_ack(bool(v))
            return None
        if fc in _HOLDING_FCS:
            # only RECIPE is writable (the datastore refuses the read-only ones)
            if address != HR_RECIPE or len(values) != 1:
                return ExcCodes.ILLEGAL_ADDRESS
            try:
                self._hs.set_recipe(int(values[0]))
            except ValueError as e:  # no model for this recipe: the register keeps its value
                log.warning("Modbus RECIPE write refused: %s", e)
                return ExcCodes.ILLEGAL_VALUE
            return None
        return ExcCodes.ILLEGAL_FUNCTION

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve on a background thread; returns once listening.

        Raises:
            PlcServerError: the address cannot be bound.
        """
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="plc-modbus", daemon=True
        )
        self._thread.start()
        try:
            ready.result(_START_TIMEOUT_S)
        except Exception as e:
            self._thread.join(_START_TIMEOUT_S)
            host, port = self._cfg.host, self._cfg.port
            raise PlcServerError(f"Modbus TCP server cannot listen on {host}:{port}: {e}") from e
        log.info("Modbus TCP server on %s:%d (unit %d)", *self.address, self._cfg.device_id)

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            if loop.run_until_complete(self._serve(ready)):
                loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: Future[None]) -> bool:
        try:
            server = ModbusTcpServer(
                self._device(),
                address=(self._cfg.host, self._cfg.port),
                trace_packet=_ExceptionFunctionCode(),
            )
            await server.serve_forever(background=True)
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                self._port = int(sockets[0].getsockname()[1])
            self._server = server
        except Exception as e:
            ready.set_exception(e)
            return False
        ready.set_result(None)
        return True

    def close(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if server is not None:
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)  # type: ignore[no-untyped-call]
            try:
                fut.result(_START_TIMEOUT_S)
            except Exception:
                log.exception("Modbus server shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT_S)
        self._server = None


register_server("modbus", lambda plc: plc.modbus, ModbusPlcServer)
