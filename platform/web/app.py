"""The fleet page's FastAPI app: its API (``/api/...``), its two pages, its files.

The pages follow the station's own (dark, the shipped CJK font, zh/en, Chart.js) and
load the station's files themselves: fonts, the vendored Chart.js (with its licence)
and the shared page scripts (``auth.js``, ``pages.js``, ``i18n*.js``, ``pages.css``)
are served read-only from the installed station package (an allow-list, not the
station's whole folder); only the fleet's own files live in ``platform/web/static``.

Security as on the station: a Content-Security-Policy that lets scripts, styles and
fonts come only from the page itself (images also from the object storage the
presigned links point to), no framing, ``nosniff``; the ``Host`` header checked
against the names the page answers to (DNS rebinding).
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kanjian.appliance_api.http.guard import HostCheck
from kanjian.platform.web import routes_fleet, routes_rollouts, routes_station
from kanjian.platform.web.deps import FleetState

log = logging.getLogger(__name__)

FLEET_STATIC = Path(__file__).resolve().parent / "static"
#: the station's static folder (package data of kanjian.appliance_api.http)
STATION_STATIC = Path(str(importlib.resources.files("kanjian.appliance_api.http") / "static"))
#: station files the fleet pages load, served read-only from the station's folder
STATION_FILES = ("auth.js", "pages.js", "pages.css", "i18n.js", "i18n-pages.js")
STATION_FOLDERS = ("fonts", "vendor/chartjs")

#: routers of the platform's API; another room adds its own here (e.g. rollouts)
ROUTERS = [routes_fleet.router, routes_station.router, routes_rollouts.router]


def _csp(image_origin: str | None) -> bytes:
    images = "'self' data: blob:" + (f" {image_origin}" if image_origin else "")
    return (
        f"default-src 'self'; img-src {images}; style-src 'self'; font-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ).encode()


class _Headers:
    """Adds the security headers to every response and counts nothing else."""

    def __init__(self, app: ASGIApp, csp: bytes) -> None:
        self.app = app
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", csp),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapped)


def _page(name: str) -> FileResponse:
    return FileResponse(FLEET_STATIC / name, headers={"Cache-Control": "no-cache"})


def create_app(state: FleetState, allowed_hosts: set[str] | None = None) -> FastAPI:
    """The fleet page over ``state`` (its connections, picture links, failed-token guard).

    ``allowed_hosts``: the ``Host`` names it answers to (``None``: any).
    """
    app = FastAPI(
        title="kanjian platform API",
        version="0.1.0",
        summary="The cluster's fleet: stations, yield, FAIL rate, defects, events, pictures.",
        description="Authenticate with `Authorization: Bearer kjp_...` (make one with "
        "`kanjian platform token create NAME --role viewer --firm FIRM --db ...`). Every "
        "answer holds only the token's scope (a firm, or sites; an admin may see the whole "
        "cluster); a station outside it is 404. Roles: viewer (reads) < engineer (+ actions "
        "on stations) < admin (+ tokens).",
        docs_url=None,  # FastAPI's pages load Swagger UI from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.fleet = state
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def fleet_page() -> FileResponse:
        """The fleet page (it asks for a platform token, or takes ``#token=``)."""
        return _page("fleet.html")

    @app.get("/station/{site}/{line}/{station}", include_in_schema=False)
    def station_page(site: str, line: str, station: str) -> FileResponse:
        """One station's page (its data comes through the scoped API; the HTML is the same
        for every station)."""
        return _page("station.html")

    @app.get("/static/{name}", include_in_schema=False)
    def station_file(name: str) -> FileResponse:
        if name not in STATION_FILES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
        return FileResponse(STATION_STATIC / name, headers={"Cache-Control": "no-cache"})

    app.mount("/static/fleet", StaticFiles(directory=FLEET_STATIC), name="fleet-static")
    for folder in STATION_FOLDERS:
        app.mount(f"/static/{folder}", StaticFiles(directory=STATION_STATIC / folder))
    origin = state.links.origin if state.links is not None else None
    app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(_Headers, csp=_csp(origin))
    return app
