"""Request bodies against the real app: the small-body limit (declared and chunked) is
enforced before a token is read, and bodies up to it still work (the ``env`` fixture of
tests/support/api_env.py: a real station and uvicorn)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.api_env import Env


def _ids(env: Env) -> list[str]:
    return [r[0] for r in env.sql("SELECT id FROM inspections ORDER BY seq DESC")]


def _audit_count(env: Env) -> int:
    return int(env.sql("SELECT COUNT(*) FROM audit")[0][0])


def _chunks(data: bytes, size: int = 16 * 1024) -> Any:
    """``data`` as a generator: httpx sends it chunked, without a Content-Length."""

    def gen() -> Any:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen()


def test_big_bodies_are_refused_before_the_token_is_read(env: Env) -> None:
    from kanjian.appliance_api.http.app import MAX_BODY_BYTES

    iid = _ids(env)[0]
    before = (_audit_count(env), env.sql("SELECT COUNT(*) FROM feedback")[0][0])
    big = json.dumps({"token": "x" * (4 * 2**20)}).encode()  # 4 MiB
    note = json.dumps({"kind": "not_defect", "note": "x" * (4 * 2**20)}).encode()
    feedback = f"/api/inspections/{iid}/feedback"
    cases = [
        ("/api/session", big, None),
        (feedback, note, None),
        (feedback, note, "operator"),  # a valid token does not lift the limit
        ("/api/session", _chunks(big), None),  # chunked: counted as it arrives
        (feedback, _chunks(note), "operator"),
    ]
    for path, content, role in cases:
        with env.client(role) as c:
            r = c.post(path, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, (path, role, r.text)
        detail = r.json()["detail"]
        assert f"exceeds the {MAX_BODY_BYTES}-byte limit" in detail, detail
        assert r.headers["x-content-type-options"] == "nosniff"  # still hardened
        if not isinstance(content, bytes):
            assert "bytes" not in detail.split("exceeds")[0]  # no length was declared
        else:
            assert f"of {len(content)} bytes" in detail
    assert (_audit_count(env), env.sql("SELECT COUNT(*) FROM feedback")[0][0]) == before


def test_bodies_up_to_the_limit_still_work(env: Env) -> None:
    from kanjian.appliance_api.http.app import MAX_BODY_BYTES

    token = json.dumps({"token": env.tokens["operator"]})
    exact = (token + " " * (MAX_BODY_BYTES - len(token))).encode()  # JSON allows the padding
    assert len(exact) == MAX_BODY_BYTES
    with httpx.Client(base_url=env.url, timeout=30) as c:
        json_type = {"Content-Type": "application/json"}
        assert c.post("/api/session", content=exact, headers=json_type).status_code == 204
        assert c.post("/api/session", content=exact + b" ", headers=json_type).status_code == 413
        # a chunked body under the limit reaches the endpoint whole
        r = c.post("/api/session", content=_chunks(exact, 1000), headers=json_type)
        assert r.status_code == 204, r.text
        assert c.get("/api/status").status_code == 200  # the cookie it set reads
    iid = _ids(env)[-1]
    body = json.dumps({"kind": "not_defect", "note": "n" * 500}).encode()
    with env.client("operator") as op:
        r = op.post(
            f"/api/inspections/{iid}/feedback",
            content=_chunks(body, 100),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["note"] == "n" * 500
    # model uploads keep their own, larger limit (api.max_upload_mb): a big body to
    # POST /api/models reaches the route, which asks for a token
    with env.client() as anon:
        r = anon.post("/api/models", content=b"z" * (4 * MAX_BODY_BYTES))
        assert r.status_code == 401 and "engineer" in r.json()["detail"]
