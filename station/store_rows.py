"""A batch of inspections as the rows the store's writer commits (and its JPEG files).

The store's writer thread makes these while the writer process commits the batch
before (store_writers.py); the rows carry their ``seq`` numbers, so a batch made
ahead is used only if the batch before it committed as one (``seq0`` still right).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from kanjian.camera.frame import Frame
from kanjian.inference.heads import store_fields as task_store_fields
from kanjian.inference.heads import task_columns
from kanjian.inference.types import Inspection
from kanjian.station.images import image_relpath
from kanjian.station.records import (
    CLASS_INDEX_COLUMNS,
    DETECTION_COLUMNS,
    INSPECTION_COLUMNS,
    class_index_rows,
    stored_rows,
    utc_iso,
)
from kanjian.station.store_writer import Tables

#: the ``outbox`` values the store writes per inspection, in this order
OUTBOX_COLUMNS: tuple[str, ...] = ("seq", "inspection_id", "created_at", "attempts")
_READ_MODEL_COLUMNS = frozenset(INSPECTION_COLUMNS)

#: decides and saves one inspection's JPEG: ``(insp, written, skipped) -> relative
#: path or None``; files it writes go into ``written``, images it holds back into ``skipped``
SaveImage = Callable[[Inspection, list[Path], list[Inspection]], "str | None"]


@dataclass
class Prepared:
    """The rows of ``batch``, numbered from ``seq0 + 1``.

    Attributes:
        tables: inspections, detections, inspection_classes, outbox rows (store_writer.py).
        written: image files written for it (removed again if it is not committed).
        skipped: inspections whose image was held back (disk full), counted once committed.
        saved_bytes: size of the JPEGs written, bytes.
        first_id: the first inspection's id (a batch commits whole: it tells whether it did).
        wire: ``tables`` as the store's writer takes them (``StoreWriter.encode``).
    """

    batch: list[Inspection]
    seq0: int
    tables: Tables = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[Inspection] = field(default_factory=list)
    saved_bytes: int = 0
    first_id: str = ""
    wire: Any = None

    def unlink(self) -> None:
        """Remove the images written for it (its rows were not committed)."""
        for p in self.written:
            p.unlink(missing_ok=True)
        self.written.clear()


def save_jpeg(insp: Inspection, data_dir: Path, quality: int, written: list[Path]) -> str:
    """Encode ``insp``'s frame as JPEG under ``data_dir`` (temp file, then rename);
    returns its path relative to ``data_dir``. Raises ``OSError`` (disk full, encoder)."""
    assert isinstance(insp.frame, Frame)
    rel = image_relpath(insp)
    path = data_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", insp.frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"JPEG encoding failed for {insp.inspection_id}")
    tmp = path.with_suffix(".tmp")
    written.append(tmp)
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    written.append(path)
    return rel


def prepare(batch: list[Inspection], seq0: int, station_id: str, save: SaveImage) -> Prepared:
    """Images first (``save``), then the rows. On an exception the images it wrote
    are removed before it propagates."""
    out = Prepared(batch, seq0)
    try:
        _fill(out, station_id, save)
    except BaseException:
        out.unlink()
        raise
    return out


def _fill(out: Prepared, station_id: str, save: SaveImage) -> None:
    images = [save(i, out.written, out.skipped) for i in out.batch]
    # the task heads' own columns (a registered head may add some); those the read
    # model has too (probs_json, score) take the read model's value
    extra = [c for c in task_columns() if c not in _READ_MODEL_COLUMNS]
    rows: list[tuple[Any, ...]] = []
    dets: list[tuple[Any, ...]] = []
    classes: list[tuple[str, str, int]] = []
    outbox: list[tuple[Any, ...]] = []
    seq = out.seq0
    now = utc_iso()
    for insp, img in zip(out.batch, images, strict=True):
        seq += 1
        row, drows = stored_rows(insp, station_id=station_id, seq=seq, image_path=img)
        if extra:
            fields = task_store_fields(insp)
            row += tuple(fields[c] for c in extra)
        rows.append(row)
        if drows:
            dets += drows
        # row[15]: top_class, row[9]: verdict (INSPECTION_COLUMNS)
        if row[15] is not None or drows:
            classes += class_index_rows(row[9], seq, row[15], [r[3] for r in drows])
        outbox.append((seq, row[0], now, 0))
    # sized now: once committed, store.retention may delete them at once
    out.saved_bytes = sum(p.stat().st_size for p in out.written if p.suffix == ".jpg")
    out.first_id = str(rows[0][0]) if rows else ""
    out.tables = [
        ("inspections", (*INSPECTION_COLUMNS, *extra), False, rows),
        ("detections", DETECTION_COLUMNS, False, dets),
        ("inspection_classes", CLASS_INDEX_COLUMNS, True, classes),
        ("outbox", OUTBOX_COLUMNS, False, outbox),
    ]
