"""An anomaly model's outputs: its map back on the frame, defect regions, the heat overlay.

The model contract (``docs/anomaly.md``, "Model contract"): one input like a detect
model's (the letterbox kernel's ``(1, 3, H, W)`` float32), two outputs, raw (higher =
more anomalous): ``score`` ``(1,)`` or ``(1, 1)`` and ``anomaly_map`` ``(1, 1, h, w)``
with ``h, w`` the input size or a fraction of it. They are told apart by rank, so their
order and names in the graph do not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference.calibration import AnomalyCalibration, pixel_threshold_raw
from kanjian.inference.types import Detections
from kanjian.kernels import Letterbox


@dataclass(frozen=True)
class AnomalyOutputs:
    """The two raw outputs of one frame.

    Attributes:
        score: raw image score.
        amap: ``(h, w)`` float32 raw map at the model's output size.
    """

    score: float
    amap: NDArray[np.float32]


def split_outputs(outputs: Sequence[NDArray[np.float32]]) -> AnomalyOutputs:
    """Find ``score`` (rank <= 2, one value) and ``anomaly_map`` (rank 4) of a batch of one.

    Raises:
        ValueError: the outputs are not one score and one ``(1, 1, h, w)`` map.
    """
    maps = [np.asarray(o) for o in outputs if np.ndim(o) == 4]
    scores = [np.asarray(o) for o in outputs if np.ndim(o) <= 2]
    if len(maps) != 1 or len(scores) != 1 or scores[0].size != 1 or maps[0].shape[:2] != (1, 1):
        shapes = ", ".join(str(np.shape(o)) for o in outputs)
        raise ValueError(
            "anomaly models must have two outputs, score (1,) and anomaly_map (1, 1, h, w); "
            f"this one has {shapes}"
        )
    return AnomalyOutputs(float(scores[0].reshape(())), maps[0][0, 0].astype(np.float32))


def map_to_source(amap: NDArray[np.float32], geom: Letterbox) -> NDArray[np.float32]:
    """A model-output map -> ``(src_h, src_w)`` float32 on the frame.

    Resized (bilinear) to the model input first when smaller, then the letterbox
    padding is cut off and the rest resized to the frame, as the segment decoder does
    with mask prototypes.
    """
    full = amap
    if amap.shape != (geom.dst_h, geom.dst_w):
        full = np.asarray(
            cv2.resize(amap, (geom.dst_w, geom.dst_h), interpolation=cv2.INTER_LINEAR), np.float32
        )
    crop = np.ascontiguousarray(
        full[geom.pad_top : geom.pad_top + geom.new_h, geom.pad_left : geom.pad_left + geom.new_w]
    )
    out = cv2.resize(crop, (geom.src_w, geom.src_h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, np.float32)


def regions(
    raw_map: NDArray[np.float32],
    norm_map: NDArray[np.float32],
    geom: Letterbox,
    calibration: AnomalyCalibration | None,
    max_det: int,
) -> Detections:
    """Defect regions: 8-connected components of ``raw_map >= pixel threshold``.

    Args:
        raw_map, norm_map: ``(H, W)`` float32 raw and normalised maps on the frame.
        max_det: most regions kept (the strongest).

    Returns:
        One detection per region of at least ``min_region_px`` model-input pixels, class 0:
        ``xyxy`` its bounding box (source pixels, exclusive right/bottom edge),
        ``confidence`` its highest normalised value, ``masks`` ``(n, H, W)`` bool.
    """
    fg = (raw_map >= pixel_threshold_raw(calibration)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    min_input_px = 16.0 if calibration is None else calibration.min_region_px
    min_area = min_input_px / max(geom.gain_x * geom.gain_y, 1e-12)
    found: list[tuple[float, int]] = []
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            continue
        x, y, w, h = (int(v) for v in stats[i, :4])
        inside = labels[y : y + h, x : x + w] == i
        found.append((float(norm_map[y : y + h, x : x + w][inside].max()), i))
    found.sort(key=lambda t: -t[0])
    found = found[:max_det]
    if not found:
        return Detections.empty()
    masks = np.zeros((len(found), *raw_map.shape), bool)
    xyxy = np.zeros((len(found), 4), np.float32)
    for k, (_, i) in enumerate(found):
        x, y, w, h = (int(v) for v in stats[i, :4])
        masks[k, y : y + h, x : x + w] = labels[y : y + h, x : x + w] == i
        xyxy[k] = (x, y, x + w, y + h)
    return Detections(
        xyxy=xyxy,
        confidence=np.array([c for c, _ in found], np.float32),
        class_id=np.zeros(len(found), np.int32),
        masks=masks,
    )


def heat_overlay(
    img: NDArray[np.uint8],
    norm_map: NDArray[np.float32] | None,
    where: NDArray[np.bool_],
    alpha: float = 0.5,
) -> NDArray[np.uint8]:
    """``img`` with a JET colour map of ``norm_map`` blended in where ``where`` is set.

    Args:
        img: ``(H, W, 3)`` BGR uint8.
        norm_map: ``(H, W)`` float32 in ``[0, 1]``; ``None``: a flat red tint.
        where: ``(H, W)`` bool, the pixels to colour (the defect regions).
    """
    if not where.any():
        return img
    if norm_map is None:
        heat = np.zeros_like(img)
        heat[...] = (0, 0, 255)
    else:
        level = np.clip(norm_map * 255.0, 0, 255).astype(np.uint8)
        heat = cv2.applyColorMap(level, cv2.COLORMAP_JET)
    out = img.copy()
    mixed = cv2.addWeighted(heat, alpha, img, 1 - alpha, 0)
    out[where] = mixed[where]
    return out
