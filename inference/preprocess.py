"""Frame -> model input tensor for detect and segment models (letterbox)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference.decode import BoxGeometry


def letterbox_tensor(
    image: NDArray[np.uint8], imgsz: tuple[int, int], out: NDArray[np.float32]
) -> BoxGeometry:
    """Letterbox ``image`` into ``out`` ``(3, H, W)`` float32 RGB /255; return the geometry.

    TEMPORARY OpenCV path; replaced by the fused Numba kernel from kanjian.kernels.
    """
    h, w = image.shape[:2]
    th, tw = imgsz
    r = min(th / h, tw / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(
        img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    out[...] = img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return BoxGeometry(src_hw=(h, w), gain_xy=(nw / w, nh / h), pad_xy=(left, top), new_hw=(nh, nw))
