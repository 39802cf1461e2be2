"""Live state over HTTP: /api/status, /metrics, the live picture and MJPEG view, and the
screen's server-sent events, against the real app (real uvicorn), a real station and its
SQLite store (the ``env`` station of api_env.py: 24 NEU-DET images judged by a real model).
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.support.api_env import N_IMAGES, Env


def _ids(env: Env) -> list[str]:
    return [r[0] for r in env.sql("SELECT id FROM inspections ORDER BY seq DESC")]


# -- status, metrics, live -------------------------------------------------------------------


def test_status_names_model_provider_and_counts(env: Env) -> None:
    s = env.client("operator").get("/api/status").json()
    assert s["model"]["sha256"] == env.bundles.sha_a
    assert s["model"]["provider"] == "CPUExecutionProvider" and not s["model"]["fell_back"]
    assert s["frames"] == N_IMAGES and s["store"]["rows_written"] == N_IMAGES
    assert s["camera"]["state"] == "ended" and s["loop_running"] is False
    assert {"preprocess", "infer", "postprocess", "total"} <= set(s["latency_ms"])
    for v in s["latency_ms"].values():
        assert 0 < v["p50"] <= v["p99"]
    assert s["disk"]["free_bytes"] > 0 and s["store"]["db_bytes"] > 0
    # the saved images' size: the background walk at start plus what was saved since,
    # exact without waiting for the next walk (5 minutes away)
    on_disk = sum(p.stat().st_size for p in (env.data_dir / "images").rglob("*.jpg"))
    assert on_disk > 0 and s["store"]["images_bytes"] == on_disk
    assert env.state.images_size is not None
    env.state.images_size.refresh()  # a fresh walk agrees
    s = env.client("operator").get("/api/status").json()
    assert s["store"]["images_bytes"] == on_disk
    assert s["store"]["images_counted_at"] is not None and s["fps_recent"] >= 0
    shift = env.client("operator").get("/api/shift").json()
    assert shift["total"] == N_IMAGES  # every row is from this shift
    judged = sum(shift["counts"][v] for v in ("PASS", "FAIL", "REVIEW"))
    assert shift["yield_pct"] == round(100 * shift["counts"]["PASS"] / judged, 2)


def test_metrics_count_what_the_store_holds(env: Env) -> None:
    text = httpx.get(env.url + "/metrics", timeout=30).text  # public by default
    for verdict, n in env.sql("SELECT verdict, COUNT(*) FROM inspections GROUP BY verdict"):
        assert f'kanjian_inspections_total{{verdict="{verdict}"}} {float(n)}' in text
    for name, n in env.sql("SELECT class_name, COUNT(*) FROM detections GROUP BY class_name"):
        assert f'kanjian_detections_total{{class_name="{name}"}} {float(n)}' in text
    assert f'kanjian_stage_latency_seconds_count{{stage="infer"}} {float(N_IMAGES)}' in text
    assert 'provider="CPUExecutionProvider"' in text and "kanjian_model_info{" in text
    assert 'kanjian_errors_total{kind="store_write"} 0.0' in text


def test_metrics_need_a_token_when_not_public(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env.state.station.config  # frozen: swap in a copy for this test
    api = cfg.api.model_copy(update={"metrics_public": False})
    monkeypatch.setattr(env.state.station, "config", cfg.model_copy(update={"api": api}))
    r = httpx.get(env.url + "/metrics", timeout=30)
    assert r.status_code == 401 and "operator" in r.json()["detail"]
    r = env.client("operator").get("/metrics")
    assert r.status_code == 200 and "kanjian_inspections_total" in r.text


def test_live_picture_is_the_last_frame_annotated(env: Env) -> None:
    r = env.client("operator").get("/api/live.jpg")
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    w, h = env.sql("SELECT width, height FROM inspections ORDER BY seq DESC LIMIT 1")[0]
    assert img.shape[:2] == (h, w)


def test_mjpeg_stream_sends_annotated_frames(env: Env) -> None:
    with env.client("operator") as c, c.stream("GET", "/api/live.mjpeg") as r:
        assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            if buf.count(b"--frame") >= 1 and buf.rstrip().endswith(b"\xff\xd9"):
                break
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"--frame") and b"image/jpeg" in head
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    img = cv2.imdecode(np.frombuffer(rest[:length], np.uint8), cv2.IMREAD_COLOR)
    w, h = env.sql("SELECT width, height FROM inspections ORDER BY seq DESC LIMIT 1")[0]
    assert img.shape[:2] == (h, w)


def test_events_say_hello_with_the_last_result(env: Env) -> None:
    with env.client("operator") as c, c.stream("GET", "/api/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        event = data = None
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                break
    assert event == "hello"
    assert data is not None and data["last"]["id"] == _ids(env)[0]
    assert data["status"]["frames"] == N_IMAGES


def test_recent_rate_falls_to_zero_when_inspections_stop() -> None:
    from kanjian.appliance_api.http.usage import RecentRate

    now = [100.0]
    rate = RecentRate(window_s=10.0, clock=lambda: now[0])
    now[0] = 105.0
    rate.on_commit([None] * 50)  # type: ignore[list-item]  # only len() is used
    assert rate.per_second() == 10.0  # 50 in the 5 s since start
    now[0] = 112.0
    rate.on_commit([None] * 20)  # type: ignore[list-item]
    assert rate.per_second() == 7.0  # 70 in the last 10 s
    now[0] = 116.0  # the first batch left the window
    assert rate.per_second() == 2.0
    now[0] = 130.0  # the camera stalled: nothing in the window
    assert rate.per_second() == 0.0


def test_a_viewer_that_falls_behind_is_told_to_resync() -> None:
    import asyncio

    from kanjian.appliance_api.http.live import LiveHub, ShiftCounter

    hub = LiveHub({"FAIL"}, ShiftCounter(["06:00"]))
    slow: asyncio.Queue[dict[str, Any]] = asyncio.Queue(3)
    quick: asyncio.Queue[dict[str, Any]] = asyncio.Queue(100)
    evs = [{"type": "inspection", "n": i} for i in range(5)]
    hub._deliver([slow, quick], evs)
    got = [slow.get_nowait() for _ in range(slow.qsize())]
    assert got[-1] == {"type": "resync"} and [e["n"] for e in got[:-1]] == [3, 4]
    assert [quick.get_nowait()["n"] for _ in range(5)] == list(range(5)) and quick.empty()
    hub._deliver([quick], evs[:1], skipped=True)  # a batch cut to its tail: resync too
    assert [quick.get_nowait()["type"] for _ in range(2)] == ["inspection", "resync"]
