"""Non-maximum suppression that reproduces ``torchvision.ops.nms`` in NumPy.

Ultralytics runs class-aware NMS by offsetting every box by ``class_id * 7680``
pixels and calling torchvision's greedy NMS once. We do the same arithmetic in
float32 so that the station keeps exactly the boxes Ultralytics keeps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: per-class coordinate offset Ultralytics uses for class-aware NMS (pixels)
MAX_WH = 7680.0


def nms_xyxy(
    boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float
) -> NDArray[np.intp]:
    """Greedy NMS.

    Args:
        boxes: ``(n, 4)`` float32 ``x1, y1, x2, y2``.
        scores: ``(n,)`` float32.
        iou_threshold: a box is suppressed when its IoU with a kept, higher-scoring
            box is strictly greater than this (torchvision's rule).

    Returns:
        ``(k,)`` indices into ``boxes`` of the kept boxes, highest score first.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros((0,), np.intp)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    # torchvision sorts descending; a stable sort keeps ties in input order.
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    thr = np.float32(iou_threshold)
    for pos in range(n):
        i = order[pos]
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if len(rest) == 0:
            break
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > thr]] = True
    return np.asarray(keep, dtype=np.intp)


def batched_nms(
    boxes: NDArray[np.float32],
    scores: NDArray[np.float32],
    class_id: NDArray[np.int32],
    iou_threshold: float,
) -> NDArray[np.intp]:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Same shapes as :func:`nms_xyxy`, plus ``class_id`` ``(n,)`` int32.
    """
    offset = (class_id.astype(np.float32) * np.float32(MAX_WH))[:, None]
    return nms_xyxy((boxes + offset).astype(np.float32), scores, iou_threshold)
