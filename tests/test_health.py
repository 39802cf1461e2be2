"""``GET /api/health`` on a real ``kanjian serve``: live and ready on the demo, not
ready (503) when the camera refuses, not live (503) once a finite camera's loop ends.

The oracle for each check is the station's own status (``/api/status``, read with
the first-start token) or what the config makes inevitable (a closed port refuses).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kanjian.station.demos import get_demo
from tests.support import api as S
from tests.support.station_config import station_config, write_config


def _wait_for(url: str, until: Callable[[httpx.Response], bool], timeout: float = 120) -> Any:
    """GET ``url`` until ``until(response)``; the last response's JSON."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, timeout=5)
        if until(r):
            return r
        assert time.monotonic() < deadline, f"{url}: still {r.status_code} {r.text}"
        time.sleep(0.3)


def test_demo_is_live_and_ready_and_each_probe_answers_alone(tmp_path: Path) -> None:
    port = S.free_port()
    s = S.start_serve(None, port, tmp_path, timeout=180)
    try:
        h = _wait_for(s.url + "/api/health", lambda r: r.status_code == 200).json()
        assert h["live"] is True and h["ready"] is True
        live, ready = h["checks"]["live"], h["checks"]["ready"]
        assert live["loop_running"] and live["seconds_since_progress"] <= live["window_s"]
        assert s.token is not None
        st = httpx.get(
            s.url + "/api/status", headers={"Authorization": f"Bearer {s.token}"}, timeout=5
        ).json()
        assert ready["camera_state"] == st["camera"]["state"] == "connected"
        assert ready["model"] == f"{st['model']['name']} {st['model']['version']}"
        assert ready["provider"] == st["model"]["provider"]
        # the loop advances between probes: the counter moves
        first = live["progress"]
        _wait_for(
            s.url + "/api/health?probe=live",
            lambda r: r.json()["checks"]["live"]["progress"] > first,
        )
        only_live = httpx.get(s.url + "/api/health?probe=live", timeout=5).json()
        assert only_live["ready"] is None and only_live["checks"]["ready"] is None
        assert only_live["live"] is True
        only_ready = httpx.get(s.url + "/api/health?probe=ready", timeout=5).json()
        assert only_ready["live"] is None and only_ready["ready"] is True
        assert httpx.get(s.url + "/api/health?probe=both", timeout=5).status_code == 422
        # no token needed, but the Host check stays (DNS rebinding)
        bad = httpx.get(s.url + "/api/health", headers={"Host": "evil.example"}, timeout=5)
        assert bad.status_code == 400
    finally:
        s.stop()


def test_a_camera_that_refuses_is_not_ready_503(tmp_path: Path) -> None:
    port, closed = S.free_port(), S.free_port()  # nothing listens on `closed`
    cfg = station_config(
        tmp_path / "data",
        bundle=get_demo("neu-det").model,
        camera={"kind": "stream", "url": f"rtsp://127.0.0.1:{closed}/cam"},
        api={"port": port},
    )
    s = S.start_serve(write_config(tmp_path / "station.yaml", cfg), port, tmp_path, timeout=180)
    try:
        r = _wait_for(
            s.url + "/api/health", lambda r: r.json()["checks"]["ready"]["camera_error"] is not None
        )
        assert r.status_code == 503
        h = r.json()
        ready = h["checks"]["ready"]
        assert h["ready"] is False and ready["model_loaded"] is True
        assert ready["camera_connected"] is False and ready["camera_state"] == "reconnecting"
        assert f"127.0.0.1:{closed}" in ready["camera_error"]
        # the loop itself is fine (it waits for the camera): live on its own
        assert h["live"] is True
        assert httpx.get(s.url + "/api/health?probe=live", timeout=5).status_code == 200
        assert httpx.get(s.url + "/api/health?probe=ready", timeout=5).status_code == 503
    finally:
        s.stop()


def test_a_finite_camera_that_ran_out_is_neither_live_nor_ready(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(get_demo("neu-det").images.glob("*.jpg"))[:2]:
        shutil.copy(p, images / p.name)
    port = S.free_port()
    cfg = station_config(tmp_path / "data", bundle=get_demo("neu-det").model, images=images)
    cfg["api"] = {"port": port}
    s = S.start_serve(write_config(tmp_path / "station.yaml", cfg), port, tmp_path, timeout=180)
    try:
        r = _wait_for(
            s.url + "/api/health", lambda r: not r.json()["checks"]["live"]["loop_running"]
        )
        assert r.status_code == 503
        h = r.json()
        assert h["live"] is False and h["ready"] is False
        assert h["checks"]["ready"]["camera_state"] == "ended"
        assert httpx.get(s.url + "/api/health?probe=live", timeout=5).status_code == 503
    finally:
        s.stop()
