"""Metrics for anomaly models, in numpy (no scikit-learn on an engineer's machine needed)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["auroc", "average_ranks"]


def average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of ``values`` (``(N,)``), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    # start index of each run of equal values, and the run each sorted item belongs to
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    run_of = np.cumsum(np.r_[True, sorted_v[1:] != sorted_v[:-1]]) - 1
    ranks = np.empty(len(values), np.float64)
    ranks[order] = run_rank[run_of]
    return ranks


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Mann–Whitney U on average ranks, so tied scores are handled exactly.

    Args:
        scores: ``(N,)`` higher = more anomalous.
        labels: ``(N,)`` bool or 0/1, True = anomalous.

    Raises:
        ValueError: shapes differ, a score is not finite, or one class is missing.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(np.bool_).ravel()
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("auroc: a score is NaN or infinite; check the model's output")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes; got {n_pos} anomalous and {n_neg} normal")
    r = average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
