"""``kanjian train --task anomaly`` on a slice of the real magnetic-tile set, tiny settings.

Oracles: the bundle's ONNX file re-run by ONNX Runtime here (the report's scores),
a recount of the held-back good scores above the image threshold (the calibration),
PyTorch vs ONNX Runtime on the same images (parity), the place a defect was pasted
(localisation) and the station's own runtime loading the bundle.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from kanjian.inference import bundle as b
from kanjian.inference.model import load_model
from kanjian.training.anomaly_data import load_anomaly_dataset
from kanjian.training.anomaly_eval import calibrate
from kanjian.training.anomaly_images import load_letterboxed
from kanjian.training.anomaly_onnx import ANOMALY_OPS, export_anomaly, onnx_scores, torch_scores
from kanjian.training.anomaly_patch import PatchKNNConfig, fit_patchknn
from tests.support.anomaly_dataset import small_magnetic_tile

KANJIAN = str(Path(sys.executable).parent / "kanjian")


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KANJIAN, "train", "--task", "anomaly", "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_magnetic_tile(tmp_path_factory.mktemp("mt"))


def test_patchknn_bundle_end_to_end(data: Path, tmp_path: Path) -> None:
    run = _train(
        str(data), "--method", "patchknn", "--imgsz", "64", "--bank-size", "64",
        "--project", str(tmp_path), "--name", "tiny",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    bundle = Path(run.stdout.strip().splitlines()[-1])
    manifest = b.read_manifest(bundle)
    assert manifest.task == "anomaly" and manifest.calibration is not None
    cal = manifest.calibration
    ops = {n.op_type for n in onnx.load(str(bundle / b.MODEL_NAME)).graph.node}
    assert ops <= ANOMALY_OPS, ops - ANOMALY_OPS
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    ds = load_anomaly_dataset(data)
    calib = load_letterboxed(ds.calibration, 64)
    scores, _ = onnx_scores(bundle / b.MODEL_NAME, calib.images)
    # the report's scores are the bundle's own, image by image
    assert np.allclose(scores, [report["scores"]["calibration"][n] for n in calib.names], atol=1e-5)
    good = scores[~calib.defective]
    n_fail = int((good >= cal.image_threshold).sum())
    assert n_fail <= math.floor(0.01 * len(good))  # the FRR target holds on calibration
    assert good.max() < cal.image_threshold * (1 + 1e-6)  # ... and is not lower than needed
    assert cal.pixel_threshold <= cal.image_threshold
    for key in ("val_image_auroc", "val_pixel_auroc", "val_f1", "val_frr", "calib_val_image_auroc"):
        assert key in manifest.metrics and 0 <= manifest.metrics[key] <= 1, key
    assert manifest.metrics["parity_score_diff"] <= 1e-3
    check = subprocess.run([KANJIAN, "model", "check", str(bundle)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # the station's runtime reads it: same raw score as ONNX Runtime on the letterboxed planes
    model = load_model(bundle / b.MODEL_NAME, providers=("cpu",))
    first = ds.calibration[0].image
    pred = model.predict(cv2.imread(str(first)))
    assert pred.raw_score == pytest.approx(float(scores[0]), rel=1e-4)


def test_draem_bundle_tiny(data: Path, tmp_path: Path) -> None:
    run = _train(
        str(data), "--method", "draem-lite", "--steps", "3", "--eval-every", "2", "--batch", "4",
        "--imgsz", "64", "--project", str(tmp_path), "--name", "d",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "calib step 2: image AUROC" in run.stderr  # progress: the checks are shown
    manifest = b.read_manifest(Path(run.stdout.strip().splitlines()[-1]))
    assert manifest.training.model_extra is not None
    method = manifest.training.model_extra["method"]
    assert method["method"] == "draem-lite" and method["steps"] == 3
    assert manifest.metrics["parity_map_diff"] <= 1e-4
    # an earlier run's weights are where the next one starts (a kept checkpoint)
    pt = tmp_path / "d" / "model.pt"
    more = _train(
        str(data), "--method", "draem-lite", "--steps", "1", "--eval-every", "1", "--batch", "2",
        "--imgsz", "64", "--project", str(tmp_path), "--name", "d2", "--model", str(pt),
    )  # fmt: skip
    assert more.returncode == 0, more.stderr
    wrong = _train(
        str(data), "--method", "draem", "--steps", "1", "--imgsz", "64",
        "--project", str(tmp_path), "--name", "d3", "--model", str(pt),
    )  # fmt: skip
    assert wrong.returncode == 2 and "do not fit DRAEM-S width 1.0" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--method", "nope"],
            "unknown --method 'nope'; choose one of: draem, draem-lite, patchknn",
        ),
        (["--method", "draem"], "give --steps N or --time-hours H"),
        (["--method", "patchknn", "--imgsz", "72"], "must be a multiple of 16"),
    ],
)
def test_bad_arguments_are_named(data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    run = _train(str(data), "--project", str(tmp_path), *args)
    said = " ".join(run.stderr.replace("│", " ").split())  # typer's box wraps long lines
    assert run.returncode == 2 and message in said, run.stderr
    assert not (tmp_path / "model").exists()  # nothing started


def test_missing_dataset_and_earlier_run(data: Path, tmp_path: Path) -> None:
    run = _train(str(tmp_path / "nowhere"), "--method", "patchknn", "--project", str(tmp_path))
    assert run.returncode == 2 and "kanjian dataset import" in run.stderr, run.stderr
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("earlier work")
    run = _train(str(data), "--method", "patchknn", "--project", str(tmp_path))
    assert run.returncode == 2 and "a run is there" in run.stderr, run.stderr
    assert (tmp_path / "model" / "keep.txt").read_text() == "earlier work"


def _disk(image: np.ndarray, cy: int, cx: int, r: int, level: float) -> np.ndarray:
    out = image.copy()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = level
    return out


def test_pasted_defect_is_found_at_its_place(data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ds = load_anomaly_dataset(data)
    train = load_letterboxed(ds.train, 128)
    held = load_letterboxed([s for s in ds.calibration + ds.validation if s.kind == "good"], 128)
    model = fit_patchknn(PatchKNNConfig(bank_size=512, seed=1), train.images, log=lambda _: None)
    onnx_path = export_anomaly(model, tmp_path / "m.onnx", 128, {"method": "patchknn"})
    clean, clean_maps = onnx_scores(onnx_path, held.images)
    ts, tm = torch_scores(model, held.images)  # parity on real images at a real size
    assert np.allclose(ts, clean, rtol=1e-4) and np.abs(tm - clean_maps).max() < 1e-4
    cal = calibrate(clean, target_frr=0.0, review_frr=0.2)
    for i in range(len(held)):
        ys, xs = np.nonzero(held.valid[i])
        cy, cx = int(ys.mean()) + 9 * (i % 3 - 1), int(xs.mean()) - 7 * (i % 2)
        pasted = _disk(held.images[i], cy, cx, 6, 0.02)  # a dark pit on the tile
        _, m = onnx_scores(onnx_path, pasted[None])
        py, px = np.unravel_index(int(np.argmax(m[0])), m[0].shape)
        rise = m[0, cy, cx] - clean_maps[i, cy, cx]
        assert rise > 0.25 * (cal.image_threshold - cal.floor), (i, rise)  # found at its place
        if clean[i] < cal.review_threshold:  # nothing else on the part looks as odd ...
            assert math.hypot(py - cy, px - cx) <= 8, (
                i,
                (py, px),
                (cy, cx),
            )  # ... so it peaks there
