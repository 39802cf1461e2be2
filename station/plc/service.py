"""Wires the PLC handshake to a running station and starts its servers.

``build_station`` calls :func:`start_plc` when ``plc.enabled``. Once the station
is stopping it refuses triggers itself (each a MISSED row, which the PLC reads
in its result slot) and answers the triggers still queued MISSED; then
``Station.close`` calls :meth:`PlcService.close` before the camera and store
close, so every trigger the handshake counted has its row before the store
closes, and a trigger during the servers' shutdown is refused with a MISSED row.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kanjian.inference.types import Inspection
from kanjian.station.plc.config import PlcConfigError, PlcServerError
from kanjian.station.plc.handshake import Handshake

if TYPE_CHECKING:
    from kanjian.station.pipeline import Station
    from kanjian.station.plc.modbus import ModbusPlcServer
    from kanjian.station.plc.opcua import OpcUaPlcServer

log = logging.getLogger(__name__)


class StationTarget:
    """The station seen from the handshake (:class:`~kanjian.station.plc.handshake.TriggerTarget`)."""

    def __init__(self, station: Station) -> None:
        self._station = station

    def trigger(self, trigger_id: str) -> Future[Inspection]:
        return self._station.trigger(trigger_id)

    def refuse(self, trigger_id: str, reason: str) -> Future[Inspection]:
        return self._station.refuse(trigger_id, reason)

    def accepting(self) -> bool:
        """``False`` once the station is stopping, or when it would refuse (busy / queue full)."""
        st = self._station
        if st.stop_event.is_set():
            return False
        t = st.config.trigger
        if t.when_busy == "refuse":
            return not st.triggers.busy.is_set() and st.triggers.depth() == 0
        return st.triggers.depth() < t.queue_size


@dataclass
class PlcService:
    """The handshake and the servers started for it."""

    handshake: Handshake
    modbus: ModbusPlcServer | None
    opcua: OpcUaPlcServer | None

    def close(self) -> None:
        """Refuse new triggers, stop both servers. Idempotent."""
        self.handshake.close()
        if self.opcua is not None:
            self.opcua.close()
        if self.modbus is not None:
            self.modbus.close()


def start_plc(station: Station) -> PlcService:
    """Start the configured PLC servers for ``station``.

    Raises:
        PlcConfigError: the station is not in triggered mode, or no server is enabled.
        PlcServerError: a server cannot bind its port or load its certificate.
    """
    # imported here: a station without PLC never needs pymodbus or asyncua
    from kanjian.station.plc.modbus import ModbusPlcServer
    from kanjian.station.plc.opcua import OpcUaPlcServer

    cfg = station.config.plc
    if station.config.trigger.mode != "triggered":
        raise PlcConfigError(
            "plc.enabled needs trigger.mode: triggered (the PLC decides when to inspect)"
        )
    if not (cfg.modbus.enabled or cfg.opcua.enabled):
        raise PlcConfigError("plc.enabled but neither plc.modbus nor plc.opcua is enabled")
    hs = Handshake(StationTarget(station), cfg.result_buffer, cfg.trigger_prefix)
    if cfg.recipes:  # the PLC chooses the model: load every recipe's now, not on the line
        from kanjian.station.plc.recipes import RecipeBook

        book = RecipeBook(station)
        hs.set_recipe(book.initial(), initial=True)
        hs.on_recipe = book.select
    service = PlcService(hs, None, None)
    try:
        if cfg.modbus.enabled:
            service.modbus = ModbusPlcServer(hs, cfg.modbus, cfg.result_buffer)
            service.modbus.start()
        if cfg.opcua.enabled:
            service.opcua = OpcUaPlcServer(hs, cfg.opcua, cfg.result_buffer)
            service.opcua.start()
    except Exception:
        service.close()
        raise
    return service


__all__ = ["PlcConfigError", "PlcServerError", "PlcService", "StationTarget", "start_plc"]
