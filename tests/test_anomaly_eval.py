"""Anomaly metrics and calibration on score distributions whose answers are known.

Oracles: a brute-force pair count for AUROC, the closed form ``1 - alpha^(1/n)`` for
the Clopper-Pearson bound with no event, and counting the good scores above a
threshold for the false-reject rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kanjian.inference.calibration import normalise
from kanjian.training.anomaly_eval import (
    calibrate,
    clopper_pearson_upper,
    image_metrics,
    pixel_auroc,
    threshold_at_frr,
)


def _pairs_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


@pytest.mark.parametrize("n", [1, 37, 69, 100, 578])
@pytest.mark.parametrize("frr", [0.0, 0.01, 0.05, 0.2])
def test_threshold_rejects_at_most_the_target_share(n: int, frr: float) -> None:
    rng = np.random.default_rng(n)
    good = rng.gamma(2.0, 1.0, n).astype(np.float32)
    t = threshold_at_frr(good, frr)
    rejected = int((good >= t).sum())
    assert rejected == math.floor(frr * n + 1e-9)  # as many as allowed, not fewer
    # and no lower threshold keeps to the target: the highest passing good score fails it
    highest_pass = good[good < t].max()
    assert int((good >= highest_pass).sum()) > math.floor(frr * n + 1e-9)


def test_calibration_on_a_known_distribution() -> None:
    good = np.arange(1, 101, dtype=np.float64)  # 1..100
    cal = calibrate(good, target_frr=0.01, review_frr=0.05)
    assert 100 >= cal.image_threshold > 99  # exactly one good part (100) fails
    assert 96 >= cal.review_threshold > 95  # five reach review or fail
    assert cal.floor == 1 and cal.pixel_threshold == cal.image_threshold
    norm = normalise(good.astype(np.float32), cal)
    assert int((norm >= 0.5).sum()) == 1 and int((norm >= 0.25).sum()) == 5


def test_pixel_threshold_best_f1_capped_at_the_image_threshold() -> None:
    # one image: the defect pixels score 5, a halo of 30 pixels scores 4, the rest 1
    maps = np.ones((1, 16, 16), np.float32)
    masks = np.zeros((1, 16, 16), np.bool_)
    masks[0, 4:8, 4:8] = True
    maps[0][masks[0]] = 5.0
    maps[0, 10:13, 0:10] = 4.0
    valid = np.ones_like(masks)
    good = np.array([0.5, 1.0, 2.0, 3.0, 6.0], np.float64)
    cal = calibrate(good, maps=maps, masks=masks, valid=valid, target_frr=0.0, review_frr=0.4)
    assert cal.pixel_threshold == 5.0  # F1 1.0 there; 4.0 would add 30 false pixels
    capped = calibrate(
        np.array([0.5, 1.0, 2.0, 3.0, 4.5, 4.5]),
        maps=maps,
        masks=masks,
        valid=valid,
        target_frr=0.0,
        review_frr=0.5,
    )
    assert capped.pixel_threshold <= capped.image_threshold


def test_aurocs_equal_the_pair_count() -> None:
    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=300), 1)  # rounding makes ties
    kinds = tuple(rng.choice(["good", "crack", "hole"], 300).tolist())
    y = np.array([k != "good" for k in kinds])
    m = image_metrics(s, kinds, threshold=0.5)
    assert m.auroc == pytest.approx(_pairs_auroc(s, y), abs=1e-12)
    for kind in ("crack", "hole"):
        sel = np.array([k in ("good", kind) for k in kinds])
        assert m.per_kind[kind] == pytest.approx(_pairs_auroc(s[sel], y[sel]), abs=1e-12)
    flagged = s >= 0.5
    assert m.frr == (flagged & ~y).sum() / (~y).sum()
    assert m.miss_rate == (~flagged & y).sum() / y.sum()
    tp, fp, fn = (flagged & y).sum(), (flagged & ~y).sum(), (~flagged & y).sum()
    assert m.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    maps = rng.normal(size=(3, 8, 8)).astype(np.float32)
    masks = rng.random((3, 8, 8)) > 0.7
    valid = rng.random((3, 8, 8)) > 0.2
    assert pixel_auroc(maps, masks, valid) == pytest.approx(
        _pairs_auroc(maps[valid], masks[valid]), abs=1e-12
    )


@pytest.mark.parametrize("n", [10, 68, 139, 300])
def test_clopper_pearson_upper(n: int) -> None:
    assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6)
    # more events, a higher bound; the bound always holds the observed rate
    bounds = [clopper_pearson_upper(k, n) for k in range(4)]
    assert bounds == sorted(bounds) and all(b >= k / n for k, b in enumerate(bounds))
