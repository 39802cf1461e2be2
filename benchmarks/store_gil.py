"""How close can a Python writer get to SQLite alone? Writer designs side by side.

Issue 12 asks the store for >= 0.8x of SQLite alone on the same rows. SQLite alone
(``_floor_round`` of benchmarks/store.py) inserts rows made beforehand, untimed; a
writer must also make them from :class:`Inspection` objects (~10 us each with the
store's own :func:`~kanjian.station.records.stored_rows`) and take them off a queue.
The floor is ~21 us a row on the 2-core VM, so 0.8x leaves ~5 us of Python a row,
unless the Python runs while SQLite works. SQLite gives the GIL back while it steps
and syncs, so the thread designs below try to overlap the two; CPython 3.11's GIL
hands itself back to a waiting thread only when the holder blocks or after the 5 ms
switch interval, which is what this measures. The store as shipped commits in a
child process instead (its own interpreter, its own GIL); ``store.writer: thread``
is the one-process store it replaced.

Contenders, each fed by one producer thread putting the same inspections on a
``queue.Queue`` as fast as it returns (the store's flood, benchmarks/store.py), the
clock running from the first put to the last commit, ``synchronous=FULL``, batches
of up to 500, one fresh database each, round-robin:

- ``floor, executemany`` / ``floor, multi-row``: SQLite alone, rows prebuilt (no
  queue, no producer); the second with one ``INSERT .. VALUES (..), (..)`` a batch;
- ``ResultStore (writer process)``: the store as shipped; ``ResultStore, writer:
  thread``: the same store committing on its writer thread (the design before);
- ``one writer, multi-row``: one thread makes a batch's rows and inserts them in
  multi-row statements (a thread store's best case: its bookkeeping left out);
- ``rows, then SQLite (2 threads)``: one thread makes rows, a second inserts and commits
  (one batch in hand between them);
- ``rows and inserts, COMMIT (2 threads)``: the writer makes rows and inserts; a second thread
  runs only the COMMIT (the fsync), while the writer makes the next batch's rows.

Run: ``python -m benchmarks.store_gil --inspections 10000 --rounds 5`` (from the
repository root, ``PYTHONPATH=$PWD``). Results: benchmarks/results/store-sink.md.
"""

from __future__ import annotations

import itertools
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.store import _floor_round, _one_round, make_inspections
from kanjian.station.store_writer import insert_sql

Rows = tuple[list[Any], list[Any], list[Any], list[Any]]
_STOP = object()
BATCH = 500


def _make_rows(batch: list[Any], seq0: int) -> Rows:
    """The four tables' rows of ``batch`` (seq from ``seq0 + 1``), as the store makes them."""
    from kanjian.station.records import class_index_rows, stored_rows, utc_iso

    rows: list[Any] = []
    dets: list[Any] = []
    classes: list[Any] = []
    outbox: list[Any] = []
    now = utc_iso()
    for seq, insp in enumerate(batch, start=seq0 + 1):
        row, drows = stored_rows(insp, station_id="station-1", seq=seq, image_path=None)
        rows.append(row)
        dets += drows
        if row[15] is not None or drows:
            classes += class_index_rows(row[9], seq, row[15], [r[3] for r in drows])
        outbox.append((seq, row[0], now, 0))
    return rows, dets, classes, outbox


class _Inserter:
    """Multi-row inserts of whole batches (the store's SQL texts, cached: pysqlite caches
    prepared statements by text)."""

    def __init__(self, conn: Any) -> None:
        from kanjian.station.records import (
            CLASS_INDEX_COLUMNS,
            DETECTION_COLUMNS,
            INSPECTION_COLUMNS,
        )
        from kanjian.station.store import OUTBOX_COLUMNS

        self.conn = conn
        self.tables = (
            ("inspections", INSPECTION_COLUMNS, False),
            ("detections", DETECTION_COLUMNS, False),
            ("inspection_classes", CLASS_INDEX_COLUMNS, True),
            ("outbox", OUTBOX_COLUMNS, False),
        )

    def insert(self, rows: Rows) -> None:
        """``BEGIN IMMEDIATE`` and one statement per table (batches <= 500 rows)."""
        self.conn.execute("BEGIN IMMEDIATE")
        for (table, cols, ignore), part in zip(self.tables, rows, strict=True):
            if part:
                # one statement for the whole part (the store chunks it: store_writer.py)
                text = insert_sql(table, cols, len(part), ignore)
                self.conn.execute(text, list(itertools.chain.from_iterable(part)))


def _take(q: queue.Queue[Any]) -> tuple[list[Any], bool]:
    """Up to :data:`BATCH` items (waiting for the first); ``True`` when the stop came."""
    first = q.get()
    if first is _STOP:
        return [], True
    batch = [first]
    while len(batch) < BATCH:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is _STOP:
            return batch, True
        batch.append(item)
    return batch, False


def _flood(
    inspections: list[Any], folder: Path, writer: Callable[[Any, queue.Queue[Any]], None]
) -> float:
    """Inspections/s: put all on a queue, ``writer(conn, q)`` in its own thread
    commits them (``q.task_done`` per item after its commit)."""
    from kanjian.station.store import DB_NAME, open_db

    conn = open_db(folder / DB_NAME, "FULL").conn
    q: queue.Queue[Any] = queue.Queue(maxsize=len(inspections) + 1)
    t = threading.Thread(target=writer, args=(conn, q), daemon=True)
    t.start()
    t0 = time.perf_counter()
    for insp in inspections:
        q.put_nowait(insp)
    q.join()
    dt = time.perf_counter() - t0
    q.put(_STOP)
    t.join()
    n = conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
    conn.close()
    if n != len(inspections):
        raise RuntimeError(f"{n} of {len(inspections)} inspections committed")
    return len(inspections) / dt


def _serial(conn: Any, q: queue.Queue[Any]) -> None:
    ins, seq, stop = _Inserter(conn), 0, False
    while not stop:
        batch, stop = _take(q)
        ins.insert(_make_rows(batch, seq))
        conn.execute("COMMIT")
        seq += len(batch)
        for _ in range(len(batch) + stop):
            q.task_done()


def _rows_then_sqlite(conn: Any, q: queue.Queue[Any]) -> None:
    hand: queue.Queue[tuple[Rows, int, bool]] = queue.Queue(maxsize=1)

    def sqlite_side() -> None:
        ins = _Inserter(conn)
        while True:
            rows, taken, stop = hand.get()
            ins.insert(rows)
            conn.execute("COMMIT")
            for _ in range(taken):
                q.task_done()
            if stop:
                return

    t = threading.Thread(target=sqlite_side, daemon=True)
    t.start()
    seq, stop = 0, False
    while not stop:
        batch, stop = _take(q)
        hand.put((_make_rows(batch, seq), len(batch) + stop, stop))
        seq += len(batch)
    t.join()


def _commit_thread(conn: Any, q: queue.Queue[Any]) -> None:
    hand: queue.Queue[tuple[int, bool]] = queue.Queue(maxsize=1)
    idle, started = threading.Semaphore(1), threading.Semaphore(0)

    def committer() -> None:
        while True:
            taken, stop = hand.get()
            started.release()  # the writer waits for this: COMMIT starts now, not 5 ms on
            conn.execute("COMMIT")
            for _ in range(taken):
                q.task_done()
            idle.release()
            if stop:
                return

    t = threading.Thread(target=committer, daemon=True)
    t.start()
    ins, seq, stop = _Inserter(conn), 0, False
    while not stop:
        batch, stop = _take(q)
        rows = _make_rows(batch, seq)
        idle.acquire()  # the previous COMMIT is done
        ins.insert(rows)
        hand.put((len(batch) + stop, stop))
        started.acquire()
        seq += len(batch)
    t.join()


def _floor_multi(inspections: list[Any], folder: Path) -> float:
    from kanjian.station.store import DB_NAME, open_db

    conn = open_db(folder / DB_NAME, "FULL").conn
    batches = [_make_rows(inspections[a : a + BATCH], a) for a in range(0, len(inspections), BATCH)]
    ins = _Inserter(conn)
    t0 = time.perf_counter()
    for rows in batches:
        ins.insert(rows)
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return len(inspections) / dt


CONTENDERS: dict[str, Callable[[list[Any], Path], float]] = {
    "floor, executemany": lambda i, f: _floor_round(i, f, BATCH),
    "floor, multi-row": _floor_multi,
    "ResultStore (writer process)": lambda i, f: _one_round(i, "FULL", f)[0],
    "ResultStore, writer: thread": lambda i, f: _one_round(i, "FULL", f, "thread")[0],
    "one writer, multi-row": lambda i, f: _flood(i, f, _serial),
    "rows, then SQLite (2 threads)": lambda i, f: _flood(i, f, _rows_then_sqlite),
    "rows and inserts, COMMIT (2 threads)": lambda i, f: _flood(i, f, _commit_thread),
}


def stored_digest(db_path: Path) -> str:
    """SHA-256 of what a contender stored, the writers' clock columns (``judged_at``,
    the outbox's ``created_at``) left out: every other inspections column, the
    detections, class index and outbox, in order. Equal digests: the same rows."""
    import hashlib
    import sqlite3

    from kanjian.station.records import DETECTION_COLUMNS, INSPECTION_COLUMNS

    cols = ", ".join(c for c in INSPECTION_COLUMNS if c != "judged_at")
    h = hashlib.sha256()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        for sql in (
            f"SELECT {cols} FROM inspections ORDER BY seq",
            f"SELECT {', '.join(DETECTION_COLUMNS)} FROM detections ORDER BY inspection_id, idx",
            "SELECT class_name, verdict, seq FROM inspection_classes ORDER BY seq, class_name",
            "SELECT seq, inspection_id, attempts FROM outbox ORDER BY seq",
        ):
            for row in conn.execute(sql):
                h.update(repr(row).encode())
    finally:
        conn.close()
    return h.hexdigest()


def run(inspections: int = 10_000, rounds: int = 5) -> dict[str, list[float]]:
    """Inspections/s per contender and round (round-robin, order alternating).

    Raises ``RuntimeError`` when two contenders of a round stored different rows
    (:func:`stored_digest`): a design is only faster if it writes the same.
    """
    from kanjian.station.store import DB_NAME

    batch = make_inspections(inspections)
    names = list(CONTENDERS)
    got: dict[str, list[float]] = {n: [] for n in names}
    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-gil-"))
    try:
        for r in range(rounds):
            digests: dict[str, str] = {}
            for k, name in enumerate(names if r % 2 == 0 else names[::-1]):
                folder = tmp / f"{r}-{k}"
                got[name].append(CONTENDERS[name](batch, folder))
                digests[name] = stored_digest(folder / DB_NAME)
                shutil.rmtree(folder)
            if len(set(digests.values())) != 1:
                raise RuntimeError(f"round {r}: the contenders stored different rows: {digests}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return got


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inspections", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    got = run(a.inspections, a.rounds)
    floor = got["floor, executemany"]
    print(f"| writer | inspections/s (median of {a.rounds}) | per round min-max | "
          "x floor, executemany (median of per-round ratios) |\n|---|---:|---:|---:|")  # fmt: skip
    for name, v in got.items():
        ratio = float(np.median([x / f for x, f in zip(v, floor, strict=True)]))
        print(f"| {name} | {np.median(v):,.0f} | {min(v):,.0f}-{max(v):,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    _main()
