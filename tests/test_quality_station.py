"""The image quality gate on a real station: real frames, the demo's trained bundle, the
real store, metrics and API.

The thresholds are set between the numbers the NumPy/OpenCV reference measures on the
good and the bad frames (tests/support/quality_frames.py), and the expected verdict of
every frame follows from those numbers in the gate's documented order; the good frames'
verdicts are what the same model says without a gate.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from kanjian.appliance_api.http.auth import Role, TokenStore
from kanjian.camera.frame import Frame
from kanjian.camera.imagefile import decode_image_file
from kanjian.inference.model import load_model
from kanjian.inference.types import Verdict
from kanjian.inference.verdict import explain_reason
from kanjian.station.config import ConfigError, load_config
from kanjian.station.inspector import Inspector
from kanjian.station.pipeline import build_station
from kanjian.station.quality import QualityError
from tests.support import api as S
from tests.support.quality_frames import DEMO_BUNDLE, QualityFrames, make_quality_frames
from tests.support.quality_reference import ReferenceQuality, quality_reference_numbers
from tests.support.station_config import DECODE_CONF, parse, station_config, write_config

ROWS = 8
#: the gate's order: the first failing check decides
ORDER = ("dark", "bright", "clipped", "reference", "blurred")


def _between(low: float, high: float) -> float:
    """A threshold between two separated numbers (geometric mean: they span decades)."""
    assert 0 <= low < high, (low, high)
    return math.sqrt(max(low, 1e-3) * high)


def _oracle(
    frames: QualityFrames,
) -> tuple[dict[str, ReferenceQuality], dict[str, float], ReferenceQuality]:
    numbers = {
        name: quality_reference_numbers(decode_image_file(frames.folder / name), ROWS)
        for name in frames.kinds
    }
    ref = quality_reference_numbers(decode_image_file(frames.reference), ROWS)
    good = [numbers[n] for n, k in frames.kinds.items() if k == "good"]

    def of(kind: str) -> list[ReferenceQuality]:
        return [numbers[n] for n, k in frames.kinds.items() if k == kind]

    def diff(q: ReferenceQuality) -> float:
        d = q.reference_diff(ref)
        assert d is not None
        return d

    limits = {
        "min_mean": _between(max(q.mean for q in of("dark")), min(q.mean for q in good)),
        "max_mean": (max(q.mean for q in good) + min(q.mean for q in of("bright"))) / 2,
        "max_clipped": _between(
            max(q.dark + q.bright for q in good), min(q.dark + q.bright for q in of("clipped"))
        ),
        "max_reference_diff": _between(
            max(diff(q) for q in good), min(diff(q) for q in of("wrong"))
        ),
        "min_focus": _between(max(q.focus for q in of("blurred")), min(q.focus for q in good)),
    }
    return numbers, limits, ref


def _expected(
    q: ReferenceQuality, ref: ReferenceQuality, limits: dict[str, float]
) -> tuple[str, float, float] | None:
    """The gate's verdict from the reference's numbers: (check, value, limit) or None."""
    d = q.reference_diff(ref)
    checks = {
        "dark": (q.mean < limits["min_mean"], q.mean, limits["min_mean"]),
        "bright": (q.mean > limits["max_mean"], q.mean, limits["max_mean"]),
        "clipped": (
            q.dark + q.bright > limits["max_clipped"],
            100 * (q.dark + q.bright),
            100 * limits["max_clipped"],
        ),
        "reference": (
            d is not None and d > limits["max_reference_diff"],
            d or 0.0,
            limits["max_reference_diff"],
        ),
        "blurred": (q.focus < limits["min_focus"], q.focus, limits["min_focus"]),
    }
    for name in ORDER:
        failed, value, limit = checks[name]
        if failed:
            return name, value, limit
    return None


def _config(tmp: Path, frames: QualityFrames, limits: dict[str, float], **quality: Any) -> Path:
    section = {
        "enabled": True,
        "rows": ROWS,
        "reference": str(frames.reference),
        **limits,
        **quality,
    }
    cfg = station_config(tmp / "data", bundle=DEMO_BUNDLE, images=frames.folder, quality=section)
    return write_config(tmp / "station.yaml", cfg)


def _run(config: Path) -> tuple[Any, Any]:
    from kanjian.appliance_api.http.state import start_services

    station = build_station(load_config(config))
    state = start_services(station)
    state.loop.start()
    S.wait_for(lambda: not state.loop.alive(), 300, what="the loop to judge every frame")
    assert station.store.flush()
    return station, state


def _rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM inspections ORDER BY seq")]
        for r in rows:
            r["boxes"] = con.execute(
                "SELECT COUNT(*) FROM detections WHERE inspection_id = ?", [r["id"]]
            ).fetchone()[0]
        return rows
    finally:
        con.close()


def _metric(text: str, name: str, **labels: str) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{lab}}} (\S+)$", text, re.M)
    assert m, f"{name}{{{lab}}} not in /metrics"
    return float(m[1])


def _client(server: S.ServerThread, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def test_gate_rejects_bad_frames_and_the_model_judges_the_rest(tmp_path: Path) -> None:
    frames = make_quality_frames(tmp_path)
    numbers, limits, ref = _oracle(frames)
    config = _config(tmp_path, frames, limits)
    station, state = _run(config)
    server = S.ServerThread(state)
    try:
        rows = _rows(tmp_path / "data" / "kanjian.db")
        # one row per frame, in order
        assert [Path(r["uri"]).name for r in rows] == sorted(frames.kinds)
        model = load_model(DEMO_BUNDLE, ["cpu"], 1)
        alone = Inspector(model, conf=DECODE_CONF)  # the model without a gate
        seen = set()
        for r in rows:
            name = Path(r["uri"]).name
            q, kind = numbers[name], frames.kinds[name]
            stored = json.loads(r["quality_json"])  # every frame's numbers are kept
            assert stored["rows"] == ROWS
            for key, value in (("focus", q.focus), ("mean", q.mean), ("dark", q.dark),
                               ("bright", q.bright), ("reference_diff", q.reference_diff(ref))):  # fmt: skip
                assert stored[key] == pytest.approx(
                    value, abs=0.006 if key in ("dark", "bright") else 0.011
                )
            expected = _expected(q, ref, limits)
            if kind == "good":
                assert expected is None, (name, q)
                frame = Frame(
                    decode_image_file(frames.folder / name), 0, "cam0", datetime.now(timezone.utc)
                )
                want = alone.inspect(frame)
                assert (r["verdict"], r["reason"]) == (want.verdict.value, want.reason), name
                assert r["model_sha256"] == model.info.sha256 and r["num_detections"] == len(
                    want.detections
                )
                continue
            assert expected is not None and expected[0] == {"wrong": "reference"}.get(kind, kind), (
                name,
                expected,
            )
            check, value, limit = expected
            seen.add(check)
            assert r["verdict"] == "ERROR", (name, r["reason"])
            code, params = explain_reason(r["verdict"], r["reason"])
            assert code == f"quality_{check}", r["reason"]
            assert params == {"value": round(value, 1), "limit": round(limit, 1)}, r["reason"]
            # the model did not run: no model, no boxes
            assert r["model_sha256"] is None and r["num_detections"] == 0 and r["boxes"] == 0
            assert "quality" in json.loads(r["timings_json"]) and "infer" not in json.loads(
                r["timings_json"]
            )
        assert seen == set(ORDER)  # every check rejected a frame
        assert any(r["verdict"] != "ERROR" for r in rows)

        # metrics count the rejections per reason, as the store does
        text = httpx.get(server.url + "/metrics", timeout=60).text
        for check in ORDER:
            n = sum(1 for r in rows if r["reason"].startswith(_SENTENCE_START[check]))
            assert _metric(text, "kanjian_quality_rejected_total", reason=check) == n > 0
        last = rows[-1]
        assert (
            _metric(text, "kanjian_quality", measure="focus")
            == json.loads(last["quality_json"])["focus"]
        )

        # the live readout: the newest frame measured, and the API's inspection carries it
        tok = TokenStore(state.pool.get()).create("t-op", Role.OPERATOR, "tests").secret
        op = _client(server, tok)
        got = op.get("/api/quality").json()
        assert got["enabled"] is True and got["source"] == "station.yaml" and got["rows"] == ROWS
        assert got["min_focus"] == pytest.approx(limits["min_focus"])
        assert got["reference_wh"] == [416, 416]
        latest = got["latest"]
        assert latest["inspection_id"] == last["id"]
        assert latest["quality"] == json.loads(last["quality_json"])
        assert latest["rejected"] == (last["verdict"] == "ERROR")
        one = op.get(f"/api/inspections/{rows[1]['id']}").json()
        assert one["quality"] == json.loads(rows[1]["quality_json"])
        assert one["reason_code"] == "quality_blurred"
    finally:
        server.stop()
        station.close()
        state.pool.close_all()


_SENTENCE_START = {
    "dark": "too dark:",
    "bright": "too bright:",
    "clipped": "clipped:",
    "reference": "unlike the reference:",
    "blurred": "blurred:",
}


def test_thresholds_set_through_the_api_are_audited_and_outlive_a_restart(tmp_path: Path) -> None:
    frames = make_quality_frames(tmp_path)
    # station.yaml: measure only (no threshold), the reference set
    config = _config(tmp_path, frames, {})
    station, state = _run(config)
    server = S.ServerThread(state)
    try:
        rows = _rows(tmp_path / "data" / "kanjian.db")
        assert len(rows) == len(frames.kinds) and all(r["quality_json"] for r in rows)
        assert not any(r["reason"].startswith(tuple(_SENTENCE_START.values())) for r in rows)
        ts = TokenStore(state.pool.get())
        eng = _client(server, ts.create("t-eng", Role.ENGINEER, "tests").secret)
        op = _client(server, ts.create("t-op", Role.OPERATOR, "tests").secret)
        assert op.put("/api/quality", json={"enabled": True}).status_code == 403
        r = eng.put("/api/quality", json={"enabled": True, "min_focuss": 10})
        assert r.status_code == 422 and "min_focuss" in r.text
        r = eng.put("/api/quality", json={"enabled": True, "min_mean": 100, "max_mean": 50})
        assert r.status_code == 422 and "min_mean" in r.text
        # a focus no frame reaches: every frame not rejected for exposure or reference is blurred
        r = eng.put("/api/quality", json={"enabled": True, "min_focus": 1e6, "max_mean": 250})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["source"] == "api" and out["set_by"] == "t-eng" and out["min_focus"] == 1e6
        audit = station.store.db.execute(
            "SELECT actor, detail_json FROM audit WHERE action = 'quality.set'").fetchall()  # fmt: skip
        assert len(audit) == 1 and audit[0][0] == "t-eng"
        detail = json.loads(audit[0][1])
        assert detail["old"]["min_focus"] is None and detail["new"]["min_focus"] == 1e6
    finally:
        server.stop()
        station.close()
        state.pool.close_all()
    # a restart (same station.yaml, same data): the API's settings judge again
    station, state = _run(config)
    try:
        gate = station.inspector.quality
        assert gate.origin == "api" and gate.settings.min_focus == 1e6
        rows = _rows(tmp_path / "data" / "kanjian.db")[len(frames.kinds) :]
        assert len(rows) == len(frames.kinds)
        for r in rows:
            kind = frames.kinds[Path(r["uri"]).name]
            if kind == "bright":
                assert r["reason"].startswith("too bright: mean "), r["reason"]
            else:
                assert r["verdict"] == "ERROR" and r["reason"].startswith("blurred: focus "), r[
                    "reason"
                ]
        # back to station.yaml's, audited
        gate = station.state.quality.reset(_actor())
        assert gate.origin == "station.yaml" and gate.settings.min_focus is None
        assert station.inspector.quality is gate
        assert station.store.db.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'quality.reset'").fetchone()[0] == 1  # fmt: skip
    finally:
        station.close()
        state.pool.close_all()


def _actor() -> Any:
    from kanjian.station.state.audit import Actor

    return Actor(name="cli:test", role="admin")


def test_config_mistakes_are_refused_clearly(tmp_path: Path) -> None:
    base = station_config(tmp_path / "data", bundle=DEMO_BUNDLE)
    with pytest.raises(
        ConfigError, match=r"quality\.min_focuss: unknown key .*did you mean 'min_focus'"
    ):
        parse({**base, "quality": {"min_focuss": 3}})
    with pytest.raises(ConfigError, match="max_reference_diff needs a reference image"):
        parse({**base, "quality": {"max_reference_diff": 3}})
    with pytest.raises(ConfigError, match="low_clip"):
        parse({**base, "quality": {"low_clip": 200, "high_clip": 100}})
    with pytest.raises(ConfigError, match=r"quality\.max_clipped"):
        parse({**base, "quality": {"max_clipped": 5}})  # a fraction, not percent
    assert parse(base).quality.enabled is False  # off unless asked for
    # a reference that cannot be read stops the start, naming the file
    (tmp_path / "bad.png").write_bytes(b"not an image")
    cfg = {**base, "quality": {"enabled": True, "reference": str(tmp_path / "bad.png")}}
    with pytest.raises(QualityError, match=r"quality\.reference: .*bad\.png"):
        build_station(load_config(write_config(tmp_path / "station.yaml", cfg)))


def test_a_station_without_the_section_measures_nothing(tmp_path: Path) -> None:
    frames = make_quality_frames(tmp_path)
    cfg = station_config(tmp_path / "data", bundle=DEMO_BUNDLE, images=frames.folder)
    station = build_station(load_config(write_config(tmp_path / "station.yaml", cfg)))
    try:
        assert station.inspector.quality.enabled is False
        station.run()
        assert station.store.flush()
        rows = _rows(tmp_path / "data" / "kanjian.db")
        assert len(rows) == len(frames.kinds)
        assert all(r["quality_json"] is None for r in rows)
        assert all("quality" not in json.loads(r["timings_json"]) for r in rows)
        assert all(r["model_sha256"] is not None for r in rows)  # the model judged every one
        assert {Verdict(r["verdict"]) for r in rows} <= {Verdict.PASS, Verdict.FAIL, Verdict.REVIEW}
    finally:
        station.close()


def test_kanjian_inspect_applies_station_yaml_gate(tmp_path: Path) -> None:
    frames = make_quality_frames(tmp_path)
    numbers, limits, _ = _oracle(frames)
    config = _config(tmp_path, frames, limits)
    names = sorted(frames.kinds)[:2]  # a good take, then it blurred
    assert [frames.kinds[n] for n in names] == ["good", "blurred"]
    r = S.kanjian("inspect", "-c", str(config), "--json", *(str(frames.folder / n) for n in names))
    assert r.returncode == 1, r.stdout + r.stderr  # a frame was not judged, as for any ERROR
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [Path(x["image"]).name for x in lines] == names
    good, blurred = lines
    assert good["verdict"] in ("PASS", "FAIL", "REVIEW") and good["quality"]["rows"] == ROWS
    assert blurred["verdict"] == "ERROR" and blurred["reason"].startswith("blurred: focus ")
    assert blurred["quality"]["focus"] == pytest.approx(numbers[names[1]].focus, abs=0.011)
