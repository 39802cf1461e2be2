"""Classification preprocessing, as Ultralytics' ``classify_transforms`` does it.

Ultralytics resizes the shortest edge with PIL's antialiased bilinear filter
and centre-crops; no OpenCV resize reproduces PIL's filter, so we use Pillow
itself (a small dependency) to get the same probabilities.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def classify_tensor(image: NDArray[np.uint8], imgsz: tuple[int, int]) -> NDArray[np.float32]:
    """BGR/grey uint8 frame -> ``(1, 3, H, W)`` float32 RGB in ``[0, 1]``.

    Square ``imgsz``: shortest edge to ``H`` (long edge ``int(H * long / short)``),
    then centre crop; other sizes are resized to ``(H, W)`` exactly.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    th, tw = imgsz
    if th == tw:
        if w <= h:
            nw, nh = th, int(th * h / w)
        else:
            nh, nw = th, int(th * w / h)
    else:
        nh, nw = th, tw
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), Image.Resampling.BILINEAR)
    top = round((nh - th) / 2.0)
    left = round((nw - tw) / 2.0)
    arr = np.asarray(pil)[top : top + th, left : left + tw]
    return arr.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
