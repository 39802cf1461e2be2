"""Compare two sets of detections: the oracle check shared by golden sets and parity tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.types import Detections


def box_iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """``(n, m)`` IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    lt = np.maximum(a64[:, None, :2], b64[None, :, :2])
    rb = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a64[:, 2:] - a64[:, :2]).prod(axis=1)
    area_b = (b64[:, 2:] - b64[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class MatchReport:
    """How well ``actual`` reproduces ``expected``.

    Attributes:
        expected, actual: detection counts.
        matched: pairs with the same class, IoU >= min_iou and |dconf| <= max_conf_diff.
        min_iou_seen: smallest IoU among matched pairs (1.0 when none).
        max_conf_diff_seen: largest |dconf| among matched pairs (0.0 when none).
    """

    expected: int
    actual: int
    matched: int
    min_iou_seen: float
    max_conf_diff_seen: float

    @property
    def equal(self) -> bool:
        """Same count and every detection matched."""
        return self.expected == self.actual == self.matched


def match_detections(
    expected: Detections,
    actual: Detections,
    min_iou: float = 0.99,
    max_conf_diff: float = 1e-3,
    min_mask_iou: float | None = None,
) -> MatchReport:
    """Greedy one-to-one matching, strongest expected detection first.

    ``min_mask_iou``: when given, a pair must also have mask IoU >= it; a side
    with masks against one without never matches (a decoder that lost them).
    """
    n, m = len(expected), len(actual)
    if n == 0 or m == 0:
        return MatchReport(n, m, 0, 1.0, 0.0)
    iou = box_iou(expected.xyxy, actual.xyxy)
    same = expected.class_id[:, None] == actual.class_id[None, :]
    dconf = np.abs(expected.confidence[:, None].astype(np.float64) - actual.confidence[None, :])
    ok = same & (iou >= min_iou) & (dconf <= max_conf_diff)
    if min_mask_iou is not None:
        ok &= _mask_ok(expected.masks, actual.masks, ok, min_mask_iou)
    used = np.zeros(m, bool)
    matched, ious, diffs = 0, [], []
    for i in np.argsort(-expected.confidence, kind="stable"):
        cand = np.flatnonzero(ok[i] & ~used)
        if len(cand) == 0:
            continue
        j = cand[np.argmax(iou[i, cand])]
        used[j] = True
        matched += 1
        ious.append(float(iou[i, j]))
        diffs.append(float(dconf[i, j]))
    return MatchReport(n, m, matched, min(ious) if ious else 1.0, max(diffs) if diffs else 0.0)


def _mask_ok(
    a: NDArray[np.bool_] | None,
    b: NDArray[np.bool_] | None,
    candidates: NDArray[np.bool_],
    min_iou: float,
) -> NDArray[np.bool_]:
    """``(n, m)``: mask IoU >= ``min_iou``, computed only where ``candidates`` holds."""
    out = np.zeros_like(candidates)
    if a is None and b is None:
        return ~out  # neither side has masks: nothing to compare
    if a is None or b is None or a.shape[1:] != b.shape[1:]:
        return out
    for i, j in zip(*np.nonzero(candidates), strict=True):
        out[i, j] = mask_iou(a[i], b[j]) >= min_iou
    return out


def mask_iou(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """IoU of two boolean masks of the same shape (1.0 when both are empty)."""
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 1.0
