"""Bundles of anomaly models (tests/support/anomaly_model.py, a real ONNX model made here):
``write_bundle`` writes the calibration and a golden set of clear good and defective parts
with their raw scores and region counts; ``kanjian model check`` passes it and names every
image whose score other weights move; a station refuses to register such a bundle.

The part is a flat grey plate (plus camera noise) so that a pasted patch of grey ``v``
scores exactly ``|v - 128| / 255``: scores and region counts have an oracle (the
model's NumPy twin, and how many patches were pasted)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from kanjian.inference import bundle as b
from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.golden import check_bundle
from kanjian.inference.golden_set import GoldenImage, GoldenSet
from kanjian.inference.heads import head_for
from tests.support.anomaly_model import (
    IMGSZ,
    export_onnx,
    paste_patch,
    reference,
    template,
    write_anomaly_bundle,
)

KANJIAN = str(Path(sys.executable).parent / "kanjian")
#: the part: 300 x 416 (rows, columns), so the model's input pads it top and bottom
PART = np.full((300, 416, 3), 128, np.uint8)
#: defects: x1, y1, x2, y2 (exclusive) in source pixels, and their grey
CRACK = (220, 120, 280, 170)
SPOTS = ((40, 40, 100, 90), (300, 200, 370, 260))
#: how many images the golden set keeps: 2 lowest, 3 highest
COUNT = 5


def _noisy(image: NDArray[np.uint8], seed: int) -> NDArray[np.uint8]:
    noise = np.random.default_rng(seed).integers(-3, 4, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _write(path: Path, image: NDArray[np.uint8]) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def twin_score(image: NDArray[np.uint8], mu: NDArray[np.float32]) -> float:
    """The raw score the model's NumPy twin gives ``image``."""
    tensor, _ = head_for("anomaly").preprocess(image, IMGSZ)
    return reference(tensor, mu)[0]


@pytest.fixture(scope="module")
def mu() -> NDArray[np.float32]:
    return template(PART)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Candidate images by role. ``good/000.png`` and ``defect/crack/000.png`` share a name."""
    root = tmp_path_factory.mktemp("parts")
    crack = paste_patch(_noisy(PART, 2), CRACK, 255)
    spots = _noisy(PART, 3)
    for box in SPOTS:
        spots = paste_patch(spots, box, 0)
    return {
        "clean": _write(root / "good" / "clean.png", PART),
        "good0": _write(root / "good" / "000.png", _noisy(PART, 0)),
        "good1": _write(root / "good" / "001.png", _noisy(PART, 1)),
        "crack": _write(root / "defect" / "crack" / "000.png", crack),
        "spots": _write(root / "defect" / "spots" / "001.png", spots),
        # review band, clear of both thresholds: (179 - 128) / 255 = 0.2
        "review": _write(root / "review" / "clear.png", paste_patch(PART, CRACK, 179)),
        # the calibration's image threshold is set just above this one's score
        "edge": _write(root / "review" / "edge.png", paste_patch(PART, CRACK, 205)),
    }


@pytest.fixture(scope="module")
def cal(parts: dict[str, Path], mu: NDArray[np.float32]) -> AnomalyCalibration:
    import cv2

    edge = twin_score(cv2.imread(str(parts["edge"])), mu)
    t = round(edge + 0.001, 6)  # the edge part grazes the threshold: within its margin
    return AnomalyCalibration(
        review_threshold=0.1, image_threshold=t, pixel_threshold=t, min_region_px=4
    )


@pytest.fixture(scope="module")
def bundle(
    parts: dict[str, Path],
    mu: NDArray[np.float32],
    cal: AnomalyCalibration,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    from kanjian.training.package import write_bundle

    tmp = tmp_path_factory.mktemp("bundle")
    onnx = export_onnx(mu, tmp / "exported.onnx")
    write_bundle(
        onnx,
        tmp / "bundle",
        name="plate",
        version="1",
        thresholds=b.Thresholds(),
        metrics={"image_auroc": 1.0},
        training=b.TrainingInfo(command="tests/test_anomaly_bundle.py"),
        golden_candidates=list(parts.values()),
        golden_count=COUNT,
        calibration=cal,
    )
    return tmp / "bundle"


def _golden(bundle: Path) -> GoldenSet:
    return GoldenSet.model_validate_json(
        (bundle / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).read_text(encoding="utf-8")
    )


def _kanjian(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "COLUMNS": "300"}
    return subprocess.run([KANJIAN, *args], capture_output=True, text=True, timeout=600, env=env)


def _tampered(bundle: Path, dest: Path, mu_other: NDArray[np.float32], *, rehash: bool) -> Path:
    """A copy of ``bundle`` whose model.onnx has other weights; ``rehash``: its manifest's
    sha256 rewritten to match (a re-packed bundle), so only the golden set can tell."""
    shutil.copytree(bundle, dest)
    export_onnx(mu_other, dest / b.MODEL_NAME)
    if rehash:
        m = b.read_manifest(dest)
        b.write_manifest(
            dest, m.model_copy(update={"onnx_sha256": b.sha256_file(dest / b.MODEL_NAME)})
        )
    return dest


def test_write_bundle_keeps_the_calibration_and_clear_good_and_defective_parts(
    bundle: Path, parts: dict[str, Path], mu: NDArray[np.float32], cal: AnomalyCalibration
) -> None:
    import cv2

    from kanjian.training.anomaly_golden import golden_line

    manifest = b.read_manifest(bundle)
    assert manifest.task == "anomaly" and manifest.calibration == cal
    raw = json.loads((bundle / b.MANIFEST_NAME).read_text(encoding="utf-8"))
    assert AnomalyCalibration.model_validate(raw["calibration"]) == cal
    golden = _golden(bundle)
    # two lowest (the clean part and the quieter noisy one), three highest; the edge
    # part scores above the review part but lies within the margin of the threshold
    twin = {k: twin_score(cv2.imread(str(p)), mu) for k, p in parts.items()}
    quiet = min(("good0", "good1"), key=twin.__getitem__)
    want = sorted(["clean", quiet, "crack", "spots", "review"], key=twin.__getitem__)
    assert twin["edge"] > twin["review"] and abs(twin["edge"] - cal.image_threshold) < 0.002
    # two chosen images of one name (000.png or 001.png) get their folder's name before it
    chosen = [parts[k] for k in want]
    clash = {q.name for q in chosen if [c.name for c in chosen].count(q.name) > 1}
    assert clash
    assert [g.file for g in golden.images] == [
        f"{q.parent.name}_{q.name}" if q.name in clash else q.name for q in chosen
    ]
    for g, k in zip(golden.images, want, strict=True):
        assert g.score == pytest.approx(twin[k], abs=1e-5), k
        assert (bundle / b.GOLDEN_DIR / g.file).read_bytes() == parts[k].read_bytes()
    regions = {"clean": 0, quiet: 0, "review": 0, "crack": 1, "spots": 2}
    assert [g.regions for g in golden.images] == [regions[k] for k in want]
    assert golden.score_rtol == 1e-2
    assert golden.score_atol == pytest.approx(1e-3 * cal.image_threshold)
    assert golden_line(golden, cal) == (
        f"golden set: 5 images, 2 good, 1 review, 2 defective by raw score "
        f"({min(g.score or 0 for g in golden.images):.4g} to "
        f"{max(g.score or 0 for g in golden.images):.4g}), 5 region counts checked"
    )
    # every candidate, the edge part too: its map grazes the pixel threshold, so its
    # region count is not recorded (another execution provider could find one region)
    from kanjian.training.anomaly_golden import write_anomaly_golden

    every = bundle.parent / "every"
    shutil.copytree(bundle, every)
    full = write_anomaly_golden(every, list(parts.values()), count=len(parts))
    assert [g.regions is None for g in full.images] == [g.file == "edge.png" for g in full.images]
    written = json.loads((every / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).read_text(encoding="utf-8"))
    edge = next(i for i in written["images"] if i["file"] == "edge.png")
    assert edge["score"] == pytest.approx(twin["edge"], abs=1e-5) and "regions" not in edge
    assert check_bundle(every).ok


def test_model_check_passes_and_names_each_image_other_weights_move(
    bundle: Path, parts: dict[str, Path], tmp_path: Path
) -> None:
    import cv2

    ok = _kanjian("model", "check", str(bundle))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"OK {bundle}: {COUNT} golden images reproduced on CPUExecutionProvider" in ok.stdout
    # other weights: the template of a slightly darker plate
    mu_other = template(np.full_like(PART, 118))
    swapped = _tampered(bundle, tmp_path / "swapped", mu_other, rehash=False)
    r = _kanjian("model", "check", str(swapped))
    assert r.returncode == 1 and "sha256" in r.stdout and "!= manifest" in r.stdout, r.stdout
    repacked = _tampered(bundle, tmp_path / "repacked", mu_other, rehash=True)
    r = _kanjian("model", "check", str(repacked))
    assert r.returncode == 1, r.stdout
    golden = _golden(bundle)
    fails = [line for line in r.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) >= COUNT, r.stdout  # every image's score moved
    pattern = re.compile(
        r"FAIL (?P<file>\S+): raw anomaly score expected (?P<exp>\S+), got (?P<got>\S+) "
        r"\(allowed difference (?P<tol>\S+)\): other weights"
    )
    seen = {}
    for line in fails:
        m = pattern.match(line)
        if m:
            seen[m["file"]] = m
    assert len(seen) == COUNT, r.stdout
    for g in golden.images:
        m = seen[g.file]  # named as in golden/expected.json
        assert float(m["exp"]) == pytest.approx(g.score, rel=1e-5)
        image = cv2.imread(str(repacked / b.GOLDEN_DIR / g.file))
        assert float(m["got"]) == pytest.approx(twin_score(image, mu_other), abs=1e-5)
        assert float(m["tol"]) == pytest.approx(golden.score_tolerance(g.score or 0), rel=1e-2)


def test_score_tolerance_and_region_counts_as_recorded(bundle: Path, tmp_path: Path) -> None:
    golden = _golden(bundle)
    top = golden.images[-1]  # the spots: 2 regions
    assert top.score is not None and top.regions == 2
    tol = golden.score_tolerance(top.score)
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({"score": top.score + 0.9 * tol}, []),
        ({"score": top.score - 0.9 * tol}, []),
        (
            {"score": top.score + 1.5 * tol},
            [f"{top.file}: raw anomaly score expected {top.score + 1.5 * tol:.6g}, got "],
        ),
        (
            {"regions": 3},
            [f"{top.file}: defect regions at the pixel threshold expected 3, got 2"],
        ),
        ({"regions": None}, []),  # not recorded: not checked
        # written before scores: the regions compared as detect compares boxes
        ({"score": None, "regions": None}, [f"{top.file}: expected 0 detections, got 2"]),
    ]
    for i, (change, want) in enumerate(cases):
        d = shutil.copytree(bundle, tmp_path / str(i))
        images = [*golden.images[:-1], top.model_copy(update=change)]
        edited = golden.model_copy(update={"images": images})
        (d / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).write_text(edited.dump_json(), encoding="utf-8")
        report = check_bundle(d)
        got = [p.replace(str(d / b.GOLDEN_DIR) + "/", "") for p in report.problems]
        assert report.ok is (not want), (change, got)
        assert len(got) == len(want), (change, got)
        for line, start in zip(got, want, strict=True):
            assert line.startswith(start), (change, line)


def test_a_station_refuses_the_repacked_bundle_and_activates_the_good_one(
    bundle: Path, tmp_path: Path
) -> None:
    from kanjian.inference.model import load_model
    from kanjian.station.config import DEMO_MODEL, default_config
    from kanjian.station.inspector import Inspector
    from kanjian.station.state.audit import Actor
    from kanjian.station.state.models import RegistryError
    from kanjian.station.state.service import StationState
    from kanjian.station.store import DB_NAME
    from tests.support.api import pack

    data = tmp_path / "data"
    state = StationState(
        default_config(data), Inspector(load_model(DEMO_MODEL, ("cpu",))), data / DB_NAME
    )
    state.startup()
    try:
        actor = Actor("tests")
        other = template(np.full_like(PART, 118))
        repacked = _tampered(bundle, tmp_path / "repacked", other, rehash=True)
        before = [e.sha256 for e in state.models.entries()]
        archive = tmp_path / "repacked.zip"
        archive.write_bytes(pack(repacked))
        with pytest.raises(RegistryError, match="golden check failed") as e:
            state.models.ingest(archive, actor)
        assert e.value.kind == "invalid"
        assert "raw anomaly score expected" in str(e.value)
        assert [e.sha256 for e in state.models.entries()] == before  # not registered
        with pytest.raises(RegistryError) as nf:
            state.models.activate(b.sha256_file(repacked / b.MODEL_NAME), actor)
        assert nf.value.kind == "not_found"
        # the bundle as written goes through the same path and judges the next frames
        archive.write_bytes(pack(bundle))
        entry, new = state.models.ingest(archive, actor)
        assert new and entry.task == "anomaly" and entry.golden_images == COUNT
        state.models.activate(entry.sha256, actor)
        model = state.inspector.model
        assert model.info.task == "anomaly" and model.info.sha256 == entry.sha256
    finally:
        state.close()


def test_an_uncalibrated_model_and_a_detect_bundle(
    mu: NDArray[np.float32], parts: dict[str, Path], tmp_path: Path
) -> None:
    from kanjian.training.anomaly_golden import write_anomaly_golden
    from kanjian.training.weak import weak_golden

    # no calibration: raw outputs are normalised already (fail 0.5); the floor follows
    plain = write_anomaly_bundle(tmp_path / "plain", mu, None)
    golden = write_anomaly_golden(plain, list(parts.values()), count=2)
    assert golden.score_atol == pytest.approx(1e-3 * 0.5)
    # the highest scores (crack 0.498, spots 0.502) lie within the margin of the fail
    # point 0.5: the highest clear one is kept instead
    assert [g.file for g in golden.images] == ["clean.png", "edge.png"]
    assert [g.regions for g in golden.images] == [0, 0] and check_bundle(plain).ok
    assert weak_golden("anomaly", golden) is None
    bare = golden.model_copy(update={"images": [GoldenImage(file="x.png")]})
    assert "1 of its 1 images have no raw anomaly score" in (weak_golden("anomaly", bare) or "")
    # a detect bundle: refused a calibration; its golden set has no anomaly keys (an
    # older station, whose golden set forbids unknown keys, still reads it)
    detect = tmp_path / "detect"
    some = AnomalyCalibration(review_threshold=1, image_threshold=2, pixel_threshold=2)
    with pytest.raises(ValueError, match="a calibration is for anomaly models"):
        _demo_bundle(detect, some)
    _demo_bundle(detect, None)
    text = (detect / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).read_text(encoding="utf-8")
    assert not {"score_rtol", "score_atol", "score", "regions"} & _keys(json.loads(text))
    assert check_bundle(detect).ok


def _demo_bundle(out: Path, calibration: AnomalyCalibration | None) -> None:
    """The demo detect model as a new bundle, golden set from two of its images."""
    from kanjian.station.config import DEMO_MODEL
    from kanjian.training.package import write_bundle

    write_bundle(
        DEMO_MODEL / b.MODEL_NAME,
        out,
        name="demo-copy",
        version="1",
        thresholds=b.Thresholds(conf=0.1),
        metrics={},
        training=b.TrainingInfo(),
        golden_candidates=sorted((DEMO_MODEL.parent / "images").glob("*.jpg"))[:3],
        golden_count=2,
        calibration=calibration,
    )


def _keys(obj: object) -> set[str]:
    """Every key of every dict in a JSON value."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()
