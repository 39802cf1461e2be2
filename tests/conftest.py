"""Shared fixtures: the NEU-DET data and real models trained and exported by our own code.

The three model fixtures train YOLO11n (detect / segment / classify) from the
model YAML on a few dozen NEU-DET images with :mod:`kanjian.training`, offline,
and export ONNX. Results are cached under ``<repo>/.cache/test-models/<key>``
(the key hashes the training code, library versions, recipe and images), so a
rerun is instant and a clean clone trains afresh (a few minutes on 2 cores).

Models this briefly trained are weak: use a low ``conf`` (0.05) where a test
needs detections. Segment masks are the ellipses inscribed in the VOC boxes;
classify labels are each image's most frequent box class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.api_env import env  # noqa: F401  (the API tests' station + server)
from tests.support.fleet_platform import fleet_platform  # noqa: F401  (the fleet page's tests)
from tests.support.station_log import station_dir  # noqa: F401  (a logged station, export tests)

if TYPE_CHECKING:
    from kanjian.training.layout import Task
    from tests.support.testmodels import TrainedModel

REPO = Path(__file__).resolve().parents[1]
#: CI and developers have ``shared/`` beside the checkout
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"
TEST_MODEL_CACHE = REPO / ".cache" / "test-models"


@pytest.fixture(scope="session")
def neu_det_dir() -> Path:
    """``<repo>/../shared/datasets/neu-det`` (``images/*.jpg``, ``annotations/*.xml``)."""
    if not (NEU_DET / "images").is_dir() or not (NEU_DET / "annotations").is_dir():
        pytest.fail(f"NEU-DET not found at {NEU_DET}: shared/ must sit beside the checkout")
    return NEU_DET


def _model(task: Task, neu_det: Path) -> TrainedModel:
    # imported here: collecting tests must not import torch or Ultralytics
    from tests.support.testmodels import build_test_model

    return build_test_model(task, neu_det, TEST_MODEL_CACHE)


@pytest.fixture(scope="session")
def detect_model(neu_det_dir: Path) -> TrainedModel:
    """:class:`tests.support.testmodels.TrainedModel`: YOLO11n detect, 6 NEU-DET classes."""
    return _model("detect", neu_det_dir)


@pytest.fixture(scope="session")
def segment_model(neu_det_dir: Path) -> TrainedModel:
    """YOLO11n-seg; masks learnt from ellipses inscribed in the VOC boxes."""
    return _model("segment", neu_det_dir)


@pytest.fixture(scope="session")
def classify_model(neu_det_dir: Path) -> TrainedModel:
    """YOLO11n-cls at 128 px; each image's class is its most frequent box class."""
    return _model("classify", neu_det_dir)


@pytest.fixture(scope="session")
def detect_bundle(detect_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder (model.onnx, manifest.json, golden/) of the detect test model.

    Written by :func:`kanjian.training.package.write_bundle` with default conf 0.05
    (the model is weak) and a 4-image golden set from its val split. Session-wide:
    copy it before changing it.
    """
    from kanjian.inference.bundle import Thresholds, TrainingInfo
    from kanjian.training.package import data_summary_for, write_bundle

    out = tmp_path_factory.mktemp("detect-bundle") / "bundle"
    summary, sha = data_summary_for(detect_model.data)
    write_bundle(
        detect_model.onnx,
        out,
        name="neu-det-test",
        version="0.0.1",
        thresholds=Thresholds(conf=0.05, iou=0.7),
        metrics={},
        training=TrainingInfo(command="tests/conftest.py", data_summary=summary, data_sha256=sha),
        golden_candidates=detect_model.val_images,
    )
    return out
