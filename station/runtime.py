"""Process-wide thread settings, applied once at start-up (never at import)."""

from __future__ import annotations

import cv2

from kanjian.station.config import RuntimeConfig


def configure_threads(cfg: RuntimeConfig) -> None:
    """Size OpenCV's and Numba's pools so they leave cores to ONNX Runtime."""
    if cfg.opencv_threads is not None:
        cv2.setNumThreads(cfg.opencv_threads)
    import kanjian.kernels as k
    if hasattr(k, 'configure_threads'):
        k.configure_threads(cfg.numba_threads)
