"""The store's writer process: killed, signalled, orphaned, it loses nothing and
writes nothing twice; its multi-row inserts equal ``executemany``."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from kanjian.inference.types import Inspection
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.store_health import is_space_error
from kanjian.station.store_rows import prepare
from kanjian.station.store_writer import insert_rows
from kanjian.station.store_writers import ProcessWriter, WriterError, rebuild_error

sys.path.insert(0, str(Path(__file__).parent))
from test_store import _insp


def _gone(pid: int) -> bool:
    """The process ended (a zombie not reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _writer_pid(store: ResultStore) -> int:
    w = store._writer
    assert isinstance(w, ProcessWriter) and w.pid is not None
    return w.pid


def _rows(path: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(path / DB_NAME)
    try:
        return db.execute("SELECT id, seq, verdict FROM inspections ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_writer_killed_during_a_flood_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path,
) -> None:
    store = ResultStore(tmp_path, batch_max_rows=40)
    pids: list[int] = []  # the writers killed
    armed = False

    def kill_once(batch: list[Inspection]) -> None:  # on the writer thread, after a commit
        nonlocal armed
        if armed:  # the next batch is with the writer, or about to be
            armed = False
            pid = _writer_pid(store)
            os.kill(pid, signal.SIGKILL)
            pids.append(pid)

    store.add_listener(kill_once)
    sent = [_insp(i) for i in range(2000)]
    for part in range(4):  # a kill each time: after one died the backlog is folded together
        armed = part > 0
        for insp in sent[part * 500 : (part + 1) * 500]:
            store.put(insp)
        assert store.flush(timeout_s=120)
    stats = store.stats()
    result = store.close()
    assert result.not_committed == 0 and stats.written == 2000
    rows = _rows(tmp_path)
    assert [r[0] for r in rows] == [str(i.inspection_id) for i in sent]  # once each, in order
    assert [r[1] for r in rows] == list(range(1, 2001))
    assert {r[2] for r in rows} == {"PASS"}  # no ERROR stand-in for a batch it had committed
    assert len(set(pids)) == 3 and all(_gone(p) for p in pids)
    assert stats.writer == "process" and stats.writer_restarts == 3
    assert stats.writer_pid not in pids


def test_a_batch_committed_before_its_writer_died_counts_as_committed(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    try:
        batch = [_insp(i) for i in range(30)]
        p = prepare(batch, 0, "station-1", lambda insp, written, skipped: None)
        old = _writer_pid(store)
        assert isinstance(store._writer, ProcessWriter)
        store._writer.send(store._writer.encode(p.tables))
        db = sqlite3.connect(tmp_path / DB_NAME)
        deadline = time.monotonic() + 30
        while not db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]:
            assert time.monotonic() < deadline, "the writer never committed"
            time.sleep(0.01)
        # it died after its COMMIT, before the store read its answer (taken away here)
        assert store._writer._read() == ("ok", pytest.approx(0, abs=1e9))
        os.kill(old, signal.SIGKILL)
        assert store._wait(p) is None  # looked: the batch is in, so it is not sent again
        assert _writer_pid(store) != old and _gone(old)
        assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 30
        db.close()
    finally:
        store.close()


def test_the_writer_ignores_stop_signals_and_ends_with_its_store(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    pid = _writer_pid(store)
    os.kill(pid, signal.SIGTERM)  # a service stop signals the whole group
    os.kill(pid, signal.SIGINT)
    for i in range(50):
        store.put(_insp(i))
    assert store.flush(timeout_s=60)
    assert _writer_pid(store) == pid  # the same child, still at work
    assert store.close().not_committed == 0
    assert _gone(pid)
    assert len(_rows(tmp_path)) == 50


def test_the_writer_ends_when_the_station_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from kanjian.station.store import ResultStore
        s = ResultStore(Path({str(tmp_path)!r}))
        print(s._writer.pid, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert not _gone(child)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while not _gone(child):  # stdin's end of file tells it
        assert time.monotonic() < deadline, f"writer {child} outlived its station"
        time.sleep(0.05)


def test_the_thread_writer_needs_no_process(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, writer="thread")
    for i in range(20):
        store.put(_insp(i))
    assert store.flush()
    stats = store.stats()
    assert (stats.writer, stats.writer_pid, stats.writer_restarts) == ("thread", None, 0)
    assert store.writer_synchronous == 2
    assert store.close().not_committed == 0 and len(_rows(tmp_path)) == 20


def test_errors_come_back_as_the_class_the_store_judges() -> None:
    full = rebuild_error("OperationalError", "database or disk is full", None)
    assert isinstance(full, sqlite3.OperationalError) and is_space_error(full)
    dup = rebuild_error("IntegrityError", "UNIQUE constraint failed: inspections.id", None)
    assert isinstance(dup, sqlite3.IntegrityError)
    nospace = rebuild_error("OSError", "No space left on device", errno.ENOSPC)
    assert isinstance(nospace, OSError) and is_space_error(nospace)
    odd = rebuild_error("UnicodeEncodeError", "surrogates not allowed", None)
    assert isinstance(odd, WriterError) and "UnicodeEncodeError" in str(odd)
    assert not isinstance(odd, (OSError, sqlite3.Error))  # not retried as it is


@pytest.mark.parametrize("limit", [999, 32766])
@pytest.mark.parametrize("n", [0, 1, 5, 63, 64, 65, 500, 777])
def test_multi_row_inserts_equal_executemany(n: int, limit: int) -> None:
    cols = ("a", "b", "c")
    rows = [(i, f"t{i}", None if i % 3 else i / 7) for i in range(n)]
    rows += [(i, "dup", 0.0) for i in range(0, n, 10)]  # ignored: the key is there
    got, want = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for c in (got, want):
        c.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c REAL)")
    got.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    insert_rows(got, "t", cols, rows, or_ignore=True)
    want.executemany("INSERT OR IGNORE INTO t (a, b, c) VALUES (?, ?, ?)", rows)
    query = "SELECT a, b, c, typeof(c) FROM t ORDER BY a"
    assert got.execute(query).fetchall() == want.execute(query).fetchall()
    with pytest.raises(sqlite3.IntegrityError):  # without IGNORE a duplicate fails the same
        insert_rows(got, "t", cols, rows[:1] or [(0, "x", 1.0), (0, "x", 1.0)])


def test_a_served_station_replaces_a_killed_writer_and_says_so(
    tmp_path: Path, detect_model: Any, neu_det_dir: Path
) -> None:
    """The real appliance (``kanjian serve``): its writer process SIGKILLed twice, the
    loop goes on, /api/status and /metrics count the restarts, the stop flushes."""
    import shutil

    import httpx

    from tests.support import api as S
    from tests.support.station_config import station_config, write_config

    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((neu_det_dir / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, images / p.name)
    port = S.free_port()
    cfg = station_config(tmp_path / "data", bundle=detect_model.onnx, images=images,
                         camera={"loop": True})  # fmt: skip
    cfg_path = write_config(tmp_path / "s.yaml", cfg)
    cfg_path.write_text(cfg_path.read_text() + f"api:\n  port: {port}\n")
    s = S.start_serve(cfg_path, port, tmp_path, timeout=300)
    try:
        c = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=60)

        def store() -> dict[str, Any]:
            out: dict[str, Any] = c.get("/api/status").json()["store"]
            return out

        S.wait_for(lambda: store()["committed"] >= 3, 120, what="3 committed rows")
        for restarts in (1, 2):
            before = store()
            assert before["writer"] == "process" and not _gone(before["writer_pid"])
            os.kill(before["writer_pid"], signal.SIGKILL)
            S.wait_for(lambda r=restarts: store()["writer_restarts"] == r, 120, what="a restart")
            S.wait_for(lambda b=before: store()["committed"] > b["committed"] + 2, 120,
                       what="rows after the restart")  # fmt: skip
            assert store()["writer_pid"] != before["writer_pid"] and _gone(before["writer_pid"])
        metrics = httpx.get(s.url + "/metrics", timeout=30).text
        assert "kanjian_store_writer_restarts_total 2.0" in metrics
    finally:
        out = s.stop(timeout=180)
    last = [ln for ln in out.splitlines() if ln.startswith("stopped:")][-1]
    assert s.proc.returncode == 0 and "store flushed" in last and "NOT" not in last, out
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    seqs = [r[0] for r in db.execute("SELECT seq FROM inspections ORDER BY seq")]
    db.close()
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no double


def test_a_writer_that_cannot_start_again_is_retried_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies and no new one starts for a while (no memory for a process):
    the store keeps every inspection, retries, and commits all of them once it can."""
    store = ResultStore(tmp_path)
    try:
        first = _writer_pid(store)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
        os.kill(first, signal.SIGKILL)
        sent = [_insp(i) for i in range(60)]
        for insp in sent[:30]:
            store.put(insp)
        deadline = time.monotonic() + 60
        while store.stats().errors < 2:  # sends to no process, restarts that fail
            assert time.monotonic() < deadline, store.stats()
            time.sleep(0.05)
        assert store.stats().stalled and store.stats().written == 0
        monkeypatch.undo()  # a Python to start again
        for insp in sent[30:]:
            store.put(insp)
        assert store.flush(timeout_s=60)
        st = store.stats()
        assert st.written == 60 and not st.stalled and st.writer_restarts == 1
        assert st.writer_pid not in (None, first)
    finally:
        assert store.close().not_committed == 0
    rows = _rows(tmp_path)
    assert [r[0] for r in rows] == [str(i.inspection_id) for i in sent]
    assert [r[1] for r in rows] == list(range(1, 61)) and {r[2] for r in rows} == {"PASS"}


def test_the_writer_holds_the_data_folder_lock_too(tmp_path: Path) -> None:
    """A station killed while its writer still commits: the folder stays locked until
    the writer is done, so a new station cannot number rows the old one is writing."""
    from kanjian.station.datalock import LOCK_NAME, DataLock

    lock = DataLock.acquire(tmp_path)
    store = ResultStore(tmp_path)
    try:
        held = {os.path.realpath(f"/proc/{_writer_pid(store)}/fd/{fd}")
                for fd in os.listdir(f"/proc/{_writer_pid(store)}/fd")}  # fmt: skip
        assert str(tmp_path / LOCK_NAME) in held
    finally:
        store.close()
        lock.release()
    DataLock.acquire(tmp_path).release()  # free again once both let go


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_rows_committed_unseen_by_the_store_are_numbered_past_not_clashed(
    tmp_path: Path, writer: Literal["process", "thread"]
) -> None:
    """Rows at the store's next seqs that it never heard of (what a batch committed
    unseen would leave): the store numbers on from the database's last seq instead of
    clashing, and replacing every later inspection by an ERROR row."""
    store = ResultStore(tmp_path, writer=writer)
    try:
        store.put(_insp(0))
        assert store.flush()
        db = sqlite3.connect(tmp_path / DB_NAME)
        cols = [r[1] for r in db.execute("PRAGMA table_info(inspections)")]
        for seq in (2, 3):
            picked = ", ".join("?" if c == "id" else str(seq) if c == "seq" else c for c in cols)
            db.execute(f"INSERT INTO inspections ({', '.join(cols)}) "
                       f"SELECT {picked} FROM inspections WHERE seq = 1", [f"unseen-{seq}"])  # fmt: skip
        db.commit()
        db.close()
        sent = [_insp(i) for i in range(1, 4)]
        for insp in sent:
            store.put(insp)
        assert store.flush()
    finally:
        assert store.close().not_committed == 0
    rows = _rows(tmp_path)
    assert [(r[1], r[2]) for r in rows] == [(s, "PASS") for s in range(1, 7)]
    assert [r[0] for r in rows[3:]] == [str(i.inspection_id) for i in sent]
