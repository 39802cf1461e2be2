"""The API's config, audit, threshold and screen-file routes against the real app and a
real station (the ``env`` fixture of tests/support/api_env.py; the rest of the API is in
test_api.py)."""

from __future__ import annotations

import json

import httpx

from kanjian.inference.verdict import VerdictRules
from tests.support import api as S  # the servers and bundles tests share
from tests.support.api_env import Env

# -- config, audit, triggers, CORS, screen files ------------------------------------------


def test_config_and_audit_pages(env: Env) -> None:
    eng = env.client("engineer")
    cfg = eng.get("/api/config").json()
    assert cfg["api"]["max_upload_mb"] == 40 and (
        cfg["rules"]["default"]["fail_confidence"]
        == env.config["rules"]["default"]["fail_confidence"]
    )
    for name in ("audit-a", "audit-b"):  # audited changes of its own, whatever ran before
        assert (
            env.client("admin")
            .post("/api/tokens", json={"name": name, "role": "operator"})
            .status_code
            == 201
        )
    total = env.sql("SELECT COUNT(*) FROM audit")[0][0]
    assert total >= 2
    seen, _ = S.walk_pages(eng, "/api/audit", 1)
    assert seen == [r[0] for r in env.sql("SELECT id FROM audit ORDER BY id DESC")]


def test_trigger_is_refused_in_free_run(env: Env) -> None:
    r = env.client("operator").post("/api/trigger", json={})
    assert r.status_code == 409 and "trigger.mode" in r.json()["detail"]


def test_no_cors_by_default(env: Env) -> None:
    r = httpx.options(
        env.url + "/api/status",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = env.client("operator").get("/api/status", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_screen_is_served_without_build_step(env: Env) -> None:
    page = httpx.get(env.url + "/").text
    assert "/static/app.js" in page and "/static/style.css" in page
    for f in ("app.js", "i18n.js", "style.css"):
        assert httpx.get(f"{env.url}/static/{f}").status_code == 200
    assert httpx.get(env.url + "/static/../auth.py").status_code == 404


# -- thresholds and models ---------------------------------------------------------------------


def test_thresholds_change_is_applied_stored_and_audited(env: Env) -> None:
    eng = env.client("engineer")
    old = eng.get("/api/thresholds").json()
    resets = env.sql("SELECT COUNT(*) FROM audit WHERE action = 'thresholds.reset'")[0][0]
    assert old["source"] == "station.yaml" and old["set_at"] is None
    # what a null would mean: the running bundle's manifest values (no rules in it: defaults)
    model = env.state.station.inspector.model
    assert old["bundle_defaults"] == {
        **model.default_thresholds().model_dump(),
        "rules": VerdictRules().model_dump(mode="json"),
    }
    new = {
        "conf": 0.2,
        "iou": 0.5,
        "max_det": 50,
        "rules": {"default": {"fail_confidence": 0.6, "review_confidence": 0.3}},
    }
    r = eng.put("/api/thresholds", json=new)
    assert r.status_code == 200
    assert (r.json()["source"], r.json()["set_by"]) == ("api", "test-engineer")
    rs = env.state.station.inspector.ruleset  # one frozen object, swapped whole
    assert rs.rules is not None
    assert (rs.conf, rs.iou, rs.max_det, rs.rules.default.fail_confidence, rs.origin) == (
        0.2,
        0.5,
        50,
        0.6,
        "api",
    )
    row = env.sql(
        "SELECT actor, detail_json FROM audit WHERE action = 'thresholds.set' "
        "ORDER BY id DESC LIMIT 1"
    )[0]
    assert row[0] == "test-engineer" and '"fail_confidence": 0.6' in row[1]
    [(stored,)] = env.sql("SELECT value_json FROM settings WHERE key = 'thresholds'")
    assert json.loads(stored)["conf"] == 0.2
    bad = eng.put(
        "/api/thresholds",
        json={**new, "rules": {"default": {"fail_confidence": 0.2, "review_confidence": 0.5}}},
    )
    assert bad.status_code == 422 and "review_confidence" in bad.text
    typo = eng.put("/api/thresholds", json={**new, "rules": {"classes": {"scratchez": {}}}})
    assert typo.status_code == 422 and "scratchez" in typo.text and "scratches" in typo.text
    assert json.loads(env.sql("SELECT value_json FROM settings")[0][0])["conf"] == 0.2
    # back to station.yaml's values: the override row goes, the reset is audited
    r = eng.delete("/api/thresholds")
    assert r.status_code == 200 and r.json()["source"] == "station.yaml"
    assert {k: v for k, v in r.json().items() if k in old} == old
    assert env.sql("SELECT * FROM settings") == []
    assert (
        env.sql("SELECT COUNT(*) FROM audit WHERE action = 'thresholds.reset'")[0][0] == resets + 1
    )


def test_a_change_made_against_old_thresholds_is_refused(env: Env) -> None:
    """Two engineers load the rules; the first saves; the second's save, made against what
    they loaded, is refused with 409 naming who changed them when, and nothing is stored."""
    eng = env.client("engineer")
    eng.delete("/api/thresholds")  # station.yaml's in force: set_at null
    loaded = eng.get("/api/thresholds").json()
    assert loaded["set_at"] is None
    first = {"conf": 0.3, "expected_set_at": loaded["set_at"]}
    r = eng.put("/api/thresholds", json=first)
    assert r.status_code == 200, r.text
    now = r.json()
    assert "expected_set_at" not in now  # a request field, never part of the answer
    audits = env.sql("SELECT COUNT(*) FROM audit")[0][0]
    second = eng.put("/api/thresholds", json={"conf": 0.4, "expected_set_at": None})
    assert second.status_code == 409
    assert f"by {now['set_by']} at {now['set_at']}" in second.json()["detail"]
    assert env.sql("SELECT COUNT(*) FROM audit")[0][0] == audits  # refused: not audited
    assert json.loads(env.sql("SELECT value_json FROM settings")[0][0])["conf"] == 0.3
    # made against what is in force it goes through; left out, nothing is checked
    again = eng.put("/api/thresholds", json={"conf": 0.4, "expected_set_at": now["set_at"]})
    assert again.status_code == 200 and again.json()["conf"] == 0.4
    assert eng.put("/api/thresholds", json={"conf": 0.45}).status_code == 200
    # a reset meanwhile is named too (the audit's reset row)
    stale = eng.get("/api/thresholds").json()["set_at"]
    eng.delete("/api/thresholds")
    [(at,)] = env.sql(
        "SELECT at FROM audit WHERE action = 'thresholds.reset' ORDER BY id DESC LIMIT 1"
    )
    r = eng.put("/api/thresholds", json={"conf": 0.5, "expected_set_at": stale})
    assert r.status_code == 409 and "reset to station.yaml's by test-engineer" in r.json()["detail"]
    assert at in r.json()["detail"]
    assert env.sql("SELECT * FROM settings") == []
