"""The station's FastAPI app: REST API, live streams, metrics and the operator's screen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kanjian.appliance_api import (
    routes_admin,
    routes_inspections,
    routes_live,
    routes_models,
    routes_status,
)
from kanjian.appliance_api.state import ApiState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    ),
]


class _Hardening:
    """Adds security headers to every response, and counts 5xx answers."""

    def __init__(self, app: ASGIApp, state: ApiState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in names)
                message["headers"] = headers
                if message["status"] >= 500:
                    route = scope.get("route")
                    path = getattr(route, "path", "unmatched")
                    self.state.metrics.http_errors.labels(path).inc()
            await send(message)

        await self.app(scope, receive, send_wrapped)


def create_app(state: ApiState) -> FastAPI:
    """The app for one running station (see :func:`kanjian.appliance_api.state.start_services`)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.hub.attach(asyncio.get_running_loop())
        yield
        state.hub.close()

    app = FastAPI(
        title="kanjian station API",
        version="0.1.0",
        summary="Results, live view, operator feedback, model bundles and audit of one "
        "inspection station.",
        description="Authenticate with `Authorization: Bearer <token>` (make one with "
        "`kanjian token create --role operator|engineer|admin`). Roles: operator (view, "
        "feedback, trigger) < engineer (+ models, thresholds, config, audit) < admin "
        "(+ tokens). Reads need operator unless `api.open_reads` is set.",
        lifespan=lifespan,
    )
    app.state.kanjian = state
    for module in (routes_status, routes_inspections, routes_live, routes_models, routes_admin):
        app.include_router(module.router)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if state.cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.cfg.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_Hardening, state=state)
    return app
