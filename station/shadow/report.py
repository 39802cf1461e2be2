"""The shadow report: the active model and a shadow model side by side on the same frames.

Read from the store only (``shadow_results JOIN inspections ON seq``, the operator's
latest answer from ``feedback_latest``), over the newest ``limit`` frames the shadow
judged that the *given* active model judged too (by default the one judging now: a
comparison with an earlier active model says nothing about this one, the same rule
as the promotion gate's, :mod:`kanjian.station.shadow.gate`). The counting is
:mod:`kanjian.inference.agreement`'s, so ``kanjian model compare`` and this report
count alike.

Cost: one index range read of ``shadow_results`` (its primary key
``(model_sha256, seq)``, newest first), one ``inspections`` lookup by ``seq`` and one
``feedback_latest`` lookup per row, and the active model's boxes by inspection id in
chunks: linear in ``limit`` (at most :data:`MAX_LIMIT`), independent of the log's length.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kanjian.inference.agreement import (
    DetBox,
    DetectionAgreement,
    FeedbackRecord,
    FeedbackTruth,
    VerdictAgreement,
    detection_agreement,
    feedback_truth,
    match_boxes,
    verdict_agreement,
)
from kanjian.station.records import load_detections

#: frames a report covers when not told (the newest)
DEFAULT_LIMIT = 5000
#: the most it covers: a report is read whole, in the request
MAX_LIMIT = 50_000
#: disagreements listed at most (newest first); the counts cover all
MAX_LISTED = 200

_ROWS = (
    "SELECT r.seq, r.inspection_id, i.captured_at, i.verdict, r.verdict, r.detections_json, "
    "i.image_path IS NOT NULL, fl.kind, f.class_name "
    "FROM shadow_results r JOIN inspections i ON i.seq = r.seq "
    "LEFT JOIN feedback_latest fl ON fl.seq = r.seq "
    "LEFT JOIN feedback f ON f.id = fl.feedback_id "
    "WHERE r.model_sha256 = ? AND i.model_sha256 = ? ORDER BY r.seq DESC LIMIT ?"
)


@dataclass(frozen=True)
class Pair:
    """One frame both models judged, as the store holds it.

    Attributes:
        seq, inspection_id, captured_at: the inspection's.
        active_verdict, shadow_verdict: each model's verdict.
        active_boxes, shadow_boxes: each model's detections (frame pixels).
        has_image: the store kept the frame (``store.save_images``).
        feedback_kind, feedback_class: the operator's latest answer, if any.
    """

    seq: int
    inspection_id: str
    captured_at: str
    active_verdict: str
    shadow_verdict: str
    active_boxes: tuple[DetBox, ...]
    shadow_boxes: tuple[DetBox, ...]
    has_image: bool
    feedback_kind: str | None
    feedback_class: str | None


@dataclass(frozen=True)
class ListedDisagreement:
    """A frame the two models judged differently (verdict), or saw different boxes on.

    Attributes:
        verdict_differs: the verdicts differ; else only the boxes do.
        picture: the API path of the frame with both models' boxes drawn, or None when
            no picture of it was kept.
    """

    seq: int
    inspection_id: str
    captured_at: str
    active_verdict: str
    shadow_verdict: str
    verdict_differs: bool
    active_boxes: int
    shadow_boxes: int
    feedback_kind: str | None
    picture: str | None


@dataclass(frozen=True)
class ShadowReport:
    """The report, JSON-ready through ``dataclasses.asdict``.

    Attributes:
        shadow_sha256, active_sha256: the two models compared; shadow_model, active_model:
            their ``name vversion`` (empty when not registered).
        limit: the newest frames asked for; frames: how many there were.
        first_seq, last_seq, since, until: the window they cover (None when empty).
        verdicts: the verdict matrix, active (rows) x shadow (columns).
        detections: per-class box agreement (IoU ``iou_threshold``, same class).
        feedback: both models against the operators' answers (see
            :class:`~kanjian.inference.agreement.FeedbackTruth` for what it can say).
        verdict_disagreements, box_disagreements: counts over the window (frames whose
            verdicts differ; frames with equal verdicts whose boxes differ).
        listed: verdict disagreements first, then box ones, each newest first, at most
            :data:`MAX_LISTED`.
    """

    shadow_sha256: str
    active_sha256: str
    shadow_model: str
    active_model: str
    limit: int
    frames: int
    first_seq: int | None
    last_seq: int | None
    since: str | None
    until: str | None
    iou_threshold: float
    verdicts: VerdictAgreement
    detections: DetectionAgreement
    feedback: FeedbackTruth
    verdict_disagreements: int
    box_disagreements: int
    listed: tuple[ListedDisagreement, ...]


def shadow_boxes(text: str) -> tuple[DetBox, ...]:
    """``shadow_results.detections_json`` as :class:`DetBox` records."""
    # stored as [class_id, class_name, confidence, x1, y1, x2, y2] (station/shadow/results.py)
    return tuple(
        DetBox(str(d[1]), float(d[2]), (float(d[3]), float(d[4]), float(d[5]), float(d[6])))
        for d in json.loads(text)
    )


def model_name(conn: sqlite3.Connection, sha: str) -> str:
    """``name vversion`` of a registered model; empty when it is not registered."""
    row = conn.execute("SELECT name, version FROM models WHERE sha256 = ?", [sha]).fetchone()
    return "" if row is None else f"{row[0]} v{row[1]}"


def read_pairs(
    conn: sqlite3.Connection, shadow_sha: str, active_sha: str, limit: int = DEFAULT_LIMIT
) -> list[Pair]:
    """The newest ``limit`` frames both models judged, newest first (call inside a read
    transaction so the rows and the boxes agree)."""
    rows = conn.execute(_ROWS, [shadow_sha, active_sha, min(limit, MAX_LIMIT)]).fetchall()
    dets = load_detections(conn, [str(r[1]) for r in rows])
    return [
        Pair(
            seq=int(r[0]),
            inspection_id=str(r[1]),
            captured_at=str(r[2]),
            active_verdict=str(r[3]),
            shadow_verdict=str(r[4]),
            active_boxes=tuple(
                DetBox(d.class_name, d.confidence, d.xyxy) for d in dets.get(str(r[1]), ())
            ),
            shadow_boxes=shadow_boxes(str(r[5])),
            has_image=bool(r[6]),
            feedback_kind=r[7],
            feedback_class=r[8],
        )
        for r in rows
    ]


def build_report(
    pairs: Sequence[Pair],
    shadow_sha: str,
    active_sha: str,
    limit: int = DEFAULT_LIMIT,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] = (),
    picture: Any = None,
    names: tuple[str, str] = ("", ""),
) -> ShadowReport:
    """Count ``pairs`` (newest first, as :func:`read_pairs` gives them).

    ``picture(pair)``: the API path of a frame's two-model picture, or None when there
    is none to show (default: none). ``names``: (shadow, active) as people read them.
    """
    verdicts = verdict_agreement((p.active_verdict, p.shadow_verdict) for p in pairs)
    detections = detection_agreement(
        ((p.active_boxes, p.shadow_boxes) for p in pairs), iou_threshold, class_names
    )
    feedback = feedback_truth(
        FeedbackRecord(
            p.active_verdict, p.shadow_verdict, p.feedback_kind, p.feedback_class, p.inspection_id
        )
        for p in pairs
        if p.feedback_kind is not None
    )
    by_verdict: list[ListedDisagreement] = []
    by_boxes: list[ListedDisagreement] = []
    for p in pairs:
        differs = p.active_verdict != p.shadow_verdict
        if not differs and match_boxes(p.active_boxes, p.shadow_boxes, iou_threshold).agrees:
            continue
        (by_verdict if differs else by_boxes).append(
            ListedDisagreement(
                seq=p.seq,
                inspection_id=p.inspection_id,
                captured_at=p.captured_at,
                active_verdict=p.active_verdict,
                shadow_verdict=p.shadow_verdict,
                verdict_differs=differs,
                active_boxes=len(p.active_boxes),
                shadow_boxes=len(p.shadow_boxes),
                feedback_kind=p.feedback_kind,
                picture=None if picture is None else picture(p),
            )
        )
    return ShadowReport(
        shadow_sha256=shadow_sha,
        active_sha256=active_sha,
        shadow_model=names[0],
        active_model=names[1],
        limit=limit,
        frames=len(pairs),
        first_seq=pairs[-1].seq if pairs else None,
        last_seq=pairs[0].seq if pairs else None,
        since=pairs[-1].captured_at if pairs else None,
        until=pairs[0].captured_at if pairs else None,
        iou_threshold=iou_threshold,
        verdicts=verdicts,
        detections=detections,
        feedback=feedback,
        verdict_disagreements=len(by_verdict),
        box_disagreements=len(by_boxes),
        listed=tuple((by_verdict + by_boxes)[:MAX_LISTED]),
    )
