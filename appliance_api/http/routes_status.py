"""Status, shift counts, who-am-I, the screen's session cookie, config and metrics."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kanjian.appliance_api.http.api_models import (
    CameraOut,
    DiskOut,
    ErrorOut,
    LatencyOut,
    LoginIn,
    ModelOut,
    QueuesOut,
    ShiftOut,
    StationOut,
    StatusOut,
    StoreOut,
    SyncOut,
    WhoAmIOut,
)
from kanjian.appliance_api.http.auth import SessionStore
from kanjian.appliance_api.http.deps import (
    COOKIE,
    Creds,
    Engineer,
    Reader,
    State,
    authenticate,
    check_credential,
)
from kanjian.appliance_api.http.shadow_models import ShadowOut, shadow_out
from kanjian.appliance_api.http.state import ApiState
from kanjian.station.shadow.service import ShadowService
from kanjian.station.state.db import write_tx
from kanjian.station.sync.service import SyncService

router = APIRouter()
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}


def _db_bytes(state: ApiState) -> int:
    p = state.station.store.db_path
    total = 0
    for suffix in ("", "-wal"):
        f = p.with_name(p.name + suffix)
        if f.exists():
            total += f.stat().st_size
    return total


def _sync(state: ApiState, outbox_pending: int) -> SyncOut:
    svc = state.station.channels.get(SyncService)
    if svc is None:
        return SyncOut(
            enabled=False,
            connected=False,
            backlog=outbox_pending,
            oldest_backlog_age_s=None,
            last_confirm_at=None,
            last_error=None,
        )
    st = svc.status()
    return SyncOut(
        enabled=st.enabled,
        connected=st.connected,
        backlog=st.backlog,
        oldest_backlog_age_s=st.oldest_backlog_age_s,
        last_confirm_at=st.last_confirm_at,
        last_error=st.last_error,
    )


def build_status(state: ApiState) -> StatusOut:
    st = state.station
    cfg = st.config
    model = st.inspector.model
    pump = st.pump.stats()
    src = pump.source
    store = st.store.stats()
    p50, p99 = st.stats.percentiles(50), st.stats.percentiles(99)
    outbox = (
        state.pool.get()
        .execute("SELECT COUNT(*) FROM outbox WHERE confirmed_at IS NULL")
        .fetchone()[0]
    )
    usage = shutil.disk_usage(st.store.data_dir)
    counted = state.images_size.get() if state.images_size else None
    import time

    return StatusOut(
        station=StationOut(
            id=cfg.station.id,
            site=cfg.station.site,
            line=cfg.station.line,
            language=cfg.api.language,
        ),
        mode=cfg.trigger.mode,
        loop_running=state.loop.alive(),
        uptime_s=round(time.monotonic() - state.started_at, 3),
        frames=st.stats.frames,
        fps=round(st.stats.fps, 3),
        fps_recent=round(state.rate.per_second(), 3),
        verdicts=dict(st.stats.verdicts),
        camera=CameraOut(
            source_id=src.source_id,
            state=src.state,
            frames_read=src.frames_read,
            failures=src.failures,
            reconnects=src.reconnects,
            dropped=pump.dropped,
            last_frame_at=src.last_frame_at.isoformat() if src.last_frame_at else None,
            last_error=src.last_error,
        ),
        model=ModelOut(
            name=model.info.name,
            version=model.info.version,
            sha256=model.info.sha256,
            task=model.info.task,
            class_names=list(model.info.class_names),
            imgsz=model.info.imgsz,
            provider=model.session_info.provider,
            providers_requested=list(model.session_info.requested),
            providers_active=list(model.session_info.active),
            fell_back=model.session_info.fell_back,
            fallback_cause=model.session_info.fallback_cause or None,
            display_names=state.kept.names.effective(model.info.sha256),
        ),
        latency_ms={
            k: LatencyOut(p50=round(p50[k], 3), p99=round(p99.get(k, p50[k]), 3)) for k in p50
        },
        queues=QueuesOut(store=store.queued, triggers=st.triggers.depth(), camera=pump.queued),
        store=StoreOut(
            db_bytes=_db_bytes(state),
            rows_written=store.written,
            judged=store.judged,
            committed=store.written,
            stalled=store.stalled,
            stalled_since=store.stalled_since,
            last_error=store.last_error,
            images_not_saved=store.images_not_saved,
            queued_bytes=store.queued_bytes,
            writer=store.writer,
            writer_pid=store.writer_pid,
            writer_restarts=store.writer_restarts,
            batches=store.batches,
            errors=store.errors,
            blocked_puts=store.blocked_puts,
            last_commit_ms=round(store.last_commit_ms, 3),
            outbox_pending=int(outbox),
            images_bytes=counted[0] if counted else None,
            images_counted_at=(
                datetime.fromtimestamp(counted[1], timezone.utc).isoformat() if counted else None
            ),
        ),
        sync=_sync(state, int(outbox)),
        disk=DiskOut(
            path=str(st.store.data_dir.resolve()), free_bytes=usage.free, total_bytes=usage.total
        ),
        shadow=_shadow(state),
    )


def _shadow(state: ApiState) -> ShadowOut | None:
    svc = state.station.channels.get(ShadowService)
    st = svc.status() if svc is not None else None
    return None if st is None else shadow_out(st)


@router.get("/healthz", tags=["status"], summary="Liveness (no token needed)")
def healthz(state: State) -> dict[str, bool]:
    return {"ok": True, "loop_running": state.loop.alive()}


@router.get("/api/status", tags=["status"], responses=_ERR)
def get_status(state: State, _: Reader) -> StatusOut:
    """Camera, model and provider in use, throughput, per-stage latency, queues, store, disk."""
    return build_status(state)


@router.get("/api/shift", tags=["status"], responses=_ERR)
def get_shift(state: State, _: Reader) -> ShiftOut:
    """Verdict counts and yield of the current shift."""
    return state.hub.shift.snapshot()


@router.get("/api/whoami", tags=["auth"])
def whoami(request: Request, state: State, creds: Creds) -> WhoAmIOut:
    """The role of the token sent (header or cookie); no token is not an error here."""
    try:
        p = authenticate(request, creds)
    except HTTPException:
        p = None
    return WhoAmIOut(
        authenticated=p is not None,
        name=p.name if p else None,
        role=p.role.value if p and p.role else None,
        open_reads=state.cfg.open_reads,
    )


@router.post(
    "/api/session",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        401: {"model": ErrorOut, "description": "the token is unknown or revoked"},
        429: {"model": ErrorOut, "description": "too many failed authentications from here"},
    },
)
def login(body: LoginIn, request: Request, state: State, response: Response) -> None:
    """Open a session for a valid token and put its id in an HttpOnly cookie, so the
    screen's live view and events can read.

    The cookie holds a random session id (never the token), lives ``api.session_hours``,
    is ``Secure`` when served over TLS, and is honoured for reads only; mutations need
    the Authorization header. Revoking the token or ``DELETE /api/session`` ends it.
    """
    info = check_credential(
        request, lambda: state.tokens().verify(body.token), "the token is unknown or revoked"
    )
    db = state.pool.get()
    sessions = SessionStore(db)
    with write_tx(db):
        old = request.cookies.get(COOKIE)
        if old:  # a screen logging in again replaces its session rather than piling them up
            sessions.revoke(old)
        new = sessions.open(info, state.cfg.session_hours)
    response.set_cookie(
        COOKIE,
        new.secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=new.max_age_s,
    )


@router.delete("/api/session", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, state: State, response: Response) -> None:
    """End the screen's session (revoked on the station) and clear its cookie."""
    old = request.cookies.get(COOKIE)
    if old:
        db = state.pool.get()
        with write_tx(db):
            SessionStore(db).revoke(old)
    response.delete_cookie(
        COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


@router.get("/api/config", tags=["config"], responses=_ERR)
def get_config(state: State, _: Engineer) -> dict[str, Any]:
    """The effective station configuration (defaults filled in)."""
    data: dict[str, Any] = json.loads(state.station.config.model_dump_json())
    return data


@router.get(
    "/metrics",
    tags=["status"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **_ERR},
)
def metrics(request: Request, state: State, creds: Creds) -> Response:
    """Prometheus metrics (no token needed unless ``api.metrics_public`` is false)."""
    if not state.cfg.metrics_public:
        from kanjian.appliance_api.http.deps import require_read

        require_read(request, creds)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
