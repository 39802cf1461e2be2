"""One station per data folder (issue #12, point 3), with real processes.

A second ``kanjian run`` (or ``sync drain``) beside a running station refuses at
once: exit 2, one line naming the holder's PID, no traceback, no row written.
Readers (dataset export, sync status, token list) work beside it. A SIGKILLed
holder leaves no stale lock: the kernel drops it with the process.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kanjian.station.datalock import LOCK_NAME, DataFolderInUseError, DataLock, read_holder
from tests.support import api as S
from tests.support.station_config import parse, station_config


def _frame_ids(data: Path) -> list[int]:
    """Frame ids in commit order; none yet while the store is still being created."""
    con = sqlite3.connect(data / "kanjian.db")
    try:
        return [r[0] for r in con.execute("SELECT frame_id FROM inspections ORDER BY seq")]
    except sqlite3.OperationalError as e:  # the file exists before its first migration
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def test_lock_refuses_a_second_holder_and_frees_on_release(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = DataLock.acquire(data, command="kanjian serve -c station.yaml")
    try:
        with pytest.raises(DataFolderInUseError) as err:
            DataLock.acquire(data, command="kanjian run")  # flock: even from the same process
        msg = str(err.value)
        assert f"PID {os.getpid()}" in msg and "kanjian serve -c station.yaml" in msg
        assert str(data) in msg and "--data-dir" in msg
        # the refused one did not wipe the holder's details
        assert read_holder(data)["command"] == "kanjian serve -c station.yaml"
    finally:
        first.release()
    first.release()  # idempotent
    again = DataLock.acquire(data)
    assert again.held and (data / LOCK_NAME).is_file()
    again.release()


def test_refusal_never_names_a_dead_pid(tmp_path: Path) -> None:
    """A holder that has the lock but has not yet written its details: the file still
    names the previous, dead holder, and the message must not blame that PID."""
    data = tmp_path / "data"
    held = DataLock.acquire(data)
    try:
        gone = subprocess.Popen(["true"])
        gone.wait()
        (data / LOCK_NAME).write_text(f'{{"pid": {gone.pid}, "command": "kanjian run"}}\n')
        with pytest.raises(DataFolderInUseError) as err:
            DataLock.acquire(data)
        assert str(gone.pid) not in str(err.value)
        assert "in use by another kanjian process" in str(err.value)
    finally:
        held.release()


def test_build_station_holds_the_lock_until_close(detect_model: Any, tmp_path: Path) -> None:
    from kanjian.station.pipeline import build_station

    images = S.copy_images(tmp_path / "images", 3)
    cfg = parse(station_config(tmp_path / "data", bundle=detect_model.onnx, images=images))
    station = build_station(cfg)
    try:
        with pytest.raises(DataFolderInUseError, match=f"PID {os.getpid()}"):
            build_station(cfg)
    finally:
        station.close()
    build_station(cfg).close()  # close() released it


@pytest.fixture
def site(detect_model: Any, tmp_path: Path) -> tuple[Path, Path, int]:
    return S.looping_station(tmp_path, detect_model.onnx, 12, 11)


def test_second_station_refused_beside_serve_readers_work(
    site: tuple[Path, Path, int], tmp_path: Path
) -> None:
    config, data, port = site
    holder = S.start_serve(config, port, tmp_path)
    try:
        S.wait_for(lambda: len(_frame_ids(data)) >= 3, 120, what="3 rows from the holder")
        r = S.kanjian("run", "-c", str(config), "--frames", "5")
        err = r.stdout + r.stderr
        assert r.returncode == 2, err
        line = [ln for ln in r.stderr.splitlines() if "in use" in ln]
        assert len(line) == 1, err  # one line, unwrapped, naming the holder and the fix
        assert f"PID {holder.proc.pid} (kanjian serve" in line[0] and "--data-dir" in line[0]
        assert "Traceback" not in err and "UNIQUE" not in err, err
        assert "classes)" not in err  # refused before the model was even loaded

        d = S.kanjian("sync", "drain", "-c", str(config), "--timeout", "5")  # writes the outbox
        assert d.returncode == 2 and f"PID {holder.proc.pid}" in d.stderr, d.stdout + d.stderr

        # the read-only commands work beside it
        st = S.kanjian("sync", "status", "-c", str(config), "--json")
        assert st.returncode == 0, st.stdout + st.stderr
        tl = S.kanjian("token", "list", "-c", str(config))
        assert tl.returncode == 0 and "screen" in tl.stdout, tl.stdout + tl.stderr
        ex = S.kanjian("dataset", "export", str(data), str(tmp_path / "export"), "--json")
        assert ex.returncode == 0, ex.stdout + ex.stderr
    finally:
        out = holder.stop()
    assert holder.proc.returncode == 0, out
    ids = _frame_ids(data)
    # one station's lossless loop wrote every row: a second writer would repeat 0..4
    assert ids == list(range(len(ids))), ids[:20]


def test_sigkilled_holder_leaves_no_stale_lock(
    site: tuple[Path, Path, int], tmp_path: Path
) -> None:
    config, data, _ = site
    holder = subprocess.Popen(
        [str(S.KANJIAN), "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        S.wait_for(lambda: read_holder(data).get("pid") == holder.pid, 120, what="the lock")
        S.wait_for(lambda: (data / "kanjian.db").is_file() and _frame_ids(data), 120, what="a row")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert read_holder(data)["pid"] == holder.pid  # the file still names the dead holder
    before = len(_frame_ids(data))
    r = S.kanjian("run", "-c", str(config), "--frames", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(_frame_ids(data)) == before + 5
