"""The engineer's zone page (``/zones``) and the plain frame it draws on.

Zones are verdict rules (``rules.zones``, see :mod:`kanjian.inference.zones`), so the
page saves them through ``PUT /api/thresholds``: engineer-only, audited, kept over
restarts like every other rule. What this module adds is the page itself and the
newest frame as the camera gave it, unscaled and undrawn, because zone points are
source-frame pixels and the annotated live picture is shrunk and framed in colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http.annotate import encode_jpeg
from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Reader, State
from kanjian.camera.frame import Frame

router = APIRouter()
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: JPEG quality of the plain frame: an engineer traces edges on it
FRAME_QUALITY = 92


@router.get(
    "/zones",
    tags=["screen"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the zone page"}},
)
def zones_page() -> FileResponse:
    """The engineer's page for drawing ROI and ignore zones on the newest frame (HTML; no
    token needed to load it; it asks for one, or takes ``#token=``; saving needs the
    engineer role)."""
    return FileResponse(STATIC_DIR / "zones.html", headers={"Cache-Control": "no-cache"})


_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    404: {"model": ErrorOut, "description": "no frame judged yet"},
}


@router.get(
    "/api/live/frame.jpg",
    tags=["live"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERR},
)
async def live_frame(state: State, _: Reader) -> Response:
    """The newest judged frame as the camera gave it: full size, nothing drawn, so its
    pixels are the source pixels zones are given in. Its size is also in the
    ``X-Frame-Width`` and ``X-Frame-Height`` headers."""
    insp = state.hub.last_picture
    if insp is None or not isinstance(insp.frame, Frame):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "no frame judged yet: wait for the camera's first frame (GET /api/status)",
        )
    image = insp.frame.image
    data = await to_thread.run_sync(encode_jpeg, image, FRAME_QUALITY)
    h, w = image.shape[:2]
    return Response(
        data,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Width": str(w),
            "X-Frame-Height": str(h),
            "X-Inspection-Id": str(insp.inspection_id),
        },
    )
