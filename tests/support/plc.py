"""What the PLC tests share: the documented register map, a station running on a thread,
and a pymodbus client doing the handshake as the line's PLC."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pymodbus.client import ModbusTcpClient

from kanjian.station.pipeline import Station, build_station
from kanjian.station.plc.modbus import ModbusPlcServer
from kanjian.station.plc.opcua import OpcUaPlcServer
from kanjian.station.plc.service import PlcService  # (importing it registers "plc")
from tests.support.station_config import merge, parse, station_config

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "peers"
DOCS = REPO / "docs" / "plc.md"

# documented register map (docs/plc.md)
COIL_TRIGGER, COIL_ACK = 0, 1
ST_READY, ST_BUSY, ST_VALID, ST_TRIG_ACK, ST_REFUSED = 1, 2, 4, 8, 16
HR_STATUS, HR_VERDICT, HR_TOP_CLASS, HR_TOP_CONF, HR_NDET = 0, 1, 2, 3, 4
HR_SEQ, HR_ID, HR_TRIGGERS, HR_RESULTS, HR_REFUSED, HR_MISSED = 5, 7, 9, 11, 13, 15
HR_BUFFERED, HR_BUFSIZE, HR_RECIPE, N_HR = 17, 18, 19, 20
VERDICT_CODES = {"PASS": 1, "FAIL": 2, "REVIEW": 3, "ERROR": 4, "MISSED": 5}
CLASS_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
NEU_IMAGES = REPO.parent / "shared" / "datasets" / "neu-det" / "images"
#: the images :func:`plc_station`'s folder camera loops over
LOOP_PATTERN = "*_1?.jpg"


def loop_images() -> tuple[Path, ...]:
    """The images :func:`plc_station`'s camera judges, in its order."""
    return tuple(sorted(NEU_IMAGES.glob(LOOP_PATTERN)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def u32(regs: list[int], at: int) -> int:
    return (regs[at] << 16) | regs[at + 1]


def plc_station(
    tmp_path: Path, model: Path, *, camera: dict[str, Any] | None = None, **sections: Any
) -> dict[str, Any]:
    """A triggered station with its PLC servers on (see :func:`station_config`): a
    looping folder of NEU-DET images unless ``camera`` replaces it, frames awaited 2 s."""
    looped = {"kind": "folder", "path": str(NEU_IMAGES), "pattern": LOOP_PATTERN, "loop": True}
    base = station_config(
        tmp_path / "data",
        bundle=model,
        camera=camera or looped,
        trigger={"mode": "triggered", "frame_timeout_s": 2.0},
        plc={"enabled": True},
    )
    return merge(base, sections)


@contextmanager
def running(cfg: dict[str, Any]) -> Iterator[Station]:
    """A built station running its loop on a thread; stopped and closed on exit."""
    station = build_station(parse(cfg))
    loop = threading.Thread(target=station.run, name="test-station", daemon=True)
    loop.start()
    try:
        yield station
    finally:
        station.stop()
        loop.join(30)
        station.close()


def db_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    try:
        return db.execute(
            "SELECT trigger_id, id, verdict, reason, top_class, top_confidence, num_detections "
            "FROM inspections ORDER BY seq"
        ).fetchall()
    finally:
        db.close()


class ModbusPlc:
    """The PLC: a pymodbus client doing the documented bit handshake."""

    def __init__(self, port: int) -> None:
        self.c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert self.c.connect()

    def regs(self) -> list[int]:
        r = self.c.read_holding_registers(0, count=N_HR)
        assert not r.isError(), r
        return list(r.registers)

    def trigger(self) -> None:
        assert not self.c.write_coil(COIL_TRIGGER, True).isError()
        assert not self.c.write_coil(COIL_TRIGGER, False).isError()

    def ack(self) -> None:
        assert not self.c.write_coil(COIL_ACK, True).isError()
        assert not self.c.write_coil(COIL_ACK, False).isError()

    def wait_valid(self, timeout_s: float = 90.0) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            regs = self.regs()
            if regs[HR_STATUS] & ST_VALID:
                return regs
            time.sleep(0.002)
        raise AssertionError("RESULT_VALID did not rise")

    def close(self) -> None:
        self.c.close()


def plc_service(station: Station) -> PlcService:
    """The station's ``plc`` channel."""
    svc = station.channels.get(PlcService)
    assert svc is not None
    return svc


def modbus_port(station: Station) -> int:
    server = plc_service(station).server(ModbusPlcServer)
    assert server is not None
    return server.address[1]


def opcua_endpoint(station: Station) -> str:
    server = plc_service(station).server(OpcUaPlcServer)
    assert server is not None
    return server.endpoint


def report(name: str, lat_ms: list[float], tmp_path: Path) -> None:
    """Print (and keep beside the test's files) the trigger-to-result-valid latency,
    with the median time the model took per inspection (from the rows) beside it."""
    p50, p99 = float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 99))
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    timings = [json.loads(t) for (t,) in db.execute("SELECT timings_json FROM inspections")]
    judged = [t["total"] for t in timings if "total" in t]
    db.close()
    line = {"transport": name, "n": len(lat_ms), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
    line["inspect_p50_ms"] = round(float(np.percentile(judged, 50)), 2)
    (tmp_path / f"latency-{name}.json").write_text(json.dumps(line))
    print(f"\nPLC latency trigger->result-valid {json.dumps(line)}")
