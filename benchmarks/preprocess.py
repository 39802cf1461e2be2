"""Preprocessing benchmark: frame -> letterboxed float32 RGB CHW model input.

Compares, in one process, round-robin (each repeat times every method once, in
alternating order, on the next frame of a pool), with warm-up calls first:

- kanjian's fused CPU kernel, on 1 thread and on all of Numba's threads
  (workqueue layer, set with :func:`kanjian.kernels.configure_threads`);
- kanjian's CUDA kernel (host frame in, device tensor out, synchronised), when
  a CUDA device is present;
- Ultralytics' own preprocessing, as ``BasePredictor.pre_transform`` +
  ``preprocess`` run it for one frame: ``LetterBox(auto=False)``, then torch
  HWC->CHW, BGR->RGB flip, ``.float().div_(255)``; with torch's default
  thread count and with one thread (on a shared 2-core box torch's spinning
  OpenMP threads can make the default 10x slower), speed-ups being taken
  against the faster of the two;
- an OpenCV path: ``cv2.resize`` + ``cv2.copyMakeBorder`` +
  ``cv2.dnn.blobFromImage(scale 1/255, swapRB)``;
- the memory-bandwidth floor: bytes read (the frame) plus bytes written (the
  tensor) divided by the read+write bandwidth of a large ``np.copyto``
  measured in the same process.

The frame pool holds enough distinct frames (>= 64 MiB, at most 16) that a
frame is not still in the last-level cache when it comes round again. Note
that importing Ultralytics sets ``cv2.setNumThreads(0)`` for the process, so
the OpenCV path runs single-threaded here, as it does inside Ultralytics.

Run: ``python -m benchmarks.preprocess [--repeats 60] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (1080, 1920), (2048, 2448))
#: prefix of the Ultralytics rows; speed-ups are against the faster of them
ULTRALYTICS = "Ultralytics preprocess"
FLOOR = "bandwidth floor"


@dataclass(frozen=True)
class Timing:
    """One method on one frame size.

    Attributes:
        method: what was timed (or :data:`FLOOR`, computed, not timed).
        src_hw, dst_hw: frame and model-input ``(height, width)``.
        median_ms, p10_ms, p90_ms: per-call wall time, milliseconds.
        cpu_ms: median CPU time of the whole process per call (all threads),
            milliseconds; unlike wall time it does not grow while the call
            waits for a core another process holds.
        repeats: timed calls.
        speedup_vs_ultralytics: the faster Ultralytics median / this median.
        times_floor: this median / the bandwidth floor.
    """

    method: str
    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    median_ms: float
    p10_ms: float
    p90_ms: float
    cpu_ms: float
    repeats: int
    speedup_vs_ultralytics: float
    times_floor: float


@dataclass(frozen=True)
class CompileTimes:
    """Start-up JIT cost of :func:`kanjian.kernels.warmup` in fresh interpreters.

    Attributes:
        cold_s: warm-up seconds with an empty Numba cache (compiles).
        warm_s: warm-up seconds with the cache the cold run wrote (loads).
        cold_misses, warm_hits: kernel signatures compiled / loaded.
    """

    cold_s: float
    warm_s: float
    cold_misses: int
    warm_hits: int


@dataclass(frozen=True)
class PreprocessReport:
    """Everything one run measured, plus the conditions it ran under."""

    timings: tuple[Timing, ...]
    bandwidth_gb_s: float
    threads: int
    threading_layer: str
    cv2_threads: int
    cpu: str
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    compile: CompileTimes | None

    def markdown(self) -> str:
        """The timings as a Markdown table, with the conditions underneath."""
        lines = [
            "| source | method | median ms | p10-p90 ms | CPU ms | x faster than Ultralytics "
            "| x floor |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for t in self.timings:
            spread = "" if t.method == FLOOR else f"{t.p10_ms:.3f}-{t.p90_ms:.3f}"
            cpu = "" if t.method == FLOOR else f"{t.cpu_ms:.3f}"
            lines.append(
                f"| {t.src_hw[1]}x{t.src_hw[0]} | {t.method} | {t.median_ms:.3f} | {spread} "
                f"| {cpu} | {t.speedup_vs_ultralytics:.2f} | {t.times_floor:.2f} |"
            )
        lines += [
            "",
            f"Output {self.timings[0].dst_hw[1]}x{self.timings[0].dst_hw[0]} float32 CHW; "
            f"copy bandwidth {self.bandwidth_gb_s:.1f} GB/s (read+written); Numba "
            f"{self.threads} threads, {self.threading_layer} layer; cv2 threads "
            f"{self.cv2_threads}; {self.cpu}; load average "
            f"{self.loadavg_before[0]:.2f} before, {self.loadavg_after[0]:.2f} after.",
        ]
        if self.compile is not None:
            c = self.compile
            lines.append(
                f"warmup(): {c.cold_s:.2f} s with a cold Numba cache ({c.cold_misses} "
                f"signatures compiled), {c.warm_s:.3f} s warm ({c.warm_hits} loaded)."
            )
        return "\n".join(lines)


def measure_bandwidth(mib: int = 256, repeats: int = 7) -> float:
    """Read+write bandwidth of ``np.copyto`` on ``mib``-MiB arrays, GB/s (median)."""
    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times)) / 1e9


def ultralytics_preprocess(dst_hw: tuple[int, int]) -> Callable[[NDArray[np.uint8]], Any]:
    """Ultralytics' per-frame preprocessing (pre_transform + preprocess) on the CPU."""
    import torch
    from ultralytics.data.augment import LetterBox

    def run(image: NDArray[np.uint8]) -> Any:
        letterbox = LetterBox(
            dst_hw, auto=False, stride=32
        )  # built per call, as pre_transform does
        im = [letterbox(image=image)]
        t = torch.from_numpy(im[0]).unsqueeze(0)
        t = t.permute(0, 3, 1, 2).contiguous()
        if t.shape[1] == 3:
            t = t.flip(1)
        return t.float().div_(255)

    return run


def cv2_preprocess(dst_hw: tuple[int, int]) -> Callable[[NDArray[np.uint8]], Any]:
    """cv2.resize + copyMakeBorder + blobFromImage, with Ultralytics' geometry."""
    import cv2

    from kanjian.kernels import letterbox_geometry

    def run(image: NDArray[np.uint8]) -> Any:
        g = letterbox_geometry(image.shape[:2], dst_hw)
        im = cv2.resize(image, (g.new_w, g.new_h), interpolation=cv2.INTER_LINEAR)
        im = cv2.copyMakeBorder(
            im, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right,
            cv2.BORDER_CONSTANT, value=(114, 114, 114),
        )  # fmt: skip
        return cv2.dnn.blobFromImage(im, 1 / 255.0, swapRB=True)

    return run


def frame_pool(src_hw: tuple[int, int], pool_bytes: int, seed: int) -> list[NDArray[np.uint8]]:
    """Random ``(H, W, 3)`` uint8 frames, 2 to 16 of them, adding up to ``pool_bytes``
    where 16 allow: more than the last-level cache holds, so no call finds its frame there."""
    n = int(min(16, max(2, -(-pool_bytes // (src_hw[0] * src_hw[1] * 3)))))
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*src_hw, 3), dtype=np.uint8) for _ in range(n)]


#: a contender: (set-up before each call, e.g. the thread count; the timed call on a frame)
Contender = tuple[Callable[[], Any], Callable[[NDArray[np.uint8]], Any]]


def time_round_robin(
    methods: dict[str, Contender],
    frames: Sequence[NDArray[np.uint8]],
    warmup_calls: int,
    repeats: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU ms of every method per round: each round calls every method once on
    the round's frame, in alternating order, the first ``warmup_calls`` rounds untimed."""
    samples: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    for round_ in range(warmup_calls + repeats):
        frame = frames[round_ % len(frames)]
        for name in order if round_ % 2 == 0 else order[::-1]:
            prepare, call = methods[name]
            prepare()
            c0 = time.process_time_ns()
            t0 = time.perf_counter_ns()
            call(frame)
            dt = time.perf_counter_ns() - t0
            dc = time.process_time_ns() - c0
            if round_ >= warmup_calls:
                samples[name].append(dt / 1e6)
                cpu[name].append(dc / 1e6)
    return samples, cpu


def run_benchmark(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    dst_hw: tuple[int, int] = (640, 640),
    repeats: int = 60,
    warmup_calls: int = 5,
    threads: int | None = None,
    pool_bytes: int = 64 * 2**20,
    bandwidth_gb_s: float | None = None,
    layer: str = "workqueue",
) -> list[Timing]:
    """Time every method on every size; see the module docstring.

    Args:
        sizes: source frame sizes ``(height, width)``.
        dst_hw: model input size.
        repeats: timed rounds (each method once per round).
        warmup_calls: untimed rounds first.
        threads: Numba threads for the multi-threaded kernel row (default: all).
        pool_bytes: distinct frames per size add up to at least this.
        bandwidth_gb_s: read+write bandwidth for the floor; measured if None.
        layer: Numba threading layer (see :func:`kanjian.kernels.configure_threads`).

    Returns:
        Per size: one :class:`Timing` per method and one for the floor.
    """
    import numba

    from kanjian.kernels import configure_threads, letterbox_cpu, warmup

    n_threads = threads or int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009
    configure_threads(n_threads, layer=layer)
    warmup(dst_hw)
    out = np.empty((3, *dst_hw), dtype=np.float32)

    def kanjian(n: int) -> tuple[Callable[[], Any], Callable[[NDArray[np.uint8]], Any]]:
        return (
            lambda: configure_threads(n, layer=layer),
            lambda im: letterbox_cpu(im, dst_hw, out),
        )

    def nothing() -> None:
        return None

    methods: dict[str, tuple[Callable[[], Any], Callable[[NDArray[np.uint8]], Any]]] = {
        "kanjian CPU, 1 thread": kanjian(1),
    }
    if n_threads > 1:
        methods[f"kanjian CPU, {n_threads} threads"] = kanjian(n_threads)
    cuda_fn = _cuda_method(dst_hw)
    if cuda_fn is not None:
        methods["kanjian CUDA (host frame in)"] = (nothing, cuda_fn)
    import torch

    torch_default = int(torch.get_num_threads())
    ul = ultralytics_preprocess(dst_hw)
    methods[f"{ULTRALYTICS} (torch {torch_default} threads)"] = (
        lambda: torch.set_num_threads(torch_default),
        ul,
    )
    if torch_default > 1:
        methods[f"{ULTRALYTICS} (torch 1 thread)"] = (lambda: torch.set_num_threads(1), ul)
    methods["cv2 resize+border+blob"] = (nothing, cv2_preprocess(dst_hw))

    bandwidth = bandwidth_gb_s if bandwidth_gb_s is not None else measure_bandwidth()
    results: list[Timing] = []
    for size_index, src_hw in enumerate(sizes):
        frames = frame_pool(src_hw, pool_bytes, seed=size_index)
        samples, cpu = time_round_robin(methods, frames, warmup_calls, repeats)
        floor_ms = (frames[0].nbytes + out.nbytes) / bandwidth / 1e6
        ul_median = min(
            float(np.median(v)) for k, v in samples.items() if k.startswith(ULTRALYTICS)
        )
        for name, values in samples.items():
            med = float(np.median(values))
            results.append(
                Timing(
                    method=name,
                    src_hw=src_hw,
                    dst_hw=dst_hw,
                    median_ms=med,
                    p10_ms=float(np.percentile(values, 10)),
                    p90_ms=float(np.percentile(values, 90)),
                    cpu_ms=float(np.median(cpu[name])),
                    repeats=len(values),
                    speedup_vs_ultralytics=ul_median / med,
                    times_floor=med / floor_ms,
                )
            )
        results.append(
            Timing(
                method=FLOOR,
                src_hw=src_hw,
                dst_hw=dst_hw,
                median_ms=floor_ms,
                p10_ms=floor_ms,
                p90_ms=floor_ms,
                cpu_ms=0.0,
                repeats=0,
                speedup_vs_ultralytics=ul_median / floor_ms,
                times_floor=1.0,
            )
        )
    configure_threads(n_threads, layer=layer)
    torch.set_num_threads(torch_default)
    return results


def _cuda_method(dst_hw: tuple[int, int]) -> Callable[[NDArray[np.uint8]], Any] | None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None  # the simulator is not a speed
    from kanjian.kernels.letterbox_cuda import cuda, cuda_available, letterbox_cuda

    if not cuda_available():
        return None
    d_out = cuda.device_array((3, *dst_hw), dtype=np.float32)

    def run(image: NDArray[np.uint8]) -> Any:
        letterbox_cuda(image, dst_hw, out=d_out)
        cuda.synchronize()
        return d_out

    return run


_COMPILE_PROBE = """
import json, time
t0 = time.perf_counter()
import kanjian.kernels as k
k.configure_threads(None, layer="workqueue")
r = k.warmup()
print("COMPILE " + json.dumps({"s": r.seconds, "hits": r.cache_hits, "misses": r.cache_misses}))
"""


def measure_compile_times() -> CompileTimes:
    """Cold and warm :func:`~kanjian.kernels.warmup` in two fresh interpreters sharing a new cache."""
    with tempfile.TemporaryDirectory(prefix="kanjian-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", _COMPILE_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            line = next(x for x in proc.stdout.splitlines() if x.startswith("COMPILE "))
            runs.append(json.loads(line[len("COMPILE ") :]))
    return CompileTimes(
        cold_s=runs[0]["s"],
        warm_s=runs[1]["s"],
        cold_misses=runs[0]["misses"],
        warm_hits=runs[1]["hits"],
    )


def run(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    dst_hw: tuple[int, int] = (640, 640),
    repeats: int = 60,
    threads: int | None = None,
    compile_times: bool = True,
) -> PreprocessReport:
    """The whole benchmark: compile times (subprocesses), then the timings."""
    for key, value in (
        ("YOLO_OFFLINE", "true"),
        ("YOLO_AUTOINSTALL", "false"),
        ("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "kanjian-bench-yolo")),
        ("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "kanjian-bench-yolo")),
    ):
        os.environ.setdefault(key, value)
    compiled = measure_compile_times() if compile_times else None
    load0 = os.getloadavg()
    bandwidth = measure_bandwidth()
    timings = run_benchmark(
        sizes, dst_hw, repeats=repeats, threads=threads, bandwidth_gb_s=bandwidth
    )
    load1 = os.getloadavg()
    import cv2
    import numba

    return PreprocessReport(
        timings=tuple(timings),
        bandwidth_gb_s=bandwidth,
        threads=int(numba.get_num_threads()),
        threading_layer=str(getattr(numba, "threading_layer")()),  # noqa: B009
        cv2_threads=int(cv2.getNumThreads()),
        cpu=f"{platform.machine()} {os.cpu_count()} CPUs",
        loadavg_before=load0,
        loadavg_after=load1,
        compile=compiled,
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
    parser.add_argument("--no-compile", action="store_true", help="skip the cold/warm JIT runs")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = run(
        sizes=[_hw(s) for s in args.sizes.split(",")],
        dst_hw=_hw(args.dst),
        repeats=args.repeats,
        threads=args.threads,
        compile_times=not args.no_compile,
    )
    print(report.markdown())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
