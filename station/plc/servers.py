"""The PLC server registry: one entry per protocol (``modbus``, ``opcua``).

Each protocol module registers itself next to its server class
(``register_server("modbus", lambda plc: plc.modbus, ModbusPlcServer)``): how
to find its section of ``plc:`` and what serves the handshake over it.
:func:`open_servers` makes one server per enabled section. A new protocol is one
new module (a server with ``start``/``close``) plus its registration and its
config section; the built-in protocol modules are imported by
:func:`~kanjian.station.plc.service.start_plc`, only when a PLC is configured
(pymodbus and asyncua are the ``plc`` extra, and slow to import).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kanjian.station.plc.config import PlcConfig
from kanjian.station.plc.handshake import Handshake


class PlcServer(Protocol):
    """Serves the handshake to the line's PLC over one protocol."""

    @property
    def protocol(self) -> str: ...

    def start(self) -> None:
        """Bind and serve (own thread). Raises PlcServerError when it cannot."""
        ...

    def close(self) -> None:
        """Stop serving. Idempotent; never raises."""
        ...


class _Section(Protocol):
    @property
    def enabled(self) -> bool: ...


S = TypeVar("S", bound=_Section)


@dataclass(frozen=True)
class _Entry:
    protocol: str
    build: Callable[[Handshake, PlcConfig], PlcServer | None]


_PROTOCOLS: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def register_server(
    protocol: str,
    section: Callable[[PlcConfig], S],
    opener: Callable[[Handshake, S, int], PlcServer],
) -> None:
    """Serve the handshake over ``protocol`` when ``section(plc_config).enabled``.

    ``opener(handshake, section_config, result_buffer)`` makes the (not yet
    started) server; usually the server class itself.
    """

    def build(hs: Handshake, cfg: PlcConfig) -> PlcServer | None:
        sec = section(cfg)
        return opener(hs, sec, cfg.result_buffer) if sec.enabled else None

    with _LOCK:
        _PROTOCOLS[protocol] = _Entry(protocol, build)


def protocols() -> tuple[str, ...]:
    """The registered protocols, in registration order."""
    with _LOCK:
        return tuple(_PROTOCOLS)


def open_servers(hs: Handshake, cfg: PlcConfig) -> list[PlcServer]:
    """One unstarted server per registered protocol whose section is enabled, in order."""
    with _LOCK:
        entries = list(_PROTOCOLS.values())
    return [s for e in entries if (s := e.build(hs, cfg)) is not None]
