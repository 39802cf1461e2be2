"""Decode + NMS on one raw detect-head output: kanjian against Ultralytics and OpenCV.

All three start from the same ``(4 + nc, anchors)`` float32 head output and end
with boxes in source-frame pixels (1920x1080 here):

- kanjian: :func:`kanjian.inference.decode.decode_detect` (NumPy; what the station runs);
- Ultralytics: ``torch.from_numpy`` -> ``ultralytics.utils.nms.non_max_suppression``
  -> ``ultralytics.utils.ops.scale_boxes`` (its ``postprocess`` minus ``Results``);
- OpenCV: best class per anchor, confidence filter, ``cv2.dnn.NMSBoxesBatched``,
  then the same letterbox undo in NumPy.

Random-weight models give almost no candidates, so the head output is made
synthetically with a controlled number of anchors above ``conf``, in
overlapping clusters so that NMS has real work (PITFALLS.md quotes 279).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import Summary, round_robin, summarize

KANJIAN = "kanjian decode_detect"
ULTRALYTICS = "Ultralytics non_max_suppression + scale_boxes"
OPENCV = "cv2 NMSBoxesBatched"


def synthetic_head(
    candidates: int,
    nc: int = 80,
    anchors: int = 8400,
    imgsz: int = 640,
    conf: float = 0.25,
    clusters: int = 30,
    seed: int = 0,
) -> NDArray[np.float32]:
    """A ``(4 + nc, anchors)`` head output with exactly ``candidates`` anchors above ``conf``.

    Candidates are boxes jittered around ``clusters`` centres (so many overlap
    and NMS suppresses most), each with one class scored in ``(conf, 0.95)``;
    every other score is below ``conf``.
    """
    if not 0 < candidates <= anchors:
        raise ValueError(f"candidates must be in [1, {anchors}], got {candidates}")
    rng = np.random.default_rng(seed)
    pred = np.empty((4 + nc, anchors), np.float32)
    pred[0:2] = rng.uniform(0, imgsz, (2, anchors))
    pred[2:4] = rng.uniform(4, imgsz / 4, (2, anchors))
    pred[4:] = rng.uniform(0, conf * 0.8, (nc, anchors))
    idx = rng.choice(anchors, size=candidates, replace=False)
    centres = rng.uniform(0.1 * imgsz, 0.9 * imgsz, (clusters, 2))
    sizes = rng.uniform(20, imgsz / 5, (clusters, 2))
    which = rng.integers(0, clusters, candidates)
    pred[0:2, idx] = (centres[which] + rng.normal(0, 4, (candidates, 2))).T
    pred[2:4, idx] = (sizes[which] * rng.uniform(0.85, 1.15, (candidates, 2))).T
    cls = rng.integers(0, min(nc, 6), clusters)[which]  # a cluster is one class, mostly
    pred[4 + cls, idx] = rng.uniform(conf + 0.01, 0.95, candidates)
    return pred


@dataclass(frozen=True)
class NmsRow:
    """One method at one candidate count.

    Attributes:
        method: what ran; candidates: anchors above ``conf``; kept: boxes out.
        ms: per call. vs_ultralytics: Ultralytics' median / this median.
        max_box_diff_px: largest coordinate difference to kanjian's boxes (same
            count and order expected; None when the counts differ).
    """

    method: str
    candidates: int
    kept: int
    ms: Summary
    vs_ultralytics: float
    max_box_diff_px: float | None


def _methods(
    nc: int, src_hw: tuple[int, int], dst_hw: tuple[int, int], conf: float, iou: float, max_det: int
) -> dict[str, Callable[[NDArray[np.float32]], NDArray[np.float32]]]:
    import cv2
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    from kanjian.inference.decode import decode_detect
    from kanjian.kernels import letterbox_geometry

    geom = letterbox_geometry(src_hw, dst_hw)

    def kanjian(pred: NDArray[np.float32]) -> NDArray[np.float32]:
        return decode_detect(pred, nc, geom, conf, iou, max_det).xyxy

    def ultralytics(pred: NDArray[np.float32]) -> NDArray[np.float32]:
        out = non_max_suppression(torch.from_numpy(pred[None]), conf, iou, max_det=max_det)[0]
        out[:, :4] = scale_boxes(dst_hw, out[:, :4], src_hw)
        return np.asarray(out[:, :4].numpy(), np.float32)

    def opencv(pred: NDArray[np.float32]) -> NDArray[np.float32]:
        x = pred.T
        scores = x[:, 4 : 4 + nc]
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(x)), cls]
        keep = best > conf
        x, cls, best = x[keep], cls[keep], best[keep]
        xywh = np.concatenate([x[:, :2] - x[:, 2:4] / 2, x[:, 2:4]], axis=1)
        nms_batched: Any = cv2.dnn.NMSBoxesBatched  # its stubs ask for lists; arrays work
        kept = np.asarray(
            nms_batched(xywh, best, cls.astype(np.int32), conf, iou, top_k=max_det), np.intp
        ).reshape(-1)
        b = xywh[kept]
        xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        xyxy -= np.array([geom.pad_left, geom.pad_top] * 2, np.float32)
        xyxy /= np.array([geom.new_w / src_hw[1], geom.new_h / src_hw[0]] * 2, np.float32)
        np.clip(xyxy[:, 0::2], 0, src_hw[1], out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, src_hw[0], out=xyxy[:, 1::2])
        return xyxy.astype(np.float32)

    return {KANJIAN: kanjian, ULTRALYTICS: ultralytics, OPENCV: opencv}


def _bind(
    fn: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    name: str,
    preds: list[NDArray[np.float32]],
    outs: dict[str, Any],
) -> Callable[[int], None]:
    def call(i: int) -> None:
        outs[name] = fn(preds[i % len(preds)])

    return call


def run_nms(
    candidate_counts: tuple[int, ...] = (279,),
    nc: int = 80,
    src_hw: tuple[int, int] = (1080, 1920),
    dst_hw: tuple[int, int] = (640, 640),
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    repeats: int = 100,
    warmup: int = 10,
    pool: int = 8,
) -> list[NmsRow]:
    """Time the three methods round-robin on a pool of synthetic head outputs per count.

    ``iou=0.7`` and ``max_det=300`` are Ultralytics' predict defaults.
    """
    methods = _methods(nc, src_hw, dst_hw, conf, iou, max_det)
    rows: list[NmsRow] = []
    anchors = (dst_hw[0] // 8) * (dst_hw[1] // 8) * 21 // 16  # strides 8, 16, 32
    for count in candidate_counts:
        preds = [synthetic_head(count, nc, anchors, max(dst_hw), conf, seed=s) for s in range(pool)]
        outs: dict[str, Any] = {}

        calls = {m: _bind(fn, m, preds, outs) for m, fn in methods.items()}
        times = round_robin(calls, repeats, warmup)
        # outputs of the last round, all on the same head output: compare them
        ref = outs[KANJIAN]
        ul_med = float(np.median(times[ULTRALYTICS]))
        for m, t in times.items():
            out = outs[m]
            diff = float(np.abs(out - ref).max()) if out.shape == ref.shape and len(ref) else None
            rows.append(
                NmsRow(m, count, len(out), summarize(t), ul_med / float(np.median(t)), diff)
            )
    return rows
