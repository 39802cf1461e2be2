"""Numba threading for the kernels: which layer, how many threads, set in code.

Why this exists: Numba's default ``omp`` layer leaves its threads spinning after
a kernel, and the ONNX Runtime call that follows ran 1.09-1.12x slower on a
2-core box (see PITFALLS.md). The ``workqueue`` layer sleeps instead. Numba
picks the layer when its thread pool starts, i.e. at the first parallel kernel
call, so :func:`configure_threads` must run before that; it raises if the pool
already runs with another layer.

Numba's thread count is per calling thread, so the count set here is also
remembered process-wide and :func:`kernel_threads` applies it on whichever
thread runs a kernel (a station's pipeline thread, say).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numba

__all__ = ["LAYERS", "ThreadConfig", "configure_threads", "kernel_threads"]

#: Numba threading layers (concrete ones, and Numba's selection policies)
LAYERS = ("workqueue", "omp", "tbb", "default", "safe", "threadsafe", "forksafe")

_lock = threading.Lock()
_threads: int | None = None


@dataclass(frozen=True)
class ThreadConfig:
    """What :func:`configure_threads` set.

    Attributes:
        layer: the layer requested (Numba resolves a policy like ``"default"``
            to a concrete layer when the pool starts).
        threads: threads the kernels use (1 = run on the caller, no pool).
        max_threads: Numba's pool size (``NUMBA_NUM_THREADS``, read by Numba
            when it was imported).
        pool_started: True when Numba's pool was already running.
    """

    layer: str
    threads: int
    max_threads: int
    pool_started: bool


def _pool_layer() -> str | None:
    """The running pool's layer, or None before the first parallel launch."""
    try:
        return str(getattr(numba, "threading_layer")())  # noqa: B009 (untyped in numba)
    except ValueError:  # "Threading layer is not initialized."
        return None


def configure_threads(n: int | None = None, layer: str = "workqueue") -> ThreadConfig:
    """Choose Numba's threading layer and the kernels' thread count.

    Call once at start-up, before the first kernel (and before :func:`warmup`
    of :mod:`kanjian.kernels.warmup`).

    Args:
        n: threads per kernel call, ``1 <= n <= NUMBA_NUM_THREADS``; ``None``
            keeps Numba's count (all cores). ``1`` runs the kernels on the
            calling thread, which also avoids the pool's wake-up latency
            (60-120 us per call on a busy 2-core machine).
        layer: one of :data:`LAYERS`. With ``"omp"``, ``OMP_WAIT_POLICY`` is
            set to ``PASSIVE`` unless already set, so its threads sleep (this
            only takes effect if no OpenMP runtime is loaded yet).

    Returns:
        The resulting configuration.

    Raises:
        ValueError: unknown layer, or ``n`` out of range.
        RuntimeError: Numba's pool already runs with a different layer.
    """
    global _threads
    if layer not in LAYERS:
        raise ValueError(f"unknown Numba threading layer {layer!r}; choose one of {LAYERS}")
    max_threads = int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009
    if n is not None and (
        isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_threads
    ):
        raise ValueError(f"n must be an int in [1, {max_threads}] (NUMBA_NUM_THREADS), got {n!r}")
    with _lock:
        running = _pool_layer()
        if running is None:
            if layer == "omp":
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            setattr(numba.config, "THREADING_LAYER", layer)  # noqa: B010
        elif layer in ("workqueue", "omp", "tbb") and running != layer:
            raise RuntimeError(
                f"Numba's thread pool already runs on the {running!r} layer; "
                f"configure_threads(layer={layer!r}) must be called before the first kernel"
            )
        _threads = n
        if n is not None and n > 1:
            numba.set_num_threads(n)  # starts the pool, with the layer chosen above
        threads = n if n is not None else numba.get_num_threads()
        return ThreadConfig(
            layer=layer, threads=threads, max_threads=max_threads, pool_started=running is not None
        )


def kernel_threads() -> int:
    """Threads the next kernel call on this thread should use; applies the configured count.

    Returns the count from :func:`configure_threads` (setting Numba's
    per-thread count to match when it is above 1), else Numba's current count;
    in that case, if Numba's pool has not started and no layer was chosen
    (``NUMBA_THREADING_LAYER`` unset), the pool starts on ``workqueue``.
    """
    n = _threads
    if n is None:
        with _lock:
            # Unconfigured and Numba left on its "default" policy (which picks
            # the spinning omp layer when present): start the pool on workqueue.
            if _pool_layer() is None and getattr(numba.config, "THREADING_LAYER") == "default":  # noqa: B009
                setattr(numba.config, "THREADING_LAYER", "workqueue")  # noqa: B010
        return int(numba.get_num_threads())
    if n > 1 and numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n
