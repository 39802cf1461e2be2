"""The SQLite sink: how many inspections per second the station's store makes durable.

A flood of ready-made inspections is handed to :meth:`ResultStore.put` from one
thread, as fast as it returns (the inspection loop's side), with the station's
default batching (group commit of whatever is queued, up to
``batch_max_rows``); the clock stops when :meth:`ResultStore.flush` says every
row is committed. ``synchronous=FULL`` (the station's default, the mode that
lost nothing under simulated power loss) and ``NORMAL`` run round-robin, each
round on a fresh database.

"Never makes the loop wait" is measured two ways: ``StoreStats.blocked_puts``
(puts that found the queue full) and the latency of every ``put`` call.

A third contender is SQLite's own floor: the same rows (made beforehand by the
store's own :func:`~kanjian.station.records.stored_rows` and
:func:`~kanjian.station.records.class_index_rows`, untimed) inserted with plain
``sqlite3`` ``executemany`` into the same schema and the same tables (inspections,
detections, inspection_classes, outbox), in transactions of ``batch_max_rows``,
``synchronous=FULL``. The gap between it and the store is what the store's Python
(row building, the queue, the writer thread) costs where it does not overlap with
SQLite's work (the store's writer process commits one batch while the writer thread
makes the next one's rows); issue 12 asks for the store at :data:`SINK_TARGET` or
more of the floor, measured in the same run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Summary, summarize

STORE = "ResultStore (put -> durable)"
FLOOR = "sqlite3 executemany, prebuilt rows"
#: issue 12: the store makes at least this fraction of the floor's inspections/s durable
SINK_TARGET = 0.8


@dataclass(frozen=True)
class StoreRow:
    """One ``synchronous`` mode.

    Attributes:
        method: :data:`STORE` (the station's store) or :data:`FLOOR` (prebuilt rows,
            plain ``executemany``; ``put_us`` and ``blocked_puts`` do not apply).
        synchronous: SQLite's mode. inspections: per round. rounds: rounds run.
        durable_per_s: inspections committed per second, per round (first put to flush done).
        put_us: latency of each ``put`` call, microseconds, all rounds pooled.
        blocked_puts: puts that waited for a full queue, all rounds.
        batches: median transactions per round. queue_size, batch_max_rows: the store's settings.
    """

    method: str
    synchronous: str
    inspections: int
    rounds: int
    durable_per_s: Summary
    put_us: Summary | None
    blocked_puts: int
    batches: float
    queue_size: int
    batch_max_rows: int


def make_inspections(n: int, detections_every: int = 5) -> list[Any]:
    """``n`` PASS inspections of a tiny frame; every ``detections_every``-th has two boxes.

    PASS frames are not saved as JPEG by the default config, so this measures
    the database alone.
    """
    from kanjian.camera.frame import Frame
    from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict

    image = np.zeros((8, 8, 3), np.uint8)
    ref = ModelRef("bench", "1", "0" * 64)
    names = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
    boxes = Detections(
        xyxy=np.array([[10, 10, 50, 60], [100, 80, 180, 200]], np.float32),
        confidence=np.array([0.4, 0.3], np.float32),
        class_id=np.array([1, 4], np.int32),
    )
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        frame = Frame(image, i, "cam0", now, uri=f"bench#frame={i}")
        dets = boxes if i % detections_every == 0 else Detections.empty()
        out.append(
            Inspection(
                frame=frame,
                verdict=Verdict.PASS,
                reason="bench",
                model=ref,
                detections=dets,
                class_names=names,
                timings_ms={"preprocess": 0.8, "infer": 42.0, "postprocess": 0.5, "total": 43.3},
            )
        )
    return out


def _one_round(
    inspections: list[Any], synchronous: str, folder: Path, writer: str = "process"
) -> tuple[float, list[float], int, int, int, int]:
    from kanjian.station.config import StoreConfig
    from kanjian.station.store import ResultStore

    cfg = StoreConfig(data_dir=folder, synchronous=synchronous, writer=writer)
    store = ResultStore(
        folder,
        writer=cfg.writer,
        save_verdicts=tuple(cfg.save_images),
        batch_max_rows=cfg.batch_max_rows,
        batch_max_delay_ms=cfg.batch_max_delay_ms,
        queue_size=cfg.queue_size,
        synchronous=cfg.synchronous,
    )
    try:
        put = store.put
        put_us = []
        clock = time.perf_counter_ns
        t0 = time.perf_counter()
        for insp in inspections:
            a = clock()
            put(insp)
            put_us.append((clock() - a) / 1e3)
        if not store.flush(timeout_s=600):
            raise RuntimeError("the store did not commit the flood within 600 s")
        dt = time.perf_counter() - t0
        s = store.stats()
        if s.written != len(inspections):
            raise RuntimeError(f"store wrote {s.written} of {len(inspections)} inspections")
    finally:
        store.close()
    return (
        len(inspections) / dt,
        put_us,
        s.blocked_puts,
        s.batches,
        cfg.queue_size,
        cfg.batch_max_rows,
    )


def _floor_round(inspections: list[Any], folder: Path, batch_rows: int) -> float:
    """Inspections/s of plain ``executemany`` of prebuilt rows (FULL), same schema and batching.

    The same tables as the store's transaction: inspections, detections, their
    ``inspection_classes`` rows and outbox, with the store's SQL.
    """
    from kanjian.station.records import (
        CLASS_INDEX_INSERT,
        DETECTION_COLUMNS,
        INSPECTION_COLUMNS,
        class_index_rows,
        stored_rows,
        utc_iso,
    )
    from kanjian.station.store import DB_NAME, OUTBOX_COLUMNS, open_db

    db = open_db(folder / DB_NAME, "FULL")
    conn = db.conn
    now = utc_iso()
    # per batch: (inspections, detections, classes, outbox) rows
    batches: list[tuple[list[Any], list[Any], list[Any], list[Any]]] = []
    for a in range(0, len(inspections), batch_rows):
        rows, dets, classes, outbox = [], [], [], []
        for seq, insp in enumerate(inspections[a : a + batch_rows], start=a + 1):
            row, drows = stored_rows(insp, station_id="station-1", seq=seq, image_path=None)
            rows.append(row)
            dets += drows
            classes += class_index_rows(row[9], seq, row[15], [r[3] for r in drows])
            outbox.append((seq, row[0], now, 0))
        batches.append((rows, dets, classes, outbox))

    def sql(table: str, cols: tuple[str, ...]) -> str:
        return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    i_sql, d_sql = sql("inspections", INSPECTION_COLUMNS), sql("detections", DETECTION_COLUMNS)
    o_sql = sql("outbox", OUTBOX_COLUMNS)
    t0 = time.perf_counter()
    for rows, dets, classes, outbox in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(i_sql, rows)
        if dets:
            conn.executemany(d_sql, dets)
        if classes:
            conn.executemany(CLASS_INDEX_INSERT, classes)
        conn.executemany(o_sql, outbox)
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return len(inspections) / dt


def run_store(
    inspections: int = 20_000,
    rounds: int = 3,
    modes: tuple[str, ...] = ("FULL", "NORMAL"),
    floor: bool = True,
) -> list[StoreRow]:
    """Flood the store ``rounds`` times per mode, modes alternating; see the module docstring."""
    batch = make_inspections(inspections)
    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-store-"))
    got: dict[str, list[tuple[float, list[float], int, int, int, int]]] = {m: [] for m in modes}
    floors: list[float] = []
    try:
        for r in range(rounds):
            for m in modes if r % 2 == 0 else modes[::-1]:
                got[m].append(_one_round(batch, m, tmp / f"{m}-{r}"))
            if floor:
                floors.append(_floor_round(batch, tmp / f"floor-{r}", got[modes[0]][-1][5]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for m, res in got.items():
        rows.append(
            StoreRow(
                method=STORE,
                synchronous=m,
                inspections=inspections,
                rounds=rounds,
                durable_per_s=summarize([x[0] for x in res]),
                put_us=summarize([u for x in res for u in x[1]]),
                blocked_puts=sum(x[2] for x in res),
                batches=float(np.median([x[3] for x in res])),
                queue_size=res[0][4],
                batch_max_rows=res[0][5],
            )
        )
    if floors:
        rows.append(
            StoreRow(
                method=FLOOR,
                synchronous="FULL",
                inspections=inspections,
                rounds=rounds,
                durable_per_s=summarize(floors),
                put_us=None,
                blocked_puts=0,
                batches=float(-(-inspections // rows[0].batch_max_rows)),
                queue_size=0,
                batch_max_rows=rows[0].batch_max_rows,
            )
        )
    return rows


def sink_ratio(rows: list[StoreRow]) -> float | None:
    """The store's median FULL inspections/s over SQLite alone's (same run), or None."""
    full = next((r for r in rows if r.method == STORE and r.synchronous == "FULL"), None)
    floor = next((r for r in rows if r.method == FLOOR), None)
    if full is None or floor is None:
        return None
    return full.durable_per_s.median / floor.durable_per_s.median


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inspections", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="FULL", help="comma-separated, e.g. FULL,NORMAL")
    a = ap.parse_args()
    rows = run_store(a.inspections, a.rounds, tuple(a.modes.split(",")))
    for r in rows:
        s = r.durable_per_s
        print(f"{r.method}, {r.synchronous}: median {s.median:.0f} inspections/s "
              f"(min {s.min:.0f}, max {s.max:.0f}, {s.n} rounds of {r.inspections})")  # fmt: skip
    ratio = sink_ratio(rows)
    if ratio is not None:
        verdict = "PASS" if ratio >= SINK_TARGET else "FAIL"
        print(f"sink / SQLite alone: {ratio:.2f}x (target >= {SINK_TARGET}x): {verdict}")


if __name__ == "__main__":
    _main()
