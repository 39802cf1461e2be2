"""Inspections: filtered, paginated list; one with detections; its image; operator feedback."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import sqlite_utils
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi import Path as PathParam

from kanjian.appliance_api.http.annotate import Box, box_label, draw, encode_jpeg, rules_keep
from kanjian.appliance_api.http.api_models import (
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    FeedbackSavedOut,
    FeedbackUndoneOut,
    InspectionDetailOut,
    InspectionOut,
    InspectionPage,
    LabelLang,
    ModelRefOut,
    VerdictName,
)
from kanjian.appliance_api.http.deps import Operator, Reader, State
from kanjian.appliance_api.http.list_query import ListFilter, list_query, plan_page
from kanjian.appliance_api.http.state import ApiState
from kanjian.inference.verdict import explain_reason
from kanjian.station.records import (
    FEEDBACK_COLUMNS,
    StoredFeedback,
    StoredInspection,
    columns,
    load_inspection,
    utc_iso,
)
from kanjian.station.state.audit import now_iso, write_audit
from kanjian.station.state.db import SQLITE_MAX_INT, write_tx

router = APIRouter(tags=["inspections"])
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "not found"}}

#: InspectionOut's fields that are not StoredInspection's attributes of the same name
_DERIVED = frozenset(
    {"model", "has_image", "feedback", "feedback_history", "reason_code", "reason_params"}
)


def _utc_iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise HTTPException(422, f"time {t.isoformat()} needs a timezone (e.g. Z or +08:00)")
    return utc_iso(t)


def _fields(
    cls: type[InspectionOut], rec: StoredInspection, feedback: Sequence[StoredFeedback]
) -> dict[str, Any]:
    """``cls``'s fields of a stored inspection; ``feedback`` oldest first (the latest shows)."""
    code, params = explain_reason(rec.verdict, rec.reason or "")
    return {
        "reason_code": code,
        "reason_params": params,
        **{n: getattr(rec, n) for n in cls.model_fields if n not in _DERIVED},
        "model": ModelRefOut(
            name=rec.model_name, version=rec.model_version, sha256=rec.model_sha256
        ),
        "has_image": rec.has_image,
        "feedback": feedback[-1] if feedback else None,
        "feedback_history": list(feedback),
    }


def inspection_out(rec: StoredInspection, feedback: Sequence[StoredFeedback] = ()) -> InspectionOut:
    """A stored inspection as the API lists it, with its latest ``feedback`` (oldest first)."""
    return InspectionOut.model_validate(_fields(InspectionOut, rec, feedback), from_attributes=True)


def inspection_detail_out(
    rec: StoredInspection, feedback: Sequence[StoredFeedback] = ()
) -> InspectionDetailOut:
    """A stored inspection with its detections and all its ``feedback`` (oldest first)."""
    return InspectionDetailOut.model_validate(
        _fields(InspectionDetailOut, rec, feedback), from_attributes=True
    )


def _latest_feedback(db: sqlite_utils.Database, ids: list[str]) -> dict[str, StoredFeedback]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {columns(FEEDBACK_COLUMNS)} FROM feedback WHERE id IN ("
        f"SELECT MAX(id) FROM feedback WHERE inspection_id IN ({marks}) GROUP BY inspection_id)",
        ids,
    )
    return {f.inspection_id: f for f in map(StoredFeedback.from_row, rows)}


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
    db = state.pool.get()
    filt = ListFilter(
        verdicts=tuple(verdict or ()),
        class_name=class_name,
        since=None if since is None else _utc_iso(since),
        until=None if until is None else _utc_iso(until),
        feedback=feedback,
        model_sha256=model_sha256,
        before=before,
    )
    filt = plan_page(db, filt, limit)
    sql, args = list_query(filt, limit)
    recs = [StoredInspection.from_row(r) for r in db.execute(sql, args)]
    fbs = _latest_feedback(db, [r.id for r in recs])
    items = [inspection_out(r, [fbs[r.id]] if r.id in fbs else []) for r in recs]
    return InspectionPage(
        items=items, next_before=items[-1].seq if len(items) == limit and items else None
    )


def _stored(db: sqlite_utils.Database, inspection_id: uuid.UUID) -> StoredInspection:
    rec = load_inspection(db.conn, str(inspection_id))
    if rec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no inspection {inspection_id}")
    return rec


@router.get("/api/inspections/{inspection_id}", responses={**_ERR, **_404})
def get_inspection(state: State, _: Reader, inspection_id: uuid.UUID) -> InspectionDetailOut:
    """One inspection with its detections and every feedback given on it."""
    db = state.pool.get()
    rec = _stored(db, inspection_id)
    history = [
        StoredFeedback.from_row(r)
        for r in db.execute(
            f"SELECT {columns(FEEDBACK_COLUMNS)} FROM feedback WHERE inspection_id = ? ORDER BY id",
            [rec.id],
        )
    ]
    return inspection_detail_out(rec, history)


def _image_path(data_dir: Path, rel: str) -> Path:
    root = data_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):  # a tampered row must not expose other files
        raise HTTPException(status.HTTP_404_NOT_FOUND, "image path outside the data folder")
    return path


@router.get(
    "/api/inspections/{inspection_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        **_ERR,
        **_404,
        410: {"model": ErrorOut, "description": "deleted by store.retention"},
    },
)
async def get_image(
    state: State,
    _: Reader,
    inspection_id: uuid.UUID,
    annotated: Annotated[bool, Query(description="draw boxes, labels and verdict")] = False,
    max_side: Annotated[int | None, Query(ge=32, le=8192, description="shrink to fit, px")] = None,
    lang: Annotated[
        LabelLang | None, Query(description="labels' language; default api.language")
    ] = None,
) -> Response:
    """The saved frame (only verdicts in ``store.save_images`` are saved) as JPEG.

    ``annotated`` draws the detections the verdict rules in force count, labelled with
    the model's display names in ``lang``.
    """

    def work() -> bytes:
        db = state.pool.get()
        rec = _stored(db, inspection_id)
        if rec.image_path is None:
            deleted = db.execute(  # store.retention deleted it (station/retention.py)
                "SELECT image_deleted_at FROM inspections WHERE id = ?", [rec.id]
            ).fetchone()
            if deleted is not None and deleted[0] is not None:
                raise HTTPException(
                    status.HTTP_410_GONE,
                    f"the image was deleted by store.retention at {deleted[0]}",
                )
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no image was saved for this {rec.verdict.value} inspection "
                f"(store.save_images: {', '.join(state.station.config.store.save_images)})",
            )
        path = _image_path(state.station.store.data_dir, rec.image_path)
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
            names = state.kept.names.for_language(rec.model_sha256, lang or state.cfg.language)
            for d in rec.detections:
                if keep(d.class_name, d.confidence):
                    label = box_label(d.class_name, d.confidence, names)
                    boxes.append(Box(d.xyxy, d.class_id, label))
        out = draw(
            img.astype(np.uint8, copy=False),
            boxes,
            rec.verdict.value if annotated else None,
            None,
            max_side,
            zones=state.station.inspector.rules_in_force() if annotated else None,
        )
        return encode_jpeg(out)

    data = await to_thread.run_sync(work)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def _feedback_rows(db: sqlite_utils.Database, where: str, args: list[Any]) -> list[StoredFeedback]:
    return [
        StoredFeedback.from_row(r)
        for r in db.execute(f"SELECT {columns(FEEDBACK_COLUMNS)} FROM feedback WHERE {where}", args)
    ]


def _latest_of(db: sqlite_utils.Database, inspection_id: str) -> StoredFeedback | None:
    rows = _feedback_rows(db, "inspection_id = ? ORDER BY id DESC LIMIT 1", [inspection_id])
    return rows[0] if rows else None


def _same_giver(
    db: sqlite_utils.Database, f: StoredFeedback, token_id: str | None, name: str
) -> bool:
    """Whether answer ``f`` was given by this token (by this name where there is none)."""
    given = db.execute("SELECT token_id FROM feedback WHERE id = ?", [f.id]).fetchone()[0]
    return bool(given == token_id and (token_id is not None or f.actor == name))


def _feedback_out(f: StoredFeedback) -> FeedbackOut:
    return FeedbackOut.model_validate(f, from_attributes=True)


def _brief(f: StoredFeedback) -> dict[str, Any]:
    """An answer as the audit keeps it (enough to know what was said, by whom, when)."""
    return {
        "id": f.id,
        "kind": f.kind,
        "class_name": f.class_name,
        "note": f.note,
        "actor": f.actor,
        "created_at": f.created_at,
    }


def _undo_until(state: ApiState, created_at: str) -> str:
    t = datetime.fromisoformat(created_at) + timedelta(seconds=state.cfg.feedback_undo_s)
    return utc_iso(t)


def _undo_window(state: ApiState, created_at: str, token_id: str | None) -> dict[str, Any]:
    """``undo_until`` and ``undo_s_left`` of an answer for the token asking: null when
    it cannot undo it (no token: undo needs the giver's token; or too late)."""
    until = datetime.fromisoformat(created_at) + timedelta(seconds=state.cfg.feedback_undo_s)
    left = (until - datetime.fromisoformat(now_iso())).total_seconds()
    if token_id is None or left <= 0:
        return {"undo_until": None, "undo_s_left": None}
    return {"undo_until": utc_iso(until), "undo_s_left": round(left, 3)}


@router.post(
    "/api/inspections/{inspection_id}/feedback",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_ERR,
        **_404,
        200: {"model": FeedbackSavedOut, "description": "the same answer was already the latest"},
    },
)
def post_feedback(
    state: State, who: Operator, inspection_id: uuid.UUID, body: FeedbackIn, response: Response
) -> FeedbackSavedOut:
    """Record what the operator says about an inspection (who and when are kept).

    A second answer on the same inspection is kept beside the first and audited as
    ``feedback.change`` with the old and the new answer (the latest one is the
    inspection's ``feedback``), also when another token agrees with it (who said it
    counts). Only the same token giving the same answer again records nothing and
    answers 200 with the standing one (a double tap). ``undo_until`` / ``undo_s_left``
    are for this token: null when it cannot undo the answer.
    """
    db = state.pool.get()
    insp = _stored(db, inspection_id)
    actor = who.actor()
    created = now_iso()
    rec = {
        "inspection_id": insp.id,
        "kind": body.kind,
        "class_name": body.class_name if body.kind == "wrong_class" else None,
        "note": body.note,
        "actor": actor.name,
        "token_id": actor.token_id,
        "created_at": created,
    }
    with write_tx(db):  # the previous answer is read under the write lock: no race
        prev = _latest_of(db, insp.id)
        same = (rec["kind"], rec["class_name"], rec["note"])
        if (
            prev is not None
            and (prev.kind, prev.class_name, prev.note) == same
            and _same_giver(db, prev, actor.token_id, actor.name)
        ):
            response.status_code = status.HTTP_200_OK
            older = _feedback_rows(
                db, "inspection_id = ? AND id < ? ORDER BY id DESC LIMIT 1", [insp.id, prev.id]
            )
            return FeedbackSavedOut(
                **_feedback_out(prev).model_dump(),
                replaces=_feedback_out(older[0]) if older else None,
                **_undo_window(state, prev.created_at, actor.token_id),
            )
        fid = int(str(db["feedback"].insert(rec).last_pk))  # type: ignore[union-attr]
        new = {"id": fid, "kind": body.kind, "class_name": rec["class_name"], "note": body.note}
        if prev is None:
            write_audit(
                db,
                actor,
                "feedback.create",
                insp.id,
                {**new, "verdict": insp.verdict.value},
            )
        else:
            write_audit(
                db,
                actor,
                "feedback.change",
                insp.id,
                {"old": _brief(prev), "new": new, "verdict": insp.verdict.value},
            )
    return FeedbackSavedOut(
        id=fid,
        inspection_id=insp.id,
        kind=body.kind,
        class_name=rec["class_name"],
        note=body.note,
        actor=actor.name,
        created_at=created,
        replaces=None if prev is None else _feedback_out(prev),
        **_undo_window(state, created, actor.token_id),
    )


@router.delete(
    "/api/inspections/{inspection_id}/feedback/{feedback_id}",
    responses={
        **_ERR,
        **_404,
        409: {"model": ErrorOut, "description": "not the latest answer, or too late to undo"},
    },
)
def undo_feedback(
    state: State,
    who: Operator,
    inspection_id: uuid.UUID,
    feedback_id: Annotated[int, PathParam(ge=1, le=SQLITE_MAX_INT)],
) -> FeedbackUndoneOut:
    """Undo an answer just given (a mistaken tap): only the inspection's latest answer,
    only by the token that gave it, within ``api.feedback_undo_s`` of giving it.

    The answer's row goes; the audit keeps it whole (``feedback.undo``, with the answer
    that stands again). Later, or for someone else's answer, give a new answer instead:
    it is recorded as a change.
    """
    db = state.pool.get()
    insp = _stored(db, inspection_id)
    actor = who.actor()
    instead = "give a new answer instead (it is recorded as a change)"
    with write_tx(db):
        rows = _feedback_rows(db, "id = ? AND inspection_id = ?", [feedback_id, insp.id])
        if not rows:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no feedback {feedback_id} on inspection {insp.id}",
            )
        f = rows[0]
        latest = _latest_of(db, insp.id)
        if latest is not None and latest.id != f.id:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"feedback {f.id} is not the inspection's latest answer ({latest.id} is); "
                f"only the latest can be undone: {instead}",
            )
        token = db.execute("SELECT token_id FROM feedback WHERE id = ?", [f.id]).fetchone()[0]
        if token is None or token != actor.token_id:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"feedback {f.id} was given by {f.actor}; only the token that gave an answer "
                f"may undo it: {instead}",
            )
        until = _undo_until(state, f.created_at)
        if now_iso() > until:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"feedback {f.id} was given at {f.created_at}; answers can be undone for "
                f"{state.cfg.feedback_undo_s:g} s (api.feedback_undo_s): {instead}",
            )
        db.execute("DELETE FROM feedback WHERE id = ?", [f.id])
        now = _latest_of(db, insp.id)
        # feedback_latest (what the list filters on) follows: its insert trigger only adds
        if now is None:
            db.execute("DELETE FROM feedback_latest WHERE seq = ?", [insp.seq])
        else:
            db.execute(
                "UPDATE feedback_latest SET kind = ?, feedback_id = ? WHERE seq = ?",
                [now.kind, now.id, insp.seq],
            )
        write_audit(
            db,
            actor,
            "feedback.undo",
            insp.id,
            {
                "undone": _brief(f),
                "standing": None if now is None else _brief(now),
                "verdict": insp.verdict.value,
            },
        )
    return FeedbackUndoneOut(
        undone=_feedback_out(f), latest=None if now is None else _feedback_out(now)
    )
