"""kanjian.inference.map_metric against Ultralytics' own validator arithmetic.

The oracle is Ultralytics itself: ``BaseValidator.match_predictions`` on
``ultralytics.utils.metrics.box_iou`` per image, then ``ap_per_class``, on the same
predictions and labels. Real predictions: the detect test model and the demo bundle
on real NEU-DET images; then the edge cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from kanjian.inference.map_metric import (
    IOU_THRESHOLDS,
    VAL_CONF,
    match_predictions,
    mean_average_precision,
)
from kanjian.station.config import DEMO_MODEL
from tests.support.map_oracle import ultralytics_map

Image = tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]
NAMES = ("a", "b", "c")


def ours(images: list[Image], names: tuple[str, ...]) -> Any:
    return mean_average_precision(
        (match_predictions(p, c, k, g, gk) for p, c, k, g, gk in images), names
    )


def assert_same(images: list[Image], names: tuple[str, ...]) -> Any:
    classes, ap = ultralytics_map(images)
    got = ours(images, names)
    assert [c.class_id for c in got.classes if c.ap50 is not None] == classes.tolist()
    for row, c in zip(ap, (c for c in got.classes if c.ap50 is not None), strict=True):
        assert c.ap50 == pytest.approx(row[0], abs=1e-6), c
        assert c.ap50_95 == pytest.approx(row.mean(), abs=1e-6), c
    if len(classes):
        assert got.map50 == pytest.approx(ap[:, 0].mean(), abs=1e-6)
        assert got.map50_95 == pytest.approx(ap.mean(), abs=1e-6)
    else:
        assert got.map50 is None and got.map50_95 is None
    return got


def _real_images(model_path: Path, data_dir: Path) -> tuple[list[Image], tuple[str, ...]]:
    from kanjian.inference.model import load_model
    from kanjian.training.checks import read_bgr
    from kanjian.training.compare_data import read_labelled

    model = load_model(model_path, ("cpu",))
    labelled = read_labelled(data_dir, "val")
    images = []
    for item in labelled.images:
        d = model.predict(read_bgr(item.image), conf=VAL_CONF).detections
        images.append((d.xyxy, d.confidence, d.class_id, item.xyxy, item.class_id))
    return images, tuple(model.info.class_names)


@pytest.mark.parametrize("which", ["test model", "demo bundle"])
def test_real_predictions_on_neu_det_equal_ultralytics(which: str, detect_model: Any) -> None:
    path = detect_model.onnx if which == "test model" else DEMO_MODEL
    images, names = _real_images(path, detect_model.data_dir)
    assert len(images) >= 15 and sum(len(i[1]) for i in images) > 100  # conf 0.001: many
    got = assert_same(images, names)
    assert got.images == len(images) and got.labels == sum(len(i[4]) for i in images)
    assert all(c.ap50 is not None for c in got.classes)  # every class has val labels
    assert 0.0 < got.map50_95 < got.map50 <= 1.0  # a real, imperfect model
    # matching at 0.5 alone gives the AP50 column of the full run
    tp50 = [match_predictions(*i, iou_thresholds=IOU_THRESHOLDS[:1]).tp for i in images]
    full = [match_predictions(*i).tp[:, :1] for i in images]
    assert all((x == y).all() for x, y in zip(tp50, full, strict=True))


def _box(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y2]


def _img(
    preds: list[tuple[list[float], float, int]], labels: list[tuple[list[float], int]]
) -> Image:
    return (
        np.array([p[0] for p in preds], np.float32).reshape(-1, 4),
        np.array([p[1] for p in preds], np.float32),
        np.array([p[2] for p in preds], np.int32),
        np.array([g[0] for g in labels], np.float32).reshape(-1, 4),
        np.array([g[1] for g in labels], np.int64),
    )


def test_no_predictions_scores_zero_for_every_labelled_class() -> None:
    images = [_img([], [(_box(0, 0, 10, 10), 0), (_box(20, 20, 40, 40), 1)]), _img([], [])]
    got = assert_same(images, NAMES)
    assert (got.map50, got.map50_95) == (0.0, 0.0)
    assert got.classes[2].ap50 is None and got.classes[2].labels == 0


def test_a_class_without_labels_is_left_out_of_the_mean() -> None:
    # class 2 has predictions (false positives) but no label: not part of the mAP
    images = [
        _img(
            [(_box(0, 0, 10, 10), 0.9, 0), (_box(50, 50, 60, 60), 0.8, 2)],
            [(_box(0, 0, 10, 10), 0)],
        ),
        _img([(_box(5, 5, 9, 9), 0.7, 2)], [(_box(30, 30, 50, 50), 1)]),
    ]
    got = assert_same(images, NAMES)
    assert got.classes[2].ap50 is None and got.classes[2].predictions == 2
    assert got.classes[1].ap50 == 0.0  # labelled, never predicted


def test_all_correct_and_exact_threshold_ties_match_ultralytics() -> None:
    perfect = [
        _img([(_box(0, 0, 10, 10), 0.9, 0), (_box(20, 0, 30, 10), 0.6, 1)],
             [(_box(0, 0, 10, 10), 0), (_box(20, 0, 30, 10), 1)]),
        _img([(_box(1, 1, 5, 5), 0.8, 0)], [(_box(1, 1, 5, 5), 0)]),
    ]  # fmt: skip
    got = assert_same(perfect, NAMES[:2])
    assert got.map50 == pytest.approx(got.map50_95) == 0.995  # 101 points: 0.995, not 1
    # IoU exactly 0.5 (half the label): Ultralytics' float32 union + 1e-7 makes it a miss
    # where the union is small enough for 1e-7 to show, a hit elsewhere
    for side, want in ((1.0, 0.0), (10.0, 0.995)):
        half = [_img([(_box(0, 0, side, side / 2), 0.9, 0)], [(_box(0, 0, side, side), 0)])]
        assert assert_same(half, NAMES[:1]).map50 == pytest.approx(want), side
    # equal confidences, one hit and one miss: the order of the tie is Ultralytics'
    ties = [
        _img([(_box(0, 0, 10, 10), 0.5, 0), (_box(50, 50, 60, 60), 0.5, 0),
              (_box(20, 20, 30, 30), 0.5, 0)],
             [(_box(0, 0, 10, 10), 0), (_box(20, 20, 30, 31), 0)]),
        _img([], [(_box(0, 0, 4, 4), 0)]),
    ]  # fmt: skip
    assert_same(ties, NAMES[:1])


def test_random_sets_equal_ultralytics() -> None:
    """Many small random sets: overlapping boxes, shared confidences, several classes."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        images = []
        for _ in range(int(rng.integers(1, 6))):
            m = int(rng.integers(0, 5))
            g = rng.integers(0, 60, (m, 2)).astype(np.float32)
            gt = np.concatenate([g, g + rng.integers(4, 30, (m, 2))], axis=1)
            n = int(rng.integers(0, 8))
            jitter = rng.integers(-4, 5, (n, 4)).astype(np.float32)
            base = gt[rng.integers(0, m, n)] if m else rng.integers(0, 60, (n, 4))
            p = np.asarray(base, np.float32) + jitter
            lo, hi = np.minimum(p[:, :2], p[:, 2:]), np.maximum(p[:, :2], p[:, 2:]) + 1
            pred = np.concatenate([lo, hi], axis=1).astype(np.float32)
            conf = np.sort(rng.choice([0.2, 0.5, 0.7, 0.9], n).astype(np.float32))[::-1]
            images.append((pred, conf.copy(), rng.integers(0, 3, n), gt, rng.integers(0, 3, m)))
        assert_same(images, NAMES)


def test_a_class_id_outside_the_names_is_refused() -> None:
    with pytest.raises(ValueError, match="label class id 3 is outside the 3 class names"):
        ours([_img([], [(_box(0, 0, 1, 1), 3)])], NAMES)
