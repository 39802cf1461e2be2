"""The station's FastAPI app: REST API, live streams, metrics and the operator's screen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kanjian.appliance_api.http import (
    routes_admin,
    routes_docs,
    routes_health,
    routes_inspections,
    routes_live,
    routes_models,
    routes_names,
    routes_quality,
    routes_retention,
    routes_shadow,
    routes_shadow_report,
    routes_status,
    routes_trends,
    routes_zones,
)
from kanjian.appliance_api.http.guard import AuthGuard, HostCheck, allowed_hosts
from kanjian.appliance_api.http.state import ApiState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        # font-src: the screen's own CJK font (static/fonts), never a font CDN
        b"font-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    ),
]


# Every body but a model upload is a small JSON document (a token, a feedback note of at
# most 500 characters, thresholds): 64 KiB is far above any of them, and keeps a client
# without a token from making the app buffer and parse megabytes before it is refused.
MAX_BODY_BYTES = 64 * 1024
# the one route that takes big bodies; it streams to disk under api.max_upload_mb itself
_BIG_BODY_ROUTES = {("POST", "/api/models")}


def _too_large(declared: int | None, limit: int) -> JSONResponse:
    size = f"of {declared} bytes " if declared is not None else ""
    return JSONResponse(
        {
            "detail": f"request body {size}exceeds the {limit}-byte limit "
            "(only POST /api/models takes bigger bodies)"
        },
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
    )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then reads on from ``receive``."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class _Hardening:
    """Adds security headers to every response, counts 5xx answers, and limits bodies.

    A request body over ``max_body`` bytes (every route but POST /api/models) gets a
    413 before the app sees it: by its ``Content-Length``, or, for a chunked body,
    by counting what arrives (at most ``max_body`` bytes are held, then reading
    stops). uvicorn discards whatever the client still sends after the answer.
    """

    def __init__(self, app: ASGIApp, state: ApiState, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.state, self.max_body = app, state, max_body

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

        if (scope["method"], scope["path"]) not in _BIG_BODY_ROUTES:
            headers = Headers(scope=scope)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                await _too_large(int(declared), self.max_body)(scope, receive, send_wrapped)
                return
            if "transfer-encoding" in headers:
                # no length given (chunked): read ahead, at most max_body bytes, then
                # hand the app what was read
                held: list[Message] = []
                size = 0
                while True:
                    message = await receive()
                    held.append(message)
                    if message["type"] != "http.request":  # the client went away
                        break
                    size += len(message.get("body", b""))
                    if size > self.max_body:
                        await _too_large(None, self.max_body)(scope, receive, send_wrapped)
                        return
                    if not message.get("more_body", False):
                        break
                receive = _replay(held, receive)

        await self.app(scope, receive, send_wrapped)


def create_app(state: ApiState) -> FastAPI:
    """The app for one running station (see :func:`kanjian.appliance_api.http.state.start_services`)."""

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
        # FastAPI's pages load Swagger UI / ReDoc from a CDN with an inline script, which
        # the CSP blocks (and a plant network is often offline): routes_docs serves its own
        docs_url=None,
        redoc_url=None,
    )
    app.state.kanjian = state
    # failed logins are counted per app: a restart forgets them (nothing to persist)
    app.state.auth_guard = AuthGuard.from_config(state.cfg)
    for module in (
        routes_status,
        routes_health,  # liveness and readiness probes (issue 17)
        routes_inspections,
        routes_live,
        routes_models,
        routes_names,
        routes_retention,
        routes_admin,
        routes_zones,
        routes_trends,  # the history and shift pages (issue 13)
        routes_quality,  # the image quality gate (issue 15)
        routes_shadow,  # shadow models and their promotion (issue 15)
        routes_shadow_report,  # the shadow report and its page (issue 15)
    ):
        app.include_router(module.router)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get(
        "/",
        tags=["screen"],
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}, "description": "the operator's screen"}},
    )
    def index() -> FileResponse:
        """The operator's screen (HTML; no token needed to load it: it asks for one, or
        takes it from the first-start link's ``#token=`` fragment). API docs: ``/docs``."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    routes_docs.add_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if state.cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.cfg.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # inside _Hardening (its 400 gets the security headers), outside everything else
    app.add_middleware(HostCheck, allowed=allowed_hosts(state.cfg))
    app.add_middleware(_Hardening, state=state)
    return app
