"""The bundle the README's first command runs: it checks out, and the docs tell its truth.

The demo bundle (``station/demo/model``) is the model a new user meets first.
Its golden set must replay on this machine, and the numbers README.md and
docs/training.md quote (metrics, hash, name) must be the manifest's own.
"""

from __future__ import annotations

from pathlib import Path

from kanjian.inference.bundle import MODEL_NAME, read_manifest, sha256_file
from kanjian.inference.golden import check_bundle
from kanjian.inference.model import load_model
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from tests.support.testmodels import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[1]


def test_demo_bundle_passes_its_golden_check() -> None:
    report = check_bundle(DEMO_MODEL)
    assert report.ok, report.problems
    assert report.images >= 4


def test_demo_bundle_is_a_neu_det_detector_with_its_own_rules() -> None:
    m = read_manifest(DEMO_MODEL)
    assert m.task == "detect" and m.onnx_sha256 == sha256_file(DEMO_MODEL / MODEL_NAME)
    assert m.class_names == list(CLASS_NAMES)  # NEU-DET's six, in its order
    assert m.rules is not None  # the station judges with these unless station.yaml says
    model = load_model(DEMO_MODEL, ("cpu",))
    assert model.default_rules() == m.rules
    # the demo images are NEU-DET val images, two per class
    names = sorted(p.name.rsplit("_", 1)[0] for p in DEMO_IMAGES.glob("*.jpg"))
    assert names == sorted(2 * m.class_names)


def test_readme_and_training_doc_quote_the_manifest() -> None:
    m = read_manifest(DEMO_MODEL)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    map50, map5095 = f"{m.metrics['mAP50']:.3f}", f"{m.metrics['mAP50-95']:.3f}"
    assert f"mAP50 {map50}, mAP50-95 {map5095}" in readme
    assert f"| **{map50}** | **{map5095}** |" in doc
    assert m.onnx_sha256 in doc
    for text in (readme, doc):
        assert f"`{m.name}` v{m.version}" in text
        assert f"--name {m.name} --version {m.version}" in text  # the command that made it
