"""Model bundles (upload, list, activate, roll back) and the inspector's thresholds."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi import Path as PathParam

from kanjian.appliance_api.http import thresholds as thr
from kanjian.appliance_api.http.api_models import (
    ErrorOut,
    ModelEntryOut,
    ModelListOut,
    ThresholdsOut,
    ThresholdsPut,
    UploadOut,
)
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.state import ApiState
from kanjian.appliance_api.http.upload_form import FormError, extract_file_part, is_form
from kanjian.station.ruleset import RulesError
from kanjian.station.state.archive import ArchiveRejected
from kanjian.station.state.audit import Actor
from kanjian.station.state.models import INCOMING_DIR, ModelEntry, RegistryError
from kanjian.station.state.rules import Expected, RulesChanged

router = APIRouter(tags=["models"])
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}
_CHANGE: dict[int | str, dict[str, Any]] = {
    **_ERR,
    404: {"model": ErrorOut, "description": "no such model"},
    409: {
        "model": ErrorOut,
        "description": "nothing to do (already active, no history); or the first of "
        "model.providers cannot run the model and model.allow_fallback is off",
    },
    422: {"model": ErrorOut, "description": "the model cannot be loaded or was altered"},
}
Sha = Annotated[str, PathParam(pattern="^[0-9a-f]{64}$", description="sha256 of model.onnx")]
#: the HTTP status of each kind of refusal the station's state reports
STATUS = {"malformed": 400, "too_big": 413, "wrong_type": 415, "invalid": 422,
          "not_found": 404, "conflict": 409, "provider": 409}  # fmt: skip
ARCHIVE_TYPES = (
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/octet-stream",
)

#: said with every 415: how an archive may be sent
_HOW_TO_SEND = (
    "send the .zip / .tar.gz itself as the request body (curl --data-binary @bundle.zip) "
    "or as a form's file field (curl -F file=@bundle.zip)"
)


def _entry_out(state: ApiState, e: ModelEntry) -> ModelEntryOut:
    st = state.registry.stack()
    return ModelEntryOut(
        sha256=e.sha256,
        name=e.name,
        version=e.version,
        task=e.task,
        origin=e.origin,
        size_bytes=e.size_bytes,
        golden_images=e.golden_images,
        added_at=e.added_at,
        added_by=e.added_by,
        active=e.sha256 == state.registry.active_sha(),
        previous=len(st) >= 2 and st[-2] == e.sha256,
    )


@router.get("/api/models", responses=_ERR)
def list_models(state: State, _: Reader) -> ModelListOut:
    """Registered bundles; ``active`` judges now, ``previous`` is what a rollback restores."""
    return ModelListOut(
        active_sha256=state.registry.active_sha(),
        models=[_entry_out(state, e) for e in state.registry.entries()],
    )


@router.post(
    "/api/models",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_ERR,
        200: {"model": UploadOut, "description": "this model was already registered"},
        400: {"model": ErrorOut, "description": "malformed or unsafe archive"},
        413: {"model": ErrorOut, "description": "archive or unpacked bundle too big"},
        415: {"model": ErrorOut, "description": "not a .zip / .tar.gz / .tar"},
        422: {"model": ErrorOut, "description": "manifest, sha256 or golden check failed"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "a .zip or .tar.gz of a bundle folder (model.onnx, manifest.json, "
            "golden/), sent as the raw body (`curl --data-binary @bundle.zip`) or as the "
            "file field of a form (`curl -F file=@bundle.zip`)",
            "content": {
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in ARCHIVE_TYPES},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def upload_model(
    request: Request, response: Response, state: State, who: Engineer
) -> UploadOut:
    """Upload a bundle archive (raw body or a form's file field). It is accepted only
    when its manifest's sha256 matches ``model.onnx`` and the bundle reproduces its
    golden set; it is not activated.
    """
    limit = int(state.cfg.max_upload_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"upload of {int(declared)} bytes exceeds api.max_upload_mb "
            f"({state.cfg.max_upload_mb:g} MiB)",
        )
    incoming = state.registry.models_dir / INCOMING_DIR
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{uuid.uuid4().hex}.upload"
    part = tmp.with_suffix(".part")
    content_type = request.headers.get("content-type", "")
    actor = who.actor()
    try:
        size = 0
        with tmp.open("xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        f"upload exceeds api.max_upload_mb ({state.cfg.max_upload_mb:g} MiB)",
                    )
                f.write(chunk)
        if size == 0:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "empty upload: send the archive as the request body or a form's file field",
            )
        archive = tmp
        if is_form(content_type):  # curl -F file=@bundle.zip: cut the file out of the form
            try:
                await to_thread.run_sync(extract_file_part, tmp, content_type, part)
            except FormError as e:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
            tmp.unlink()
            archive = part
        try:
            entry, created = await to_thread.run_sync(state.registry.ingest, archive, actor)
        except (ArchiveRejected, RegistryError) as e:
            detail = {"reason": str(e), "bytes": size}
            await to_thread.run_sync(state.kept.audit, actor, "model.upload_refused", None, detail)
            msg = str(e)
            if e.kind == "wrong_type":
                msg += f" ({_HOW_TO_SEND})"
            raise HTTPException(STATUS[e.kind], msg) from e
    finally:
        tmp.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if not created:
        response.status_code = status.HTTP_200_OK
    return UploadOut(created=created, model=_entry_out(state, entry))


def _activate(state: ApiState, sha: str, actor: Actor) -> ModelEntry:
    try:
        return state.registry.activate(sha, actor).entry
    except RegistryError as e:
        raise HTTPException(STATUS[e.kind], str(e)) from e


def _rollback(state: ApiState, actor: Actor) -> ModelEntry:
    try:
        return state.registry.rollback(actor)
    except RegistryError as e:
        raise HTTPException(STATUS[e.kind], str(e)) from e


@router.post("/api/models/{sha256}/activate", responses=_CHANGE)
async def activate_model(state: State, who: Engineer, sha256: Sha) -> ModelEntryOut:
    """Swap the running model between two frames; the loop does not stop."""
    entry = await to_thread.run_sync(_activate, state, sha256, who.actor())
    return _entry_out(state, entry)


@router.post("/api/models/rollback", responses=_CHANGE)
async def rollback_model(state: State, who: Engineer) -> ModelEntryOut:
    """Go back to the model that judged before the current one."""
    entry = await to_thread.run_sync(_rollback, state, who.actor())
    return _entry_out(state, entry)


@router.get("/api/thresholds", tags=["config"], responses=_ERR)
def get_thresholds(state: State, _: Reader) -> ThresholdsOut:
    """Decoding thresholds and verdict rules in force (null: the bundle's default)."""
    return thr.describe(state.kept.rules.in_force(), state.station.inspector.model)


@router.put(
    "/api/thresholds",
    tags=["config"],
    responses={
        **_ERR,
        409: {"model": ErrorOut, "description": "changed since expected_set_at: by whom, when"},
        422: {"model": ErrorOut, "description": "a rule names a class the model does not have"},
    },
)
def put_thresholds(state: State, who: Engineer, body: ThresholdsPut) -> ThresholdsOut:
    """Change thresholds and rules from the next frame on.

    Kept in the station's database and applied again after a restart, over
    station.yaml's values, until ``DELETE /api/thresholds``; station.yaml is
    not rewritten. With ``expected_set_at`` (the ``set_at`` a client loaded) a
    change made by someone else since is not overwritten: 409 names who and when.
    """
    # sent as null means "station.yaml's were in force"; left out means "do not check"
    expected = (
        Expected(body.expected_set_at) if "expected_set_at" in body.model_fields_set else None
    )
    try:
        rs = state.kept.rules.set(thr.to_ruleset(body), who.actor(), expected)
    except RulesError as e:  # a misspelt class would silently fall back to the default rule
        raise HTTPException(422, str(e)) from e
    except RulesChanged as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
    return thr.describe(rs, state.station.inspector.model)


@router.delete("/api/thresholds", tags=["config"], responses=_ERR)
def reset_thresholds(state: State, who: Engineer) -> ThresholdsOut:
    """Drop the API's thresholds and judge with station.yaml's again, from the next frame on."""
    rs = state.kept.rules.reset(who.actor())
    return thr.describe(rs, state.station.inspector.model)
