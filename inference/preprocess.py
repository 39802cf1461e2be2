"""Frame -> model input tensor for detect and segment models (letterbox)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels import Letterbox, letterbox_cpu, letterbox_geometry


def letterbox_tensor(
    image: NDArray[np.uint8], imgsz: tuple[int, int], out: NDArray[np.float32]
) -> Letterbox:
    """Letterbox ``image`` into ``out`` ``(3, H, W)`` float32 RGB /255 with the fused
    Numba kernel (equal to Ultralytics' preprocessing); return the geometry that
    maps boxes back to the frame."""
    letterbox_cpu(image, imgsz, out=out)
    return letterbox_geometry(image.shape[:2], imgsz)
