"""Live: results pushed as server-sent events, the annotated MJPEG view, the screen's
pictures by id and its settings, the software trigger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from kanjian.appliance_api.http.api_models import (
    ErrorOut,
    LabelLang,
    LiveInspection,
    ScreenOut,
    TriggerIn,
)
from kanjian.appliance_api.http.deps import Operator, Reader, State
from kanjian.appliance_api.http.live import live_inspection
from kanjian.appliance_api.http.routes_inspections import get_image
from kanjian.appliance_api.http.routes_status import build_status
from kanjian.inference.types import Inspection

router = APIRouter(tags=["live"])
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}
#: ``?lang=``: the labels' language (display names), default ``api.language``
Lang = Annotated[LabelLang | None, Query(description="labels' language; default api.language")]
HEARTBEAT_S = 5.0
RETRY_MS = 2000


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_ERR},
)
async def events(request: Request, state: State, _: Reader) -> StreamingResponse:
    """Server-sent events: ``hello`` (status, shift, last result) on connect, then one
    ``inspection`` per committed inspection (with ``shift`` counts), ``resync`` when
    this viewer fell behind and missed some (reload from the log), and ``status``
    every 5 s as a heartbeat. A client that sees no event for 15 s should reconnect.
    """
    hub = state.hub
    q = hub.subscribe()

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            last = hub.last
            hello: dict[str, Any] = {
                "status": (await to_thread.run_sync(build_status, state)).model_dump(),
                "shift": hub.shift.snapshot().model_dump(),
                "last": None
                if last is None
                else live_inspection(last, hub.save_verdicts).model_dump(),
            }
            import json

            yield _sse("hello", json.dumps(hello))
            next_beat = time.monotonic() + HEARTBEAT_S
            while not hub.closing.is_set():
                try:
                    ev = await asyncio.wait_for(q.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    ev = None
                if ev is not None and ev["type"] == "resync":
                    yield _sse("resync", "{}")  # this viewer missed inspections
                elif ev is not None:
                    payload: dict[str, Any] = {"inspection": ev["inspection"].model_dump()}
                    if "shift" in ev:
                        payload["shift"] = ev["shift"].model_dump()
                    yield _sse("inspection", json.dumps(payload))
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    st = await to_thread.run_sync(build_status, state)
                    yield _sse("status", st.model_dump_json())
                if await request.is_disconnected():
                    break
        finally:
            hub.unsubscribe(q)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/api/live.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERR},
)
async def live_jpeg(state: State, _: Reader, lang: Lang = None) -> Response:
    """The newest judged frame with boxes, masks, labels and verdict drawn."""
    data = await to_thread.run_sync(state.hub.jpeg, lang)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/api/live.mjpeg",
    response_class=StreamingResponse,
    responses={200: {"content": {"multipart/x-mixed-replace": {}}}, **_ERR},
)
async def live_mjpeg(
    request: Request, state: State, _: Reader, lang: Lang = None
) -> StreamingResponse:
    """MJPEG stream of the annotated view, at most ``api.live_fps`` frames a second."""
    hub = state.hub
    period = 1.0 / state.cfg.live_fps

    async def stream() -> AsyncIterator[bytes]:
        sent: object = object()
        last_sent = 0.0
        while not hub.closing.is_set():
            key = hub.picture_key()
            # resend now and then even without news, so a viewer knows we are alive
            if key != sent or time.monotonic() - last_sent > 5.0:
                data = await to_thread.run_sync(hub.jpeg, lang)
                sent, last_sent = key, time.monotonic()
                yield (
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                    + b"\r\n"
                )
            await asyncio.sleep(period)
            if await request.is_disconnected():
                break

    return StreamingResponse(
        stream(),
        media_type="multipart/x-mixed-replace; boundary=frame",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/screen", responses=_ERR)
def screen_settings(state: State, _: Reader) -> ScreenOut:
    """The operator screen's settings (``api.screen_*``, ``api.feedback_undo_s``)."""
    c = state.cfg
    return ScreenOut(
        hold_s=c.screen_hold_s,
        min_show_s=c.screen_min_show_s,
        strip=c.screen_strip,
        sound=c.screen_sound,
        flash=c.screen_flash,
        undo_s=c.feedback_undo_s,
    )


@router.get(
    "/api/screen/picture/{inspection_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERR, 404: {"model": ErrorOut}},
)
async def screen_picture(
    state: State, who: Reader, inspection_id: uuid.UUID, lang: Lang = None
) -> Response:
    """One inspection's annotated picture, as the screen shows it large: from memory for
    the recent ones (any verdict, saved or not; ``api.screen_pictures``), else its saved
    image, annotated, at most ``api.live_max_side`` px; labels in ``lang`` (the screen's
    language; default ``api.language``). ``X-Picture-Source`` says which (``memory`` or
    ``saved``)."""
    data = await to_thread.run_sync(
        state.hub.pictures.jpeg, str(inspection_id), lang or state.cfg.language
    )
    if data is not None:
        return Response(
            data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600", "X-Picture-Source": "memory"},
        )
    try:
        saved = await get_image(state, who, inspection_id, True, state.cfg.live_max_side, lang)
    except HTTPException as e:
        if e.status_code not in (404, 410):
            raise
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no picture of inspection {inspection_id}: it is not among the recent ones kept "
            f"in memory (api.screen_pictures) and {e.detail}",
        ) from e
    saved.headers["X-Picture-Source"] = "saved"
    return saved


@router.post(
    "/api/trigger",
    responses={
        **_ERR,
        409: {"model": ErrorOut, "description": "the station is not in triggered mode"},
        503: {"model": ErrorOut, "description": "the inspection loop is not running"},
        504: {"model": ErrorOut, "description": "no committed result in time"},
    },
)
async def trigger(state: State, who: Operator, body: TriggerIn | None = None) -> LiveInspection:
    """Software trigger (triggered mode): returns the inspection once its row is committed.

    A trigger that finds no fresh frame in time, or is refused while busy, still
    gives a (MISSED) row, which is returned.
    """
    st = state.station
    if st.config.trigger.mode != "triggered":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the station runs free (trigger.mode: free_run); software triggers need "
            "trigger.mode: triggered",
        )
    if not state.loop.alive():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the inspection loop is not running"
        )
    tid = (body.trigger_id if body and body.trigger_id else None) or st.triggers.new_id("api-")
    fut: Future[Inspection] = st.trigger(tid)
    try:
        insp = await asyncio.wait_for(asyncio.wrap_future(fut), state.cfg.trigger_timeout_s)
    except asyncio.TimeoutError as e:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            f"trigger {tid}: no committed result within {state.cfg.trigger_timeout_s} s "
            "(its row will still be written)",
        ) from e
    return live_inspection(insp, state.hub.save_verdicts)
