"""Labels of one exported inspection: feedback applied, classes checked, boxes fitted.

The rules (:mod:`kanjian.training.station_export`) for one inspection of the
station's log, used by :mod:`kanjian.training.station_log`'s two passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kanjian.inference.types import Verdict
from kanjian.station.records import StoredDetection, StoredFeedback, StoredInspection
from kanjian.training.checks import clip_box, image_size
from kanjian.training.export_classes import model_label
from kanjian.training.records import Box, ImageRecord, Problem, ProblemKind, ProblemLog


def f32(x: float) -> float:
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
        score: anomaly models: the inspection's normalised image score (0-1, 0.5 = the
            model's fail point) as logged; None for other models.
    """

    record: ImageRecord
    scores: tuple[float, ...]
    inspection_id: str
    captured_at: str
    verdict: str
    feedback: str | None
    top_confidence: float | None
    model: str | None
    score: float | None = None


def feedback_labels(
    logged: Sequence[StoredDetection], fb: StoredFeedback | None, label_conf: float
) -> tuple[list[StoredDetection], list[str]]:
    """The detections that become label boxes, and each one's class name after feedback.

    ``not_defect`` feedback: none. Otherwise those at or above ``label_conf`` (0-1,
    compared in float32 as stored); ``wrong_class`` gives each the class the operator named.
    """
    kind = fb.kind if fb is not None else None
    labelled = (
        [] if kind == "not_defect" else [d for d in logged if d.confidence >= f32(label_conf)]
    )
    renamed = fb.class_name if fb is not None and kind == "wrong_class" else None
    return labelled, [renamed or d.class_name for d in labelled]


def class_reason(
    box_names: list[str],
    names: tuple[str, ...],
    has: set[str],
    where_txt: str,
    problems: ProblemLog,
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


def without_labels(
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


def read_record(
    img: Path,
    row: StoredInspection,
    labelled: list[StoredDetection],
    box_names: list[str],
    where_txt: str,
    problems: ProblemLog,
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


def export_item(
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
        score=row.score,
    )
