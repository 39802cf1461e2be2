"""The console's HTTP friction (issue 13, point 5): ``/docs`` works offline, ``GET /`` is
in the OpenAPI document, and a model upload is taken as a form's file field as well
as the raw body (real app on a real uvicorn, real station: ``env``)."""

from __future__ import annotations

import re

from tests.support import api as S
from tests.support.api_env import Env


def test_docs_load_only_same_origin_assets_and_each_is_served(env: Env) -> None:
    with env.client() as anon:  # no token: the docs are public, as FastAPI's were
        r = anon.get("/docs")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        html = r.text
        assert "<script>" not in html  # no inline script: the CSP would block it
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(refs) >= 3, html
        for ref in refs:
            assert ref.startswith("/") and not ref.startswith("//"), ref  # same origin
            asset = anon.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 0, ref
        bundle = anon.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in bundle.content
        init = anon.get("/docs/init.js").text
        assert '"/openapi.json"' in init and "validatorUrl: null" in init
        # the vendored files travel with their licence
        assert anon.get("/static/vendor/swagger-ui/LICENSE").status_code == 200
        assert anon.get("/static/vendor/swagger-ui/NOTICE").status_code == 200
        schema = anon.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")  # what Swagger UI 5 renders (4 does not)
    assert "/" in schema["paths"] and "get" in schema["paths"]["/"]
    assert "text/html" in schema["paths"]["/"]["get"]["responses"]["200"]["content"]
    up = schema["paths"]["/api/models"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in up and "application/zip" in up


def test_upload_takes_a_form_file_field_as_well_as_the_raw_body(env: Env) -> None:
    eng = env.client("engineer")
    archive = S.pack(env.bundles.b)
    # a form, as `curl -F file=@bundle.zip` sends it (another text field first)
    r = eng.post(
        "/api/models",
        data={"note": "from the line"},
        files={"file": ("bundle.zip", archive, "application/zip")},
    )
    assert r.status_code in (200, 201), r.text
    assert r.json()["model"]["sha256"] == env.bundles.sha_b
    # the raw body: the same bundle, now known
    raw = eng.post("/api/models", content=archive, headers={"Content-Type": "application/zip"})
    assert raw.status_code == 200 and raw.json()["created"] is False, raw.text
    assert raw.json()["model"]["sha256"] == env.bundles.sha_b
    # a form carrying something that is no archive: the 415 says how to send one
    bad = eng.post("/api/models", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert bad.status_code == 415, bad.text
    detail = bad.json()["detail"]
    assert "--data-binary @bundle.zip" in detail and "-F file=@bundle.zip" in detail
    broken = eng.post(
        "/api/models",
        content=b"--xyz\r\nContent-Disposition: form-data; name=file\r\n\r\nno end",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400 and "closing boundary" in broken.json()["detail"]
    incoming = env.data_dir / "models" / ".incoming"
    assert not list(incoming.glob("*.upload")) and not list(incoming.glob("*.part"))
