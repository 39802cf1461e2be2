"""The benchmark suite's quick path runs end to end on tiny sizes and writes well-formed results.

No timing is asserted: only that every section ran, reported what it measured
in the documented structure, and that the decoders agreed where they must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kanjian.inference.calibration import AnomalyCalibration

if TYPE_CHECKING:
    from tests.support.testmodels import TrainedModel

pytest.importorskip("ultralytics")
pytest.importorskip("matplotlib")

#: benchmarks/ is not installed: ``python -m benchmarks`` runs from the repo root
REPO = Path(__file__).resolve().parents[1]


def _summary_ok(s: dict[str, Any]) -> None:
    assert s["n"] >= 1
    assert s["min"] <= s["p10"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]


def _env() -> dict[str, str]:
    tmp = tempfile.gettempdir()
    return dict(
        os.environ,
        YOLO_OFFLINE="true",
        YOLO_AUTOINSTALL="false",
        YOLO_CONFIG_DIR=os.path.join(tmp, "kanjian-test-ultralytics"),
        MPLCONFIGDIR=os.path.join(tmp, "kanjian-test-ultralytics"),
    )


def test_quick_suite_writes_json_markdown_and_chart(
    detect_model: TrainedModel, tmp_path: Path
) -> None:
    env = _env()
    argv = [
        sys.executable, "-m", "benchmarks", "--quick",
        "--out", str(tmp_path), "--name", "run",
        "--model", str(detect_model.onnx),
        "--preprocess-sizes", "64x48,96x80", "--preprocess-repeats", "2",
        "--infer-frames", "1", "--infer-rounds", "1", "--nms-repeats", "2",
        "--video-size", "320x240", "--e2e-rounds", "1", "--e2e-frames", "3", "--e2e-warm", "1",
        "--triggers", "3", "--trigger-gap-s", "0.01",
        "--store-inspections", "300", "--store-rounds", "1",
        "--anomaly-model", "none", "--anomaly-methods", "patchknn",
        "--anomaly-frames", "1", "--anomaly-rounds", "1", "--anomaly-threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Targets:" in proc.stdout

    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["chart.png", "results.json", "results.md"]
    res = json.loads((folder / "results.json").read_text())
    assert res["mode"] == "quick" and res["errors"] == {}
    assert set(res["seconds"]) == {
        "preprocess", "quality", "inference", "nms", "e2e", "trigger", "store", "anomaly"
    }  # fmt: skip
    system = res["system"]
    assert system["usable_cpus"] >= 1
    assert system["versions"]["onnxruntime"] or system["versions"]["onnxruntime-gpu"]
    assert "CPUExecutionProvider" in system["ort_available_providers"]
    assert str(detect_model.onnx) in res["model"]

    # preprocessing: every method at both sizes, plus the floor
    timings = res["preprocess"]["timings"]
    assert {tuple(t["src_hw"]) for t in timings} == {(48, 64), (80, 96)}
    methods = {t["method"] for t in timings}
    assert {"kanjian CPU, 1 thread", "bandwidth floor"} <= methods
    assert any(m.startswith("Ultralytics preprocess") for m in methods)

    # the quality gate beside the letterbox, on the preprocessing sizes (issue 15)
    gate = res["quality"]["timings"]
    assert {tuple(t["src_hw"]) for t in gate} == {(48, 64), (80, 96)}
    assert {"letterbox, 1 thread", "quality gate, 8 rows", "quality gate, every row"} <= {
        t["method"] for t in gate
    }
    assert all(t["repeats"] == 2 and t["share_of_preprocess"] > 0 for t in gate)

    # inference: at least the CPU rows ran, on the CPU
    cpu_rows = [r for r in res["inference"] if r["setting"]["provider"] == "cpu"]
    assert cpu_rows and all(r["error"] is None for r in cpu_rows)
    for r in cpu_rows:
        assert r["active_provider"] == "CPUExecutionProvider" and r["batch"] == 1
        _summary_ok(r["latency_ms"])
        _summary_ok(r["fps"])

    # decode + NMS: three methods; kanjian keeps exactly Ultralytics' boxes
    nms = {r["method"]: r for r in res["nms"]}
    assert len(nms) == 3 and all(r["candidates"] == 279 for r in nms.values())
    ul = nms["Ultralytics non_max_suppression + scale_boxes"]
    kj = nms["kanjian decode_detect"]
    assert kj["kept"] == ul["kept"] > 0
    assert ul["max_box_diff_px"] is not None and ul["max_box_diff_px"] < 1e-3

    # end to end: station, model alone and Ultralytics, with FPS and stages
    e2e = res["e2e"]
    kinds = {c["kind"] for c in e2e["contenders"]}
    assert kinds == {"station", "model", "ultralytics", "decode"}
    for c in e2e["contenders"]:
        assert c["frames"] == 3
        assert c["runs_on"] == ("cv2 FFmpeg" if c["kind"] == "decode" else "CPUExecutionProvider")
        _summary_ok(c["cpu_ms_per_frame"])
        _summary_ok(c["fps"])
        assert c["fps"]["median"] > 0
    station = next(c for c in e2e["contenders"] if c["kind"] == "station")
    assert {"preprocess", "infer", "postprocess"} <= set(station["stages_ms"])
    assert any(r["denominator"].startswith("model alone") for r in e2e["ratios"])
    # triggered: all cores to the model, and (with more than one) one core left over
    trigs = e2e["triggered"]
    cpus = system["usable_cpus"]
    assert [t["setting"]["intra_op_threads"] for t in trigs] == [cpus, cpus - 1][: min(cpus, 2)]
    for trig in trigs:
        assert trig["triggers"] == 3 and trig["missed"] == 0
        _summary_ok(trig["latency_ms"])
        assert {"wait_frame", "infer", "emit_commit"} <= set(trig["stages_ms"])

    # SQLite sink: both modes, every row committed, never blocked with the default queue
    store = {r["synchronous"]: r for r in res["store"] if r["put_us"] is not None}
    assert set(store) == {"FULL", "NORMAL"}
    assert store["FULL"]["inspections"] == 300 and store["FULL"]["blocked_puts"] == 0
    (floor,) = [r for r in res["store"] if r["put_us"] is None]
    assert floor["synchronous"] == "FULL" and floor["durable_per_s"]["median"] > 0

    # targets: each named with a goal, a number and a verdict
    names = [t["name"] for t in res["targets"]]
    pre = [t for t in res["targets"] if t["name"].startswith("preprocess")]
    assert len(pre) == 4 and all(t["passed"] is None for t in pre)  # tiny sizes: not measured
    gates = [t for t in res["targets"] if t["name"].startswith("quality gate")]
    assert len(gates) == 2 and all(t["passed"] is None for t in gates)
    assert any(n.startswith("station FPS / model-alone FPS") for n in names)
    assert any(n.startswith("trigger-to-verdict") for n in names)
    for t in res["targets"]:
        if t["name"].startswith(("station", "trigger", "SQLite")):
            assert t["measured"] is not None and t["passed"] in (True, False), t

    md = (folder / "results.md").read_text()
    # anomaly: the YOLO model and PatchKNN, both ways, one thread
    rows = {(r["model"], r["way"]) for r in res["anomaly"]["rows"]}
    assert len(rows) == 4 and {m for m, _ in rows} == {m["label"] for m in res["anomaly"]["models"]}
    for heading in ("## Targets", "## Preprocessing", "## Model inference", "## Decode + NMS",
                    "## End to end", "## SQLite sink", "## Anomaly models"):  # fmt: skip
        assert heading in md
    png = (folder / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_anomaly_section_times_each_model_both_ways_beside_yolo(
    detect_model: TrainedModel, tmp_path: Path
) -> None:
    """``--only anomaly``: YOLO, a trained bundle given by its model.onnx, and the three
    untrained exports, each as ORT alone and through ``predict``, at 1 and 2 threads."""
    import cv2

    from benchmarks.anomaly_assets import magnetic_tile_image
    from kanjian.inference.model import load_model
    from tests.support.anomaly_dataset import MAGNETIC_TILE
    from tests.support.anomaly_model import template, write_anomaly_bundle

    good = cv2.imread(str(sorted((MAGNETIC_TILE / "MT_Free").glob("*.jpg"))[0]), cv2.IMREAD_COLOR)
    assert good is not None
    cal = AnomalyCalibration(review_threshold=0.1, image_threshold=0.2, pixel_threshold=0.2)
    bundle = write_anomaly_bundle(tmp_path / "tiny-bundle", template(good), cal)
    frames, rounds = 2, 2
    argv = [
        sys.executable, "-m", "benchmarks", "--only", "anomaly",
        "--out", str(tmp_path), "--name", "run", "--model", str(detect_model.onnx),
        "--anomaly-model", str(bundle / "model.onnx"),
        "--anomaly-frames", str(frames), "--anomaly-rounds", str(rounds),
        "--anomaly-threads", "1,2",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["errors"] == {} and set(res["seconds"]) == {"anomaly"}
    an = res["anomaly"]
    assert an["cpu"] == res["system"]["cpu"] and (an["frames"], an["rounds"]) == (frames, rounds)

    models = an["models"]
    assert [m["source"] for m in models] == ["suite model", "trained bundle"] + [
        "untrained export"
    ] * 3
    yolo, trained = models[0], models[1]
    assert yolo["task"] == "detect" and yolo["onnx"] == str(detect_model.onnx)
    assert all(m["task"] == "anomaly" for m in models[1:])
    # the file given, loaded as its bundle: the manifest's calibration applies
    assert trained["onnx"] == str(bundle / "model.onnx") and trained["load_path"] == str(bundle)
    assert [m["imgsz"] for m in models[2:]] == [[256, 256]] * 3
    tile = magnetic_tile_image()
    assert all(m["image"] == str(tile) for m in models[1:])
    h, w = cv2.imread(str(tile)).shape[:2]
    assert all(m["image_wh"] == [w, h] for m in models[1:])

    rows = {(r["model"], r["way"], r["threads"]): r for r in an["rows"]}
    labels = [m["label"] for m in models]
    cpus = min(2, res["system"]["usable_cpus"])
    assert set(rows) == {
        (m, way, t)
        for m in labels
        for way in ("ORT alone", "head path")
        for t in range(1, cpus + 1)
    }
    for (model, way, _t), r in rows.items():
        assert r["ms"]["n"] == frames * rounds and r["per_s"]["n"] == rounds
        _summary_ok(r["ms"])
        _summary_ok(r["per_s"])
        if model == yolo["label"]:
            assert r["vs_yolo"] is None
        else:
            assert r["vs_yolo"]["n"] == rounds and r["vs_yolo"]["median"] > 0
        if way == "head path":
            assert set(r["stages_ms"]) == {"preprocess", "infer", "postprocess"}
            assert r["found"] is not None and r["found"] >= 0
        else:
            assert r["stages_ms"] == {} and r["found"] is None
    # the regions the report counts are what the bundle finds on that frame
    expected = len(load_model(bundle, ["cpu"]).predict(cv2.imread(str(tile))).detections)
    assert rows[(trained["label"], "head path", 1)]["found"] == expected

    md = (tmp_path / "run" / "results.md").read_text()
    section = md.split("## Anomaly models beside the YOLO model", 1)[1]
    assert res["system"]["cpu"] in section
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(labels) * cpus  # header + one line per model and thread count
    for label in labels:
        assert sum(line.startswith(f"| {label} |") for line in table) == cpus
