"""mAP50 and mAP50-95 of a detector, computed as Ultralytics' validator computes them.

NumPy only (runtime code): ``kanjian model compare`` scores bundles with it on a station
that has no torch. The arithmetic is Ultralytics 8.4's, step by step, so the numbers
equal what ``yolo val`` would print for the same predictions (the tests hold it to
``ultralytics.utils.metrics.ap_per_class``):

1. per image, :func:`match_predictions`: predictions in falling confidence take the
   unclaimed label of their class with the highest IoU, once per IoU threshold
   (0.50, 0.55, ..., 0.95); a prediction is a true positive at a threshold when that
   IoU reaches it (``BaseValidator.match_predictions``, the greedy variant);
2. over all images, :func:`average_precision`: per class with labels, precision and
   recall down the confidence-sorted predictions, the precision envelope, and the area
   under it sampled at 101 recall points by the trapezoidal rule (COCO's 101 points;
   ``compute_ap``);
3. mAP = the mean of the per-class APs over the classes present in the labels (a class
   with predictions but no label is not part of it; one with labels but no prediction
   counts 0). mAP50 is the first threshold's column, mAP50-95 the mean of all ten.

Predictions for mAP are taken at a very low confidence (Ultralytics validates at 0.001):
AP integrates over every threshold, and a cut at the deployment ``conf`` truncates it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: IoU thresholds of mAP50-95: 0.50, 0.55, ..., 0.95, float32 as Ultralytics' ``iouv``
#: (``torch.linspace(0.5, 0.95, 10)``: the same float32 values)
IOU_THRESHOLDS: NDArray[np.float32] = np.linspace(0.5, 0.95, 10).astype(np.float32)
#: the confidence Ultralytics' validator keeps predictions down to
VAL_CONF = 0.001
#: recall points the precision envelope is sampled at (COCO)
_AP_X: NDArray[np.float64] = np.linspace(0.0, 1.0, 101)
_EPS = 1e-16


@dataclass(frozen=True)
class ImageMatches:
    """One image's predictions scored against its labels.

    Attributes:
        tp: ``(n, t)`` bool: prediction ``i`` is a true positive at threshold ``j``.
        confidence: ``(n,)`` prediction confidences: float32 (the model's), an empty
            float64 array when there is none, as Ultralytics' validator keeps them (the
            sort that orders equal confidences depends on the dtype of the whole set).
        pred_class: ``(n,)`` int64 predicted class ids.
        target_class: ``(m,)`` int64 class ids of the image's labels.
    """

    tp: NDArray[np.bool_]
    confidence: NDArray[np.float32] | NDArray[np.float64]
    pred_class: NDArray[np.int64]
    target_class: NDArray[np.int64]


@dataclass(frozen=True)
class ClassAP:
    """One class's average precision.

    Attributes:
        class_id, class_name: which class.
        labels: label boxes of the class over all images.
        predictions: predicted boxes of the class (at the confidence they were taken at).
        ap50: AP at IoU 0.5; None when the class has no label (not part of the mAP).
        ap50_95: mean AP over IoU 0.50:0.95; None likewise.
    """

    class_id: int
    class_name: str
    labels: int
    predictions: int
    ap50: float | None
    ap50_95: float | None


@dataclass(frozen=True)
class MapResult:
    """Mean average precision over a labelled set (JSON-ready via ``dataclasses.asdict``).

    Attributes:
        map50, map50_95: means over the classes that have labels; None when no image
            has a label (Ultralytics prints 0 then; there is nothing to measure).
        classes: every class of the model, in class-id order.
        images: images scored.
        labels, predictions: boxes over all images.
    """

    map50: float | None
    map50_95: float | None
    classes: tuple[ClassAP, ...]
    images: int
    labels: int
    predictions: int


def ultralytics_iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(n, m)`` IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes, as Ultralytics' ``box_iou``.

    float32 throughout and ``1e-7`` added to the union, operation for operation: a label
    and a prediction at exactly IoU 0.5 (integer pixel boxes) then fall on the same side
    of the threshold as in ``yolo val`` (:func:`kanjian.inference.matching.box_iou`,
    float64 without the epsilon, would count it a hit).
    """
    a1, a2 = a[:, None, :2], a[:, None, 2:]
    b1, b2 = b[None, :, :2], b[None, :, 2:]
    wh = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None)
    wh1, wh2 = a2 - a1, b2 - b1
    inter = wh[..., 0] * wh[..., 1]
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter + np.float32(1e-7)
    iou: NDArray[np.float32] = (inter / union).astype(np.float32, copy=False)
    return iou


def match_predictions(
    pred_xyxy: NDArray[Any],
    pred_conf: NDArray[Any],
    pred_class: NDArray[Any],
    gt_xyxy: NDArray[Any],
    gt_class: NDArray[Any],
    iou_thresholds: NDArray[np.float32] = IOU_THRESHOLDS,
) -> ImageMatches:
    """Score one image's predictions against its labels (Ultralytics' greedy matching).

    Args:
        pred_xyxy: ``(n, 4)`` predicted boxes, pixels ``x1, y1, x2, y2``.
        pred_conf: ``(n,)`` confidences; predictions are visited in falling confidence
            (a stable sort: ties keep their input order, as NMS output has them).
        pred_class: ``(n,)`` class ids.
        gt_xyxy: ``(m, 4)`` label boxes, same pixels.
        gt_class: ``(m,)`` label class ids.
        iou_thresholds: ``(t,)``; default 0.50:0.95:0.05.

    Returns:
        :class:`ImageMatches` with ``tp`` in the input order of the predictions.
    """
    n, m, t = len(pred_xyxy), len(gt_xyxy), len(iou_thresholds)
    conf = np.asarray(pred_conf, np.float32).reshape(n) if n else np.zeros(0)
    pcls = np.asarray(pred_class, np.int64).reshape(n)
    gcls = np.asarray(gt_class, np.int64).reshape(m)
    tp = np.zeros((n, t), bool)
    if n and m:
        order = np.argsort(-conf, kind="stable")
        iou = ultralytics_iou(
            np.asarray(gt_xyxy, np.float32).reshape(m, 4),
            np.asarray(pred_xyxy, np.float32).reshape(n, 4)[order],
        )
        # other classes never match
        iou = iou * (gcls[:, None] == pcls[order][None, :]).astype(np.float32)
        claimed = np.zeros((m, t), bool)  # label k taken at threshold j
        cols = np.arange(t)
        for j in np.flatnonzero((iou >= iou_thresholds.min()).any(axis=0)):
            available = np.where(claimed, np.float32(0), iou[:, j, None])  # (m, t) float32
            k = available.argmax(axis=0)  # best unclaimed label per threshold
            hit = available[k, cols] >= iou_thresholds
            tp[order[j]] = hit
            claimed[k, cols] |= hit
    return ImageMatches(tp, conf, pcls, gcls)


def interpolated_ap(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """Area under the precision envelope, 101-point interpolation (Ultralytics' ``compute_ap``).

    Args:
        recall, precision: ``(k,)`` float64 along the confidence-sorted predictions.

    The curve is closed with the last recall at precision 0 and recall 1 at precision 0
    (recall the model never reaches adds nothing), made monotone from the right, sampled
    at recall 0, 0.01, ..., 1 and integrated with the trapezoidal rule.
    """
    last = recall[-1] if len(recall) else 1.0
    mrec = np.concatenate(([0.0], recall, [last], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    y = np.interp(_AP_X, mrec, mpre)
    # numpy's trapezoid (trapz before 2.0), written out: the same sum in the same order
    return float((np.diff(_AP_X) * (y[1:] + y[:-1]) / 2.0).sum())


def average_precision(
    tp: NDArray[np.bool_],
    confidence: NDArray[np.float32] | NDArray[np.float64],
    pred_class: NDArray[np.int64],
    target_class: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per-class AP at each IoU threshold over a whole set (Ultralytics' ``ap_per_class``).

    Args:
        tp: ``(n, t)`` bool, every prediction of every image (:func:`match_predictions`).
        confidence: ``(n,)`` float; pred_class: ``(n,)`` int64.
        target_class: ``(m,)`` int64, every label of every image.

    Returns:
        ``(classes, ap)``: the class ids present in ``target_class``, sorted, ``(c,)``
        int64; and their AP, ``(c, t)`` float64 (0 for a class without predictions).
    """
    order = np.argsort(-confidence)  # Ultralytics' own (unstable) sort: same tie order
    tp, confidence, pred_class = tp[order], confidence[order], pred_class[order]
    classes, counts = np.unique(target_class, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, c in enumerate(classes):
        mine = pred_class == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (counts[ci] + _EPS)
        precision = tpc / (tpc + fpc)
        for j in range(tp.shape[1]):
            ap[ci, j] = interpolated_ap(recall[:, j], precision[:, j])
    return classes.astype(np.int64), ap


def mean_average_precision(images: Iterable[ImageMatches], class_names: Sequence[str]) -> MapResult:
    """mAP50, mAP50-95 and per-class AP over ``images`` (each from :func:`match_predictions`).

    Args:
        images: every image of the set, labelled ones without predictions too (their
            labels count as misses) and background ones (their predictions count as
            false positives).
        class_names: the model's classes, index = class id.

    Raises:
        ValueError: a class id outside ``class_names``.
    """
    items = list(images)
    t = len(IOU_THRESHOLDS)
    tp = np.concatenate([i.tp for i in items]) if items else np.zeros((0, t), bool)
    conf = np.concatenate([i.confidence for i in items]) if items else np.zeros(0)
    pcls = np.concatenate([i.pred_class for i in items]) if items else np.zeros(0, np.int64)
    tcls = np.concatenate([i.target_class for i in items]) if items else np.zeros(0, np.int64)
    for name, ids in (("prediction", pcls), ("label", tcls)):
        bad = ids[(ids < 0) | (ids >= len(class_names))]
        if len(bad):
            raise ValueError(
                f"{name} class id {int(bad[0])} is outside the {len(class_names)} class names"
            )
    present, ap = average_precision(tp, conf, pcls, tcls)
    row = {int(c): k for k, c in enumerate(present)}
    per_class = tuple(
        ClassAP(
            class_id=c,
            class_name=name,
            labels=int((tcls == c).sum()),
            predictions=int((pcls == c).sum()),
            ap50=float(ap[row[c], 0]) if c in row else None,
            ap50_95=float(ap[row[c]].mean()) if c in row else None,
        )
        for c, name in enumerate(class_names)
    )
    return MapResult(
        map50=float(ap[:, 0].mean()) if len(present) else None,
        map50_95=float(ap.mean()) if len(present) else None,
        classes=per_class,
        images=len(items),
        labels=len(tcls),
        predictions=len(pcls),
    )
