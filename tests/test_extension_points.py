"""The extension points: camera kinds, outward channels, PLC servers, sync transports.

Each is a registry or an interface a new kind plugs into without editing a
chain: a camera kind registered here opens through ``open_source``; a channel
that raises leaves the store's writer and the other channels going; the PLC
servers come from the config through the protocol registry; the sync worker
runs over a second, in-process transport (not a mock: a broker in memory that
routes, retains and drops connections) and gets every entry confirmed.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, TypeAdapter
from pymodbus.client import ModbusTcpClient

from kanjian.camera import Frame, FrameFailure, SourceConfig, open_source
from kanjian.camera.registry import (
    SourceKindError,
    lookup,
    register_source,
    source_kinds,
    union_kinds,
    unregister_source,
)
from kanjian.camera.source import SourceStatus, StatusBook
from kanjian.inference.types import Inspection
from kanjian.station.channels import Channels
from kanjian.station.plc.config import PlcConfig
from kanjian.station.plc.handshake import Handshake
from kanjian.station.plc.modbus import ModbusPlcServer
from kanjian.station.plc.opcua import OpcUaPlcServer
from kanjian.station.plc.servers import open_servers, protocols
from kanjian.station.plc.service import PlcService
from kanjian.station.store import ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.loopback import LoopbackBroker, LoopbackTransport
from kanjian.station.sync.messages import StationTopics, confirm_message
from kanjian.station.sync.worker import Identity, SyncWorker
from tests.support import sync as sup

# -- camera kinds ------------------------------------------------------------------------


class PatternConfig(BaseModel):
    """A test kind: frames of one grey level."""

    kind: Literal["pattern"] = "pattern"
    level: int = 7
    frames: int = 3


class PatternSource:
    """Hands out ``frames`` frames of ``level``, then ends."""

    def __init__(self, config: PatternConfig, source_id: str = "cam0") -> None:
        self.config = config
        self._book = StatusBook(source_id)
        self._left = config.frames

    @property
    def source_id(self) -> str:
        return self._book.source_id

    def read(self) -> Frame | FrameFailure | None:
        if self._left == 0:
            self._book.set_state("ended")
            return None
        self._left -= 1
        return self._book.frame(np.full((4, 6, 3), self.config.level, np.uint8), None)

    def close(self) -> None:
        self._book.set_state("ended")

    def status(self) -> SourceStatus:
        return self._book.snapshot()


def test_a_registered_camera_kind_opens_through_open_source() -> None:
    with pytest.raises(SourceKindError, match="known kinds: device, folder, gige, stream, video"):
        open_source(PatternConfig())
    register_source("pattern", PatternConfig, PatternSource)
    try:
        src = open_source(PatternConfig(level=9, frames=2), source_id="pat")
        assert isinstance(src, PatternSource) and src.source_id == "pat"
        got = [src.read(), src.read(), src.read()]
        assert [type(f) for f in got] == [Frame, Frame, type(None)]
        assert isinstance(got[0], Frame) and int(got[0].image.max()) == 9
        assert "pattern" in source_kinds()
    finally:
        unregister_source("pattern")
    assert "pattern" not in source_kinds()


def test_source_registry_refuses_clashes_and_misnamed_configs() -> None:
    class OtherFolder(BaseModel):
        kind: Literal["folder"] = "folder"

    with pytest.raises(SourceKindError, match="already registered for FolderSourceConfig"):
        register_source("folder", OtherFolder, PatternSource)  # type: ignore[arg-type]
    with pytest.raises(SourceKindError, match="kind: Literal"):
        register_source("not-pattern", PatternConfig, PatternSource)
    with pytest.raises(SourceKindError, match="registered for FolderSourceConfig, not OtherFolder"):
        lookup(OtherFolder())


def test_config_union_and_source_registry_hold_the_same_kinds() -> None:
    """Every kind the YAML accepts has an opener, and every registered kind is in the YAML."""
    in_union = union_kinds(SourceConfig)
    assert set(in_union) == set(source_kinds())
    for kind, model in in_union.items():
        assert lookup(model.model_construct()).config_type is model, kind
    # and the discriminator picks each one
    adapter: TypeAdapter[BaseModel] = TypeAdapter(SourceConfig)
    folder = adapter.validate_python({"kind": "folder", "path": "/x"})
    assert lookup(folder).kind == "folder"


# -- outward channels ------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []
        self.started = self.closed = 0

    def start(self) -> None:
        self.started += 1

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        self.seen.extend(str(i.inspection_id) for i in batch)

    def close(self) -> None:
        self.closed += 1


class Broken(Recorder):
    def on_commit(self, batch: Sequence[Inspection]) -> None:
        super().on_commit(batch)
        raise RuntimeError("this channel's bug")


def test_a_channel_that_raises_stops_neither_the_writer_nor_the_other_channels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ResultStore(tmp_path, save_verdicts=())
    channels = Channels()
    store.add_listener(channels.on_commit)
    first, broken, last = Recorder("first"), Broken("broken"), Recorder("last")
    for ch in (first, broken, last):
        channels.add(ch)
    assert [c.name for c in channels] == ["first", "broken", "last"]
    assert all(c.started == 1 for c in (first, broken, last))
    with pytest.raises(ValueError, match="already attached"):
        channels.add(Recorder("last"))
    made = []
    for i in range(40):
        insp = sup.synthetic(i)
        store.put(insp)
        made.append(str(insp.inspection_id))
    assert store.flush()
    store.close()
    channels.close()
    channels.close()  # idempotent
    # every channel saw every committed row, in commit order, the broken one included
    assert first.seen == made and last.seen == made and broken.seen == made
    assert all(c.closed == 1 for c in (first, broken, last))
    with sqlite3.connect(tmp_path / "kanjian.db") as db:
        assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 40
    assert "channel broken failed" in caplog.text
    assert channels.get(Broken) is broken and channels.named("first") is first


# -- PLC servers ------------------------------------------------------------------------


class IdleTarget:
    """A station that takes no trigger (the servers are only started and read here)."""

    def trigger(self, trigger_id: str) -> Future[Inspection]:
        raise AssertionError("no trigger in this test")

    def refuse(self, trigger_id: str, reason: str) -> Future[Inspection]:
        raise AssertionError("no trigger in this test")

    def accepting(self) -> bool:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_plc_servers_are_built_from_the_config_through_the_protocol_registry() -> None:
    assert protocols() == ("modbus", "opcua")
    hs = Handshake(IdleTarget(), 4)
    ua_port = _free_port()
    cfg = PlcConfig.model_validate(
        {"enabled": True, "modbus": {"port": 0}, "opcua": {"enabled": True, "port": ua_port}}
    )
    svc = PlcService(hs, open_servers(hs, cfg))
    assert [s.protocol for s in svc.servers] == ["modbus", "opcua"]
    svc.start()
    try:
        modbus = svc.server(ModbusPlcServer)
        opcua = svc.server(OpcUaPlcServer)
        assert modbus is not None and opcua is not None
        client = ModbusTcpClient("127.0.0.1", port=modbus.address[1], timeout=5)
        assert client.connect()
        regs = client.read_holding_registers(0, count=20)
        client.close()
        assert not regs.isError() and regs.registers[0] & 1  # READY
        with socket.create_connection(("127.0.0.1", ua_port), timeout=5):
            pass
        assert opcua.endpoint.endswith(f":{ua_port}/kanjian")
    finally:
        svc.close()
    assert hs.snapshot().ready is False  # the handshake refuses once closed
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", ua_port), timeout=2):
        pass
    only_modbus = PlcConfig.model_validate({"enabled": True, "modbus": {"port": 0}})
    assert [s.protocol for s in open_servers(hs, only_modbus)] == ["modbus"]
    none = PlcConfig.model_validate({"enabled": True, "modbus": {"enabled": False}})
    assert open_servers(hs, none) == []


# -- sync transport -----------------------------------------------------------------------

IDENT = Identity("site", "line", "st1")


class Platform:
    """The platform's side over the same loopback broker: confirms every inspection it gets."""

    def __init__(self, broker: LoopbackBroker, prefix: str) -> None:
        self.topics = StationTopics(prefix, IDENT.site, IDENT.line, IDENT.station)
        self.t = LoopbackTransport(broker, "platform")
        self.seqs: list[int] = []
        self.t.subscribe([self.topics.inspections])

    def on_connected(self) -> None: ...
    def on_connection_lost(self, reason: str) -> None: ...
    def on_connect_failed(self, reason: str) -> None: ...

    def on_message(self, topic: str, payload: bytes) -> None:
        msg = json.loads(payload)
        self.seqs.append(msg["seq"])
        self.t.publish(self.topics.confirm, confirm_message(msg["stream"], [(msg["seq"],) * 2], 0))


def test_sync_worker_delivers_and_gets_confirmed_over_the_loopback_transport(
    tmp_path: Path,
) -> None:
    cfg = SyncConfig.model_validate({"enabled": True, "confirm_timeout_s": 30, "close_drain_s": 5})
    broker = LoopbackBroker()
    platform = Platform(broker, cfg.mqtt.topic_prefix)
    platform.t.connect(platform)
    store = ResultStore(tmp_path, save_verdicts=())
    station = LoopbackTransport(broker, "station")
    w = SyncWorker(store.db_path, store.data_dir, cfg, IDENT, transport=station)
    store.add_listener(w.wake)
    assert w.broker == "loopback:station"
    w.start()
    try:
        for i in range(30):
            store.put(sup.synthetic(i))
        assert store.flush()
        # (the backlog figure is recounted once a second)
        sup.wait_for(lambda: w.status().backlog == 0 and w.status().confirmed == 30, 30,
                     "30 confirmations")  # fmt: skip
        assert broker.retained(platform.topics.availability) == b"online"
        s = w.status()
        assert s.connected and s.backlog == 0 and s.acked == 30 and s.published == 30
        # the broker goes away: rows pile up, then go out and are confirmed once it is back
        broker.set_up(False)
        sup.wait_for(lambda: not w.status().connected, 10, "the loss seen")
        assert broker.retained(platform.topics.availability) == b"offline"  # the last will
        for i in range(30, 50):
            store.put(sup.synthetic(i))
        assert store.flush()
        broker.set_up(True)
        sup.wait_for(lambda: w.status().backlog == 0 and w.status().confirmed == 50, 30,
                     "50 confirmations")  # fmt: skip
        assert sorted(set(platform.seqs)) == list(range(1, 51))
    finally:
        w.stop()
        store.close()
    assert broker.retained(platform.topics.availability) == b"offline"  # said on close
    assert not w.status().running
    broker.close()
