"""Every MISSED row of a camera outage says why: the source's last error and since when.

Real peers: the MJPEG camera process (killed for the outage, started again on its
port), a station built from a real config with the test detect model, triggered
from the Python API. The camera's reads wait longer (``read_timeout_s``) than a
trigger waits for a fresh frame (``frame_timeout_s``), so most triggers of the
outage see no source failure within their own wait: the reason must still name it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from kanjian.camera.config import StreamSourceConfig
from kanjian.camera.factory import open_source
from kanjian.camera.frame import FrameFailure
from kanjian.camera.pump import FramePump
from kanjian.station.store import DB_NAME
from tests.support.mjpeg_camera import MjpegCamera
from tests.support.station_config import parse, station_config
from tests.support.sync import wait_for

#: longer than a trigger's wait, so a trigger mostly sees no failure of its own
READ_TIMEOUT_S = 2.0
FRAME_TIMEOUT_S = 0.5


def _camera(url: str) -> dict[str, Any]:
    return {"kind": "stream", "url": url, "open_timeout_s": READ_TIMEOUT_S,
            "read_timeout_s": READ_TIMEOUT_S, "max_frame_age_s": 1.0,
            "backoff_initial_s": 0.5, "backoff_max_s": 4.0}  # fmt: skip


def _names_source_error(reason: str, url: str) -> bool:
    """``reason`` ends with ``; camera: <the source's error> since <UTC time>``; every
    error a stream source makes names its URL."""
    _, sep, note = reason.partition("; camera: ")
    error, since, at = note.rpartition(" since ")
    return bool(sep and since) and url in error and at.startswith("20") and at.endswith("Z")


def test_every_missed_grab_of_an_outage_names_the_source_error(tmp_path: Path) -> None:
    with MjpegCamera(tmp_path / "mjpeg.log", "--fps", "20") as cam:
        cfg = StreamSourceConfig.model_validate(_camera(cam.url))
        pump = FramePump(open_source(cfg, "cam0"), "latest")
        try:
            first = pump.grab_fresh("T-0", timeout_s=60.0)
            assert not isinstance(first, FrameFailure), first
            cam.kill()
            wait_for(lambda: pump.stats().source.state == "reconnecting", 60, "the outage seen")
            error = pump.stats().source.last_error
            assert error and cam.url in error
            missed = [pump.grab_fresh(f"T-{i}", timeout_s=FRAME_TIMEOUT_S) for i in range(1, 9)]
        finally:
            pump.close()
    for m in missed:
        assert isinstance(m, FrameFailure) and m.missed, m
        assert f"no fresh frame within {FRAME_TIMEOUT_S:g} s" in m.reason, m.reason
        assert _names_source_error(m.reason, cam.url), m.reason


def test_every_missed_row_of_a_camera_outage_names_the_source_error(
    tmp_path: Path, detect_model: Any
) -> None:
    from kanjian.station.pipeline import build_station
    from tests.support import api

    bundles = api.make_bundles(detect_model)
    cam = MjpegCamera(tmp_path / "mjpeg.log", "--fps", "20")
    cam.start()
    cfg = parse(station_config(
        tmp_path / "station", bundle=bundles.a, model={"conf": None},  # the bundle's own
        camera=_camera(cam.url), policy="latest",
        trigger={"mode": "triggered", "frame_timeout_s": FRAME_TIMEOUT_S},
    ))  # fmt: skip
    station = build_station(cfg)
    runner = threading.Thread(target=station.run, daemon=True)
    runner.start()
    try:
        ok = station.trigger("before").result(120)
        assert ok.verdict.value != "MISSED", ok.reason
        cam.kill()
        wait_for(lambda: station.pump.stats().source.state == "reconnecting", 60, "the outage")
        outage = [station.trigger(f"out-{i}").result(120) for i in range(8)]
        cam.start()
        wait_for(lambda: station.pump.stats().source.state == "connected", 60, "the camera back")
        back = station.trigger("after").result(120)
    finally:
        station.stop()
        runner.join(30)
        station.close()
        cam.kill()
    assert back.verdict.value != "MISSED", back.reason
    assert all(o.verdict.value == "MISSED" for o in outage), [o.reason for o in outage]
    con = sqlite3.connect(tmp_path / "station" / DB_NAME)
    rows = con.execute(
        "SELECT trigger_id, reason FROM inspections WHERE verdict = 'MISSED' ORDER BY seq"
    ).fetchall()
    con.close()
    assert [r[0] for r in rows] == [f"out-{i}" for i in range(8)]
    for trigger_id, reason in rows:
        assert f"trigger {trigger_id} on " in reason and "no fresh frame within 0.5 s" in reason
        assert _names_source_error(reason, cam.url), reason
