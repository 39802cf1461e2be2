"""Display names of a model's classes: what the screen and the pictures call them.

The bundle's names (``display_names`` in its manifest) with the ones set on this
station over them, class by class (:mod:`kanjian.station.state.display_names`).
``GET /api/status`` gives the active model's effective names as
``model.display_names``.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.inference.display_names import (
    MAX_CLASSES,
    MAX_LANGS,
    MAX_NAME,
    MAX_TAG,
    NamesError,
)
from kanjian.station.state.display_names import ModelNames, UnknownModel

router = APIRouter(tags=["models"])
Sha = Annotated[str, PathParam(pattern="^[0-9a-f]{64}$", description="sha256 of model.onnx")]
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    404: {"model": ErrorOut, "description": "no registered model has this sha256"},
}
_NAMES = "{language: {class_name: display name}}, e.g. {'zh': {'scratches': '划痕'}}"


class DisplayNamesBody(BaseModel):
    """The station's names for a model: they replace the ones set before."""

    display_names: dict[str, dict[str, str]] = Field(
        description=f"{_NAMES}; at most {MAX_LANGS} languages, tags like zh, en, zh-TW "
        f"(at most {MAX_TAG} characters); at most {MAX_CLASSES} names a language, classes "
        f"must be the model's; names 1-{MAX_NAME} characters, no control characters. "
        "Classes left out show the bundle's name (or the class name)"
    )


class DisplayNamesOut(BaseModel):
    """A model's display names and where they come from."""

    sha256: str
    class_names: list[str] = Field(description="the model's classes, index = class id")
    display_names: dict[str, dict[str, str]] = Field(
        description=f"what the screen and the pictures show: {_NAMES}; the bundle's with the "
        "station's over them. A class without a name shows its class name"
    )
    bundle: dict[str, dict[str, str]] = Field(description="the bundle manifest's own names")
    station: dict[str, dict[str, str]] = Field(description="set on this station (empty: none)")
    set_at: str | None = Field(description="when the station's names were set (UTC)")
    set_by: str | None = Field(description="who set them")


def _out(n: ModelNames) -> DisplayNamesOut:
    return DisplayNamesOut(
        sha256=n.sha256,
        class_names=list(n.class_names),
        display_names=n.effective,
        bundle=n.bundle,
        station=n.station,
        set_at=n.set_at,
        set_by=n.set_by,
    )


@router.get("/api/models/{sha256}/display-names", responses=_ERR)
async def get_display_names(state: State, _: Reader, sha256: Sha) -> DisplayNamesOut:
    """A registered model's display names: effective, the bundle's, the station's."""
    try:
        return _out(await to_thread.run_sync(state.kept.names.get, sha256))
    except UnknownModel as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e


@router.put(
    "/api/models/{sha256}/display-names",
    responses={
        **_ERR,
        422: {
            "model": ErrorOut,
            "description": "a bad or overlong language tag, too many languages or names, "
            "a bad name, or an unknown class: the detail lists each",
        },
    },
)
async def put_display_names(
    state: State, who: Engineer, sha256: Sha, body: DisplayNamesBody
) -> DisplayNamesOut:
    """Set the station's names for a model (replacing the ones set before); audited as
    ``model.display_names.set``, kept over restarts, shown from the next picture on."""
    try:
        n = await to_thread.run_sync(state.kept.names.set, sha256, body.display_names, who.actor())
    except UnknownModel as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e
    except NamesError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from e
    return _out(n)


@router.delete("/api/models/{sha256}/display-names", responses=_ERR)
async def reset_display_names(state: State, who: Engineer, sha256: Sha) -> DisplayNamesOut:
    """Drop the station's names for a model: the bundle's are shown again; audited as
    ``model.display_names.reset``."""
    try:
        n = await to_thread.run_sync(state.kept.names.reset, sha256, who.actor())
    except UnknownModel as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e
    return _out(n)
