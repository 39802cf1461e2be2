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


@dataclass(frozen=True)
class StoreRow:
    """One ``synchronous`` mode.

    Attributes:
        synchronous: SQLite's mode. inspections: per round. rounds: rounds run.
        durable_per_s: inspections committed per second, per round (first put to flush done).
        put_us: latency of each ``put`` call, microseconds, all rounds pooled.
        blocked_puts: puts that waited for a full queue, all rounds.
        batches: median transactions per round. queue_size, batch_max_rows: the store's settings.
    """

    synchronous: str
    inspections: int
    rounds: int
    durable_per_s: Summary
    put_us: Summary
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
    inspections: list[Any], synchronous: str, folder: Path
) -> tuple[float, list[float], int, int, int, int]:
    from kanjian.station.config import StoreConfig
    from kanjian.station.store import ResultStore

    cfg = StoreConfig(data_dir=folder, synchronous=synchronous)
    store = ResultStore(
        folder,
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


def run_store(
    inspections: int = 20_000, rounds: int = 3, modes: tuple[str, ...] = ("FULL", "NORMAL")
) -> list[StoreRow]:
    """Flood the store ``rounds`` times per mode, modes alternating; see the module docstring."""
    batch = make_inspections(inspections)
    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-store-"))
    got: dict[str, list[tuple[float, list[float], int, int, int, int]]] = {m: [] for m in modes}
    try:
        for r in range(rounds):
            for m in modes if r % 2 == 0 else modes[::-1]:
                got[m].append(_one_round(batch, m, tmp / f"{m}-{r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for m, res in got.items():
        rows.append(
            StoreRow(
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
    return rows
