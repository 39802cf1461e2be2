"""Image quality gate benchmark: what the gate's kernel costs beside preprocessing.

Times, in one process, round-robin (each round times every method once, in
alternating order, on the next frame of a pool that does not fit the last-level
cache), after warm-up rounds:

- the preprocessing the gate must stay small against: kanjian's fused letterbox
  kernel (frame -> model input), on 1 thread and on all of Numba's threads;
- :func:`kanjian.kernels.frame_quality` with the station's default sampled rows
  (``quality.rows``, 8), with twice and four times as many, and on every row,
  each on the threads the station gives the kernels (the gate runs serially below
  a million sampled pixels, whatever the thread count);
- the same with a reference frame (the difference to it adds a little NumPy);
- the CUDA twin (host frame in, numbers out), when a CUDA device is present.

Each row's ``share_of_preprocess`` is its median over the faster letterbox row's
median on the same frame size: the issue's budget is 10 %.

Run: ``python -m benchmarks.quality [--repeats 60] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.preprocess import frame_pool, time_round_robin

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (1080, 1920), (2048, 2448))
#: prefix of the letterbox rows; shares are against the faster of them
LETTERBOX = "letterbox"
#: the station's default ``quality.rows`` (station/quality_config.py)
DEFAULT_ROWS = 8
#: the issue's budget: the gate at most this share of preprocessing
BUDGET = 0.10


@dataclass(frozen=True)
class QualityTiming:
    """One method on one frame size.

    Attributes:
        method: what was timed.
        src_hw: frame ``(height, width)``.
        rows: the gate's sampled rows (``None``: every row; letterbox rows: ``None``).
        median_ms, p10_ms, p90_ms: per-call wall time, milliseconds.
        cpu_ms: median CPU time of the whole process per call, milliseconds.
        repeats: timed calls.
        share_of_preprocess: this median / the faster letterbox median (1.0 for it).
    """

    method: str
    src_hw: tuple[int, int]
    rows: int | None
    median_ms: float
    p10_ms: float
    p90_ms: float
    cpu_ms: float
    repeats: int
    share_of_preprocess: float


@dataclass(frozen=True)
class QualityReport:
    """One run and the conditions it ran under."""

    timings: tuple[QualityTiming, ...]
    threads: int
    cpu: str
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]

    def markdown(self) -> str:
        """The timings as a Markdown table, with the conditions underneath."""
        lines = [
            "| source | method | median ms | p10-p90 ms | CPU ms | share of preprocessing |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for t in self.timings:
            lines.append(
                f"| {t.src_hw[1]}x{t.src_hw[0]} | {t.method} | {t.median_ms:.3f} "
                f"| {t.p10_ms:.3f}-{t.p90_ms:.3f} | {t.cpu_ms:.3f} "
                f"| {100 * t.share_of_preprocess:.1f} % |"
            )
        lines += [
            "",
            f"Numba {self.threads} threads (workqueue); {self.cpu}; load average "
            f"{self.loadavg_before[0]:.2f} before, {self.loadavg_after[0]:.2f} after. "
            f"Budget: the gate at the station's default rows ({DEFAULT_ROWS}) at most "
            f"{100 * BUDGET:.0f} % of preprocessing.",
        ]
        return "\n".join(lines)


def run_quality(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    dst_hw: tuple[int, int] = (640, 640),
    repeats: int = 60,
    warmup_calls: int = 5,
    threads: int | None = None,
    pool_bytes: int = 64 * 2**20,
    layer: str = "workqueue",
    rows: Sequence[int | None] = (DEFAULT_ROWS, 2 * DEFAULT_ROWS, 4 * DEFAULT_ROWS, None),
) -> list[QualityTiming]:
    """Time every method on every size; see the module docstring.

    Args:
        sizes: source frame sizes ``(height, width)``.
        dst_hw: model input size of the letterbox rows.
        repeats: timed rounds (each method once per round).
        warmup_calls: untimed rounds first.
        threads: Numba threads for the multi-threaded rows (default: all).
        pool_bytes: distinct frames per size add up to at least this.
        layer: Numba threading layer (see :func:`kanjian.kernels.configure_threads`).
        rows: the gate's sampled rows to time (the first also with a reference).
    """
    import numba

    from kanjian.kernels import (
        configure_threads,
        frame_quality,
        letterbox_cpu,
        quality_reference,
        warmup,
        warmup_quality,
    )

    n_threads = threads or int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009
    configure_threads(n_threads, layer=layer)
    warmup(dst_hw)
    warmup_quality()
    out = np.empty((3, *dst_hw), dtype=np.float32)
    Method = tuple[Callable[[], Any], Callable[[NDArray[np.uint8]], Any], int | None]

    def threads_to(n: int) -> Callable[[], Any]:
        return lambda: configure_threads(n, layer=layer)

    def gate(r: int | None, ref: Any = None) -> Callable[[NDArray[np.uint8]], Any]:
        return lambda im: frame_quality(im, r, reference=ref)

    results: list[QualityTiming] = []
    for size_index, src_hw in enumerate(sizes):
        frames = frame_pool(src_hw, pool_bytes, seed=size_index)
        methods: dict[str, Method] = {
            f"{LETTERBOX}, 1 thread": (
                threads_to(1),
                lambda im: letterbox_cpu(im, dst_hw, out),
                None,
            )
        }
        if n_threads > 1:
            methods[f"{LETTERBOX}, {n_threads} threads"] = (
                threads_to(n_threads),
                lambda im: letterbox_cpu(im, dst_hw, out),
                None,
            )
        for r in rows:
            label = "every row" if r is None else f"{r} rows"
            methods[f"quality gate, {label}"] = (threads_to(n_threads), gate(r), r)
        first = rows[0] if rows else DEFAULT_ROWS
        ref = quality_reference(frames[-1], first)
        methods[f"quality gate, {first} rows + reference"] = (
            threads_to(n_threads),
            gate(first, ref),
            first,
        )
        cuda_fn = _cuda_method(first)
        if cuda_fn is not None:
            methods[f"quality gate CUDA, {first} rows (host frame in)"] = (
                lambda: None,
                cuda_fn,
                first,
            )
        samples, cpu = time_round_robin(
            {k: (prep, call) for k, (prep, call, _) in methods.items()},
            frames,
            warmup_calls,
            repeats,
        )
        base = min(float(np.median(v)) for k, v in samples.items() if k.startswith(LETTERBOX))
        for name, values in samples.items():
            med = float(np.median(values))
            results.append(
                QualityTiming(
                    method=name,
                    src_hw=src_hw,
                    rows=methods[name][2],
                    median_ms=med,
                    p10_ms=float(np.percentile(values, 10)),
                    p90_ms=float(np.percentile(values, 90)),
                    cpu_ms=float(np.median(cpu[name])),
                    repeats=len(values),
                    share_of_preprocess=med / base,
                )
            )
    configure_threads(n_threads, layer=layer)
    return results


def _cuda_method(rows: int | None) -> Callable[[NDArray[np.uint8]], Any] | None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None  # the simulator is not a speed
    from kanjian.kernels.letterbox_cuda import cuda_available

    if not cuda_available():
        return None
    from kanjian.kernels.quality_cuda import frame_quality_cuda

    return lambda im: frame_quality_cuda(im, rows)


def run(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    dst_hw: tuple[int, int] = (640, 640),
    repeats: int = 60,
    threads: int | None = None,
) -> QualityReport:
    """The whole benchmark, with the conditions it ran under."""
    import numba

    load0 = os.getloadavg()
    timings = run_quality(sizes, dst_hw, repeats=repeats, threads=threads)
    return QualityReport(
        timings=tuple(timings),
        threads=int(numba.get_num_threads()),
        cpu=f"{platform.machine()} {os.cpu_count()} CPUs",
        loadavg_before=load0,
        loadavg_after=os.getloadavg(),
    )


def _hw(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="640x480,1920x1080,2448x2048", help="WxH,WxH,...")
    parser.add_argument("--dst", default="640x640", help="model input WxH")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = run(
        sizes=[_hw(s) for s in args.sizes.split(",")],
        dst_hw=_hw(args.dst),
        repeats=args.repeats,
        threads=args.threads,
    )
    print(report.markdown())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
