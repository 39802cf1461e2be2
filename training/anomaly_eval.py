"""Anomaly metrics and calibration: AUROC, F1, false-reject rate, thresholds.

AUROC is :func:`kanjian.training.anomaly_metrics.auroc` (tie-aware ranks, no
scikit-learn).

Calibration (:func:`calibrate`) sets, from held-back images the model never trained on:

- the image threshold at a target false-reject rate of the good images (default 1 %):
  the smallest raw score above which at most that share of good images lies;
- the review threshold at a wider share of good images (default 5 %);
- the pixel threshold: the value that maximises pixel F1 on the defect masks, kept at
  or below the image threshold so that a failed part always shows a region; without
  masks, the image threshold itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.calibration import AnomalyCalibration
from kanjian.training.anomaly_metrics import auroc

__all__ = [
    "ImageMetrics",
    "calibrate",
    "clopper_pearson_upper",
    "image_metrics",
    "pixel_auroc",
    "threshold_at_frr",
]


def pixel_auroc(
    maps: NDArray[np.float32],
    masks: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    *,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> float:
    """AUROC over pixels inside the part (``valid``): defect-mask pixels vs the rest.

    Args:
        maps: ``(N, H, W)`` raw map values on the letterboxed input.
        masks, valid: ``(N, H, W)`` bool.
        max_pixels: a seeded uniform sample of at most this many pixels is ranked
            (the sort of ~14 M pixels costs seconds and adds nothing to 3 decimals).
    """
    v = maps[valid]
    y = masks[valid]
    if len(v) > max_pixels:
        pick = np.random.default_rng(seed).choice(len(v), max_pixels, replace=False)
        v, y = v[pick], y[pick]
    if not y.any() or y.all():
        return math.nan
    return auroc(v, y)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of a rate seen ``k`` times in ``n``, at ``confidence``.

    Solved by bisection on the binomial CDF (no SciPy): the largest p with
    ``P(X <= k | n, p) >= 1 - confidence``.
    """
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:
        # sum of binomial terms in log space: n up to a few thousand stays exact enough
        logs = [
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + (i * math.log(p) if i else 0.0)
            + ((n - i) * math.log1p(-p) if n - i else 0.0)
            for i in range(k + 1)
        ]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) >= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def threshold_at_frr(good_scores: NDArray[np.floating], frr: float) -> float:
    """The smallest raw score that at most ``frr`` of ``good_scores`` reach or exceed.

    A part fails at ``score >= threshold``: with ``n`` good scores, at most
    ``floor(frr * n)`` of them may be at or above it, so the threshold sits just
    above the ``(floor(frr * n) + 1)``-th highest good score.
    """
    s = np.sort(np.asarray(good_scores, np.float64))[::-1]
    if len(s) == 0:
        raise ValueError("no good images to calibrate on; hold some back for calibration")
    allowed = math.floor(frr * len(s) + 1e-9)
    above = s[allowed]  # the highest good score that must pass
    # the next representable float above it: that score itself still passes
    return float(np.nextafter(np.float32(above), np.float32(np.inf)))


@dataclass(frozen=True)
class ImageMetrics:
    """Image-level results at one threshold.

    Attributes:
        auroc: threshold-free image AUROC.
        per_kind: AUROC of each defect kind against all good images.
        f1: F1 of "defective" at ``score >= threshold``.
        frr: share of good images at or above the threshold (false rejects).
        miss_rate: share of defective images below it (escapes).
        n_good, n_defect: images counted.
    """

    auroc: float
    per_kind: dict[str, float]
    f1: float
    frr: float
    miss_rate: float
    n_good: int
    n_defect: int


def image_metrics(
    scores: NDArray[np.floating], kinds: tuple[str, ...] | list[str], threshold: float
) -> ImageMetrics:
    """AUROC, per-kind AUROC, F1, FRR and miss rate of raw ``scores`` at ``threshold``."""
    s = np.asarray(scores, np.float64)
    k = np.asarray(kinds)
    bad = k != "good"
    flagged = s >= threshold
    tp = int((flagged & bad).sum())
    fp = int((flagged & ~bad).sum())
    fn = int((~flagged & bad).sum())
    n_good, n_def = int((~bad).sum()), int(bad.sum())
    per_kind = {
        str(kind): auroc(s[(k == kind) | ~bad], bad[(k == kind) | ~bad]) if n_good else math.nan
        for kind in sorted(set(k[bad].tolist()))
    }
    return ImageMetrics(
        auroc=auroc(s, bad) if n_good and n_def else math.nan,
        per_kind=per_kind,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
        frr=fp / n_good if n_good else math.nan,
        miss_rate=fn / n_def if n_def else math.nan,
        n_good=n_good,
        n_defect=n_def,
    )


def _best_pixel_threshold(
    maps: NDArray[np.float32], masks: NDArray[np.bool_], valid: NDArray[np.bool_], cap: float
) -> float | None:
    """The map value (<= ``cap``) with the best pixel F1 on ``masks``; None without any."""
    v = maps[valid].astype(np.float64)
    y = masks[valid]
    if not y.any():
        return None
    order = np.argsort(-v, kind="mergesort")
    vs, ys = v[order], y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    f1 = 2 * tp / (tp + fp + y.sum())
    # a threshold takes a whole run of tied values: score only the last of each run
    run_end = np.r_[vs[1:] != vs[:-1], True]
    ok = (vs <= cap) & run_end
    if not ok.any():
        return cap
    best = int(np.argmax(np.where(ok, f1, -1.0)))
    return float(vs[best])


def calibrate(
    good_scores: NDArray[np.floating],
    *,
    maps: NDArray[np.float32] | None = None,
    masks: NDArray[np.bool_] | None = None,
    valid: NDArray[np.bool_] | None = None,
    target_frr: float = 0.01,
    review_frr: float = 0.05,
    min_region_px: float = 16.0,
) -> AnomalyCalibration:
    """Thresholds from held-back images (see the module's docstring).

    Args:
        good_scores: ``(n,)`` raw image scores of held-back good images.
        maps, masks, valid: ``(N, H, W)`` raw maps, defect masks and part pixels of
            held-back images (good and defective) for the pixel threshold; None: the
            pixel threshold is the image threshold.
        target_frr: share of good parts allowed to fail.
        review_frr: share of good parts that may go to review or fail (> target_frr).
    """
    if not 0 <= target_frr < review_frr < 1:
        raise ValueError(f"need 0 <= target_frr < review_frr < 1, got {target_frr}, {review_frr}")
    g = np.asarray(good_scores, np.float64)
    image = threshold_at_frr(g, target_frr)
    review = min(threshold_at_frr(g, review_frr), image)
    floor = min(float(g.min()), review)
    if review <= floor:  # all good scores equal: keep the knots ordered
        floor = review - max(abs(review), 1.0) * 1e-3
    if review >= image:
        review = image - (image - floor) * 0.5
    pixel = image
    how = f"image: good FRR {target_frr:.0%} on {len(g)} held-back good; review: {review_frr:.0%}"
    if maps is not None and masks is not None and valid is not None:
        best = _best_pixel_threshold(maps, masks, valid, cap=image)
        if best is not None:
            pixel = best
            how += "; pixel: best pixel F1 on held-back masks, at most the image threshold"
    return AnomalyCalibration(
        image_threshold=image,
        review_threshold=review,
        pixel_threshold=pixel,
        floor=floor,
        min_region_px=min_region_px,
        method=how,
    )
