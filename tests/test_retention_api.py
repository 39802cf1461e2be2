"""``/api/settings/retention`` against the real app on a real station: a wrong key is a
422 naming it, a change is audited (old -> new) and survives a restart, the passes show
in ``/metrics``, and an image retention deleted answers 410, not a bare 404."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from kanjian.appliance_api.http.auth import Role, TokenStore
from tests.support import api as S


def _served(tmp: Path, bundles: Any) -> tuple[Any, Any, S.ServerThread, dict[str, str]]:
    station, state, _ = S.start_station(tmp, 6, bundles)
    S.wait_for(lambda: not state.loop.alive(), 120, what="the loop to judge every image")
    assert station.store.flush()
    server = S.ServerThread(state)
    ts = TokenStore(state.pool.get())
    tokens = {r.value: ts.create(f"t-{r.value}-{id(server)}", r, "tests").secret for r in Role}
    return station, state, server, tokens


def _stop(station: Any, state: Any, server: S.ServerThread) -> None:
    server.stop()
    station.close()
    state.pool.close_all()


def _client(server: S.ServerThread, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=120)  # fmt: skip


def test_retention_settings_round_trip(tmp_path: Path, detect_model: Any) -> None:
    bundles = S.make_bundles(detect_model)
    station, state, server, tok = _served(tmp_path, bundles)
    try:
        eng = _client(server, tok["engineer"])
        got = eng.get("/api/settings/retention").json()
        assert got["source"] == "config" and got["config"]["interval_s"] == 60
        r = eng.put("/api/settings/retention", json={"images": {"max_totl_mb": 1}})
        assert r.status_code == 422 and "max_totl_mb" in r.text
        assert _client(server, tok["operator"]).put(
            "/api/settings/retention", json={}).status_code == 403  # fmt: skip
        with_image = station.store.db.execute(
            "SELECT id FROM inspections WHERE image_path IS NOT NULL LIMIT 1").fetchone()  # fmt: skip
        assert with_image is not None, "the test station saved no image"
        new = {
            "min_free_mb": 0,
            "interval_s": 5,
            "images": {"max_total_mb": 0.000001, "order": ["FAIL"]},
        }
        r = eng.put("/api/settings/retention", json=new)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["source"] == "api" and out["config"]["images"]["order"] == ["FAIL"]
        row = station.store.db.execute(
            "SELECT actor, detail_json FROM audit WHERE action = 'retention.set'").fetchall()  # fmt: skip
        assert len(row) == 1 and row[0][0].startswith("t-engineer")
        detail = json.loads(row[0][1])
        assert detail["old"]["interval_s"] == 60 and detail["new"]["interval_s"] == 5
        # the PUT kicked a pass: every image goes (a size bound of one byte)
        S.wait_for(lambda: eng.get(f"/api/inspections/{with_image[0]}/image").status_code == 410,
                   60, what="the image to be deleted")  # fmt: skip
        r = eng.get(f"/api/inspections/{with_image[0]}/image")
        assert "deleted by store.retention" in r.json()["detail"]
        metrics = httpx.get(server.url + "/metrics", timeout=60).text
        assert "kanjian_retention_passes_total" in metrics
        assert "kanjian_retention_images_deleted_total" in metrics
        status = eng.get("/api/settings/retention").json()
        assert status["totals"]["images_deleted"] >= 1 and status["passes"] >= 1
    finally:
        _stop(station, state, server)
    # a restart: the API's retention is back in force, over station.yaml's
    station2, state2 = _restart(tmp_path)
    try:
        ret = station2.retention
        assert ret is not None and ret.status().source == "api"
        assert ret.config.images.order == ["FAIL"] and ret.config.interval_s == 5
    finally:
        station2.close()
        state2.pool.close_all()


def _restart(tmp: Path) -> tuple[Any, Any]:
    """The same station.yaml and data folder built again (as after a power cut)."""
    from kanjian.appliance_api.http.state import start_services
    from kanjian.station.config import load_config
    from kanjian.station.pipeline import build_station

    station = build_station(load_config(tmp / "station.yaml"))
    return station, start_services(station)
