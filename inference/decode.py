"""Turn raw ONNX outputs into :class:`Detections`, the way Ultralytics does.

Each decoder reproduces the arithmetic of Ultralytics' predictors (best class
per anchor, strict ``> conf``, class-aware NMS, ``max_det``; masks from
prototypes cropped to their boxes) so the station's detections equal what
``ultralytics.YOLO(onnx).predict()`` gives for the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference.nms import batched_nms
from kanjian.inference.types import Detections
from kanjian.kernels import Letterbox, boxes_to_source

#: Ultralytics caps the candidates that go into NMS at this many
MAX_NMS = 30000


@dataclass(frozen=True)
class Candidates:
    """Boxes after confidence filter and NMS, still in model-input pixels.

    Attributes:
        xyxy: ``(n, 4)`` float32; confidence ``(n,)`` float32; class_id ``(n,)`` int32;
        extra: ``(n, k)`` float32 extra channels (mask coefficients for segment).
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    class_id: NDArray[np.int32]
    extra: NDArray[np.float32]


def select_candidates(
    pred: NDArray[np.float32], num_classes: int, conf: float, iou: float, max_det: int
) -> Candidates:
    """Confidence filter + class-aware NMS on one image's raw head output.

    Args:
        pred: ``(4 + num_classes + k, n_anchors)`` float32: ``cx, cy, w, h``
            in model-input pixels, per-class scores, then ``k`` extra channels.
    """
    x = pred.T  # (anchors, channels)
    scores = x[:, 4 : 4 + num_classes]
    class_id = scores.argmax(axis=1).astype(np.int32)
    confidence = scores[np.arange(len(x)), class_id]
    keep = confidence > np.float32(conf)
    x, class_id, confidence = x[keep], class_id[keep], confidence[keep]
    if len(x) > MAX_NMS:
        top = np.argsort(-confidence, kind="stable")[:MAX_NMS]
        x, class_id, confidence = x[top], class_id[top], confidence[top]
    half = x[:, 2:4] / np.float32(2)
    xyxy = np.concatenate([x[:, :2] - half, x[:, :2] + half], axis=1).astype(np.float32)
    kept = batched_nms(xyxy, confidence, class_id, iou)[:max_det]
    return Candidates(
        xyxy=xyxy[kept],
        confidence=confidence[kept].astype(np.float32),
        class_id=class_id[kept],
        extra=np.ascontiguousarray(x[kept, 4 + num_classes :], dtype=np.float32),
    )


def decode_detect(
    pred: NDArray[np.float32],
    num_classes: int,
    geom: Letterbox,
    conf: float,
    iou: float,
    max_det: int,
) -> Detections:
    """Detect head ``(4 + nc, anchors)`` -> detections in source pixels."""
    c = select_candidates(pred, num_classes, conf, iou, max_det)
    return Detections(
        xyxy=boxes_to_source(c.xyxy, geom), confidence=c.confidence, class_id=c.class_id
    )


def _crop(masks: NDArray[np.bool_], xyxy: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Zero each mask outside its box; a pixel index ``i`` is inside when ``x1 <= i < x2``."""
    _n, h, w = masks.shape
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[None, :]
    in_x = (cols >= xyxy[:, 0:1]) & (cols < xyxy[:, 2:3])  # (n, w)
    in_y = (rows >= xyxy[:, 1:2]) & (rows < xyxy[:, 3:4])  # (n, h)
    return masks & in_y[:, :, None] & in_x[:, None, :]


def decode_segment(
    pred: NDArray[np.float32],
    protos: NDArray[np.float32],
    num_classes: int,
    geom: Letterbox,
    input_hw: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
) -> Detections:
    """Segment head -> detections with ``(n, H, W)`` masks at source-frame size.

    Args:
        pred: ``(4 + nc + k, anchors)`` float32; ``k`` mask coefficients per box.
        protos: ``(k, mh, mw)`` float32 mask prototypes.
        input_hw: model input ``(height, width)``.

    Masks are made as Ultralytics does without ``retina_masks``: coefficients x
    prototypes, bilinear upsampling to the model input, ``> 0``, cropped to the
    box; boxes whose mask is empty are dropped. They are then cut out of the
    letterbox padding and resized to the source frame.
    """
    c = select_candidates(pred, num_classes, conf, iou, max_det)
    k, mh, mw = protos.shape
    src_h, src_w = geom.src_h, geom.src_w
    if len(c.xyxy) == 0:
        return Detections(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
            masks=np.zeros((0, src_h, src_w), bool),
        )
    logits = (c.extra @ protos.reshape(k, -1)).reshape(-1, mh, mw)
    ih, iw = input_hw
    # cv2's INTER_LINEAR on float32 uses the same half-pixel sampling as
    # torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
    up = np.stack([cv2.resize(m, (iw, ih), interpolation=cv2.INTER_LINEAR) for m in logits])
    masks = _crop(up > 0, c.xyxy)
    nonempty = masks.reshape(len(masks), -1).any(axis=1)
    masks, xyxy = masks[nonempty], c.xyxy[nonempty]
    pad_x, pad_y = geom.pad_left, geom.pad_top
    new_h, new_w = geom.new_h, geom.new_w
    # To the source frame as Ultralytics' scale_masks does it: cut the padding
    # out, bilinear resize of the binary mask, keep what is above one half.
    src_masks = np.zeros((len(masks), src_h, src_w), bool)
    for k, m in enumerate(masks):
        crop = m[pad_y : pad_y + new_h, pad_x : pad_x + new_w].astype(np.float32)
        src_masks[k] = cv2.resize(crop, (src_w, src_h), interpolation=cv2.INTER_LINEAR) > 0.5
    return Detections(
        xyxy=boxes_to_source(xyxy, geom),
        confidence=c.confidence[nonempty],
        class_id=c.class_id[nonempty],
        masks=src_masks,
    )
