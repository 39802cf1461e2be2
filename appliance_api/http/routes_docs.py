"""The API's interactive documentation at ``/docs``, served entirely by the station.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an
inline script: the app's Content-Security-Policy (``script-src 'self'``) blocks
both, and an appliance on a plant network is often offline anyway. This page
loads Swagger UI 5 (swagger-ui-dist, Apache-2.0; its LICENSE and NOTICE lie
beside the files) from ``static/vendor/swagger-ui/`` and starts it from a
same-origin script, so the CSP stays as strict as it is for the operator's screen.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

VENDOR = "/static/vendor/swagger-ui"
#: every asset the page loads, all same-origin (tests fetch each one)
ASSETS = (f"{VENDOR}/swagger-ui.css", f"{VENDOR}/swagger-ui-bundle.js", "/docs/init.js")

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kanjian station API</title>
<link rel="stylesheet" href="{ASSETS[0]}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS[1]}"></script>
<script src="{ASSETS[2]}"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the schema to an outside validator
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
});
"""


def docs() -> HTMLResponse:
    """Swagger UI for ``/openapi.json``, from the station's own files."""
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


def docs_init() -> Response:
    """Starts Swagger UI (a file, not an inline script: the CSP allows only 'self')."""
    return Response(_INIT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def add_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its start script to ``app`` itself (not through a router: the
    app's own routes are where the role-table test looks for GET routes left out of
    the schema)."""
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs/init.js", docs_init, methods=["GET"], include_in_schema=False)
