"""The store on a REAL full disk (a small tmpfs, or a loop-mounted ext4 image): stalls are
reported, rows come before images, the backlog drains in one transaction when space
returns, a stop while full names what was lost, a start below the floor is refused.

Mounting needs root (as here and in CI); without it the tests skip, saying why.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.store_health import LowDiskSpaceError, check_free_space
from tests.support.small_disk import small_disk as mounted_small_disk
from tests.support.station_config import station_config, write_config

KANJIAN = str(Path(sys.executable).parent / "kanjian")
MODEL = ModelRef("m", "1", "0" * 64)
SIZE_MB = 8


def _insp(i: int, verdict: Verdict = Verdict.FAIL) -> Inspection:
    # noise: the JPEG is not tiny, so an image needs real space
    img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame = Frame(img, i, "cam0", datetime.now(timezone.utc), uri=f"f{i}.jpg")
    return Inspection(frame, verdict, "r", MODEL, Detections.empty(), ("a",), timings_ms={})


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real SIZE_MB file system, unmounted afterwards."""
    with mounted_small_disk(tmp_path, SIZE_MB) as where:
        yield where


def _fill(disk: Path) -> Path:
    """Write a filler file until the file system is full; returns it."""
    filler = disk / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def _wait(cond: Callable[[], bool], what: str, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_stalls_backlog_is_let_go_once_committed_not_at_some_later_gc(
    small_disk: Path, writer: Literal["process", "thread"]
) -> None:
    """The retried batch holds every inspection of the stall (pixels and all); once it
    is committed nothing may keep them, not even a reference cycle waiting for the
    garbage collector (an exception held by the frame it was raised in did: RSS grew by
    a backlog per stall)."""
    store = ResultStore(small_disk / "data", save_verdicts=(), min_free_mb=0, writer=writer)
    gc.disable()
    try:
        filler = _fill(small_disk)
        frames = []
        for i in range(300):
            insp = _insp(i)
            frames.append(weakref.ref(insp.frame))
            store.put(insp)
        del insp
        _wait(lambda: store.stats().errors >= 3, "a few failed attempts")
        filler.unlink()
        assert store.flush(120.0) and store.stats().written == 300
        _wait(lambda: not any(f() is not None for f in frames), "the backlog let go", 10.0)
    finally:
        gc.enable()
        store.close()


def test_stall_is_reported_and_the_backlog_commits_in_one_go(small_disk: Path) -> None:
    data = small_disk / "data"
    store = ResultStore(data, batch_max_rows=5, min_free_mb=1000)
    try:
        filler = _fill(small_disk)
        for i in range(200):
            store.put(_insp(i))
        _wait(lambda: store.stats().stalled, "the stall")
        # while stalled the writer takes everything queued into the batch it retries
        _wait(lambda: store.stats().queued == 0, "the backlog gathered")
        st = store.stats()
        assert st.judged == 200 and st.written < 200 and st.stalled_since is not None
        assert st.last_error is not None, st
        assert "full" in st.last_error or "No space" in st.last_error, st.last_error
        written, batches = st.written, st.batches
        filler.unlink()
        assert store.flush(120.0)
        st = store.stats()
        assert st.written == 200 and not st.stalled
        # one transaction for the whole backlog, not 200/5 batch-sized steps
        assert st.batches - batches == 1, (written, batches, st)
        # rows first: the disk was full, so images were dropped (still below the floor)
        assert st.images_not_saved == 200
    finally:
        res = store.close()
    assert res.ok and res.judged == res.committed == 200 and res.line().startswith("store flushed")
    db = sqlite3.connect(data / DB_NAME)
    assert db.execute("SELECT COUNT(*), COUNT(image_path) FROM inspections").fetchone() == (200, 0)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    leftovers = [p for p in (data / "images").rglob("*") if p.is_file()]
    assert leftovers == []  # a failed transaction removed the images it had written


def test_stop_while_full_counts_what_was_not_committed(small_disk: Path) -> None:
    data = small_disk / "data"
    store = ResultStore(data)
    store.put(_insp(0))
    assert store.flush(60.0)
    filler = _fill(small_disk)
    try:
        for i in range(1, 31):
            store.put(_insp(i))
        _wait(lambda: store.stats().stalled, "the stall")
        res = store.close(stalled_timeout_s=1.0)
    finally:
        filler.unlink()
    assert not res.ok
    assert (res.judged, res.committed + res.not_committed) == (31, 31)
    assert res.not_committed >= 1 and res.reason is not None
    line = res.line()
    assert line.startswith(f"STORE NOT FLUSHED: {res.not_committed} judged inspections were not")
    db = sqlite3.connect(data / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == res.committed
    db.close()


def test_start_below_the_floor_is_refused(small_disk: Path) -> None:
    with pytest.raises(LowDiskSpaceError) as e:
        check_free_space(small_disk, SIZE_MB * 2)
    msg = str(e.value)
    assert str(small_disk) in msg and "MB free" in msg and "store.min_free_mb" in msg
    check_free_space(small_disk, 1)  # above the floor: no error


def test_queue_over_its_memory_bound_keeps_rows_drops_pixels(tmp_path: Path) -> None:
    gate = threading.Event()
    seen: list[int] = []

    def hold(batch: list[Inspection]) -> None:  # the writer waits here: a slow disk
        seen.append(len(batch))
        gate.wait(60)

    one = _insp(0).frame.image.nbytes
    store = ResultStore(tmp_path, on_commit=hold, queue_max_mb=3.5 * one / (1024 * 1024))
    try:
        store.put(_insp(0))
        _wait(lambda: bool(seen), "the first commit")
        for i in range(1, 11):
            store.put(_insp(i))
        st = store.stats()
        # the batch in flight still holds its frame: it and two queued fit under the bound
        assert st.queued_bytes == 3 * one
        assert st.images_not_saved == 8
        gate.set()
        assert store.flush(60.0)
    finally:
        gate.set()
        res = store.close()
    assert res.ok and res.committed == 11 and res.images_not_saved == 8
    db = sqlite3.connect(tmp_path / DB_NAME)
    rows = db.execute("SELECT frame_id, image_path FROM inspections ORDER BY seq").fetchall()
    db.close()
    assert [r[0] for r in rows] == list(range(11))  # every row, in order
    assert [r[1] is not None for r in rows] == [True] * 3 + [False] * 8


def test_the_queue_bound_counts_anomaly_maps_and_drops_them_with_the_pixels(
    tmp_path: Path,
) -> None:
    import dataclasses

    gate = threading.Event()
    seen: list[Inspection] = []

    def hold(batch: list[Inspection]) -> None:  # the writer waits here: a slow disk
        seen.extend(batch)
        gate.wait(60)

    def anomalous(i: int) -> Inspection:
        insp = _insp(i)
        h, w = insp.frame.image.shape[:2]  # type: ignore[union-attr]
        return dataclasses.replace(insp, anomaly_map=np.full((h, w), 0.1, np.float32))

    full = _insp(0).frame.image.nbytes + anomalous(0).anomaly_map.nbytes  # type: ignore[union-attr]
    # room for two frames with their maps; a bound on the frames alone would take all three
    store = ResultStore(tmp_path, on_commit=hold, queue_max_mb=2.5 * full / (1024 * 1024))
    try:
        store.put(anomalous(0))
        _wait(lambda: bool(seen), "the first commit")
        store.put(anomalous(1))
        store.put(anomalous(2))
        st = store.stats()
        assert st.queued_bytes == 2 * full  # the third's frame and map were let go
        assert st.images_not_saved == 1
        gate.set()
        assert store.flush(60.0)
    finally:
        gate.set()
        res = store.close()
    assert res.ok and res.committed == 3 and res.images_not_saved == 1
    assert [i.anomaly_map is not None for i in seen] == [True, True, False]


# -- through `kanjian run` -----------------------------------------------------------------


def _run_cfg(tmp_path: Path, data: Path, model: Path, images: Path, **store: Any) -> Path:
    cfg = station_config(
        data,
        bundle=model,
        images=images,
        camera={"loop": True},
        store={"save_images": ["PASS", "FAIL", "REVIEW", "ERROR"], **store},
    )
    return write_config(tmp_path / "s.yaml", cfg)


@pytest.fixture()
def few_images(tmp_path: Path, neu_det_dir: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((neu_det_dir / "images").glob("*.jpg"))[:4]:
        shutil.copy(p, folder / p.name)
    return folder


def test_kanjian_run_stopped_while_full_names_the_loss_and_fails(
    small_disk: Path, detect_model: Any, few_images: Path, tmp_path: Path
) -> None:
    data = small_disk / "data"
    cfg = _run_cfg(tmp_path, data, detect_model.onnx, few_images, min_free_mb=1)
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "COLUMNS": "300"}
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([KANJIAN, "run", "-c", str(cfg)], stdout=out, stderr=out, env=env)
    filler = None
    try:

        def rows() -> int:
            if not (data / DB_NAME).is_file():
                return 0
            db = sqlite3.connect(data / DB_NAME, timeout=30)
            try:
                return int(db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
            except sqlite3.OperationalError:
                return 0
            finally:
                db.close()

        _wait(lambda: rows() > 0 or proc.poll() is not None, "a first row", 300)
        assert proc.poll() is None, log.read_text()
        filler = _fill(small_disk)
        _wait(lambda: "store write failed" in log.read_text() or proc.poll() is not None, "a stall")
        time.sleep(1.0)  # a few more judged inspections pile up
        proc.send_signal(signal.SIGTERM)
        proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if filler is not None:
            filler.unlink()
    text = log.read_text()
    assert proc.returncode == 1, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("STORE NOT FLUSHED: "), text
    # named by what stalled it (the full disk), not by how the store gave up
    assert "full" in last.split("(", 1)[1] and "WriterDied" not in last, last
    lost = int(last.split()[3])
    summary = [ln for ln in text.splitlines() if " inspections (" in ln][-1]
    judged = int(summary.split()[0])
    assert lost >= 1 and judged == rows() + lost, (text, rows())


def test_kanjian_run_refuses_a_start_below_the_floor(
    small_disk: Path, detect_model: Any, few_images: Path, tmp_path: Path
) -> None:
    cfg = _run_cfg(tmp_path, small_disk / "data", detect_model.onnx, few_images, min_free_mb=64)
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "COLUMNS": "300"}
    r = subprocess.run(
        [KANJIAN, "run", "-c", str(cfg), "--frames", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    err = r.stdout + r.stderr
    assert r.returncode == 2, err
    assert "store.min_free_mb" in err and str(small_disk / "data") in err and "MB free" in err
    assert not (small_disk / "data" / DB_NAME).exists()  # refused before the store opened


# -- through `kanjian serve`: status, metrics, and the last line ------------------------------


def test_serve_reports_the_stall_and_drains_when_space_returns(
    small_disk: Path, detect_model: Any, few_images: Path, tmp_path: Path
) -> None:
    import httpx

    from tests.support import api as S

    port = S.free_port()
    data = small_disk / "data"
    cfg = _run_cfg(tmp_path, data, detect_model.onnx, few_images, min_free_mb=1)
    cfg.write_text(cfg.read_text() + f"api:\n  port: {port}\n")
    s = S.start_serve(cfg, port, tmp_path, timeout=300)
    filler = None
    try:
        assert s.token, "".join(s.lines)
        c = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=60)

        def store() -> dict[str, Any]:
            out: dict[str, Any] = c.get("/api/status").json()["store"]
            return out

        S.wait_for(lambda: store()["committed"] >= 2, 120, what="2 committed rows")
        filler = _fill(small_disk)
        S.wait_for(lambda: store()["stalled"], 120, what="the stall in /api/status")
        S.wait_for(lambda: store()["judged"] > store()["committed"] + 2, 120, what="a backlog")
        st = c.get("/api/status").json()
        assert st["store"]["stalled_since"] and st["store"]["last_error"], st["store"]
        assert st["disk"]["free_bytes"] < 1024 * 1024, st["disk"]
        assert st["frames"] >= st["store"]["judged"] > st["store"]["committed"]
        metrics = httpx.get(s.url + "/metrics", timeout=30).text
        assert "kanjian_store_stalled 1.0" in metrics
        assert "kanjian_disk_free_bytes" in metrics and "kanjian_store_judged_total" in metrics
        filler.unlink()
        filler = None
        S.wait_for(lambda: not store()["stalled"], 120, what="the end of the stall")
        st = c.get("/api/status").json()
        assert st["store"]["images_not_saved"] >= 1  # rows first; images waited for space
        assert "kanjian_store_stalled 0.0" in httpx.get(s.url + "/metrics", timeout=30).text
    finally:
        if filler is not None:
            filler.unlink()
        out = s.stop(timeout=180)
    last = [ln for ln in out.splitlines() if ln.startswith("stopped:")][-1]
    assert s.proc.returncode == 0 and "store flushed" in last and "NOT" not in last, out
