"""Inspections: filtered, paginated list; one with detections; its image; operator feedback."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import sqlite_utils
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Response, status

from kanjian.appliance_api.http.annotate import Box, draw, encode_jpeg, rules_keep
from kanjian.appliance_api.http.api_models import (
    DetectionOut,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    InspectionDetailOut,
    InspectionOut,
    InspectionPage,
    ModelRefOut,
    VerdictName,
)
from kanjian.appliance_api.http.deps import Operator, Reader, State
from kanjian.station.state.audit import now_iso, write_audit
from kanjian.station.state.db import SQLITE_MAX_INT, write_tx

router = APIRouter(tags=["inspections"])
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "not found"}}

_FEEDBACK_COLS = "id, inspection_id, kind, class_name, note, actor, created_at"


def _utc_iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise HTTPException(422, f"time {t.isoformat()} needs a timezone (e.g. Z or +08:00)")
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _feedback(row: dict[str, Any] | None) -> FeedbackOut | None:
    return None if row is None or row.get("id") is None else FeedbackOut(**row)


def _inspection(row: dict[str, Any], fb: FeedbackOut | None) -> InspectionOut:
    return InspectionOut(
        id=row["id"],
        seq=row["seq"],
        station_id=row["station_id"],
        source_id=row["source_id"],
        frame_id=row["frame_id"],
        trigger_id=row["trigger_id"],
        uri=row["uri"],
        captured_at=row["captured_at"],
        judged_at=row["judged_at"],
        verdict=row["verdict"],
        reason=row["reason"],
        model=ModelRefOut(
            name=row["model_name"], version=row["model_version"], sha256=row["model_sha256"]
        ),
        num_detections=row["num_detections"],
        top_class=row["top_class"],
        top_confidence=row["top_confidence"],
        width=row["width"],
        height=row["height"],
        has_image=row["image_path"] is not None,
        timings_ms=json.loads(row["timings_json"] or "{}"),
        feedback=fb,
    )


def _latest_feedback(db: sqlite_utils.Database, ids: list[str]) -> dict[str, FeedbackOut]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.query(
        f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE id IN ("
        f"SELECT MAX(id) FROM feedback WHERE inspection_id IN ({marks}) GROUP BY inspection_id)",
        ids,
    )
    return {r["inspection_id"]: FeedbackOut(**r) for r in rows}


@router.get("/api/inspections", responses=_ERR)
def list_inspections(
    state: State,
    _: Reader,
    verdict: Annotated[list[VerdictName] | None, Query(description="any of these")] = None,
    class_name: Annotated[
        str | None, Query(max_length=64, description="has a detection (or top class) of it")
    ] = None,
    since: Annotated[datetime | None, Query(description="captured at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="captured before (ISO 8601)")] = None,
    feedback: Annotated[
        str | None,
        Query(
            pattern="^(any|none|confirm_defect|not_defect|wrong_class)$",
            description="latest feedback kind; 'any' / 'none': with / without feedback",
        ),
    ] = None,
    model_sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=SQLITE_MAX_INT, description="seq below which to start")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> InspectionPage:
    """Newest first. Page with ``before`` = the previous page's ``next_before``."""
    where: list[str] = []
    args: list[Any] = []
    if verdict:
        where.append(f"i.verdict IN ({','.join('?' * len(verdict))})")
        args.extend(verdict)
    if class_name is not None:
        where.append(
            "(EXISTS (SELECT 1 FROM detections d WHERE d.inspection_id = i.id "
            "AND d.class_name = ?) OR i.top_class = ?)"
        )
        args.extend([class_name, class_name])
    if since is not None:
        where.append("i.captured_at >= ?")
        args.append(_utc_iso(since))
    if until is not None:
        where.append("i.captured_at < ?")
        args.append(_utc_iso(until))
    if model_sha256 is not None:
        where.append("i.model_sha256 = ?")
        args.append(model_sha256)
    latest = "(SELECT kind FROM feedback f WHERE f.inspection_id = i.id ORDER BY f.id DESC LIMIT 1)"
    if feedback == "any":
        where.append(f"{latest} IS NOT NULL")
    elif feedback == "none":
        where.append(f"{latest} IS NULL")
    elif feedback is not None:
        where.append(f"{latest} = ?")
        args.append(feedback)
    if before is not None:
        where.append("i.seq < ?")
        args.append(before)
    sql = "SELECT i.* FROM inspections i"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY i.seq DESC LIMIT ?"
    db = state.pool.get()
    rows = list(db.query(sql, [*args, limit]))
    fbs = _latest_feedback(db, [r["id"] for r in rows])
    items = [_inspection(r, fbs.get(r["id"])) for r in rows]
    return InspectionPage(
        items=items, next_before=items[-1].seq if len(items) == limit and items else None
    )


def _row(db: sqlite_utils.Database, inspection_id: uuid.UUID) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM inspections WHERE id = ?", [str(inspection_id)]))
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no inspection {inspection_id}")
    return rows[0]


def _detections(db: sqlite_utils.Database, iid: str) -> list[DetectionOut]:
    return [
        DetectionOut(
            idx=r["idx"],
            class_id=r["class_id"],
            class_name=r["class_name"],
            confidence=r["confidence"],
            xyxy=(r["x1"], r["y1"], r["x2"], r["y2"]),
            mask_area=r["mask_area"],
        )
        for r in db.query("SELECT * FROM detections WHERE inspection_id = ? ORDER BY idx", [iid])
    ]


@router.get("/api/inspections/{inspection_id}", responses={**_ERR, **_404})
def get_inspection(state: State, _: Reader, inspection_id: uuid.UUID) -> InspectionDetailOut:
    """One inspection with its detections and every feedback given on it."""
    db = state.pool.get()
    row = _row(db, inspection_id)
    history = [
        FeedbackOut(**r)
        for r in db.query(
            f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE inspection_id = ? ORDER BY id",
            [row["id"]],
        )
    ]
    base = _inspection(row, history[-1] if history else None)
    return InspectionDetailOut(
        **base.model_dump(),
        detections=_detections(db, row["id"]),
        probs=json.loads(row["probs_json"]) if row["probs_json"] else None,
        feedback_history=history,
    )


def _image_path(data_dir: Path, rel: str) -> Path:
    root = data_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):  # a tampered row must not expose other files
        raise HTTPException(status.HTTP_404_NOT_FOUND, "image path outside the data folder")
    return path


@router.get(
    "/api/inspections/{inspection_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERR, **_404},
)
async def get_image(
    state: State,
    _: Reader,
    inspection_id: uuid.UUID,
    annotated: Annotated[bool, Query(description="draw boxes, labels and verdict")] = False,
    max_side: Annotated[int | None, Query(ge=32, le=8192, description="shrink to fit, px")] = None,
) -> Response:
    """The saved frame (only verdicts in ``store.save_images`` are saved) as JPEG.

    ``annotated`` draws the detections the verdict rules in force count.
    """

    def work() -> bytes:
        db = state.pool.get()
        row = _row(db, inspection_id)
        if row["image_path"] is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no image was saved for this {row['verdict']} inspection "
                f"(store.save_images: {', '.join(state.station.config.store.save_images)})",
            )
        path = _image_path(state.station.store.data_dir, row["image_path"])
        if not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"image file {path.name} is missing")
        if not annotated and max_side is None:
            return path.read_bytes()
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"image file {path.name} is unreadable")
        boxes = []
        if annotated:
            keep = rules_keep(state.station.inspector.rules_in_force())
            for d in _detections(db, row["id"]):
                if keep(d.class_name, d.confidence):
                    boxes.append(Box(d.xyxy, d.class_id, f"{d.class_name} {d.confidence:.2f}"))
        out = draw(
            img.astype(np.uint8, copy=False),
            boxes,
            row["verdict"] if annotated else None,
            None,
            max_side,
        )
        return encode_jpeg(out)

    data = await to_thread.run_sync(work)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.post(
    "/api/inspections/{inspection_id}/feedback",
    status_code=status.HTTP_201_CREATED,
    responses={**_ERR, **_404},
)
def post_feedback(
    state: State, who: Operator, inspection_id: uuid.UUID, body: FeedbackIn
) -> FeedbackOut:
    """Record what the operator says about an inspection (who and when are kept)."""
    db = state.pool.get()
    row = _row(db, inspection_id)
    actor = who.actor()
    rec = {
        "inspection_id": row["id"],
        "kind": body.kind,
        "class_name": body.class_name if body.kind == "wrong_class" else None,
        "note": body.note,
        "actor": actor.name,
        "token_id": actor.token_id,
        "created_at": now_iso(),
    }
    with write_tx(db):
        fid = db["feedback"].insert(rec).last_pk  # type: ignore[union-attr]
        write_audit(
            db,
            actor,
            "feedback.create",
            row["id"],
            {"kind": body.kind, "class_name": rec["class_name"], "verdict": row["verdict"]},
        )
    return FeedbackOut(
        id=int(str(fid)),
        inspection_id=row["id"],
        kind=body.kind,
        class_name=rec["class_name"],
        note=body.note,
        actor=actor.name,
        created_at=rec["created_at"],
    )
