"""The mAP oracle: Ultralytics' own validator arithmetic on given predictions and labels."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: one image: (pred xyxy (n, 4) float32, pred conf (n,) float32, pred class (n,),
#: label xyxy (m, 4), label class (m,))
Image = tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]


def ultralytics_map(images: list[Image]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """(classes with labels, AP (c, 10)) by Ultralytics' validator code; an image is
    (pred xyxy, pred conf, pred class, label xyxy, label class), predictions in
    falling confidence as NMS hands them over."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    fake = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    stats: dict[str, list[NDArray[Any]]] = {"tp": [], "conf": [], "pred_cls": [], "target_cls": []}
    for pxyxy, conf, pcls, gxyxy, gcls in images:
        if len(pcls) == 0 or len(gcls) == 0:
            tp = np.zeros((len(pcls), 10), bool)
        else:
            iou = box_iou(torch.from_numpy(gxyxy.astype(np.float32)), torch.from_numpy(pxyxy))
            tp = BaseValidator.match_predictions(
                fake,  # type: ignore[arg-type]
                torch.from_numpy(pcls.astype(np.float32)),
                torch.from_numpy(gcls.astype(np.float32)),
                iou,
            ).numpy()
        stats["tp"].append(tp)
        # as DetectionValidator.update_metrics: an image without predictions adds float64
        stats["conf"].append(conf if len(pcls) else np.zeros(0))
        stats["pred_cls"].append(pcls.astype(np.float32) if len(pcls) else np.zeros(0))
        stats["target_cls"].append(gcls.astype(np.float32))
    cat = {k: np.concatenate(v) for k, v in stats.items()}
    out = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])
    return out[6], out[5]
