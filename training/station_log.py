"""Reading the station's SQLite log for ``kanjian dataset export``.

Opens the station's store (``kanjian.db``: ``inspections``, ``detections``,
``feedback``, ``models``) read-only, so it can run beside a live station; selects
the inspections an :class:`~kanjian.training.export_filter.ExportFilter` asks for,
corrects their detections by the operators' latest feedback, settles the class
list from the model bundles in the station's registry
(:mod:`kanjian.training.export_classes`), and reads the saved frames' sizes. The
rules are in :mod:`kanjian.training.station_export`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kanjian.inference.types import Verdict
from kanjian.station.records import (
    DETECTION_COLUMNS,
    FEEDBACK_COLUMNS,
    INSPECTION_COLUMNS,
    StoredDetection,
    StoredFeedback,
    StoredInspection,
    columns,
    group_detections,
    utc_iso,
)
from kanjian.station.schema import check_not_newer
from kanjian.training.checks import clip_box, image_size
from kanjian.training.export_classes import model_label, resolve_classes
from kanjian.training.export_filter import ExportFilter
from kanjian.training.records import Box, ImageRecord, Problem, ProblemKind, ReadResult

DB_NAME = "kanjian.db"  # the station store's file name (kanjian.station.store.DB_NAME)


def _f32(x: float) -> float:
    """``x`` rounded to float32: the model's scores are float32, so 0.9 must match a stored 0.9."""
    return float(np.float32(x))


@dataclass(frozen=True)
class ExportItem:
    """One exported inspection: its image record, and what labelling tools are shown.

    Attributes:
        record: the image and its label boxes (real-image pixels).
        scores: detection confidence (0-1) of each box of ``record``, same order.
        inspection_id: the station's inspection UUID.
        captured_at: as stored (ISO 8601 UTC).
        verdict: PASS / FAIL / REVIEW ...
        feedback: the latest operator feedback kind, or None.
        top_confidence: the inspection's top detection score as logged, or None.
        model: ``name version (sha256 prefix)`` of the model that judged it, or None.
    """

    record: ImageRecord
    scores: tuple[float, ...]
    inspection_id: str
    captured_at: str
    verdict: str
    feedback: str | None
    top_confidence: float | None
    model: str | None


@dataclass(frozen=True)
class StationLog:
    """What :func:`read_station_log_items` found.

    Attributes:
        items: exportable inspections, in store order.
        class_names: the class list, index = class id.
        problems: faults per inspection (missing image, unknown class ...).
        counts: how many inspections each rule applied to or left out, by name.
        notes: where the class list came from, and other remarks for the summary.
    """

    items: tuple[ExportItem, ...]
    class_names: tuple[str, ...]
    problems: tuple[Problem, ...]
    counts: dict[str, int]
    notes: tuple[str, ...]


def _connect(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: station database not found")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        check_not_newer(conn)  # a newer release's tables may mean what we cannot read
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row  # the registry's rows are read by name
    return conn


def read_station_log_items(
    data_dir: Path,
    flt: ExportFilter,
    class_names: tuple[str, ...] | None = None,
    progress: Progress | None = None,
) -> StationLog:
    """Select inspections, correct their labels by feedback, and read their images.

    Args:
        data_dir: the station's data folder (holding ``kanjian.db``), or the database file.
        flt: which inspections and detections to take.
        class_names: the class list (index = class id); None: the model's, from the
            station's model registry, settled only by the inspections to export (those
            ``flt``'s feedback rules keep, with their frame saved and still there).
        progress: told how many of the selected rows were read, every :data:`CHUNK`.

    Raises:
        FileNotFoundError: no database there.
        ValueError: the class list cannot be settled (unknown model, models with
            different lists, a ``has_classes`` name outside the list).
    """
    db_path = data_dir / DB_NAME if data_dir.is_dir() else data_dir
    root = db_path.parent
    given = tuple(class_names) if class_names else None
    problems: list[Problem] = []
    conn = _connect(db_path)
    try:
        # only the inspections that can be exported settle the class list: one left
        # out by a filter, or whose frame is gone, has no say (its model may be unknown)
        sel, counts = _select(conn, flt, root, db_path, problems, progress)
        rows = sel.rows
        names, notes = resolve_classes(conn, root, rows, _logged_classes(rows), given)
    finally:
        conn.close()

    known = set(names)
    missing = [c for c in flt.has_classes if c not in known]
    if missing:
        raise ValueError(f"has_classes: {', '.join(missing)} not in the class list {list(names)}")
    items = _export_items(sel, rows, flt, names, root, db_path, problems, counts)
    return StationLog(
        tuple(items), names, tuple(problems), dict(sorted(counts.items())), tuple(notes)
    )


@dataclass(frozen=True)
class _Selection:
    """The selected inspections as logged.

    Attributes:
        rows: the inspections within the filter, with their detections, in store order.
        feedback: inspection id -> its latest feedback.
    """

    rows: list[StoredInspection]
    feedback: dict[str, StoredFeedback]


def _sql_condition(flt: ExportFilter) -> tuple[str, list[str | float]]:
    """The SQL ``WHERE`` condition on ``inspections`` that ``flt`` asks for, and its parameters.

    The store writes every time as fixed-width UTC text (:func:`utc_iso`), so comparing
    the text compares the times, exactly, on the indexed column.
    """
    where: list[str] = ["1=1"]
    args: list[str | float] = []
    since, until = flt.since_utc, flt.until_utc
    if since is not None:
        where.append("captured_at >= ?")
        args.append(utc_iso(since))
    if until is not None:
        where.append("captured_at < ?")
        args.append(utc_iso(until))
    if flt.model_sha256:
        where.append("model_sha256 = ?")
        args.append(flt.model_sha256)
    if flt.verdicts:
        where.append(f"verdict IN ({','.join('?' * len(flt.verdicts))})")
        args.extend(flt.verdicts)
    # top_confidence is the largest detection score (NULL when there is none: 0)
    if flt.min_conf is not None:
        where.append("COALESCE(top_confidence, 0.0) >= ?")
        args.append(_f32(flt.min_conf))
    if flt.max_conf is not None:
        where.append("COALESCE(top_confidence, 0.0) <= ?")
        args.append(_f32(flt.max_conf))
    return " AND ".join(where), args


#: rows between two progress reports, and inspections whose detections are read at once
CHUNK = 2_000

Progress = Callable[[int, int], None]
"""Called as rows are read: (rows read so far, rows selected in all)."""


def _select(
    conn: sqlite3.Connection,
    flt: ExportFilter,
    root: Path,
    db_path: Path,
    problems: list[Problem],
    progress: Progress | None = None,
) -> tuple[_Selection, Counter[str]]:
    """The selected inspections that ``flt``'s feedback rules keep and whose frame is there.

    One pass over the selected rows in store order; an inspection is decoded, and
    its detections read, only when it is kept, so memory grows with the frames to
    export, not with the log (a million PASS rows without a saved frame cost
    nothing). Returns the kept rows with their detections and latest feedback,
    and how many inspections each rule left out, by name; an image that was saved
    but is gone (deleted, retention) is added to ``problems``. ``root`` is the
    folder image paths are relative to.
    """
    where, args = _sql_condition(flt)
    selected = f"SELECT id FROM inspections WHERE {where}"
    counts: Counter[str] = Counter()
    kept: list[sqlite3.Row] = []
    conn.execute("BEGIN")  # one snapshot: a row committed during the export has no say
    try:
        total = int(conn.execute(f"SELECT COUNT(*) FROM ({selected})", args).fetchone()[0])
        feedback = {
            f.inspection_id: f
            for f in map(
                StoredFeedback.from_row,
                conn.execute(
                    f"SELECT {columns(FEEDBACK_COLUMNS)} FROM feedback "
                    f"WHERE inspection_id IN ({selected}) ORDER BY id",
                    args,
                ),
            )
        }  # later rows overwrite earlier ones: the latest feedback wins
        cur = conn.execute(
            f"SELECT {columns(INSPECTION_COLUMNS)} FROM inspections WHERE {where} ORDER BY seq",
            args,
        )
        for n, raw in enumerate(cur, 1):
            if progress is not None and n % CHUNK == 0:
                progress(n, total)
            fb = feedback.get(raw[0])
            reason = _not_selected(raw["image_path"], fb.kind if fb is not None else None, flt)
            if reason is not None:
                counts[reason] += 1
                continue
            img = root / str(raw["image_path"])
            if not img.is_file():
                problems.append(
                    Problem(
                        ProblemKind.MISSING_IMAGE,
                        f"{db_path}#{raw[0]}",
                        f"{img}: not found; skipped",
                    )
                )
                continue
            kept.append(raw)
        if progress is not None:
            progress(total, total)
        rows: list[StoredInspection] = []
        for lo in range(0, len(kept), CHUNK):
            part = kept[lo : lo + CHUNK]
            dets = group_detections(
                conn.execute(
                    f"SELECT {columns(DETECTION_COLUMNS)} FROM detections "
                    f"WHERE inspection_id IN ({','.join('?' * len(part))}) "
                    "ORDER BY inspection_id, idx",
                    [r[0] for r in part],
                )
            )
            rows.extend(StoredInspection.from_row(r, dets.get(r[0], ())) for r in part)
    finally:
        conn.execute("COMMIT")
    return _Selection(rows, {r.id: feedback[r.id] for r in rows if r.id in feedback}), counts


def _logged_classes(rows: list[StoredInspection]) -> dict[str, dict[int, str]]:
    """Each model's ``class_id -> class_name`` pairs, as the detections of ``rows`` show.

    Keyed by the model's sha256; inspections without a model are not counted.
    """
    seen: dict[str, dict[int, str]] = {}
    for row in rows:
        if row.model_sha256:
            for d in row.detections:
                seen.setdefault(row.model_sha256, {})[d.class_id] = d.class_name
    return seen


def _export_items(
    sel: _Selection,
    rows: list[StoredInspection],
    flt: ExportFilter,
    names: tuple[str, ...],
    root: Path,
    db_path: Path,
    problems: list[Problem],
    counts: Counter[str],
) -> list[ExportItem]:
    """Apply feedback and ``flt`` to each inspection of ``rows``, in order, and read its image.

    ``rows`` are what :func:`_select` kept. Returns the exportable
    items; how many inspections each rule applied to or left out is added to
    ``counts``, by name, and faults (unreadable image, unknown class ...) to
    ``problems``. ``root`` is the folder image paths are relative to.
    """
    has = set(flt.has_classes)
    items: list[ExportItem] = []
    used_names: set[str] = set()
    for row in rows:
        fb = sel.feedback.get(row.id)
        kind: str | None = fb.kind if fb is not None else None
        where_txt = f"{db_path}#{row.id}"
        logged = row.detections
        labelled, box_names = _labels(logged, fb, flt.label_conf)
        reason = _class_reason(box_names, names, has, where_txt, problems) or _without_labels(
            row, kind, logged, labelled
        )
        if reason is not None:
            counts[reason] += 1
            continue
        img = root / str(row.image_path)  # _select kept only rows with an image
        if img.name in used_names:  # output files are named after the source file
            problems.append(
                Problem(ProblemKind.DUPLICATE, where_txt, f"{img.name} already exported; skipped")
            )
            continue
        read = _read_record(img, row, labelled, box_names, where_txt, problems)
        if read is None:
            continue
        record, scores = read
        if labelled and not record.boxes:
            counts["left_out_boxes_outside_image"] += 1
            continue
        used_names.add(img.name)
        counts[f"feedback_{kind}" if kind else "no_feedback"] += 1
        items.append(_export_item(row, kind, record, scores))
    return items


def _not_selected(image_path: str | None, kind: str | None, flt: ExportFilter) -> str | None:
    """Why ``flt``, or a frame that was not saved, leaves the inspection out; None: it does not.

    ``image_path`` is the inspection's saved frame (None: not saved), ``kind`` its
    latest feedback kind (None: no feedback); the reason is a ``counts`` key.
    """
    if flt.reviewed_only and kind is None:
        return "not_reviewed"
    if flt.feedback and (kind or "none") not in flt.feedback:
        return "feedback_not_selected"
    if not image_path:
        return "no_saved_image"
    return None


def _labels(
    logged: Sequence[StoredDetection], fb: StoredFeedback | None, label_conf: float
) -> tuple[list[StoredDetection], list[str]]:
    """The detections that become label boxes, and each one's class name after feedback.

    ``not_defect`` feedback: none. Otherwise those at or above ``label_conf`` (0-1,
    compared in float32 as stored); ``wrong_class`` gives each the class the operator named.
    """
    kind = fb.kind if fb is not None else None
    labelled = (
        [] if kind == "not_defect" else [d for d in logged if d.confidence >= _f32(label_conf)]
    )
    renamed = fb.class_name if fb is not None and kind == "wrong_class" else None
    return labelled, [renamed or d.class_name for d in labelled]


def _class_reason(
    box_names: list[str],
    names: tuple[str, ...],
    has: set[str],
    where_txt: str,
    problems: list[Problem],
) -> str | None:
    """Why the label boxes' classes leave the inspection out (a ``counts`` key), or None.

    A box of a class outside ``names`` leaves it out, and is added to ``problems``;
    with ``has``, so does having no box of those classes.
    """
    outside = sorted({n for n in box_names if n not in names})
    if outside:
        # keeping the image without these boxes would teach that a defect is background
        problems.append(
            Problem(
                ProblemKind.UNKNOWN_CLASS,
                where_txt,
                f"class {', '.join(map(repr, outside))} not in {list(names)}; image left out",
            )
        )
        return "left_out_class_not_listed"
    if has and not has.intersection(box_names):
        return "no_selected_class"
    return None


def _without_labels(
    row: StoredInspection,
    kind: str | None,
    logged: Sequence[StoredDetection],
    labelled: list[StoredDetection],
) -> str | None:
    """Why an inspection without label boxes is left out (a ``counts`` key), or None.

    An image without labels trains as background: it is kept only after ``not_defect``
    feedback, or for a ``PASS`` without detections or feedback.
    """
    if labelled or kind == "not_defect":
        return None
    if logged:
        return "left_out_all_below_label_conf"
    if kind is not None:  # confirm_defect / wrong_class: a defect, but where?
        return "left_out_defect_feedback_without_box"
    if row.verdict != Verdict.PASS:
        return f"left_out_{row.verdict.value.lower()}_without_box"
    return None


def _read_record(
    img: Path,
    row: StoredInspection,
    labelled: list[StoredDetection],
    box_names: list[str],
    where_txt: str,
    problems: list[Problem],
) -> tuple[ImageRecord, tuple[float, ...]] | None:
    """The saved image's record with its label boxes, and each box's score (0-1).

    Boxes are rescaled to the image's real pixels when its size differs from the
    logged one, and clipped to it (dropped when wholly outside); each fault is added
    to ``problems``. None, with a problem, when the image cannot be read.
    """
    try:
        w, h = image_size(img)
    except OSError as e:
        fault = ProblemKind.MISSING_IMAGE if not img.exists() else ProblemKind.UNREADABLE_IMAGE
        problems.append(Problem(fault, where_txt, f"{img}: {e}; skipped"))
        return None
    sx = w / row.width if row.width else 1.0
    sy = h / row.height if row.height else 1.0
    if (sx, sy) != (1.0, 1.0):
        problems.append(
            Problem(
                ProblemKind.SIZE_MISMATCH,
                where_txt,
                f"logged {row.width}x{row.height} but {img.name} is {w}x{h}; boxes rescaled",
            )
        )
    boxes: list[Box] = []
    scores: list[float] = []
    for i, (d, name) in enumerate(zip(labelled, box_names, strict=True)):
        x1, y1, x2, y2 = d.xyxy
        xyxy = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        clipped, problem = clip_box(xyxy, w, h, where_txt, f"detection {i}")
        if problem is not None:
            problems.append(problem)
        if clipped is not None:
            boxes.append(Box(name, clipped))
            scores.append(d.confidence)
    return ImageRecord(img, w, h, tuple(boxes), None), tuple(scores)


def _export_item(
    row: StoredInspection, kind: str | None, record: ImageRecord, scores: tuple[float, ...]
) -> ExportItem:
    """The exported inspection ``row``, with its feedback ``kind``, image record and scores."""
    return ExportItem(
        record=record,
        scores=scores,
        inspection_id=row.id,
        captured_at=row.captured_at,
        verdict=row.verdict.value,
        feedback=kind,
        top_confidence=row.top_confidence,
        model=model_label(row) if row.model_sha256 else None,
    )


def read_station_log(
    data_dir: Path, flt: ExportFilter, class_names: tuple[str, ...] | None = None
) -> tuple[ReadResult, dict[str, int]]:
    """Records for every exportable inspection, and counts of what was applied/left out."""
    log = read_station_log_items(data_dir, flt, class_names)
    records = tuple(i.record for i in log.items)
    return ReadResult(records, log.class_names, log.problems), log.counts
