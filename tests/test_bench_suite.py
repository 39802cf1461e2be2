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

if TYPE_CHECKING:
    from tests.support.testmodels import TrainedModel

pytest.importorskip("ultralytics")
pytest.importorskip("matplotlib")

#: benchmarks/ is not installed: ``python -m benchmarks`` runs from the repo root
REPO = Path(__file__).resolve().parents[1]


def _summary_ok(s: dict[str, Any]) -> None:
    assert s["n"] >= 1
    assert s["min"] <= s["p10"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]


def test_quick_suite_writes_json_markdown_and_chart(
    detect_model: TrainedModel, tmp_path: Path
) -> None:
    tmp = tempfile.gettempdir()
    env = dict(
        os.environ,
        YOLO_OFFLINE="true",
        YOLO_AUTOINSTALL="false",
        YOLO_CONFIG_DIR=os.path.join(tmp, "kanjian-test-ultralytics"),
        MPLCONFIGDIR=os.path.join(tmp, "kanjian-test-ultralytics"),
    )
    argv = [
        sys.executable, "-m", "benchmarks", "--quick",
        "--out", str(tmp_path), "--name", "run",
        "--model", str(detect_model.onnx),
        "--preprocess-sizes", "64x48,96x80", "--preprocess-repeats", "2",
        "--infer-frames", "1", "--infer-rounds", "1", "--nms-repeats", "2",
        "--video-size", "320x240", "--e2e-rounds", "1", "--e2e-frames", "3", "--e2e-warm", "1",
        "--triggers", "3", "--trigger-gap-s", "0.01",
        "--store-inspections", "300", "--store-rounds", "1",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Targets:" in proc.stdout

    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["chart.png", "results.json", "results.md"]
    res = json.loads((folder / "results.json").read_text())
    assert res["mode"] == "quick" and res["errors"] == {}
    assert set(res["seconds"]) == {"preprocess", "inference", "nms", "e2e", "trigger", "store"}
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
    assert any(n.startswith("station FPS / model-alone FPS") for n in names)
    assert any(n.startswith("trigger-to-verdict") for n in names)
    for t in res["targets"]:
        if t["name"].startswith(("station", "trigger", "SQLite")):
            assert t["measured"] is not None and t["passed"] in (True, False), t

    md = (folder / "results.md").read_text()
    for heading in ("## Targets", "## Preprocessing", "## Model inference", "## Decode + NMS",
                    "## End to end", "## SQLite sink"):  # fmt: skip
        assert heading in md
    png = (folder / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
