"""Compile the kernels at start-up so no JIT time lands on the first inspection.

Numba compiles on the first call for each argument-type signature and, with
``cache=True``, stores the machine code next to the module (or under
``NUMBA_CACHE_DIR``). A cold start compiles (seconds); a warm start loads the
cache (well under a second). :func:`warmup` runs every signature the station
uses, on tiny frames, and says how long it took and whether the cache served.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kanjian.kernels.cpu_kernel import letterbox_kernel, letterbox_kernel_serial
from kanjian.kernels.geometry import letterbox_geometry
from kanjian.kernels.letterbox_cpu import kernel_args, letterbox_cpu
from kanjian.kernels.tables import resize_tables
from kanjian.kernels.threads import kernel_threads

__all__ = ["WarmupReport", "cache_is_cold", "warmup"]


@dataclass(frozen=True)
class WarmupReport:
    """What :func:`warmup` did.

    Attributes:
        seconds: wall time of the whole warm-up, compile or cache load included.
        cpu_seconds_per_kernel: ``(name, seconds)`` for each CPU kernel variant.
        cache_hits: kernel signatures loaded from Numba's on-disk cache.
        cache_misses: kernel signatures compiled now (a cold cache).
        cuda_seconds: time to compile and run the CUDA kernel once, or None
            when it was not asked for or no CUDA device is present.
    """

    seconds: float
    cpu_seconds_per_kernel: tuple[tuple[str, float], ...]
    cache_hits: int
    cache_misses: int
    cuda_seconds: float | None

    @property
    def from_cache(self) -> bool:
        """True when nothing had to be compiled."""
        return self.cache_misses == 0 and self.cache_hits > 0


def _counts() -> tuple[int, int]:
    hits = misses = 0
    for k in (letterbox_kernel, letterbox_kernel_serial):
        hits += sum(k.stats.cache_hits.values())
        misses += sum(k.stats.cache_misses.values())
    return hits, misses


def cache_is_cold() -> bool:
    """True when Numba's on-disk cache holds no index for a CPU kernel yet (the first
    start after an install, or a cleared cache): :func:`warmup` will compile, for
    seconds, and the caller should say so before it starts."""
    for k in (letterbox_kernel, letterbox_kernel_serial):
        cache = getattr(k, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if index is None or not os.path.exists(index):
            return True
    return False


def warmup(
    dst_hw: tuple[int, int] = (640, 640),
    src_hws: Iterable[tuple[int, int]] = (),
    cuda: bool = False,
) -> WarmupReport:
    """Compile (or load from cache) every kernel signature used at run time.

    Runs the serial and the parallel CPU kernel on a small BGR and a small grey
    frame, precomputes the resize tables for the given source sizes, and, if
    asked and a device is present, runs the CUDA kernel once.

    Call after :func:`kanjian.kernels.threads.configure_threads` (the parallel
    kernel starts Numba's thread pool).

    Args:
        dst_hw: the model input ``(height, width)``.
        src_hws: source frame sizes expected (camera resolutions); their tables
            are built now.
        cuda: also compile the CUDA kernel (imports ``numba.cuda``).

    Returns:
        Timings and cache use.
    """
    t_start = time.perf_counter()
    hits0, misses0 = _counts()
    out = np.empty((3, *dst_hw), dtype=np.float32)
    frames = (np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8))
    per_kernel: list[tuple[str, float]] = []
    # The parallel kernel only runs with more than one thread, the serial one
    # with one: compile both so a later configure_threads change costs nothing.
    for name, kernel, chunks in (
        ("serial", letterbox_kernel_serial, 1),
        ("parallel", letterbox_kernel, max(kernel_threads(), 1)),
    ):
        t0 = time.perf_counter()
        for frame in frames:
            kernel(*kernel_args(frame, letterbox_geometry(frame.shape[:2], dst_hw), out, chunks))
        per_kernel.append((name, time.perf_counter() - t0))
    for hw in src_hws:
        resize_tables(letterbox_geometry(hw, dst_hw))
    letterbox_cpu(frames[0], dst_hw, out)  # the public path, end to end
    cuda_seconds = None
    if cuda:
        from kanjian.kernels.letterbox_cuda import cuda_available, letterbox_cuda

        if cuda_available():
            t0 = time.perf_counter()
            from kanjian.kernels.letterbox_cuda import cuda as nb_cuda

            letterbox_cuda(frames[0], dst_hw)
            letterbox_cuda(frames[1], dst_hw)
            nb_cuda.synchronize()
            cuda_seconds = time.perf_counter() - t0
    hits1, misses1 = _counts()
    return WarmupReport(
        seconds=time.perf_counter() - t_start,
        cpu_seconds_per_kernel=tuple(per_kernel),
        cache_hits=hits1 - hits0,
        cache_misses=misses1 - misses0,
        cuda_seconds=cuda_seconds,
    )
