"""Identity across restarts and odd files (issue 12): trigger ids never repeat on one data
folder (clean restarts and SIGKILL alike), what the PLC registers show after a restart,
leftover temp images cleaned at start, and every folder entry giving exactly one row
(bytes after a JPEG's end, a dangling link, a name that is not UTF-8)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.camera.config import FolderSourceConfig
from kanjian.camera.files import FolderSource
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.imagefile import printable_path
from kanjian.station.counters import BLOCK
from kanjian.station.pipeline import build_station
from kanjian.station.store import ResultStore
from tests.support.plc import (
    HR_BUFFERED,
    HR_ID,
    HR_RESULTS,
    HR_SEQ,
    HR_STATUS,
    HR_TOP_CLASS,
    HR_TRIGGERS,
    HR_VERDICT,
    ST_READY,
    ST_VALID,
    ModbusPlc,
    db_rows,
    free_port,
    plc_station,
    running,
    u32,
)
from tests.support.station_config import parse, station_config

REPO = Path(__file__).resolve().parents[1]


def _jpeg(seed: int, shape: tuple[int, int] = (96, 128)) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf.tobytes())


def _decoded(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img)


# -- the folder source -----------------------------------------------------------------------


def test_bytes_after_the_jpeg_end_marker_decode_a_cut_jpeg_does_not(tmp_path: Path) -> None:
    good = _jpeg(1)
    (tmp_path / "a_plain.jpg").write_bytes(good)
    (tmp_path / "b_trailing.jpg").write_bytes(good + b"camera metadata \xff\xe1 not JPEG" * 20)
    (tmp_path / "c_second_picture.jpg").write_bytes(good + _jpeg(2))
    (tmp_path / "d_cut.jpg").write_bytes(good[: len(good) - 200])
    (tmp_path / "e_cut_then_junk.jpg").write_bytes(good[: len(good) // 2] + b"\x00junk")
    source = FolderSource(FolderSourceConfig(path=tmp_path))
    got = [source.read() for _ in range(5)]
    assert source.read() is None
    want = _decoded(good)
    for frame in got[:3]:
        assert isinstance(frame, Frame), frame
        assert np.array_equal(frame.image, want)  # the first picture, exactly
    for failure, name in zip(got[3:], ("d_cut.jpg", "e_cut_then_junk.jpg"), strict=True):
        assert isinstance(failure, FrameFailure) and not failure.missed
        assert "truncated JPEG" in failure.reason and name in failure.reason


def test_every_folder_entry_gets_one_frame_or_failure(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg(3))
    (tmp_path / "b_dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "c_linked.jpg").symlink_to(tmp_path / "a.jpg")
    (tmp_path / "d_folder.jpg").mkdir()
    os.mkfifo(tmp_path / "e_fifo.jpg")  # never opened: reading it would block
    (tmp_path / "f_loop.jpg").symlink_to(tmp_path / "f_loop.jpg")
    (tmp_path / "notes.txt").write_text("not selected: other extension")
    source = FolderSource(FolderSourceConfig(path=tmp_path))
    got = [source.read() for _ in range(6)]
    assert source.read() is None
    a, dangling, linked, folder, fifo, loop = got
    assert isinstance(a, Frame) and isinstance(linked, Frame)
    assert isinstance(dangling, FrameFailure)
    assert "b_dangling.jpg" in dangling.reason and "dangling symbolic link" in dangling.reason
    assert dangling.uri == str(tmp_path / "b_dangling.jpg")
    assert isinstance(folder, FrameFailure) and "not a regular file: a folder" in folder.reason
    assert isinstance(fifo, FrameFailure) and "special file" in fifo.reason
    assert isinstance(loop, FrameFailure) and "f_loop.jpg" in loop.reason


def test_mtime_order_lists_a_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg(4))
    (tmp_path / "b.jpg").symlink_to(tmp_path / "nowhere.jpg")
    source = FolderSource(FolderSourceConfig(path=tmp_path, order="mtime"))
    assert {p.name for p in source.files} == {"a.jpg", "b.jpg"}


def test_a_name_that_is_not_utf8_is_read_and_escaped(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/bad\xff\xfe name.jpg"
    with open(raw, "wb") as f:
        f.write(_jpeg(5))
    frame = FolderSource(FolderSourceConfig(path=tmp_path)).read()
    assert isinstance(frame, Frame)
    assert frame.uri == f"{tmp_path}/bad\\xff\\xfe name.jpg"
    assert frame.uri.encode("utf-8")  # no lone surrogates left
    assert printable_path(tmp_path / "plain é.jpg") == f"{tmp_path}/plain é.jpg"


def test_the_pipeline_stores_one_row_per_entry(detect_model: Any, tmp_path: Path) -> None:
    """A real station (detect test model, real store) over a folder of odd entries."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = _jpeg(6, (240, 320))
    (folder / "a_plain.jpg").write_bytes(good)
    (folder / "b_trailing.jpg").write_bytes(good + b"\x00trailer bytes" * 10)
    (folder / "c_cut.jpg").write_bytes(good[: len(good) // 3])
    (folder / "d_dangling.jpg").symlink_to(folder / "missing.jpg")
    with open(os.fsencode(folder) + b"/e_bad\xff.jpg", "wb") as f:
        f.write(good)
    station = build_station(
        parse(station_config(tmp_path / "data", bundle=detect_model.onnx, images=folder))
    )
    try:
        station.run()
    finally:
        station.close()
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    rows = db.execute("SELECT uri, verdict, reason FROM inspections ORDER BY seq").fetchall()
    db.close()
    by_name = {Path(uri).name: (verdict, reason) for uri, verdict, reason in rows}
    assert len(rows) == 5 and len(by_name) == 5
    judged = {"PASS", "FAIL", "REVIEW"}
    assert by_name["a_plain.jpg"][0] in judged
    assert by_name["b_trailing.jpg"][0] in judged
    assert by_name["e_bad\\xff.jpg"][0] in judged  # stored under its escaped name
    assert by_name["c_cut.jpg"][0] == "ERROR" and "truncated JPEG" in by_name["c_cut.jpg"][1]
    verdict, reason = by_name["d_dangling.jpg"]
    assert verdict == "ERROR" and "d_dangling.jpg" in reason and "dangling symbolic link" in reason


# -- temp images ---------------------------------------------------------------------------


def test_leftover_temp_images_are_removed_at_start(tmp_path: Path) -> None:
    day = tmp_path / "images" / "2026-01-02"
    day.mkdir(parents=True)
    left = day / f"{uuid.uuid4()}.tmp"
    left.write_bytes(b"")  # what a SIGKILL between write and rename leaves
    keep = [day / "notes.tmp", day / f"{uuid.uuid4()}.jpg", tmp_path / "images" / "x.tmp"]
    for p in keep:
        p.write_bytes(b"kept")
    store = ResultStore(tmp_path)
    store.close()
    assert not left.exists()
    assert all(p.read_bytes() == b"kept" for p in keep)


# -- trigger ids across restarts -------------------------------------------------------------


def test_trigger_ids_never_repeat_across_restarts(detect_model: Any, tmp_path: Path) -> None:
    """Two starts of a triggered station on one data folder, triggers in both (ids made
    by the station): every id distinct, and the second start's above the first's."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(_jpeg(7, (240, 320)))
    cfg = station_config(
        tmp_path / "data",
        bundle=detect_model.onnx,
        camera={"kind": "folder", "path": str(images), "loop": True},
        trigger={"mode": "triggered", "frame_timeout_s": 5.0},
    )
    ids: list[str] = []
    for _ in range(2):
        station = build_station(parse(cfg))
        loop = threading.Thread(target=station.run, daemon=True)
        loop.start()
        try:
            ids += [station.trigger().result(120).frame.trigger_id or "" for _ in range(3)]
        finally:
            station.stop()
            loop.join(60)
            station.close()
    assert ids == ["t1", "t2", "t3", "t4", "t5", "t6"]  # a clean stop gives back the rest
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    stored = [r[0] for r in db.execute("SELECT trigger_id FROM inspections ORDER BY seq")]
    db.close()
    assert stored == ids


_KILLED = """
import os, signal, sys
from pathlib import Path
from kanjian.station.store import ResultStore
store = ResultStore(Path(sys.argv[1]))
numbers = store.counter("trigger.plc")
print(" ".join(str(numbers.next()) for _ in range(int(sys.argv[2]))), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_trigger_numbers_after_a_sigkill_are_never_reused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / ".mypy"), str(REPO)])}
    seen: list[int] = []
    for n in (5, BLOCK + 3):  # the second crosses a block: a reservation mid-run
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_KILLED), str(tmp_path), str(n)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert r.returncode == -signal.SIGKILL, r.stderr
        seen += [int(x) for x in r.stdout.split()]
    store = ResultStore(tmp_path)
    numbers = store.counter("trigger.plc")
    assert numbers.last >= max(seen)  # what TRIGGER_COUNT shows before the first trigger
    seen.append(numbers.next())
    store.close()
    assert len(seen) == len(set(seen)) == 5 + BLOCK + 3 + 1
    assert seen == sorted(seen)


def test_counter_starts_above_ids_of_an_older_store(tmp_path: Path) -> None:
    """A store written before the counters table: its plc-N rows are not reused."""
    store = ResultStore(tmp_path)
    store.close()
    db = sqlite3.connect(tmp_path / "kanjian.db")
    db.execute("DELETE FROM counters")
    db.execute(
        "INSERT INTO inspections (id, seq, station_id, trigger_id, verdict, captured_at, "
        "judged_at) VALUES ('x', 1, 's', 'plc-41', 'PASS', 'now', 'now')"
    )
    db.commit()
    db.close()
    from kanjian.station.counters import last_numbered

    store = ResultStore(tmp_path)
    assert store.counter("trigger.plc", last_numbered(("plc-",))).next() == 42
    store.close()


# -- the PLC across a restart -----------------------------------------------------------------


def test_plc_registers_after_a_restart(detect_model: Any, tmp_path: Path) -> None:
    """Modbus PLC: 2 triggers, restart on the same data folder; before any new trigger
    the registers read 'no result since start' with TRIGGER_COUNT where it stood; the
    next trigger is number 3 and every row's id is distinct."""
    port = free_port()
    cfg = plc_station(tmp_path, detect_model.onnx, plc={"modbus": {"port": port}})
    for run in range(2):
        with running(cfg):
            plc = ModbusPlc(port)
            try:
                regs = plc.regs()
                assert u32(regs, HR_TRIGGERS) == 2 * run  # the last trigger number
                assert u32(regs, HR_RESULTS) == 0 and regs[HR_BUFFERED] == 0
                assert regs[HR_VERDICT] == 0 and u32(regs, HR_SEQ) == 0  # no result yet
                assert regs[HR_TOP_CLASS] == 0xFFFF and u32(regs, HR_ID) == 0
                assert regs[HR_STATUS] & ST_VALID == 0
                for k in (1, 2):
                    _wait_ready(plc)
                    plc.trigger()
                    regs = plc.wait_valid()
                    assert u32(regs, HR_SEQ) == 2 * run + k == u32(regs, HR_TRIGGERS)
                    plc.ack()
            finally:
                plc.close()
    assert [r[0] for r in db_rows(tmp_path)] == ["plc-1", "plc-2", "plc-3", "plc-4"]


def _wait_ready(plc: ModbusPlc, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not plc.regs()[HR_STATUS] & ST_READY:
        if time.monotonic() > deadline:
            pytest.fail("READY did not rise")
        time.sleep(0.005)
