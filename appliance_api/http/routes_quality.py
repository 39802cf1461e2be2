"""The image quality gate's settings and live readout: ``GET/PUT/DELETE /api/quality``,
and the engineer's page that tunes them (``/quality``).

What is in force, and how an override is kept and restored, is the station's business
(:mod:`kanjian.station.state.quality`); this module only translates. The readout is
the newest committed inspection the gate measured (the live hub keeps it); the same
numbers come with every ``inspection`` event of ``GET /api/events`` (``quality``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.quality_models import (
    QualityOut,
    QualityPut,
    QualityReadingOut,
    QualityStateOut,
)
from kanjian.appliance_api.http.state import ApiState
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import explain_reason
from kanjian.station.quality import QualityError, QualityGate
from kanjian.station.quality_config import QualitySettings
from kanjian.station.records import utc_iso

router = APIRouter(tags=["config"])
STATIC_DIR = Path(__file__).resolve().parent / "static"
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}


@router.get(
    "/quality",
    tags=["screen"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the quality page"}},
)
def quality_page() -> FileResponse:
    """The engineer's page for the image quality gate: the newest frame's numbers beside the
    thresholds, each marked pass / fail as typed (HTML; no token needed to load it; it asks
    for one, or takes ``#token=``; saving needs the engineer role)."""
    return FileResponse(STATIC_DIR / "quality.html", headers={"Cache-Control": "no-cache"})


def _reading(insp: Inspection | None) -> QualityReadingOut | None:
    if insp is None or insp.quality is None:
        return None
    code, params = explain_reason(insp.verdict, insp.reason)
    return QualityReadingOut(
        inspection_id=str(insp.inspection_id),
        captured_at=utc_iso(insp.frame.captured_at),
        verdict=insp.verdict.value,
        reason=insp.reason,
        reason_code=code,
        reason_params=params,
        rejected=insp.verdict is Verdict.ERROR and (code or "").startswith("quality_"),
        quality=QualityOut(**insp.quality.values()),
    )


def describe(gate: QualityGate, state: ApiState) -> QualityStateOut:
    """The gate in force and the newest reading, as the API answers."""
    ref = gate.reference
    return QualityStateOut(
        **gate.settings.model_dump(),
        rows=gate.rows,
        low_clip=gate.low_clip,
        high_clip=gate.high_clip,
        reference=None if gate.reference_path is None else str(gate.reference_path),
        reference_wh=None if ref is None else (ref.frame_hw[1], ref.frame_hw[0]),
        source=gate.origin,
        set_at=gate.set_at,
        set_by=gate.set_by,
        latest=_reading(state.hub.last_quality),
    )


@router.get("/api/quality", responses=_ERR)
def get_quality(state: State, _: Reader) -> QualityStateOut:
    """The image quality gate in force (on/off, thresholds, how it measures, where the
    settings come from) and its live readout: the newest frame it measured."""
    return describe(state.kept.quality.in_force(), state)


@router.put(
    "/api/quality",
    responses={
        **_ERR,
        422: {"model": ErrorOut, "description": "max_reference_diff without a reference image"},
    },
)
def put_quality(state: State, who: Engineer, body: QualityPut) -> QualityStateOut:
    """Turn the gate on or off and set its thresholds, from the next frame on.

    Audited (``quality.set``) and kept in the station's database over restarts, over
    station.yaml's ``quality`` settings, until ``DELETE /api/quality``; station.yaml is
    not rewritten. How the gate measures (rows, clip levels, the reference image) stays
    station.yaml's.
    """
    settings = QualitySettings.model_validate(body.model_dump())
    try:
        gate = state.kept.quality.set(settings, who.actor())
    except QualityError as e:
        raise HTTPException(422, str(e)) from e
    return describe(gate, state)


@router.delete("/api/quality", responses=_ERR)
def reset_quality(state: State, who: Engineer) -> QualityStateOut:
    """Drop the API's settings: station.yaml's gate judges again from the next frame on."""
    return describe(state.kept.quality.reset(who.actor()), state)
