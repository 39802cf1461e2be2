"""Display names on a running station: ``GET /api/status`` gives them to the screen, an
engineer changes them (``PUT/DELETE /api/models/{sha256}/display-names``, or ``kanjian
model names`` on the station's database), every change is audited and outlives a
restart, and the live picture's labels follow; the station keeps them in memory and
still sees a change the CLI makes from another process; a PUT over the limits is a 422
naming the limit. Also: the station's stored reasons say
where each defect is and its size, read back against the row's own frame size.

A real station on the demo bundle and the demo images, its app on a real uvicorn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from kanjian.inference.verdict import explain_reason
from kanjian.inference.where import where_on_frame
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from tests.support import api as S
from tests.support.station_config import station_config, write_config

ZH = {
    "crazing": "龟裂",
    "inclusion": "夹杂",
    "patches": "斑块",
    "pitted_surface": "麻点",
    "rolled-in_scale": "压入氧化皮",
    "scratches": "划痕",
}
SCALE = 0.05  # camera.mm_per_px


@contextmanager
def _running(config: Path) -> Iterator[tuple[Any, dict[str, httpx.Client]]]:
    """The station of ``config`` after it judged every demo image, served; a client per
    role (tokens made now)."""
    from kanjian.appliance_api.http.auth import Role, TokenStore
    from kanjian.appliance_api.http.state import start_services
    from kanjian.station.config import load_config
    from kanjian.station.pipeline import build_station

    station = build_station(load_config(config))
    state = start_services(station)
    state.loop.start()
    S.wait_for(lambda: not state.loop.alive(), 120, what="the loop to judge every image")
    assert station.store.flush()
    server = S.ServerThread(state)
    ts = TokenStore(state.pool.get())
    clients = {}
    for role in Role:
        secret = ts.create(f"test-{role.value}", role, "tests").secret
        clients[role.value] = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        )
    try:
        yield state, clients
    finally:
        for c in clients.values():
            c.close()
        server.stop()
        station.close()
        state.pool.close_all()


def _config(tmp: Path, **api: Any) -> Path:
    cfg = station_config(
        tmp / "data",
        bundle=DEMO_MODEL,
        images=DEMO_IMAGES,
        camera={"mm_per_px": SCALE},
        # the demo images then give PASS, REVIEW and FAIL (as in tests/test_web.py)
        rules={"default": {"fail_confidence": 0.1, "review_confidence": 0.05}},
        api=api,
    )
    return write_config(tmp / "station.yaml", cfg)


def test_names_are_edited_by_engineers_audited_and_kept_over_restarts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db = tmp_path / "data" / "kanjian.db"
    with _running(config) as (state, c):
        status = c["operator"].get("/api/status").json()
        sha = status["model"]["sha256"]
        assert status["model"]["display_names"] == {"zh": ZH}  # the bundle's own
        assert status["station"]["language"] == "zh"
        path = f"/api/models/{sha}/display-names"
        body = {"display_names": {"zh": {"scratches": "划伤"}, "en": {"scratches": "Scratch"}}}
        assert c["operator"].put(path, json=body).status_code == 403
        r = c["engineer"].put(path, json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["display_names"] == {
            "en": {"scratches": "Scratch"},
            "zh": {**ZH, "scratches": "划伤"},
        }
        assert got["bundle"] == {"zh": ZH} and got["station"] == body["display_names"]
        assert got["set_by"] == "test-engineer"
        assert (
            c["operator"].get("/api/status").json()["model"]["display_names"]
            == got["display_names"]
        )
        assert c["operator"].get(path).json() == got
        # the live picture's labels: the station's language, the effective names
        assert state.hub.names(sha, state.hub.language) == {**ZH, "scratches": "划伤"}
        many = {f"x{chr(97 + i // 26)}{chr(97 + i % 26)}": {"scratches": "划伤"} for i in range(17)}
        for bad, says in (
            ({"zh": {"scratchez": "划伤"}}, "no class 'scratchez'"),
            ({"Chinese": {"scratches": "划伤"}}, "must be a tag"),
            (many, "17 languages: at most 16"),
            ({f"zh{'-abcd' * 7}": {"scratches": "划伤"}}, "a tag is at most 35 characters"),
            ({"zh": {f"c{i}": "名" for i in range(1001)}}, "zh: 1001 names, at most 1000"),
            ({"zh": {"scratches": "划" * 65}}, "the name is over 64 characters"),
        ):
            r = c["engineer"].put(path, json={"display_names": bad})
            assert r.status_code == 422 and says in r.json()["detail"], r.text
        # the screen's reads are kept in memory: a second one asks SQLite only whether
        # anything changed (the newest audit id), and a change is seen at once
        names = state.kept.names
        asked: list[str] = []
        names.pool.get().conn.set_trace_callback(asked.append)
        try:
            names.forget()  # hub.names above filled it: start from empty
            first = names.for_language(sha, "zh")
            assert any("FROM settings" in q for q in asked), asked  # the version, the names
            asked.clear()
            assert names.for_language(sha, "zh") == first == {**ZH, "scratches": "划伤"}
            assert names.effective(sha) == got["display_names"]
            assert asked == ["SELECT max(id) FROM audit"] * 2, asked
            # the CLI, another process, changes the running station's names
            asked.clear()
            run = S.kanjian("model", "names", "set", "-c", str(config), "crazing=裂纹")
            assert run.returncode == 0, run.stdout + run.stderr
            assert names.for_language(sha, "zh") == {**first, "crazing": "裂纹"}
            assert any("FROM settings" in q for q in asked), asked  # read again
        finally:
            names.pool.get().conn.set_trace_callback(None)
        assert state.hub.names(sha, state.hub.language) == {
            **ZH,
            "scratches": "划伤",
            "crazing": "裂纹",
        }
        shown = c["operator"].get("/api/status").json()["model"]["display_names"]
        assert shown["zh"]["crazing"] == "裂纹"
        r = c["engineer"].put(f"/api/models/{'0' * 64}/display-names", json=body)
        assert r.status_code == 404
        assert c["engineer"].get(path).json()["display_names"]["zh"]["scratches"] == "划伤"
    shown = json.loads(S.kanjian("model", "names", "show", "-c", str(config), "--json").stdout)
    assert shown["station"]["zh"] == {"crazing": "裂纹", "scratches": "划伤"}
    with _running(config) as (state, c):  # a restart keeps both
        names = c["operator"].get("/api/status").json()["model"]["display_names"]
        assert names == {
            "en": {"scratches": "Scratch"},
            "zh": {**ZH, "scratches": "划伤", "crazing": "裂纹"},
        }
        r = c["engineer"].delete(f"/api/models/{sha}/display-names")
        assert r.status_code == 200 and r.json()["display_names"] == {"zh": ZH}
        assert c["operator"].get("/api/status").json()["model"]["display_names"] == {"zh": ZH}
    audit = S.sql(
        db,
        "SELECT action, target, actor, detail_json FROM audit "
        "WHERE action LIKE 'model.display_names.%' ORDER BY id",
    )
    assert [(a, t) for a, t, _, _ in audit] == [
        ("model.display_names.set", sha),
        ("model.display_names.set", sha),
        ("model.display_names.reset", sha),
    ]
    assert audit[0][2] == "test-engineer" and audit[1][2].startswith("cli:")
    assert json.loads(audit[1][3])["new"]["zh"]["crazing"] == "裂纹"
    assert json.loads(audit[2][3])["had_override"] is True
    assert S.sql(db, "SELECT COUNT(*) FROM settings WHERE key LIKE 'display_names:%'") == [(0,)]


def test_english_station_labels_with_class_names_and_reasons_say_where(tmp_path: Path) -> None:
    with _running(_config(tmp_path, language="en")) as (state, c):
        status = c["operator"].get("/api/status").json()
        assert status["station"]["language"] == "en"
        assert (
            state.hub.names(status["model"]["sha256"], state.hub.language) == {}
        )  # no English names: ids
        rows = S.sql(
            tmp_path / "data" / "kanjian.db",
            "SELECT verdict, reason, width, height FROM inspections "
            "WHERE verdict IN ('FAIL', 'REVIEW')",
        )
    assert len(rows) >= 4, rows
    for verdict, reason, w, h in rows:
        code, params = explain_reason(verdict, reason)
        assert code in ("defect_fail", "defect_review"), reason
        box = params["box"]
        assert isinstance(box, list)
        assert params["where"] == where_on_frame(box, (w, h)), reason
        assert params["size_mm"] == [
            round((box[2] - box[0]) * SCALE, 1),
            round((box[3] - box[1]) * SCALE, 1),
        ], reason
