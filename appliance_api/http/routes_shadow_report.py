"""The shadow report: ``GET /api/shadow/report``, a disagreement's picture with both models'
boxes (``GET /api/shadow/picture/{inspection_id}``), and its page (``/shadow``).

The counting is :mod:`kanjian.station.shadow.report`'s (over the store only); this
module picks the two models (the shadow loaded now, or the newest one that ran; the
model judging now) and draws the pictures.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http.annotate import rules_keep
from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Reader, State
from kanjian.appliance_api.http.shadow_picture import draw_pair, shadow_image
from kanjian.appliance_api.http.state import ApiState
from kanjian.appliance_api.http.trends import snapshot
from kanjian.station.records import load_inspection
from kanjian.station.shadow.report import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Pair,
    ShadowReport,
    build_report,
    model_name,
    read_pairs,
)

router = APIRouter(tags=["models"])
STATIC_DIR = Path(__file__).resolve().parent / "static"
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    404: {"model": ErrorOut, "description": "no such model, shadow or picture"},
}
Sha = Annotated[
    str | None,
    Query(
        min_length=6,
        max_length=64,
        pattern="^[0-9a-fA-F]+$",
        description="a model's sha256 or a unique prefix",
    ),
]


@router.get(
    "/shadow",
    tags=["screen"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the shadow report page"}},
)
def shadow_page() -> FileResponse:
    """The shadow report page: verdict matrix, per-class box agreement, feedback, and the
    disagreements with both models' boxes on one picture (HTML; it asks for a token, or
    takes ``#token=``)."""
    return FileResponse(STATIC_DIR / "shadow.html", headers={"Cache-Control": "no-cache"})


def _full_sha(conn: sqlite3.Connection, prefix: str, what: str) -> str:
    rows = conn.execute(
        "SELECT sha256 FROM models WHERE sha256 LIKE ? LIMIT 2", [prefix.lower() + "%"]
    ).fetchall()
    if len(rows) != 1:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"{what} {prefix}: {'no model' if not rows else 'more than one model'} has that "
            "sha256 prefix (GET /api/models lists them)",
        )
    return str(rows[0][0])


def _models(state: ApiState, conn: sqlite3.Connection, model: str | None,
            active: str | None) -> tuple[str, str]:  # fmt: skip
    """(shadow sha, active sha): as asked, else the shadow loaded now or the newest one
    that ran, and the model judging now."""
    if model is not None:
        shadow = _full_sha(conn, model, "model")
    else:
        row = conn.execute(
            "SELECT model_sha256 FROM shadow_sessions ORDER BY ended_at IS NULL DESC, id DESC "
            "LIMIT 1"
        ).fetchone()
        if row is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                "no shadow has run on this station: load one with PUT /api/shadow",
            )
        shadow = str(row[0])
    judging = state.station.inspector.model.ref.sha256
    return shadow, judging if active is None else _full_sha(conn, active, "active")


def _picture_path(p: Pair, shadow: str, data_dir: Path) -> str | None:
    if not p.has_image and shadow_image(data_dir, shadow, p.seq) is None:
        return None
    return f"/api/shadow/picture/{p.inspection_id}?model={shadow}"


@router.get("/api/shadow/report", responses=_ERR)
async def shadow_report(
    state: State,
    _: Reader,
    model: Sha = None,
    active: Sha = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="newest frames counted")] = (
        DEFAULT_LIMIT
    ),
    iou: Annotated[float, Query(ge=0.05, le=0.95, description="IoU a box pair needs")] = 0.5,
) -> ShadowReport:
    """The active model and a shadow model on the same frames: verdict matrix (active rows
    x shadow columns), per-class box agreement (same class, IoU at least ``iou``), both
    against the operators' answers, and the disagreements (newest first, each with a
    picture of both models' boxes when a picture was kept).

    ``model``: the shadow (default: the one loaded now, else the newest that ran);
    ``active``: the active model compared with (default: the one judging now; only frames
    it judged count, as for the promotion gate).
    """

    def work() -> ShadowReport:
        db = state.pool.get()
        with snapshot(db) as conn:
            shadow, act = _models(state, conn, model, active)
            pairs = read_pairs(conn, shadow, act, limit)
            names = (model_name(conn, shadow), model_name(conn, act))
        classes = state.station.inspector.model.info.class_names
        data_dir = state.station.store.data_dir
        return build_report(pairs, shadow, act, limit, iou, classes,
                            lambda p: _picture_path(p, shadow, data_dir), names)  # fmt: skip

    return await to_thread.run_sync(work)


@router.get(
    "/api/shadow/picture/{inspection_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERR},
)
async def shadow_picture(
    state: State,
    _: Reader,
    inspection_id: uuid.UUID,
    model: Sha = None,
    max_side: Annotated[int | None, Query(ge=32, le=8192, description="shrink to fit, px")] = None,
) -> Response:
    """The frame with the active model's boxes (solid, blue) and the shadow's (magenta, with
    corner marks) drawn on it, each labelled ``A``/``S`` with class and confidence: the
    boxes the verdict rules in force count (not ignored, at least their review
    confidence), as the screen draws them."""

    def work() -> bytes:
        db = state.pool.get()
        with snapshot(db) as conn:
            shadow, _act = _models(state, conn, model, None)
            rec = load_inspection(conn, str(inspection_id))
            row = conn.execute(
                "SELECT detections_json FROM shadow_results WHERE model_sha256 = ? AND seq = "
                "(SELECT seq FROM inspections WHERE id = ?)",
                [shadow, str(inspection_id)],
            ).fetchone()
        if rec is None or row is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no inspection {inspection_id} judged by shadow model {shadow[:12]}",
            )
        data_dir = state.station.store.data_dir
        path = shadow_image(data_dir, shadow, rec.seq)
        if path is None and rec.image_path is not None:
            cand = (data_dir / rec.image_path).resolve()
            path = cand if cand.is_relative_to(data_dir.resolve()) and cand.is_file() else None
        img = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no picture of inspection {inspection_id} was kept (store.save_images, "
                "retention, or shadow.keep_pictures)",
            )
        # both models' boxes the rules in force count (the screen's rule for pictures)
        keep = rules_keep(state.station.inspector.rules_in_force())
        return draw_pair(img.astype(np.uint8, copy=False), rec, str(row[0]), max_side, keep)

    data = await to_thread.run_sync(work)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private"})
