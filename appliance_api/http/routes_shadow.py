"""The shadow model: ``GET/PUT/DELETE /api/shadow``, ``POST /api/shadow/promote``, and the
engineer's models page (``/models``) that shows it.

What a shadow is, how it is fed and kept, and the promotion gate are the station's
business (:mod:`kanjian.station.shadow`); this module only translates. Every change is
engineer-only and audited (``shadow.set``, ``shadow.clear``, ``model.promote``,
``shadow.promote_refused``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.shadow_models import (
    GateOut,
    PromoteIn,
    PromoteOut,
    ShadowPut,
    ShadowStateOut,
    gate_out,
    shadow_out,
)
from kanjian.appliance_api.http.state import ApiState
from kanjian.station.shadow.gate import GateCheck
from kanjian.station.shadow.keeper import ShadowError
from kanjian.station.shadow.service import ShadowService
from kanjian.station.state.audit import Actor

router = APIRouter(tags=["models"])
STATIC_DIR = Path(__file__).resolve().parent / "static"
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    503: {"model": ErrorOut, "description": "this station runs no shadow channel"},
}
#: the HTTP status of each kind of refusal
STATUS = {"not_found": 404, "conflict": 409, "invalid": 409, "refused": 409, "provider": 409}


@router.get(
    "/models",
    tags=["screen"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the models page"}},
)
def models_page() -> FileResponse:
    """The engineer's models page: the active model and the shadow panel (load a
    registered model as shadow, stop it, promote it). HTML; no token needed to load it;
    it asks for one, or takes ``#token=``; changes need the engineer role."""
    return FileResponse(STATIC_DIR / "models.html", headers={"Cache-Control": "no-cache"})


def _service(state: ApiState) -> ShadowService:
    svc = state.station.channels.get(ShadowService)
    if svc is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this station runs no shadow channel (kanjian.station.shadow.service was not "
            "imported before the station was built)",
        )
    return svc


def _gate(state: ApiState, check: GateCheck | None) -> GateOut:
    g = state.station.config.shadow
    return gate_out(
        g.promote_min_frames, g.promote_min_agreement, g.promote_no_worse_on_feedback, check
    )


def describe(state: ApiState) -> ShadowStateOut:
    """The shadow and the gate measured now, as the API answers."""
    svc = _service(state)
    st = svc.status()
    return ShadowStateOut(
        shadow=None if st is None else shadow_out(st),
        gate=_gate(state, svc.gate() if st is not None else None),
    )


def _refused(e: ShadowError) -> HTTPException:
    return HTTPException(STATUS[e.kind], str(e))


@router.get("/api/shadow", responses=_ERR)
def get_shadow(state: State, _: Reader) -> ShadowStateOut:
    """The shadow model (null when none is loaded): counters, measured mode, latency,
    and the promotion gate's numbers now."""
    return describe(state)


def _load(state: ApiState, sha: str, actor: Actor) -> ShadowStateOut:
    try:
        _service(state).keeper.load(sha, actor)
    except ShadowError as e:
        raise _refused(e) from e
    return describe(state)


@router.put(
    "/api/shadow",
    responses={
        **_ERR,
        404: {"model": ErrorOut, "description": "no registered model with that sha256"},
        409: {
            "model": ErrorOut,
            "description": "its golden check failed, it is the active model, or it is "
            "the shadow already",
        },
    },
)
async def put_shadow(state: State, who: Engineer, body: ShadowPut) -> ShadowStateOut:
    """Load a registered model as the shadow (its golden check runs first, in a child
    process); it replaces the current shadow. It judges the frames the active model
    judged, on spare capacity, and never touches a verdict."""
    return await to_thread.run_sync(_load, state, body.sha256, who.actor())


def _clear(state: ApiState, actor: Actor) -> ShadowStateOut:
    try:
        _service(state).keeper.clear(actor)
    except ShadowError as e:
        raise _refused(e) from e
    return describe(state)


@router.delete(
    "/api/shadow",
    responses={**_ERR, 409: {"model": ErrorOut, "description": "no shadow is loaded"}},
)
async def delete_shadow(state: State, who: Engineer) -> ShadowStateOut:
    """Stop the shadow (its results stay)."""
    return await to_thread.run_sync(_clear, state, who.actor())


def _promote(state: ApiState, force: bool, actor: Actor) -> PromoteOut:
    try:
        done, check = _service(state).keeper.promote(actor, force)
    except ShadowError as e:
        raise _refused(e) from e
    entry = done.entry
    return PromoteOut(
        sha256=entry.sha256,
        name=entry.name,
        version=entry.version,
        replaced=done.previous.sha256 if done.previous else None,
        forced=force,
        gate=_gate(state, check),
    )


@router.post(
    "/api/shadow/promote",
    responses={
        **_ERR,
        409: {
            "model": ErrorOut,
            "description": "no shadow; the promotion gate refused (every failed condition "
            "named with its numbers); its golden check failed; or the station's provider "
            "cannot run it",
        },
    },
)
async def promote_shadow(state: State, who: Engineer, body: PromoteIn | None = None) -> PromoteOut:
    """Make the shadow the active model: the gate (unless ``force``), the golden check,
    then the same activation as ``POST /api/models/{sha256}/activate`` (the old model
    stays on the stack: ``POST /api/models/rollback`` brings it back)."""
    force = body.force if body is not None else False
    return await to_thread.run_sync(_promote, state, force, who.actor())
