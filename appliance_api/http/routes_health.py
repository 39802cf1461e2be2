"""``GET /api/health``: liveness and readiness for a container runtime or a load balancer.

No token: a health check (Docker's ``HEALTHCHECK``, compose, Kubernetes probes)
carries none. The ``Host`` check still applies (a probe from inside the container
sends ``Host: 127.0.0.1``, which is always allowed).

*Live* means the inspection loop advanced lately: the loop thread is running and
the station's progress counter (:attr:`~kanjian.station.pipeline.LoopStats.progress`,
the same counter systemd's watchdog watches, see station/notify.py) moved within
the live window. *Ready* means the model is loaded and the camera is connected
(``/api/status``'s ``camera.state``).
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kanjian.appliance_api.http.deps import State
from kanjian.appliance_api.http.state import ApiState

router = APIRouter()


def live_window_s(state: ApiState) -> float:
    """The live window, seconds: ``api.health_live_s``, but never shorter than twice
    the loop's idle wait (``runtime.queue_timeout_s``) plus a second, so an idle but
    healthy free-run loop (it moves the counter once per wait) stays live."""
    cfg = state.station.config
    return max(cfg.api.health_live_s, 2 * cfg.runtime.queue_timeout_s + 1.0)


class LiveCheck(BaseModel):
    ok: bool
    loop_running: bool = Field(description="the inspection loop's thread is alive")
    progress: int = Field(description="the loop's progress counter (inspections + idle waits)")
    seconds_since_progress: float = Field(description="since the counter last moved, s")
    window_s: float = Field(description="live when it moved within this many seconds")


class ReadyCheck(BaseModel):
    ok: bool
    model_loaded: bool
    model: str | None = Field(description="model name and version, when loaded")
    provider: str | None = Field(description="the execution provider in use")
    camera_connected: bool
    camera_state: str = Field(description="connected, reconnecting, ended or error")
    camera_error: str | None = Field(description="the camera's last error, if any")


class HealthChecks(BaseModel):
    live: LiveCheck | None = None
    ready: ReadyCheck | None = None


class HealthOut(BaseModel):
    live: bool | None = Field(description="null when only readiness was probed")
    ready: bool | None = Field(description="null when only liveness was probed")
    checks: HealthChecks


def check_live(state: ApiState, now: float | None = None) -> LiveCheck:
    progress = state.station.stats.progress
    since = state.health_clock.seconds_since_move(
        progress, time.monotonic() if now is None else now
    )
    window = live_window_s(state)
    running = state.loop.alive()
    return LiveCheck(
        ok=running and since <= window,
        loop_running=running,
        progress=progress,
        seconds_since_progress=round(since, 3),
        window_s=window,
    )


def check_ready(state: ApiState) -> ReadyCheck:
    model = getattr(state.station.inspector, "model", None)
    src = state.station.pump.stats().source
    loaded = model is not None
    return ReadyCheck(
        ok=loaded and src.state == "connected",
        model_loaded=loaded,
        model=f"{model.info.name} {model.info.version}" if model is not None else None,
        provider=model.session_info.provider if model is not None else None,
        camera_connected=src.state == "connected",
        camera_state=src.state,
        camera_error=src.last_error,
    )


@router.get(
    "/api/health",
    tags=["status"],
    summary="Liveness and readiness (no token needed)",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "not live or not ready"}},
)
def health(
    state: State,
    probe: Literal["live", "ready"] | None = Query(
        None, description="live or ready: answer for that one only (default: both)"
    ),
) -> JSONResponse:
    """200 when the probed checks hold (both by default), else 503; the body says which
    check failed and why."""
    live = check_live(state) if probe in (None, "live") else None
    ready = check_ready(state) if probe in (None, "ready") else None
    out = HealthOut(
        live=live.ok if live else None,
        ready=ready.ok if ready else None,
        checks=HealthChecks(live=live, ready=ready),
    )
    ok = all(c.ok for c in (live, ready) if c is not None)
    return JSONResponse(out.model_dump(), status_code=200 if ok else 503)
