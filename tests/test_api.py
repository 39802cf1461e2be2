"""The HTTP API against the real app (real uvicorn), a real station and its SQLite store.

The station judges 24 NEU-DET images with a real trained model and stops; the
tests then read, filter, page and give feedback, and check every role boundary
and audit row against the database itself. Config, audit pages and thresholds
are in test_api_config.py, model bundles in test_api_models.py, status/metrics/
live views and events in test_api_live.py; the station fixture is in
tests/support/api_env.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.support import api as S  # the servers and bundles tests share
from tests.support.api_env import N_IMAGES, Env
from tests.support.scores import expected_verdicts, original_name
from tests.support.station_config import DECODE_CONF


def _ids(env: Env) -> list[str]:
    return [r[0] for r in env.sql("SELECT id FROM inspections ORDER BY seq DESC")]


def _audit_count(env: Env) -> int:
    return int(env.sql("SELECT COUNT(*) FROM audit")[0][0])


# -- roles -------------------------------------------------------------------------------


def _mutations(env: Env) -> list[tuple[str, str, dict[str, Any], str]]:
    iid = _ids(env)[0]
    victim = env.sql("SELECT id FROM api_tokens WHERE name = 'test-operator'")[0][0]
    rules = {"rules": {"default": {"fail_confidence": 0.9, "review_confidence": 0.8}}}
    names = f"/api/models/{env.bundles.sha_a}/display-names"
    return [
        ("POST", f"/api/inspections/{iid}/feedback", {"json": {"kind": "not_defect"}}, "operator"),
        ("DELETE", f"/api/inspections/{iid}/feedback/1", {}, "operator"),
        ("POST", "/api/trigger", {"json": {}}, "operator"),
        ("POST", "/api/models", {"content": S.pack(env.bundles.b)}, "engineer"),
        ("POST", f"/api/models/{env.bundles.sha_b}/activate", {}, "engineer"),
        ("POST", "/api/models/rollback", {}, "engineer"),
        ("PUT", "/api/thresholds", {"json": rules}, "engineer"),
        ("DELETE", "/api/thresholds", {}, "engineer"),
        ("PUT", "/api/settings/retention", {"json": {"interval_s": 30}}, "engineer"),
        ("DELETE", "/api/settings/retention", {}, "engineer"),
        ("PUT", "/api/quality", {"json": {"enabled": True}}, "engineer"),
        ("DELETE", "/api/quality", {}, "engineer"),
        ("PUT", names, {"json": {"display_names": {"zh": {"scratches": "划伤"}}}}, "engineer"),
        ("DELETE", names, {}, "engineer"),
        ("PUT", "/api/shadow", {"json": {"sha256": env.bundles.sha_b}}, "engineer"),
        ("DELETE", "/api/shadow", {}, "engineer"),
        ("POST", "/api/shadow/promote", {"json": {"force": True}}, "engineer"),
        ("POST", "/api/tokens", {"json": {"name": "x", "role": "admin"}}, "admin"),
        ("DELETE", f"/api/tokens/{victim}", {}, "admin"),
    ]


PUBLIC_MUTATIONS = {("POST", "/api/session"), ("DELETE", "/api/session")}  # login / logout


def test_every_mutating_endpoint_is_in_the_role_table(env: Env) -> None:
    from kanjian.appliance_api.http.app import create_app

    schema = create_app(env.state).openapi()
    app_mutations = {
        (m.upper(), path)
        for path, ops in schema["paths"].items()
        for m in ops
        if m.upper() in ("POST", "PUT", "PATCH", "DELETE")
    }
    templ = {
        "POST /api/inspections/{inspection_id}/feedback",
        "DELETE /api/inspections/{inspection_id}/feedback/{feedback_id}",
        "POST /api/trigger",
        "POST /api/models",
        "POST /api/models/{sha256}/activate",
        "POST /api/models/rollback",
        "PUT /api/thresholds",
        "DELETE /api/thresholds",
        "PUT /api/settings/retention",
        "DELETE /api/settings/retention",
        "PUT /api/quality",
        "DELETE /api/quality",
        "PUT /api/models/{sha256}/display-names",
        "DELETE /api/models/{sha256}/display-names",
        "PUT /api/shadow",
        "DELETE /api/shadow",
        "POST /api/shadow/promote",
        "POST /api/tokens",
        "DELETE /api/tokens/{token_id}",
    }
    assert {f"{m} {p}" for m, p in app_mutations - PUBLIC_MUTATIONS} == templ
    assert len(_mutations(env)) == len(templ)


def test_mutations_refused_without_token_and_with_weaker_roles(env: Env) -> None:
    order = ["operator", "engineer", "admin"]
    before = (
        _audit_count(env),
        env.sql("SELECT COUNT(*) FROM feedback")[0][0],
        env.sql("SELECT COUNT(*), COUNT(revoked_at) FROM api_tokens")[0],
        env.sql("SELECT COUNT(*) FROM models")[0][0],
        env.sql("SELECT COUNT(*) FROM model_activations")[0][0],
        env.sql("SELECT * FROM settings"),
    )
    thresholds = env.client("operator").get("/api/thresholds").json()
    for method, path, kwargs, needed in _mutations(env):
        with env.client() as c:
            r = c.request(method, path, **kwargs)
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert needed in r.json()["detail"]
        with env.client() as c:
            r = c.request(
                method, path, headers={"Authorization": "Bearer kj_00000000_forged"}, **kwargs
            )
            assert r.status_code == 401, (method, path, r.text)
        for weaker in order[: order.index(needed)]:
            with env.client(weaker) as c:
                r = c.request(method, path, **kwargs)
                assert r.status_code == 403, (method, path, weaker, r.text)
                assert f"role {weaker} may not" in r.json()["detail"]
    after = (
        _audit_count(env),
        env.sql("SELECT COUNT(*) FROM feedback")[0][0],
        env.sql("SELECT COUNT(*), COUNT(revoked_at) FROM api_tokens")[0],
        env.sql("SELECT COUNT(*) FROM models")[0][0],
        env.sql("SELECT COUNT(*) FROM model_activations")[0][0],
        env.sql("SELECT * FROM settings"),
    )
    assert after == before  # a refused request changed nothing
    assert env.client("operator").get("/api/thresholds").json() == thresholds


# GET routes anyone may read: the pages (they log in themselves), liveness, metrics
# (public by default, see test_metrics_need_a_token_when_not_public), and who-am-I
# (says "not authenticated")
PUBLIC_READS = {
    "/",
    "/zones",
    "/quality",
    "/models",
    "/shadow",
    "/history",
    "/shift",
    "/healthz",
    "/api/health",
    "/metrics",
    "/api/whoami",
}
# reads above operator; every other GET in the schema needs operator (or open_reads)
STRONG_READS = {
    "/api/config": "engineer",
    "/api/audit": "engineer",
    "/api/inspections/{inspection_id}/audit": "engineer",
    "/api/tokens": "admin",
}
# reads about data this env does not have (no shadow ever ran here): the role that may
# read them gets past the role check to the route's own 404, which says why
NO_DATA_READS = {
    "/api/shadow/report": "no shadow has run on this station",
    "/api/shadow/picture/{inspection_id}": "no shadow has run on this station",
}
# GET routes left out of the schema, public by design: the screen's files, API docs
UNLISTED_READS = {"/static", "/openapi.json", "/docs", "/docs/init.js"}


def _app_reads(env: Env) -> dict[str, str]:
    """Every GET path in the app's OpenAPI schema -> a real URL path for it."""
    from kanjian.appliance_api.http.app import create_app

    schema = create_app(env.state).openapi()
    # an inspection with a saved image, so /image would answer 200 to a reader
    iid = env.sql("SELECT id FROM inspections WHERE image_path IS NOT NULL LIMIT 1")[0][0]
    fill = {"inspection_id": iid, "sha256": env.bundles.sha_a}
    return {p: p.format(**fill) for p, ops in schema["paths"].items() if "get" in ops}


def _get_status(c: httpx.Client, path: str) -> tuple[int, httpx.Headers, str]:
    """Status, headers and (for a refusal) body of a GET, not reading endless streams."""
    with c.stream("GET", path) as r:
        body = r.read().decode() if r.status_code >= 400 else ""
        return r.status_code, r.headers, body


def test_every_read_is_in_the_role_table(env: Env) -> None:
    from starlette.routing import Mount, Route

    from kanjian.appliance_api.http.app import create_app

    assert set(_app_reads(env)) - PUBLIC_READS - set(STRONG_READS) >= {
        "/api/inspections/{inspection_id}",
        "/api/inspections/{inspection_id}/image",
        "/api/live.mjpeg",
    }
    assert PUBLIC_READS | set(STRONG_READS) <= set(_app_reads(env))
    # a GET route hidden from the schema would escape the checks below
    hidden = {
        r.path
        for r in create_app(env.state).routes
        if isinstance(r, Mount)
        or (isinstance(r, Route) and "GET" in (r.methods or ()) and not r.include_in_schema)
    }
    assert hidden == UNLISTED_READS


def test_reads_need_a_token_and_strong_reads_a_strong_role(env: Env) -> None:
    order = ["operator", "engineer", "admin"]
    reads = _app_reads(env)
    with env.client() as anon:
        for templ in PUBLIC_READS:
            # the health probe answers 503 (not 401) while this env's finite camera is done
            ok = {200, 503} if templ == "/api/health" else {200}
            assert _get_status(anon, reads[templ])[0] in ok, templ
        for templ, path in reads.items():
            if templ in PUBLIC_READS:
                continue
            needed = STRONG_READS.get(templ, "operator")
            code, headers, body = _get_status(anon, path)
            assert code == 401, (path, code, body)
            assert headers["www-authenticate"] == "Bearer"
            assert f"role {needed} or above" in json.loads(body)["detail"]
            forged = {"Authorization": "Bearer kj_00000000_forged"}
            assert anon.get(path, headers=forged).status_code == 401, path
            for weaker in order[: order.index(needed)]:
                with env.client(weaker) as c:
                    code, _, body = _get_status(c, path)
                    assert code == 403, (path, weaker, body)
                    assert f"role {weaker} may not" in json.loads(body)["detail"]
            # the filled-in path is real: the role it needs reads it
            with env.client(needed) as c:
                code, _, body = _get_status(c, path)
                if templ in NO_DATA_READS:
                    assert code == 404 and NO_DATA_READS[templ] in body, (path, body)
                else:
                    assert code == 200, (path, needed)


def test_open_reads_open_operator_reads_only(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env.state.station.config  # frozen: swap in a copy for this test
    api = cfg.api.model_copy(update={"open_reads": True})
    monkeypatch.setattr(env.state.station, "config", cfg.model_copy(update={"api": api}))
    with env.client() as anon:
        for templ, path in _app_reads(env).items():
            code, _, body = _get_status(anon, path)
            # the health probe answers 503 (not 401) while this env's finite camera is done
            ok = {401} if templ in STRONG_READS else {200, 503} if templ == "/api/health" else {200}
            if templ in NO_DATA_READS:
                assert code == 404 and NO_DATA_READS[templ] in body, (path, body)
                continue
            assert code in ok, (path, body)


# -- body size limit ---------------------------------------------------------------------


def test_cookie_session_reads_but_never_mutates(env: Env) -> None:
    iid = _ids(env)[0]
    with httpx.Client(base_url=env.url, timeout=30) as c:
        assert c.post("/api/session", json={"token": "kj_00000000_nope"}).status_code == 401
        r = c.post("/api/session", json={"token": env.tokens["admin"]})
        assert r.status_code == 204
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/status").status_code == 200
        assert c.get("/api/whoami").json() == {
            "authenticated": True,
            "name": "test-admin",
            "role": "admin",
            "open_reads": False,
        }
        # the cookie alone must not carry a mutation (no CSRF through the screen's cookie)
        assert (
            c.post(f"/api/inspections/{iid}/feedback", json={"kind": "not_defect"}).status_code
            == 401
        )
        assert c.delete("/api/session").status_code == 204
        c.cookies.clear()
        assert c.get("/api/status").status_code == 401


def test_revoked_token_is_refused_and_tokens_are_audited(env: Env) -> None:
    admin = env.client("admin")
    r = admin.post("/api/tokens", json={"name": "panel-7", "role": "operator"})
    assert r.status_code == 201
    made = r.json()
    secret = made["token"]
    assert secret.startswith(f"kj_{made['id']}_")
    # only a hash is stored
    stored = env.sql("SELECT secret_sha256 FROM api_tokens WHERE id = ?", (made["id"],))[0][0]
    assert secret not in stored and secret.split("_", 2)[2] not in stored
    listed = {t["id"]: t for t in admin.get("/api/tokens").json()}
    assert "token" not in listed[made["id"]] and listed[made["id"]]["role"] == "operator"
    op = httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {secret}"})
    assert op.get("/api/status").status_code == 200
    assert admin.delete(f"/api/tokens/{made['id']}").json()["revoked_at"] is not None
    assert op.get("/api/status").status_code == 401
    assert admin.delete("/api/tokens/0badc0de").status_code == 404
    own = env.tokens["admin"].split("_")[1]
    r = admin.delete(f"/api/tokens/{own}")
    assert r.status_code == 409 and "cannot revoke itself" in r.json()["detail"]
    rows = env.sql(
        "SELECT action, actor, role FROM audit WHERE target = ? ORDER BY id", (made["id"],)
    )
    assert rows == [
        ("token.create", "test-admin", "admin"),
        ("token.revoke", "test-admin", "admin"),
    ]


# -- inspections ---------------------------------------------------------------------------


def test_every_image_gave_one_row(env: Env) -> None:
    rows = env.sql("SELECT frame_id, uri, model_sha256 FROM inspections ORDER BY seq")
    assert [r[0] for r in rows] == list(range(N_IMAGES))
    assert len({r[1] for r in rows}) == N_IMAGES
    assert {r[2] for r in rows} == {env.bundles.sha_a}
    # the rules were put between the scores the model gave these very images: each
    # image has the verdict its measured score says, and all three verdicts occur
    stored = dict(env.sql("SELECT uri, verdict FROM inspections"))
    names = {uri: original_name(Path(uri)) for uri in stored}
    want = expected_verdicts(env.bundles.scores, names.values(), env.config["rules"], DECODE_CONF)
    assert {uri: want[name] for uri, name in names.items()} == stored
    assert set(Counter(stored.values())) == {"PASS", "REVIEW", "FAIL"}


def test_pagination_walks_every_row_once(env: Env) -> None:
    seen, pages = S.walk_pages(env.client("operator"), "/api/inspections", 7)
    assert seen == _ids(env)
    assert pages == -(-N_IMAGES // 7) + (1 if N_IMAGES % 7 == 0 else 0)


def test_filters_match_the_database(env: Env) -> None:
    c = env.client("operator")
    for verdict in ("PASS", "FAIL", "REVIEW"):
        got = [
            i["id"]
            for i in c.get("/api/inspections", params={"verdict": verdict, "limit": 500}).json()[
                "items"
            ]
        ]
        want = [
            r[0]
            for r in env.sql(
                "SELECT id FROM inspections WHERE verdict = ? ORDER BY seq DESC", (verdict,)
            )
        ]
        assert got == want
    both = c.get(
        "/api/inspections", params=[("verdict", "FAIL"), ("verdict", "REVIEW"), ("limit", "500")]
    ).json()["items"]
    assert {i["verdict"] for i in both} <= {"FAIL", "REVIEW"}
    assert (
        len(both)
        == env.sql("SELECT COUNT(*) FROM inspections WHERE verdict IN ('FAIL','REVIEW')")[0][0]
    )
    # class: any detection of that class (oracle computed from the detections table)
    by_class: dict[str, set[str]] = {}
    for iid, name in env.sql("SELECT inspection_id, class_name FROM detections"):
        by_class.setdefault(name, set()).add(iid)
    assert by_class, "the test model found nothing at all"
    for name, ids in by_class.items():
        got = {
            i["id"]
            for i in c.get("/api/inspections", params={"class_name": name, "limit": 500}).json()[
                "items"
            ]
        }
        assert got == ids, name
    # time range: [since, until) on captured_at
    times = [r[0] for r in env.sql("SELECT captured_at FROM inspections ORDER BY seq")]
    since, until = times[5], times[15]
    got = c.get("/api/inspections", params={"since": since, "until": until, "limit": 500}).json()[
        "items"
    ]
    assert sorted(i["captured_at"] for i in got) == times[5:15]
    r = c.get("/api/inspections", params={"since": "2024-01-01T00:00:00"})
    assert r.status_code == 422 and "timezone" in r.text
    assert c.get("/api/inspections", params={"verdict": "MAYBE"}).status_code == 422
    assert c.get("/api/inspections", params={"limit": 0}).status_code == 422


def test_one_inspection_with_detections_and_image(env: Env) -> None:
    c = env.client("operator")
    iid, w, h = env.sql(
        "SELECT id, width, height FROM inspections WHERE image_path IS NOT NULL "
        "AND num_detections > 0 ORDER BY seq LIMIT 1"
    )[0]
    d = c.get(f"/api/inspections/{iid}").json()
    want = env.sql(
        "SELECT class_name, confidence, x1, y1, x2, y2 FROM detections "
        "WHERE inspection_id = ? ORDER BY idx",
        (iid,),
    )
    assert [(x["class_name"], x["confidence"], *x["xyxy"]) for x in d["detections"]] == [
        tuple(r) for r in want
    ]
    assert d["has_image"] and d["model"]["sha256"] == env.bundles.sha_a
    raw = c.get(f"/api/inspections/{iid}/image")
    assert raw.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(raw.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (h, w)
    ann = c.get(f"/api/inspections/{iid}/image", params={"annotated": True})
    aimg = cv2.imdecode(np.frombuffer(ann.content, np.uint8), cv2.IMREAD_COLOR)
    assert aimg.shape == img.shape and np.abs(aimg.astype(int) - img.astype(int)).max() > 100
    thumb = c.get(f"/api/inspections/{iid}/image", params={"annotated": True, "max_side": 100})
    assert max(cv2.imdecode(np.frombuffer(thumb.content, np.uint8), 1).shape[:2]) == 100
    pass_id = env.sql("SELECT id FROM inspections WHERE verdict = 'PASS' LIMIT 1")[0][0]
    r = c.get(f"/api/inspections/{pass_id}/image")
    assert r.status_code == 404 and "no image was saved" in r.json()["detail"]
    assert c.get("/api/inspections/00000000-0000-4000-8000-000000000000").status_code == 404
    assert c.get("/api/inspections/not-a-uuid").status_code == 422


def test_feedback_is_stored_with_who_and_when_and_listed(env: Env) -> None:
    c = env.client("operator")
    # a FAIL no other test gave feedback on (tests in this module share the station)
    iid = env.sql(
        "SELECT id FROM inspections WHERE verdict = 'FAIL' "
        "AND id NOT IN (SELECT inspection_id FROM feedback) ORDER BY seq LIMIT 1"
    )[0][0]
    r = c.post(f"/api/inspections/{iid}/feedback", json={"kind": "confirm_defect"})
    assert r.status_code == 201
    r = c.post(
        f"/api/inspections/{iid}/feedback",
        json={"kind": "wrong_class", "class_name": "scratches", "note": "long line"},
    )
    assert r.status_code == 201
    fb = r.json()
    assert fb["actor"] == "test-operator" and fb["class_name"] == "scratches"
    row = env.sql(
        "SELECT kind, class_name, actor, token_id, created_at FROM feedback WHERE id = ?",
        (fb["id"],),
    )[0]
    assert row[:3] == ("wrong_class", "scratches", "test-operator") and row[3] and row[4]
    listed = {i["id"]: i for i in c.get("/api/inspections", params={"limit": 500}).json()["items"]}
    assert listed[iid]["feedback"]["kind"] == "wrong_class"  # the latest one shows
    detail = c.get(f"/api/inspections/{iid}").json()
    assert [f["kind"] for f in detail["feedback_history"]] == ["confirm_defect", "wrong_class"]
    only = c.get("/api/inspections", params={"feedback": "wrong_class"}).json()["items"]
    assert iid in {i["id"] for i in only}
    none = c.get("/api/inspections", params={"feedback": "none", "limit": 500}).json()["items"]
    assert iid not in {i["id"] for i in none}
    audit = env.sql(
        "SELECT action, actor, detail_json FROM audit WHERE action LIKE 'feedback.%' "
        "AND target = ? ORDER BY id",
        (iid,),
    )
    # the second answer changes the first (tests/test_screen_api.py has the details)
    assert [a[0] for a in audit] == ["feedback.create", "feedback.change"]
    assert audit[1][1] == "test-operator" and "scratches" in audit[1][2]
    bad = c.post(f"/api/inspections/{iid}/feedback", json={"kind": "wrong_class"})
    assert bad.status_code == 422 and "class_name" in bad.text
    assert (
        c.post(
            "/api/inspections/00000000-0000-4000-8000-000000000000/feedback",
            json={"kind": "not_defect"},
        ).status_code
        == 404
    )
