"""Process-wide thread settings, applied once at start-up (never at import)."""

from __future__ import annotations

import logging
import os
import threading

import cv2

from kanjian.kernels import configure_threads as numba_threads
from kanjian.station.config import RuntimeConfig

log = logging.getLogger(__name__)


def configure_threads(cfg: RuntimeConfig) -> None:
    """Size OpenCV's and Numba's pools so they leave cores to ONNX Runtime.

    Numba uses the ``workqueue`` layer: the default OpenMP layer leaves threads
    spinning after a kernel and slowed the next ONNX Runtime call by ~10% on
    2 cores (PITFALLS.md).
    """
    if cfg.opencv_threads is not None:
        cv2.setNumThreads(cfg.opencv_threads)
    n = cfg.numba_threads
    if n is None and (os.cpu_count() or 1) <= 4:
        # On small CPUs the serial kernel was as fast or faster than two threads
        # (waking the pool costs 60-120 us) and leaves the cores to ONNX Runtime.
        n = 1
    if cfg.inference_workers > 1:
        # Several workers call the kernel at once: the workqueue layer is not
        # re-entrant, so each worker runs the serial kernel on its own thread
        # (the workers themselves are the parallelism).
        n = 1
    numba_threads(n, layer="workqueue")


def lower_priority(nice: int) -> None:
    """Give the calling thread a higher nice value (Linux: threads are scheduled alone).

    Background work (sync, uploads) must not take CPU from the inspection loop when
    it catches up a backlog.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as e:  # not permitted, or not Linux
        log.debug("could not lower a background thread's priority: %s", e)
