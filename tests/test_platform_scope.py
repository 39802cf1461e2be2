"""Firms apart: a token of one scope sees nothing of another's, on every route.

Every route of the fleet page's app is tested for a viewer of firm acme and for a viewer
of two sites (sz-02 of acme, nb-01 of cathay) against firm borealis' data: its
stations, rows, events and pictures never appear in an answer, and a direct URL into
one of its stations is 404 worded as for a station nobody runs. The routes are read
from the app itself: a route added without a case in :data:`CASES` fails here.
Then roles (viewer < engineer < admin, the dependency the rollout's actions use),
revoked and malformed tokens, throttling, the read-only connections, and the token
commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from kanjian.appliance_api.http.guard import AuthGuard
from kanjian.platform.web.app import create_app
from kanjian.platform.web.db import ReadPool
from kanjian.platform.web.deps import Admin, Engineer, FleetState
from tests.support import fleet_data as FD
from tests.support.fleet_platform import FleetPlatform

#: the firm whose data the scoped viewers must never see, and one of its stations
OTHER = "borealis"
B_STATION = "wx-01/L1/L1-a"
#: viewer token -> the sites it may see
VIEWERS = {"viewer-acme": set(FD.FIRMS["acme"]), "viewer-sites": {"sz-02", "nb-01"}}
OWN_STATION = {"viewer-acme": "sz-01/L1/L1-a", "viewer-sites": "nb-01/L2/L2-a"}


def _app(url: str, guard: AuthGuard | None = None) -> Any:
    return create_app(FleetState(ReadPool(url), None, guard or AuthGuard(50, 60, 60)))


def all_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(method or "", full path)`` of every route, into included routers (FastAPI 0.16x
    keeps an included router whole, with the prefix given at inclusion beside it)."""
    out = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            out += all_routes(inner.routes, prefix + r.include_context.prefix)
        elif isinstance(r, APIRoute):
            out += [(m, prefix + r.path) for m in r.methods]
        else:
            out.append(("", prefix + getattr(r, "path", "")))
    return out


#: the app's routes, read at collection (nothing is connected to list them)
APP = _app("postgresql://collect-only@127.0.0.1:1/none")
ROUTES = all_routes(APP.routes)
API_ROUTES = sorted((m, p) for m, p in ROUTES if p.startswith("/api"))


def b_identifiers(fp: FleetPlatform) -> set[str]:
    """Every name and id of the other firm's data an answer could carry."""
    sites = set(FD.FIRMS[OTHER])
    ids = {m["inspection_id"] for m in fp.data.messages if m["site"] in sites}
    ids |= {e["event_id"] for e in fp.data.events if e["site"] in sites}
    keys = {m["image"]["key"] for m in fp.data.messages if m["site"] in sites and m["image"]}
    return sites | ids | keys | {OTHER}


def strings(v: Any) -> set[str]:
    """Every string in a JSON value (keys and values), and each URL's path parts."""
    if isinstance(v, dict):
        return set(v) | {s for x in v.values() for s in strings(x)}
    if isinstance(v, list):
        return {s for x in v for s in strings(x)}
    if isinstance(v, str):
        return {v, *v.split("/"), *v.split("?")[0].split("/")}
    return set()


def ok_without_leak(fp: FleetPlatform, token: str, path: str, **params: Any) -> Any:
    r = fp.get(path, token, **params)
    assert r.status_code == 200, (path, r.text)
    body = r.json()
    leaked = strings(body) & b_identifiers(fp)
    assert not leaked, f"{token} sees {OTHER}'s {sorted(leaked)[:5]} at {path}"
    return body


def not_found_as_nobody(fp: FleetPlatform, token: str, path: str, name: str, **params: Any) -> None:
    """404 for the other firm's ``name`` (``site[/line[/station]]``, in ``path``'s ``{}`` or
    in ``params``), and the same answer as for names nobody uses."""
    parts = name.split("/")
    fakes = [f"no-such-{i}" for i in range(len(parts))]
    fake_params = {k: fakes[parts.index(v)] for k, v in params.items()}
    r = fp.get(path.format(name), token, **params)
    nobody = fp.get(path.format("/".join(fakes)), token, **fake_params)
    assert r.status_code == nobody.status_code == 404, (path, r.text, nobody.text)
    assert r.json()["detail"].replace(name, "X") == nobody.json()["detail"].replace(
        "/".join(fakes), "X")  # fmt: skip


def _in_scope(body: list[dict[str, Any]], token: str) -> None:
    assert body and {x["site"] for x in body} <= VIEWERS[token]


def case_whoami(fp: FleetPlatform, token: str) -> None:
    who = ok_without_leak(fp, token, "/api/whoami")
    assert who["name"] == token and who["role"] == "viewer"


def case_stations(fp: FleetPlatform, token: str) -> None:
    got = ok_without_leak(fp, token, "/api/stations")
    want = fp.sql("SELECT site, line, station FROM stations WHERE site = ANY(%s) ORDER BY 1, 2, 3",
                  [sorted(VIEWERS[token])])  # fmt: skip
    assert [(s["site"], s["line"], s["station"]) for s in got] == want


def case_station(fp: FleetPlatform, token: str, leaf: str = "") -> None:
    body = ok_without_leak(fp, token, f"/api/stations/{OWN_STATION[token]}{leaf}")
    assert body
    not_found_as_nobody(fp, token, "/api/stations/{}" + leaf, B_STATION)


def case_counts(path: str) -> Callable[[FleetPlatform, str], None]:
    def case(fp: FleetPlatform, token: str) -> None:
        got = ok_without_leak(
            fp, token, path, since="2000-01-01T00:00:00Z", until="2000-03-01T00:00:00Z"
        )  # nothing then: still scoped
        assert got["window"]["hours"] == 60 * 24
        got = ok_without_leak(fp, token, path, by="site") if "yield" in path else (
            ok_without_leak(fp, token, path))  # fmt: skip
        n = fp.sql("SELECT count(*) FROM inspections WHERE site = ANY(%s) AND captured_at >= %s "
                   "AND captured_at < %s", [sorted(VIEWERS[token]), got["window"]["since"],
                                            got["window"]["until"]])[0][0]  # fmt: skip
        if "yield" in path:
            assert {r["site"] for r in got["rows"]} == VIEWERS[token]
            assert got["totals"]["total"] == n
        else:
            judged = fp.sql("SELECT count(*) FROM inspections WHERE site = ANY(%s) AND "
                            "captured_at >= %s AND captured_at < %s AND verdict IN "
                            "('PASS', 'FAIL', 'REVIEW')", [sorted(VIEWERS[token]),
                            got["window"]["since"], got["window"]["until"]])[0][0]  # fmt: skip
            assert sum(p["n"] for p in got["points"]) == judged > 0
        site, line, station = B_STATION.split("/")
        not_found_as_nobody(fp, token, path, site, site=site)
        not_found_as_nobody(fp, token, path, B_STATION, site=site, line=line, station=station)

    return case


def case_pareto(fp: FleetPlatform, token: str) -> None:
    site, line, _st = OWN_STATION[token].split("/")
    assert ok_without_leak(fp, token, "/api/pareto", site=site, line=line)["classes"]
    not_found_as_nobody(fp, token, "/api/pareto", "wx-01/L1", site="wx-01", line="L1")


def case_events(fp: FleetPlatform, token: str) -> None:
    got = ok_without_leak(fp, token, "/api/events", limit=500)
    want = [e for e in fp.data.events if e["site"] in VIEWERS[token]]
    assert len(got) == len(want) and {e["site"] for e in got} <= VIEWERS[token]
    not_found_as_nobody(fp, token, "/api/events", "wx-01", site="wx-01")


def case_rollouts(fp: FleetPlatform, token: str) -> None:
    from tests.support.fleet_rollouts import seed

    rollouts = seed(fp.pg.url)
    got = ok_without_leak(fp, token, "/api/rollouts")
    # only rollouts whose every station is in scope: a mixed one would leak through its
    # rates and audit trail
    want = {rid for rid, sites in rollouts.items() if set(sites) <= VIEWERS[token]}
    assert {r["rollout_id"] for r in got} == want
    for r in got:
        assert {s["site"] for s in r["stations"]} <= VIEWERS[token]
        assert r["audit"] and {a["site"] for a in r["audit"]} <= VIEWERS[token]
    admin = {r["rollout_id"] for r in fp.json("/api/rollouts", "admin")}
    assert admin >= set(rollouts)


#: (method, path) -> the scope check of that route; every API route must have one
CASES: dict[tuple[str, str], Callable[[FleetPlatform, str], None]] = {
    ("GET", "/api/whoami"): case_whoami,
    ("GET", "/api/stations"): case_stations,
    ("GET", "/api/stations/{site}/{line}/{station}"): case_station,
    ("GET", "/api/stations/{site}/{line}/{station}/events"): lambda fp, t: case_station(
        fp, t, "/events"
    ),
    ("GET", "/api/stations/{site}/{line}/{station}/pictures"): lambda fp, t: case_station(
        fp, t, "/pictures"
    ),
    ("GET", "/api/yield"): case_counts("/api/yield"),
    ("GET", "/api/fail-rate"): case_counts("/api/fail-rate"),
    ("GET", "/api/pareto"): case_pareto,
    ("GET", "/api/events"): case_events,
    ("GET", "/api/rollouts"): case_rollouts,
}


@pytest.mark.parametrize("token", sorted(VIEWERS))
@pytest.mark.parametrize("method,path", API_ROUTES)
def test_every_route_keeps_the_other_firm_out(
    fleet_platform: FleetPlatform, method: str, path: str, token: str
) -> None:
    case = CASES.get((method, path))
    assert case is not None, f"{method} {path} has no scope test: add one to CASES"
    case(fleet_platform, token)


def test_no_route_outside_the_api_serves_data() -> None:
    """Besides /api: the two pages (the same HTML for every station), the allow-listed
    station files, the fleet's own files, and the OpenAPI schema."""
    others = {p for _m, p in ROUTES} - {p for _m, p in API_ROUTES}
    assert others == {"/", "/station/{site}/{line}/{station}", "/static/{name}", "/static/fleet",
                      "/static/fonts", "/static/vendor/chartjs", "/openapi.json"}  # fmt: skip
    assert set(CASES) == set(API_ROUTES) and len(API_ROUTES) == 10


def test_the_other_firms_page_files_are_the_same_html(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    mine, theirs = (fp.get(f"/station/{s}", None) for s in (OWN_STATION["viewer-acme"], B_STATION))
    assert mine.status_code == theirs.status_code == 200 and mine.content == theirs.content
    assert fp.get("/static/index.html", None).status_code == 404  # the station's own screen


def test_roles_and_bad_tokens(fleet_platform: FleetPlatform) -> None:
    """Viewers read; an action needs engineer or admin (deps.Engineer / deps.Admin, as the
    rollout's routes take them); revoked and malformed tokens are refused."""
    fp = fleet_platform
    app = _app(fp.pg.url)
    actions = APIRouter(prefix="/api/test")

    @actions.post("/engineer")
    def engineer_action(who: Engineer) -> dict[str, str]:
        return {"by": who.name, "scope": who.scope.describe()}

    @actions.post("/admin")
    def admin_action(who: Admin) -> dict[str, str]:
        return {"by": who.name}

    app.include_router(actions)
    with TestClient(app) as c:

        def post(path: str, token: str | None) -> int:
            h = {"Authorization": f"Bearer {fp.tokens.get(token, token)}"} if token else {}
            return c.post(path, headers=h).status_code

        assert [post("/api/test/engineer", t) for t in
                (None, "viewer-acme", "engineer-acme", "admin", "revoked")] == [
            401, 403, 200, 200, 401]  # fmt: skip
        assert [post("/api/test/admin", t) for t in ("engineer-acme", "admin")] == [403, 200]
        for bad in ("kj_12345678_x", "kjp_zzzzzzzz_x", fp.tokens["admin"][:-2] + "xx"):
            assert post("/api/test/engineer", bad) == 401
    assert fp.get("/api/stations", "revoked").status_code == 401
    assert fp.get("/api/stations", None).status_code == 401
    assert fp.get("/api/whoami", None).json() == {"authenticated": False, "name": None,
                                                  "role": None, "scope": None}  # fmt: skip


def test_failed_tokens_are_throttled(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    with TestClient(_app(fp.pg.url, AuthGuard(3, 60, 60))) as c:
        bad = {"Authorization": "Bearer kjp_00000000_nope"}
        assert [c.get("/api/stations", headers=bad).status_code for _ in range(3)] == [401] * 3
        good = {"Authorization": f"Bearer {fp.tokens['viewer-acme']}"}
        r = c.get("/api/stations", headers=good)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_the_pages_connections_cannot_write(fleet_platform: FleetPlatform) -> None:
    pool = ReadPool(fleet_platform.pg.url)
    try:
        with pool.connection() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM inspections")
    finally:
        pool.close()
    assert fleet_platform.sql("SELECT count(*) FROM inspections")[0][0] == len(
        fleet_platform.data.messages)  # fmt: skip


def test_the_table_refuses_a_viewer_without_a_scope(fleet_platform: FleetPlatform) -> None:
    with (
        psycopg.connect(fleet_platform.pg.url) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute("INSERT INTO platform_tokens (id, name, role, secret_sha256) "
                     "VALUES ('0badc0de', 'x', 'viewer', 'x')")  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "token", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip


def test_token_commands(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    db = ["--db", fp.pg.url]
    made = _cli("create", "ci-viewer", "--role", "viewer", "--sites", "nb-02, wx-02", *db)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("kjp_") and "sites nb-02, wx-02" in made.stderr
    fp.tokens["ci-viewer"] = secret
    who = fp.json("/api/whoami", "ci-viewer")
    assert who["scope"] == {"kind": "sites", "firm": None, "sites": ["nb-02", "wx-02"]}
    assert {s["site"] for s in fp.json("/api/stations", "ci-viewer")} == {"nb-02", "wx-02"}
    listed = json.loads(_cli("list", "--json", *db).stdout)
    row = next(r for r in listed if r["name"] == "ci-viewer")
    # the secret part may itself hold "_" (URL-safe base64), so split at the first two only
    hidden = secret.split("_", 2)[2]
    assert len(hidden) >= 20 and row["scope"] == "sites nb-02, wx-02"
    assert hidden not in json.dumps(listed)
    assert _cli("revoke", row["id"], *db).returncode == 0
    assert fp.get("/api/whoami", "ci-viewer").status_code == 401
    for bad, said in ((["x", "--role", "viewer"], "give exactly one scope"),
                      (["x", "--role", "viewer", "--cluster"], "only an admin token"),
                      (["x", "--role", "boss", "--firm", "a"], "use viewer, engineer or admin"),
                      (["x", "--firm", "a b"], "letters, digits")):  # fmt: skip
        r = _cli("create", *bad, *db)
        assert r.returncode == 2 and said in r.stderr, (bad, r.stderr)
