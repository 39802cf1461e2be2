"""The stored inspection: one typed read model of the store's rows, and the store's time format.

:class:`StoredInspection` is the single mapping between an ``inspections`` row (with
its ``detections`` rows) and a Python object. The store writes through it
(:meth:`StoredInspection.from_inspection` then :meth:`StoredInspection.row`); the
HTTP API, the sync messages and the dataset export read through it
(:meth:`StoredInspection.from_row`, with the column lists defined here once).

Every time the store keeps is :func:`utc_iso` text: fixed-width ISO 8601 UTC with
microseconds, so comparing the text compares the times (the indexes rely on it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np

from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection, Verdict
from kanjian.station.store_writer import insert_sql
from kanjian.station.timings_text import timings_json

#: the verdicts that judged a part (a yield's denominator); ERROR and MISSED judged none
JUDGED_VERDICTS: tuple[Verdict, ...] = (Verdict.PASS, Verdict.FAIL, Verdict.REVIEW)

#: a row as ``sqlite3`` hands it out: a tuple, or a ``sqlite3.Row`` (index and name)
Row = Sequence[Any] | sqlite3.Row

#: the ``inspections`` table's columns, in the order :meth:`StoredInspection.from_row` reads
INSPECTION_COLUMNS: tuple[str, ...] = (
    "id",
    "seq",
    "station_id",
    "source_id",
    "frame_id",
    "trigger_id",
    "uri",
    "captured_at",
    "judged_at",
    "verdict",
    "reason",
    "model_name",
    "model_version",
    "model_sha256",
    "num_detections",
    "top_class",
    "top_confidence",
    "width",
    "height",
    "image_path",
    "timings_json",
    "probs_json",
    "score",  # anomaly models (the head's store column; no migration adds it)
    "quality_json",  # issue 15: the image quality gate's numbers (migration 049)
)
#: the ``detections`` columns :meth:`StoredDetection.from_row` reads (``inspection_id`` first)
DETECTION_COLUMNS: tuple[str, ...] = (
    "inspection_id",
    "idx",
    "class_id",
    "class_name",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    "mask_area",
)
#: the ``feedback`` columns :meth:`StoredFeedback.from_row` reads
FEEDBACK_COLUMNS: tuple[str, ...] = (
    "id",
    "inspection_id",
    "kind",
    "class_name",
    "note",
    "actor",
    "created_at",
)


def utc_iso(t: datetime | None = None) -> str:
    """``t`` (default: now) as the store's time text: ISO 8601 UTC with microseconds.

    Always ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (32 characters), so text order is
    time order. ``t`` must be timezone-aware (a naive time would be read as local).
    """
    return (
        (t or datetime.now(timezone.utc))
        .astimezone(timezone.utc)
        .isoformat(timespec="microseconds")
    )


def columns(names: Sequence[str], alias: str | None = None) -> str:
    """``names`` as a SELECT column list, each prefixed with ``alias.`` when given."""
    return ", ".join(f"{alias}.{c}" if alias else c for c in names)


def verdict_names(*leave_out: Verdict) -> Any:
    """A ``Literal`` of the verdict names (all but ``leave_out``), for pydantic fields.

    Built from :class:`Verdict` so the names are written once; the values it
    admits are plain ``str`` (``"PASS"``), as in the JSON and YAML they come from,
    and its JSON Schema is ``{"enum": [...], "type": "string"}``. Type checkers
    see it as ``Any``: annotate with ``str`` under ``TYPE_CHECKING``.
    """
    return Literal[tuple(v.value for v in Verdict if v not in leave_out)]


@dataclass(frozen=True)
class StoredDetection:
    """One stored box (a ``detections`` row).

    Attributes:
        idx: its position among the inspection's boxes, from 0.
        class_id: index into the model's class names.
        class_name: the class name as logged (``str(class_id)`` when the model had none).
        confidence: the score in ``[0, 1]`` (a float32 widened to float).
        xyxy: ``x1, y1, x2, y2`` in pixels of the source frame.
        mask_area: segment models: mask pixels; otherwise None.
    """

    idx: int
    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]
    mask_area: int | None = None

    @classmethod
    def from_row(cls, r: Row) -> StoredDetection:
        """From a row of :data:`DETECTION_COLUMNS`, in that order."""
        return cls(
            idx=int(r[1]),
            class_id=int(r[2]),
            class_name=str(r[3]),
            confidence=float(r[4]),
            xyxy=(float(r[5]), float(r[6]), float(r[7]), float(r[8])),
            mask_area=None if r[9] is None else int(r[9]),
        )

    def row(self, inspection_id: str) -> dict[str, Any]:
        """The ``detections`` row (keys = :data:`DETECTION_COLUMNS`)."""
        x1, y1, x2, y2 = self.xyxy
        return {
            "inspection_id": inspection_id,
            "idx": self.idx,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "confidence": self.confidence,
            "x1": x1,
            "y1": y1,
            "x2": x2,
            "y2": y2,
            "mask_area": self.mask_area,
        }


@dataclass(frozen=True)
class StoredFeedback:
    """One operator feedback (a ``feedback`` row, without the token id).

    Attributes:
        kind: ``confirm_defect`` / ``not_defect`` / ``wrong_class``.
        class_name: ``wrong_class``: the right class; otherwise None.
        created_at: :func:`utc_iso` text.
    """

    id: int
    inspection_id: str
    kind: str
    class_name: str | None
    note: str | None
    actor: str
    created_at: str

    @classmethod
    def from_row(cls, r: Row) -> StoredFeedback:
        """From a row of :data:`FEEDBACK_COLUMNS`, in that order."""
        return cls(int(r[0]), str(r[1]), str(r[2]), r[3], r[4], str(r[5]), str(r[6]))


#: the ``inspection_classes`` columns, in the order :func:`class_index_rows` makes them
CLASS_INDEX_COLUMNS: tuple[str, ...] = ("class_name", "verdict", "seq")
#: the store's ``inspection_classes`` rows, ``(class_name, verdict, seq)`` as
#: :func:`class_index_rows` makes them (IGNORE: a row already there is the same fact)
CLASS_INDEX_INSERT = insert_sql("inspection_classes", CLASS_INDEX_COLUMNS, 1, or_ignore=True)


def shown_classes(top_class: str | None, class_names: Iterable[str | None]) -> set[str]:
    """The classes an inspection shows: its top class and every box's class name.

    The one definition of what ``inspection_classes`` holds for an inspection (the
    API's class filter reads it); ``None`` is left out. Migration 043 kept the table
    with triggers; since 044 every writer (the store, ``benchmarks/big_store.py``)
    adds the rows :func:`class_index_rows` makes, in the inspection's transaction.
    """
    out = {c for c in class_names if c is not None}
    if top_class is not None:
        out.add(top_class)
    return out


def class_index_rows(
    verdict: str, seq: int, top_class: str | None, class_names: Sequence[str | None]
) -> list[tuple[str, str, int]]:
    """The ``inspection_classes`` rows of one inspection: ``(class_name, verdict, seq)``
    for each of :func:`shown_classes`, no two alike."""
    if top_class is None and not class_names:
        return []  # most rows: nothing shown
    return [(c, verdict, seq) for c in shown_classes(top_class, class_names)]


_UTC = timezone.utc


def _text(t: datetime) -> str:
    # utc_iso's text, cheaper for the UTC times frames carry: no conversion, and
    # the plain isoformat() (faster than its timespec= form) when it has microseconds
    if t.tzinfo is not _UTC:
        return utc_iso(t)
    return t.isoformat() if t.microsecond else t.isoformat(timespec="microseconds")


def stored_rows(
    insp: Inspection,
    *,
    station_id: str,
    seq: int,
    image_path: str | None,
    judged_at: str | None = None,
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The rows the store writes for ``insp`` (``judged_at`` default: now).

    The one mapping from an :class:`Inspection` to stored values;
    :meth:`StoredInspection.from_inspection` reads these same rows back.

    Returns:
        ``(inspection, detections)``: the ``inspections`` values in
        :data:`INSPECTION_COLUMNS` order, and one tuple per box in
        :data:`DETECTION_COLUMNS` order (``idx`` = position in ``insp.detections``).
    """
    # Plain tuples and whole-array tolist(): the store's writer thread runs this for
    # every row, and per-element numpy indexing, dicts and frozen dataclasses cost it
    # more than SQLite's own insert (benchmarks/store.py)
    f = insp.frame
    d = insp.detections
    n = len(d)
    iid = str(insp.inspection_id)
    names = insp.class_names
    dets: list[tuple[Any, ...]] = []
    top_class: str | None = None
    top_conf: float | None = None
    probs: list[float] | None = None
    if n:
        nn = len(names)
        boxes: list[list[float]] = d.xyxy.tolist()
        scores: list[float] = d.confidence.tolist()
        cids: list[int] = d.class_id.tolist()
        areas: list[int | None] = (
            [None] * n if d.masks is None else d.masks.sum(axis=(1, 2)).tolist()
        )
        for i in range(n):
            c, b = cids[i], boxes[i]
            name = names[c] if c < nn else str(c)
            dets.append((iid, i, c, name, scores[i], b[0], b[1], b[2], b[3], areas[i]))
        k = int(np.argmax(d.confidence))
        top_class, top_conf = dets[k][3], scores[k]
    if insp.probs is not None:
        probs = [float(p) for p in insp.probs]
        if not n:
            cid = int(np.argmax(insp.probs))
            top_class = names[cid] if cid < len(names) else str(cid)
            top_conf = probs[cid]
    w = h = None
    if isinstance(f, Frame):
        w, h = f.resolution_wh
    model = insp.model
    row = (
        iid,
        seq,
        station_id,
        f.source_id,
        f.frame_id,
        f.trigger_id,
        f.uri,
        _text(f.captured_at),
        judged_at or _text(datetime.now(_UTC)),
        insp.verdict.value,
        insp.reason,
        model.name if model else None,
        model.version if model else None,
        model.sha256 if model else None,
        n,
        top_class,
        top_conf,
        w,
        h,
        image_path,
        timings_json(insp.timings_ms),
        None if probs is None else json.dumps(probs),
        insp.score,
        None if insp.quality is None else json.dumps(insp.quality.values()),
    )
    return row, dets


@dataclass(frozen=True)
class StoredInspection:
    """An inspection as the store keeps it: one ``inspections`` row and its detections.

    Times are :func:`utc_iso` text; ``image_path`` is relative to the data folder.

    Attributes:
        id: the inspection UUID (hex with dashes).
        seq: per-station sequence 1, 2, 3 ... in commit order.
        verdict: the verdict (stored as its name).
        num_detections: how many boxes (None only in rows written without it).
        top_class, top_confidence: the strongest box's class and score, or the top
            class probability (classify); None when neither.
        width, height: frame size in pixels; None when no frame arrived.
        timings_ms: per-stage wall time in milliseconds (rounded to 3 decimals).
        probs: classify only: class probabilities, index = class id.
        score: anomaly only: the normalised image score in ``[0, 1]`` (0.5: the
            model's fail point); None for other tasks and for rows without it.
        quality: the image quality gate's numbers (focus, mean, dark, bright, rows,
            reference_diff: :meth:`kanjian.kernels.FrameQuality.values`); None when the
            gate was off.
        detections: the boxes, in ``idx`` order; empty unless loaded.
    """

    id: str
    seq: int
    station_id: str
    source_id: str | None
    frame_id: int | None
    trigger_id: str | None
    uri: str | None
    captured_at: str
    judged_at: str
    verdict: Verdict
    reason: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    num_detections: int | None
    top_class: str | None
    top_confidence: float | None
    width: int | None
    height: int | None
    image_path: str | None
    timings_ms: Mapping[str, float]
    probs: tuple[float, ...] | None
    score: float | None = None
    quality: Mapping[str, float] | None = None
    detections: tuple[StoredDetection, ...] = ()

    @property
    def has_image(self) -> bool:
        """Whether the frame was saved as JPEG."""
        return self.image_path is not None

    @classmethod
    def from_row(cls, r: Row, detections: Iterable[StoredDetection] = ()) -> StoredInspection:
        """From a row of :data:`INSPECTION_COLUMNS`, in that order.

        Raises:
            ValueError: the row's verdict is not a :class:`Verdict` name.
        """
        timings, probs = r[20], r[21]
        return cls(
            id=str(r[0]),
            seq=int(r[1]),
            station_id=str(r[2]),
            source_id=r[3],
            frame_id=r[4],
            trigger_id=r[5],
            uri=r[6],
            captured_at=str(r[7]),
            judged_at=str(r[8]),
            verdict=Verdict(r[9]),
            reason=r[10],
            model_name=r[11],
            model_version=r[12],
            model_sha256=r[13],
            num_detections=r[14],
            top_class=r[15],
            top_confidence=r[16],
            width=r[17],
            height=r[18],
            image_path=r[19],
            timings_ms=json.loads(timings) if timings else {},
            probs=tuple(json.loads(probs)) if probs else None,
            score=r[22],
            quality=json.loads(r[23]) if len(r) > 23 and r[23] else None,
            detections=tuple(detections),
        )

    @classmethod
    def from_inspection(
        cls,
        insp: Inspection,
        *,
        station_id: str,
        seq: int,
        image_path: str | None,
        judged_at: str | None = None,
    ) -> StoredInspection:
        """What the store keeps of ``insp`` (``judged_at`` default: now): the rows
        :func:`stored_rows` makes, read back as :meth:`from_row` reads them."""
        values, dets = stored_rows(
            insp, station_id=station_id, seq=seq, image_path=image_path, judged_at=judged_at
        )
        return cls.from_row(values, [StoredDetection.from_row(d) for d in dets])

    def row(self) -> dict[str, Any]:
        """The ``inspections`` row (keys = :data:`INSPECTION_COLUMNS`)."""
        return {
            "id": self.id,
            "seq": self.seq,
            "station_id": self.station_id,
            "source_id": self.source_id,
            "frame_id": self.frame_id,
            "trigger_id": self.trigger_id,
            "uri": self.uri,
            "captured_at": self.captured_at,
            "judged_at": self.judged_at,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "num_detections": self.num_detections,
            "top_class": self.top_class,
            "top_confidence": self.top_confidence,
            "width": self.width,
            "height": self.height,
            "image_path": self.image_path,
            "timings_json": json.dumps(dict(self.timings_ms)),
            "probs_json": None if self.probs is None else json.dumps(list(self.probs)),
            "score": self.score,
            "quality_json": None if self.quality is None else json.dumps(dict(self.quality)),
        }

    def detection_rows(self) -> list[dict[str, Any]]:
        """One ``detections`` row per box."""
        return [d.row(self.id) for d in self.detections]


def group_detections(rows: Iterable[Row]) -> dict[str, list[StoredDetection]]:
    """Rows of :data:`DETECTION_COLUMNS` by inspection id, in the order given."""
    out: dict[str, list[StoredDetection]] = {}
    for r in rows:
        out.setdefault(str(r[0]), []).append(StoredDetection.from_row(r))
    return out


def load_detections(
    conn: sqlite3.Connection, ids: Sequence[str], chunk: int = 500
) -> dict[str, list[StoredDetection]]:
    """The detections of the inspections ``ids``, by id, each in ``idx`` order.

    Asked in chunks of ``chunk`` ids (SQLite's bound-parameter limit).
    """
    out: dict[str, list[StoredDetection]] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        out.update(
            group_detections(
                conn.execute(
                    f"SELECT {columns(DETECTION_COLUMNS)} FROM detections "
                    f"WHERE inspection_id IN ({','.join('?' * len(part))}) "
                    "ORDER BY inspection_id, idx",
                    part,
                )
            )
        )
    return out


def load_inspection(conn: sqlite3.Connection, inspection_id: str) -> StoredInspection | None:
    """One inspection with its detections, or None when there is none with that id."""
    r = conn.execute(
        f"SELECT {columns(INSPECTION_COLUMNS)} FROM inspections WHERE id = ?", [inspection_id]
    ).fetchone()
    if r is None:
        return None
    return StoredInspection.from_row(r, load_detections(conn, [inspection_id]).get(r[0], ()))
