"""The PLC as an outward channel of a station: the handshake and its servers.

Importing this module registers the ``plc`` channel kind
(:func:`~kanjian.station.pipeline.register_channel`): ``build_station`` then
calls :func:`start_plc`, which makes a :class:`PlcService` when ``plc.enabled``,
with one server per enabled protocol section, built through the protocol
registry (:mod:`kanjian.station.plc.servers`).

The PLC's results are committed inspections: each PLC trigger's future is
resolved by the station's trigger-answers channel (first in the fan-out), and
the handshake presents it from there. Once the station is stopping it refuses
triggers itself (each a MISSED row, which the PLC reads in its result slot)
and answers the triggers still queued MISSED; then ``Station.close`` stops the
PLC's intake (:meth:`PlcService.stop_triggers`: the handshake refuses, the
servers stop) before the camera and store close, so every trigger the handshake
counted has its row before the store closes, and a trigger during the servers'
shutdown is refused with a MISSED row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TypeVar

from kanjian.inference.types import Inspection
from kanjian.station.counters import last_numbered
from kanjian.station.pipeline import Station, register_channel
from kanjian.station.plc.config import PlcConfigError, PlcServerError
from kanjian.station.plc.handshake import Handshake
from kanjian.station.plc.recipes import RecipeBook
from kanjian.station.plc.servers import PlcServer, open_servers, protocols

log = logging.getLogger(__name__)

#: the persisted counter (station/counters.py) of the handshake's trigger numbers
PLC_COUNTER = "trigger.plc"

S = TypeVar("S")


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


class PlcService:
    """The handshake and the servers started for it: the station's ``plc`` channel.

    Args:
        handshake: the state machine every server serves.
        servers: one per enabled protocol, not yet started (:meth:`start` starts them).
    """

    name = "plc"

    def __init__(self, handshake: Handshake, servers: Sequence[PlcServer]) -> None:
        self.handshake = handshake
        self.servers = list(servers)
        self._stopped = False

    def start(self) -> None:
        """Start every server, in order; if one cannot start, stop those started and raise.

        Raises:
            PlcServerError: a server cannot bind its port or load its certificate.
        """
        try:
            for server in self.servers:
                server.start()
        except Exception:
            self.stop_triggers()
            raise

    def server(self, kind: type[S]) -> S | None:
        """The server of class ``kind`` (e.g. ``ModbusPlcServer``), if running."""
        return next((s for s in self.servers if isinstance(s, kind)), None)

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        """Nothing here: the PLC's results arrive as its triggers' answers (futures),
        resolved by the trigger-answers channel before this one is called."""

    def stop_triggers(self) -> None:
        """Refuse new triggers, stop every server (newest first). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.handshake.close()
        for server in reversed(self.servers):
            try:
                server.close()
            except Exception:  # the others must still stop
                log.exception("PLC %s server failed to close", server.protocol)

    def close(self) -> None:
        """After the store's last commit: the servers are already stopped, or stop now."""
        self.stop_triggers()


def start_plc(station: Station) -> PlcService | None:
    """The PLC channel for ``station``, or ``None`` when ``plc.enabled`` is off.

    Returns it unstarted (the station's channels start it).

    Raises:
        PlcConfigError: the station is not in triggered mode, or no server is enabled.
    """
    cfg = station.config.plc
    if not cfg.enabled:
        return None
    # the built-in protocols register themselves; imported only here, because a
    # station without PLC never needs pymodbus or asyncua (the ``plc`` extra)
    from kanjian.station.plc import modbus, opcua  # noqa: F401

    if station.config.trigger.mode != "triggered":
        raise PlcConfigError(
            "plc.enabled needs trigger.mode: triggered (the PLC decides when to inspect)"
        )
    # trigger numbers persisted in the store: plc-<n> is unique per station forever
    numbers = station.store.counter(PLC_COUNTER, last_numbered((cfg.trigger_prefix,)))
    hs = Handshake(StationTarget(station), cfg.result_buffer, cfg.trigger_prefix, numbers)
    servers = open_servers(hs, cfg)
    if not servers:
        raise PlcConfigError(
            f"plc.enabled but no PLC server is enabled (protocols: {', '.join(protocols())})"
        )
    if cfg.recipes:  # the PLC chooses the model: load every recipe's now, not on the line
        book = RecipeBook(station)
        hs.set_recipe(book.initial(), initial=True)
        hs.on_recipe = book.select
    return PlcService(hs, servers)


# first: its servers take triggers, and a taken port fails before anything else starts
register_channel("plc", start_plc, order=10)

__all__ = ["PlcConfigError", "PlcServerError", "PlcService", "StationTarget", "start_plc"]
