"""The PLC handshake over real protocol peers on 127.0.0.1: a pymodbus client and an
asyncua client act as the line's PLC / SCADA against a real station (NEU-DET images,
a model trained by our own code, a real SQLite store).

Register addresses here are written out as docs/plc.md documents them, not imported
from the implementation, so a change to the map fails these tests.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kanjian.station.config import parse_config
from kanjian.station.pipeline import Station, build_station

pymodbus_client = pytest.importorskip("pymodbus.client")
asyncua = pytest.importorskip("asyncua")

REPO = Path(__file__).resolve().parents[1]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def u32(regs: list[int], at: int) -> int:
    return (regs[at] << 16) | regs[at + 1]


def station_yaml(
    tmp_path: Path,
    model: Path,
    *,
    camera: str = "",
    trigger: str = "",
    plc: str = "",
    policy: str = "lossless",
) -> str:
    neu = REPO.parent / "shared" / "datasets" / "neu-det" / "images"
    camera = camera or f'{{kind: folder, path: {neu}, pattern: "*_1?.jpg", loop: true}}'
    return (
        f"camera: {camera}\npolicy: {policy}\n"
        f"trigger: {{mode: triggered, frame_timeout_s: 2.0{trigger}}}\n"
        f"model: {{path: {model}, providers: [cpu], conf: 0.05}}\n"
        f"store: {{data_dir: {tmp_path / 'data'}}}\n"
        f"plc: {{enabled: true{plc}}}\n"
    )


@contextmanager
def running(yaml_text: str) -> Iterator[Station]:
    """A built station running its loop on a thread; stopped and closed on exit."""
    station = build_station(parse_config(yaml_text))
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
        self.c = pymodbus_client.ModbusTcpClient("127.0.0.1", port=port, timeout=5)
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

    def wait_valid(self, timeout_s: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            regs = self.regs()
            if regs[HR_STATUS] & ST_VALID:
                return regs
            time.sleep(0.002)
        raise AssertionError("RESULT_VALID did not rise")

    def close(self) -> None:
        self.c.close()


def modbus_port(station: Station) -> int:
    assert station.plc is not None and station.plc.modbus is not None
    return station.plc.modbus.address[1]


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


# -- Modbus TCP ----------------------------------------------------------------------------


def test_modbus_500_triggers_read_back_in_order(detect_model: Any, tmp_path: Path) -> None:
    """500 triggers: the first 250 one at a time (trigger, wait, read, acknowledge: the
    handshake's own latency), the rest whenever READY with up to 4 results buffered.
    500 rows, 500 results in trigger order, each matching its row."""
    n, port = 500, free_port()
    plc_cfg = f", result_buffer: 4, modbus: {{port: {port}}}"
    results: list[list[int]] = []
    sent_at: dict[int, float] = {}
    lat: list[float] = []
    with running(station_yaml(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        assert modbus_port(station) == port
        plc = ModbusPlc(port)
        sent = 0
        deadline = time.monotonic() + 300
        while len(results) < n and time.monotonic() < deadline:
            regs = plc.regs()
            window = 1 if sent < n // 2 else 4
            if regs[HR_STATUS] & ST_VALID:
                seq = u32(regs, HR_SEQ)
                lat.append((time.perf_counter() - sent_at[seq]) * 1e3)
                results.append(regs)
                plc.ack()
            elif regs[HR_STATUS] & ST_READY and sent < n and sent - len(results) < window:
                sent += 1
                sent_at[sent] = time.perf_counter()
                plc.trigger()
            else:
                time.sleep(0.0005)
        final = plc.regs()
        plc.close()
    assert [u32(r, HR_SEQ) for r in results] == list(range(1, n + 1))
    assert u32(final, HR_TRIGGERS) == n and u32(final, HR_RESULTS) == n
    assert u32(final, HR_REFUSED) == 0 and final[HR_BUFFERED] == 0 and final[HR_BUFSIZE] == 4
    assert final[HR_STATUS] & ST_VALID == 0
    rows = db_rows(tmp_path)
    assert [r[0] for r in rows] == [f"plc-{i}" for i in range(1, n + 1)]
    assert {r[2] for r in rows} <= {"PASS", "FAIL", "REVIEW"}
    for regs, row in zip(results, rows, strict=True):
        _, uid, verdict, _, top_class, top_conf, ndet = row
        assert f"{u32(regs, HR_ID):08x}" == uid.replace("-", "")[:8]
        assert regs[HR_VERDICT] == VERDICT_CODES[verdict]
        assert regs[HR_NDET] == ndet
        if top_class is None:
            assert regs[HR_TOP_CLASS] == 0xFFFF
        else:
            assert CLASS_NAMES[regs[HR_TOP_CLASS]] == top_class
            assert regs[HR_TOP_CONF] == round(top_conf * 1000)
    assert sum(r[6] > 0 for r in rows) > 0  # the model did find defects
    report("modbus-sequential", lat[: n // 2], tmp_path)
    report("modbus-pipelined-4", lat[n // 2 :], tmp_path)


def test_modbus_busy_refusal_and_full_buffer_are_answered(
    detect_model: Any, tmp_path: Path
) -> None:
    """when_busy: refuse, two result slots, three triggers back to back, no ack: the first
    is judged, the second refused by the busy station (a MISSED result), the third finds
    no slot (TRIGGER_REFUSED, counted, its own MISSED row). Nothing is overwritten."""
    port = free_port()
    yaml_text = station_yaml(
        tmp_path,
        detect_model.onnx,
        trigger=", when_busy: refuse",
        plc=f", result_buffer: 2, modbus: {{port: {port}}}",
    )
    with running(yaml_text) as station:
        plc = ModbusPlc(port)
        for _ in range(3):
            plc.trigger()
        after = plc.regs()
        first = plc.wait_valid()
        plc.ack()
        second = plc.wait_valid()
        plc.ack()
        end = plc.regs()
        plc.close()
        counted = station.triggers.counters  # what /status and /metrics report
    assert (counted.received, counted.refused) == (3, 2)  # busy + no slot, both counted
    assert after[HR_STATUS] & ST_REFUSED and u32(after, HR_REFUSED) == 1
    assert u32(after, HR_TRIGGERS) == 3
    assert u32(first, HR_SEQ) == 1 and first[HR_VERDICT] in (1, 2, 3)
    assert u32(second, HR_SEQ) == 2 and second[HR_VERDICT] == VERDICT_CODES["MISSED"]
    assert end[HR_STATUS] & ST_VALID == 0 and end[HR_BUFFERED] == 0
    assert u32(end, HR_MISSED) == 1  # the slot-less refusal is counted in REFUSED only
    rows = {r[0]: r for r in db_rows(tmp_path)}
    assert sorted(rows) == ["plc-1", "plc-2", "plc-3"]
    assert rows["plc-1"][2] in ("PASS", "FAIL", "REVIEW")
    assert rows["plc-2"][2] == "MISSED" and "busy" in rows["plc-2"][3]
    assert rows["plc-3"][2] == "MISSED" and "result buffer full" in rows["plc-3"][3]
    assert f"{u32(second, HR_ID):08x}" == rows["plc-2"][1].replace("-", "")[:8]


def plc_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    """The rows of PLC triggers (trigger id ``plc-<n>``), in commit order."""
    return [r for r in db_rows(tmp_path) if str(r[0]).startswith("plc-")]


@pytest.mark.parametrize("ending", ["stop", "frames"])
def test_every_trigger_around_shutdown_gets_one_row(
    ending: str, detect_model: Any, tmp_path: Path
) -> None:
    """Issue 6: triggers sent quickly, the station stopped, more triggers: every trigger
    counted (TRIGGER_COUNT) has exactly one row, none is lost and none doubled.

    ``stop``: station.stop() while triggers are queued; the loop answers the queued ones
    MISSED and later ones are refused MISSED, all while the servers run, so the PLC reads
    a result (VERDICT 5) for each, in order. ``frames``: like ``kanjian run --frames 1``,
    the loop returns after one inspection without stop(); triggers queued after that are
    answered MISSED by close(), and an API caller's future resolves."""
    port = free_port()
    yaml_text = station_yaml(
        tmp_path, detect_model.onnx, plc=f", result_buffer: 8, modbus: {{port: {port}}}"
    )
    station = build_station(parse_config(yaml_text))
    max_frames = 1 if ending == "frames" else None
    loop = threading.Thread(target=station.run, args=(max_frames,), daemon=True)
    loop.start()
    plc = ModbusPlc(port)
    seen: list[tuple[int, int]] = []
    try:
        for _ in range(4):
            plc.trigger()
        if ending == "stop":
            station.stop()
        loop.join(60)
        assert not loop.is_alive()
        for _ in range(3):
            plc.trigger()
        api = station.trigger("api-1")
        if ending == "stop":
            for _ in range(7):  # one result per trigger, in order, while the servers run
                regs = plc.wait_valid()
                seen.append((u32(regs, HR_SEQ), regs[HR_VERDICT]))
                plc.ack()
            final = plc.regs()
            assert u32(final, HR_TRIGGERS) == 7 and final[HR_BUFFERED] == 0
    finally:
        plc.close()
        station.stop()
        loop.join(30)
        station.close()
    assert station.plc is not None
    counted = station.plc.handshake.snapshot().trigger_count
    assert counted == 7
    rows = plc_rows(tmp_path)
    assert sorted(r[0] for r in rows) == sorted(f"plc-{i}" for i in range(1, counted + 1))
    by_id = {r[0]: r for r in rows}
    assert by_id["plc-1"][2] in ("PASS", "FAIL", "REVIEW")  # the one judged before stopping
    for i in range(5, 8):  # after stop(), or after run() returned: never judged
        verdict, reason = by_id[f"plc-{i}"][2], by_id[f"plc-{i}"][3]
        assert verdict == "MISSED" and "station stopping" in reason, (i, reason)
    assert api.result(timeout=30).verdict.value == "MISSED"
    assert "station stopping" in api.result().reason
    if ending == "stop":
        assert [s for s, _ in seen] == list(range(1, 8))
        assert all(v == VERDICT_CODES["MISSED"] for _, v in seen[4:])
    late = station.trigger("api-2")  # after close: no row can be written, and it says so
    with pytest.raises(RuntimeError, match="closed"):
        late.result(timeout=5)


def test_modbus_malformed_requests_get_exceptions_and_station_keeps_running(
    detect_model: Any, tmp_path: Path
) -> None:
    port = free_port()
    with running(station_yaml(tmp_path, detect_model.onnx, plc=f", modbus: {{port: {port}}}")):
        plc = ModbusPlc(port)
        c = plc.c

        def exc_code(resp: Any) -> int:
            assert resp.isError(), resp
            return int(resp.exception_code)

        assert exc_code(c.read_holding_registers(N_HR, count=1)) == 2  # past the map
        assert exc_code(c.read_holding_registers(15, count=10)) == 2  # runs past the end
        assert exc_code(c.read_coils(100, count=1)) == 2
        assert exc_code(c.read_input_registers(HR_RECIPE, count=1)) == 2
        assert exc_code(c.write_register(HR_VERDICT, 7)) == 2  # read-only register
        assert exc_code(c.write_coil(7, True)) == 2  # reserved coil
        assert exc_code(c.write_coils(0, [True, True, True])) == 2  # runs onto a reserved coil
        assert not c.write_register(HR_RECIPE, 3).isError()
        assert plc.regs()[HR_RECIPE] == 3
        # raw frames: an unknown function code, then bytes that are not Modbus at all
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(bytes([0, 9, 0, 0, 0, 2, 1, 0x41]))
            answer = s.recv(64)
        assert answer == bytes([0, 9, 0, 0, 0, 3, 1, 0xC1, 0x01])  # ILLEGAL_FUNCTION
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            time.sleep(0.2)
        # the station still answers and still inspects
        plc.trigger()
        regs = plc.wait_valid()
        assert regs[HR_VERDICT] in (1, 2, 3) and u32(regs, HR_SEQ) == 1
        assert plc.regs()[HR_RECIPE] == 3
        plc.close()
    assert [r[0] for r in db_rows(tmp_path)] == ["plc-1"]


class MjpegCamera:
    """tests/peers/mjpeg_server.py as a real network camera that a test can SIGSTOP."""

    def __init__(self, log: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERS / "mjpeg_server.py"), "--port", "0", "--fps", "20", *args],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_stalled_camera_plc_reads_missed_and_row_says_why(
    detect_model: Any, tmp_path: Path
) -> None:
    cam = MjpegCamera(tmp_path / "mjpeg.log")
    port = free_port()
    camera = (
        f"{{kind: stream, url: 'http://127.0.0.1:{cam.port}/stream.mjpg', open_timeout_s: 1, "
        f"read_timeout_s: 1, max_frame_age_s: 0.6, backoff_initial_s: 0.1, backoff_max_s: 0.4}}"
    )
    try:
        yaml_text = station_yaml(
            tmp_path,
            detect_model.onnx,
            camera=camera,
            policy="latest",
            plc=f", modbus: {{port: {port}}}",
        ).replace("frame_timeout_s: 2.0", "frame_timeout_s: 0.5")
        with running(yaml_text):
            plc = ModbusPlc(port)
            verdicts = []
            # judged while the camera runs (retry while the stream is still connecting)
            for _ in range(40):
                plc.trigger()
                verdicts.append(plc.wait_valid()[HR_VERDICT])
                plc.ack()
                if verdicts[-1] != VERDICT_CODES["MISSED"]:
                    break
            assert verdicts[-1] in (1, 2, 3)
            cam.proc.send_signal(signal.SIGSTOP)
            try:
                time.sleep(0.3)
                plc.trigger()
                stalled = plc.wait_valid()
                plc.ack()
            finally:
                cam.proc.send_signal(signal.SIGCONT)
            stalled_seq = u32(stalled, HR_SEQ)
            assert stalled[HR_VERDICT] == VERDICT_CODES["MISSED"]
            assert u32(stalled, HR_MISSED) >= 1
            plc.close()
    finally:
        cam.stop()
    rows = {r[0]: r for r in db_rows(tmp_path)}
    assert len(rows) == len(verdicts) + 1  # one row per trigger
    row = rows[f"plc-{stalled_seq}"]
    assert row[2] == "MISSED"
    assert f"trigger plc-{stalled_seq}" in row[3] and "no fresh frame within 0.5 s" in row[3]
    assert f"{u32(stalled, HR_ID):08x}" == row[1].replace("-", "")[:8]


def test_hardware_triggered_camera_judges_each_triggers_own_frame(
    detect_model: Any, tmp_path: Path
) -> None:
    """A camera fired by the line's trigger pulse (frames only on pulses), PLC triggers
    over Modbus: the frame reaches the station a little before or after the PLC's
    trigger, and either way the trigger judges the frame of its own pulse."""
    import cv2

    from tests.peers import pattern

    cam = MjpegCamera(tmp_path / "mjpeg.log", "--pulse")
    pulses = [0]  # the server numbers each pulse's frame: its first frame is 0

    def pulse() -> int:
        cam.proc.send_signal(signal.SIGUSR1)
        pulses[0] += 1
        return pulses[0]

    camera = (
        f"{{kind: stream, url: 'http://127.0.0.1:{cam.port}/stream.mjpg', open_timeout_s: 5, "
        f"read_timeout_s: 10, max_frame_age_s: 10}}"
    )
    yaml_text = station_yaml(
        tmp_path,
        detect_model.onnx,
        camera=camera,
        policy="latest",
        trigger=", camera_triggered: true, camera_lead_ms: 300",
        plc=f", modbus: {{port: {free_port()}}}",
    ).replace("store: {", "store: {save_images: [PASS, FAIL, REVIEW], ")
    expected: dict[str, int] = {}  # trigger id -> pulse index
    try:
        with running(yaml_text) as station:
            plc = ModbusPlc(modbus_port(station))
            for _ in range(100):  # the stream opens once frames flow
                pulse()
                time.sleep(0.05)
                plc.trigger()
                first = plc.wait_valid()
                plc.ack()
                if first[HR_VERDICT] != VERDICT_CODES["MISSED"]:
                    break
            assert first[HR_VERDICT] in (1, 2, 3)
            time.sleep(0.6)  # the warm-up frames are now older than the lead
            for k in range(8):
                if k % 2 == 0:  # frame first, then the PLC sets the coil
                    index = pulse()
                    time.sleep(0.08)
                    plc.trigger()
                else:  # the trigger first, the frame right after
                    plc.trigger()
                    time.sleep(0.03)
                    index = pulse()
                regs = plc.wait_valid()
                plc.ack()
                assert regs[HR_VERDICT] in (1, 2, 3), (k, regs)
                expected[f"plc-{u32(regs, HR_SEQ)}"] = index
                time.sleep(0.4)  # the next part: this frame leaves the window
            # the same frame-first order, matched as for a free-running camera: the
            # frame read before the trigger is stale and nothing else comes
            tc = station.config.trigger.model_copy(
                update={"camera_triggered": False, "frame_timeout_s": 0.5}
            )
            station.config = station.config.model_copy(update={"trigger": tc})
            pulse()
            time.sleep(0.08)
            plc.trigger()
            fresh = plc.wait_valid()
            plc.ack()
            assert fresh[HR_VERDICT] == VERDICT_CODES["MISSED"]
            plc.close()
    finally:
        cam.stop()
    con = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    rows = dict(con.execute("SELECT trigger_id, image_path FROM inspections").fetchall())
    con.close()
    judged = {t: pattern.read(cv2.imread(str(tmp_path / "data" / rows[t])))[0] for t in expected}
    assert judged == expected


def test_plc_needs_triggered_mode_and_a_free_port(detect_model: Any, tmp_path: Path) -> None:
    from kanjian.station.plc_config import PlcServerError
    from kanjian.station.plc_service import PlcConfigError

    free_run = station_yaml(tmp_path, detect_model.onnx).replace(
        "mode: triggered", "mode: free_run"
    )
    with pytest.raises(PlcConfigError, match=r"trigger\.mode: triggered"):
        build_station(parse_config(free_run))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        yaml_text = station_yaml(tmp_path, detect_model.onnx, plc=f", modbus: {{port: {port}}}")
        with pytest.raises(PlcServerError, match=f"127.0.0.1:{port}"):
            build_station(parse_config(yaml_text))
        # the CLI says so in one line (no traceback) and exits 2
        cfg = tmp_path / "taken.yaml"
        cfg.write_text(yaml_text)
        r = subprocess.run([sys.executable, "-m", "kanjian.appliance_api.cli", "run", "-c",
                            str(cfg)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"127.0.0.1:{port}" in r.stderr.replace("\n", "") and "Traceback" not in r.stderr
    threads = [t.name for t in threading.enumerate()]
    assert not [t for t in threads if t.startswith(("plc-", "store-writer", "frame-pump"))]


async def _opcua_set_recipe(endpoint: str, recipe: int) -> Any:
    """Call Station.SetRecipe; returns None, or the status error the server answered."""
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        station = client.get_node(ua.NodeId("Station", ns))
        try:
            await station.call_method(
                ua.NodeId("Station.SetRecipe", ns), ua.Variant(recipe, ua.VariantType.UInt16)
            )
        except ua.UaStatusCodeError as e:  # type: ignore[attr-defined]
            return e
        return None


def test_recipe_writes_switch_the_model_and_unknown_ones_are_refused(
    detect_model: Any, tmp_path: Path
) -> None:
    from tests import test_api_support as S

    bundles = S.make_bundles(detect_model)  # two bundles, different weights
    mb, ua_port = free_port(), free_port()
    plc_cfg = (
        f", modbus: {{port: {mb}}}, opcua: {{enabled: true, port: {ua_port}}}, "
        f"recipes: {{1: {bundles.a}, 2: {bundles.b}}}"
    )
    judged: list[tuple[int, str]] = []  # (RECIPE register, model_sha256 of the row)
    with running(station_yaml(tmp_path, bundles.a, plc=plc_cfg)) as station:
        assert station.plc is not None and station.plc.opcua is not None
        plc = ModbusPlc(modbus_port(station))
        assert plc.regs()[HR_RECIPE] == 1  # station.yaml's model is recipe 1's

        def inspect() -> None:
            plc.trigger()
            regs = plc.wait_valid()
            plc.ack()
            judged.append((regs[HR_RECIPE], u32(regs, HR_SEQ)))

        inspect()
        for recipe in (2, 1, 2):  # changeovers, as a PLC writes them between parts
            assert not plc.c.write_register(HR_RECIPE, recipe).isError()
            inspect()
        # a recipe with no model: an exception answer, the register and model stay
        r = plc.c.write_register(HR_RECIPE, 7)
        assert r.isError() and r.exception_code == 3  # ILLEGAL_DATA_VALUE
        inspect()
        bad = asyncio.run(_opcua_set_recipe(station.plc.opcua.endpoint, 9))
        assert bad is not None and "BadOutOfRange" in str(bad)
        assert asyncio.run(_opcua_set_recipe(station.plc.opcua.endpoint, 1)) is None
        inspect()
        plc.close()
    con = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    sha = dict(con.execute("SELECT trigger_id, model_sha256 FROM inspections").fetchall())
    audit = con.execute("SELECT actor, action FROM audit WHERE action = 'model.recipe'").fetchall()
    con.close()
    want = {1: bundles.sha_a, 2: bundles.sha_b}
    assert [r for r, _ in judged] == [1, 2, 1, 2, 2, 1]
    assert [sha[f"plc-{seq}"] for _, seq in judged] == [want[r] for r, _ in judged]
    assert audit == [("plc", "model.recipe")] * 4  # 1->2, 2->1, 1->2, 2->1


# -- OPC UA --------------------------------------------------------------------------------


class _Changes:
    """Subscription handler: every ResultSeq notification with its arrival time."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self.event = asyncio.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen.append((int(val), time.perf_counter()))
        self.event.set()


async def _opcua_plc(endpoint: str, n: int, window: int) -> tuple[list[dict[str, Any]], Any, Any]:
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")

        def node(name: str) -> Any:
            return client.get_node(ua.NodeId(f"Station.{name}", ns))

        station = client.get_node(ua.NodeId("Station", ns))
        changes = _Changes()
        sub = await client.create_subscription(10, changes)
        await sub.subscribe_data_change(node("ResultSeq"), queuesize=1000)
        fields = ["ResultSeq", "Verdict", "VerdictName", "InspectionUuid", "InspectionId"]
        fields += ["TopClass", "TopClassName", "Reason", "ResultValid"]
        sent_at: dict[int, float] = {}
        outstanding: list[int] = []
        got: list[dict[str, Any]] = []
        next_seen = 0
        seen_at: dict[int, float] = {}
        while len(got) < n:
            # one at a time for the first half, then up to ``window`` outstanding
            depth = 1 if len(sent_at) < n // 2 else window
            while len(outstanding) < depth and len(sent_at) < n:
                t = time.perf_counter()
                seq, accepted = await station.call_method(ua.NodeId("Station.Trigger", ns))
                assert accepted
                sent_at[seq] = t
                outstanding.append(seq)
            head = outstanding[0]
            while head not in seen_at:
                changes.event.clear()
                for s, at in changes.seen[next_seen:]:
                    seen_at.setdefault(s, at)
                next_seen = len(changes.seen)
                if head not in seen_at:
                    await asyncio.wait_for(changes.event.wait(), 30)
            values = await client.read_values([node(f) for f in fields])
            got.append(
                dict(zip(fields, values, strict=True)) | {"lat": seen_at[head] - sent_at[head]}
            )
            assert got[-1]["ResultSeq"] == head and got[-1]["ResultValid"]
            retired = await station.call_method(
                ua.NodeId("Station.Acknowledge", ns), ua.Variant(head, ua.VariantType.UInt32)
            )
            assert retired
            outstanding.pop(0)
        await asyncio.sleep(0.1)
        counts = await client.read_values([node("TriggerCount"), node("ResultCount")])
        await sub.delete()
        return got, [s for s, _ in changes.seen], counts


def test_opcua_500_triggers_with_a_subscription_seeing_every_result(
    detect_model: Any, tmp_path: Path
) -> None:
    n, port = 500, free_port()
    plc_cfg = (
        f", result_buffer: 4, modbus: {{enabled: false}}, opcua: {{enabled: true, port: {port}}}"
    )
    with running(station_yaml(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        assert station.plc is not None and station.plc.opcua is not None
        endpoint = station.plc.opcua.endpoint
        got, seen, counts = asyncio.run(_opcua_plc(endpoint, n, window=4))
    assert [g["ResultSeq"] for g in got] == list(range(1, n + 1))
    # the subscription saw every result, in order (a leading 0 is the initial value)
    assert [s for s in seen if s] == list(range(1, n + 1))
    assert counts == [n, n]
    rows = db_rows(tmp_path)
    assert [r[0] for r in rows] == [f"plc-{i}" for i in range(1, n + 1)]
    for g, row in zip(got, rows, strict=True):
        assert g["InspectionUuid"] == row[1].replace("-", "")
        assert g["InspectionId"] == g["InspectionUuid"][:8]
        assert g["VerdictName"] == row[2] and g["Verdict"] == VERDICT_CODES[row[2]]
        assert g["TopClassName"] == (row[4] or "")
    lat = [g["lat"] * 1e3 for g in got]
    report("opcua-sequential", lat[: n // 2], tmp_path)
    report("opcua-pipelined-4", lat[n // 2 :], tmp_path)


class _ResultEvents:
    """Subscription handler: every InspectionResultEventType event, in arrival order."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.event = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.seen.append(event)
        self.event.set()


def _modbus_plc_run(port: int, n: int, window: int) -> tuple[list[list[int]], list[int]]:
    """A PLC on Modbus: trigger whenever READY (up to ``window`` outstanding) and
    acknowledge each result as soon as RESULT_VALID, as fast as it can, ``n`` times.
    Returns the result registers read, and the registers at the end."""
    plc = ModbusPlc(port)
    results: list[list[int]] = []
    sent = 0
    deadline = time.monotonic() + 120
    try:
        while len(results) < n and time.monotonic() < deadline:
            regs = plc.regs()
            if regs[HR_STATUS] & ST_VALID:
                results.append(regs)
                plc.ack()
            elif regs[HR_STATUS] & ST_READY and sent < n and sent - len(results) < window:
                sent += 1
                plc.trigger()
        return results, plc.regs()
    finally:
        plc.close()


async def _events_while_modbus_plc_runs(
    endpoint: str, port: int, n: int
) -> tuple[list[Any], tuple[list[list[int]], list[int]]]:
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        etype = client.get_node(ua.NodeId("InspectionResultEventType", ns))
        handler = _ResultEvents()
        sub = await client.create_subscription(100, handler)
        # queuesize 0: the server's largest queue (asyncua: 10,000 events)
        await sub.subscribe_events(client.nodes.server, etype, queuesize=0)
        plc = await asyncio.to_thread(_modbus_plc_run, port, n, 4)
        while len(handler.seen) < n:
            handler.event.clear()
            await asyncio.wait_for(handler.event.wait(), 30)
        await asyncio.sleep(0.3)  # anything more (a duplicate) would show up now
        await sub.delete()
        return handler.seen, plc


def test_opcua_event_subscriber_sees_every_result_a_modbus_plc_acknowledges(
    detect_model: Any, tmp_path: Path
) -> None:
    """A Modbus PLC triggers and acknowledges 100 results as fast as it can (a result is
    presented for well under one OPC UA publishing interval); a SCADA client subscribed
    to the result events on OPC UA sees every one, in trigger order, each matching its
    row, and nothing twice."""
    n, port, ua_port = 100, free_port(), free_port()
    plc_cfg = (
        f", result_buffer: 4, modbus: {{port: {port}}}, opcua: {{enabled: true, port: {ua_port}}}"
    )
    with running(station_yaml(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        assert station.plc is not None and station.plc.opcua is not None
        endpoint = station.plc.opcua.endpoint
        seen, (results, final) = asyncio.run(_events_while_modbus_plc_runs(endpoint, port, n))
    assert [u32(r, HR_SEQ) for r in results] == list(range(1, n + 1))
    assert u32(final, HR_TRIGGERS) == n and u32(final, HR_REFUSED) == 0
    assert [e.ResultSeq for e in seen] == list(range(1, n + 1))
    assert all(e.Accepted for e in seen)
    rows = db_rows(tmp_path)
    assert [r[0] for r in rows] == [f"plc-{i}" for i in range(1, n + 1)]
    for e, regs, row in zip(seen, results, rows, strict=True):
        assert e.InspectionUuid == row[1].replace("-", "")
        assert e.InspectionId == e.InspectionUuid[:8] == f"{u32(regs, HR_ID):08x}"
        assert e.VerdictName == row[2] and e.Verdict == VERDICT_CODES[row[2]] == regs[HR_VERDICT]
        assert e.TopClassName == (row[4] or "") and e.NumDetections == row[6]
        assert e.SourceName == "Station" and e.Message.Text == f"trigger {e.ResultSeq}: {row[2]}"


async def _secure_session(
    endpoint: str, client_dir: Path | None, server_cert: Path, uri: str
) -> int:
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    client = Client(endpoint, timeout=5)
    client.application_uri = uri
    if client_dir is not None:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(client_dir / "cert.der"),
            private_key=str(client_dir / "key.pem"),
            server_certificate=str(server_cert),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    async with client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        seq, accepted = await client.get_node(ua.NodeId("Station", ns)).call_method(
            ua.NodeId("Station.Trigger", ns)
        )
        assert accepted
        return int(seq)


def test_opcua_sign_and_encrypt_with_trusted_client_certificates(
    detect_model: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from kanjian.station.plc_cli import plc_app

    runner = CliRunner()
    for name, extra in (("server", []), ("client", ["--client"]), ("stranger", ["--client"])):
        uri = "urn:kanjian:station:server" if name == "server" else f"urn:kanjian:test:{name}"
        r = runner.invoke(plc_app, ["cert", str(tmp_path / name), "--uri", uri, *extra])
        assert r.exit_code == 0, r.output
    port = free_port()
    sec = (
        f"{{mode: sign_encrypt, certificate: {tmp_path / 'server/cert.der'}, "
        f"private_key: {tmp_path / 'server/key.pem'}, "
        f"trusted_clients: [{tmp_path / 'client/cert.der'}]}}"
    )
    plc_cfg = (
        f", modbus: {{enabled: false}}, opcua: {{enabled: true, port: {port}, security: {sec}}}"
    )
    server_cert = tmp_path / "server/cert.der"
    with running(station_yaml(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        assert station.plc is not None and station.plc.opcua is not None
        endpoint = station.plc.opcua.endpoint
        seq = asyncio.run(
            _secure_session(endpoint, tmp_path / "client", server_cert, "urn:kanjian:test:client")
        )
        assert seq == 1
        from asyncua.ua.uaerrors import BadCertificateUntrusted, UaError

        with pytest.raises(UaError, match="No matching endpoints"):  # no plain endpoint
            asyncio.run(_secure_session(endpoint, None, server_cert, "urn:kanjian:test:plain"))
        with pytest.raises(BadCertificateUntrusted):  # a valid certificate, but not trusted
            asyncio.run(
                _secure_session(
                    endpoint, tmp_path / "stranger", server_cert, "urn:kanjian:test:stranger"
                )
            )
        assert station.plc.handshake.snapshot().trigger_count == 1
    assert [r[0] for r in db_rows(tmp_path)] == ["plc-1"]


# -- documentation -------------------------------------------------------------------------


def test_docs_list_every_register_and_node() -> None:
    """docs/plc.md is the contract the PLC programmer reads: every point is in it."""
    from kanjian.station.plc_opcua import EVENT_FIELDS, EVENT_TYPE, NODES
    from kanjian.station.plc_registers import REGISTER_MAP

    text = DOCS.read_text()
    for p in REGISTER_MAP:
        assert f"| {p.table} | {p.address} | {p.name} |" in text, p.name
    for spec in NODES:
        assert f"Station.{spec.name}" in text, spec.name
    assert EVENT_TYPE in text
    for spec in EVENT_FIELDS:
        assert f"| {spec.name} |" in text, spec.name
    for method in ("Station.Trigger", "Station.Acknowledge", "Station.SetRecipe"):
        assert method in text


def test_cli_map_is_what_the_docs_show() -> None:
    from typer.testing import CliRunner

    from kanjian.station.plc_cli import plc_app

    r = CliRunner().invoke(plc_app, ["map", "--markdown"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("|")]
    assert len(rows) > 40
    text = DOCS.read_text()
    assert [line for line in rows if line not in text] == []
    for cmd in (["--help"], ["map", "--help"], ["cert", "--help"]):
        assert "Usage" in CliRunner().invoke(plc_app, cmd).output
