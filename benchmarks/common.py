"""Shared pieces of the benchmark suite: offline set-up, statistics, the machine's description.

Every benchmark here follows the same rules (PITFALLS.md, "Threads on 2 cores"):
warm-up calls first, then repeats taken round-robin (each contender once per
round, alternating order) so that a slow minute on a noisy machine hits all of
them alike; we quote medians and spreads, and ratios of numbers measured side
by side in one process.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: the repository root (benchmarks/ sits directly under it)
REPO = Path(__file__).resolve().parents[1]
#: NEU-DET, beside the checkout (``<repo>/../shared/datasets/neu-det``)
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"
#: exported models and generated videos are kept here between runs (git-ignored)
CACHE = REPO / ".cache" / "bench"


def offline_env() -> Path:
    """Point Ultralytics and Matplotlib at a private temp dir and switch off network use.

    Must run before ``ultralytics`` or ``matplotlib`` is imported. Values the user
    already set are kept. Returns the temp dir.
    """
    tmp = Path(tempfile.gettempdir()) / f"kanjian-bench-{os.getuid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for key, value in (
        ("YOLO_OFFLINE", "true"),
        ("YOLO_AUTOINSTALL", "false"),
        ("YOLO_CONFIG_DIR", str(tmp / "yolo")),
        ("MPLCONFIGDIR", str(tmp / "mpl")),
        ("YOLO_VERBOSE", "false"),
    ):
        os.environ.setdefault(key, value)
    return tmp


@dataclass(frozen=True)
class Summary:
    """Distribution of one measured quantity.

    Attributes:
        n: samples.
        median, p10, p90, p99, min, max: in the unit of the samples (ms, FPS...).
    """

    n: int
    median: float
    p10: float
    p90: float
    p99: float
    min: float
    max: float

    @property
    def spread(self) -> str:
        """``p10-p90`` as text (3 significant digits)."""
        return f"{self.p10:.3g}-{self.p90:.3g}"


def summarize(values: Sequence[float]) -> Summary:
    """Median, p10/p90/p99, min and max of ``values`` (at least one)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("summarize() needs at least one sample")
    p10, p50, p90, p99 = (float(x) for x in np.percentile(a, [10, 50, 90, 99]))
    return Summary(int(a.size), p50, p10, p90, p99, float(a.min()), float(a.max()))


def round_robin(
    methods: Mapping[str, Callable[[int], object]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Time each ``methods[name](i)`` once per round, alternating the order each round.

    Args:
        methods: contenders; each is called with the round index.
        rounds: timed rounds.
        warmup: untimed rounds first.

    Returns:
        Per contender, ``rounds`` wall times in milliseconds.
    """
    samples: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    for r in range(warmup + rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter_ns()
            methods[name](r)
            dt = (time.perf_counter_ns() - t0) / 1e6
            if r >= warmup:
                samples[name].append(dt)
    return samples


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _git_rev() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, from ``nvidia-smi`` (None without one)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()
    return line[0].strip() if line else None


@dataclass(frozen=True)
class SystemInfo:
    """The machine and software a run measured (printed and stored with the results)."""

    host: str
    started_at: str
    cpu: str
    logical_cpus: int
    usable_cpus: int
    memory_gib: float | None
    os: str
    python: str
    gpu: str | None
    versions: dict[str, str | None]
    ort_available_providers: tuple[str, ...]
    git: str | None
    env: dict[str, str]
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """Human-readable description, one fact per line."""
        v = ", ".join(f"{k} {x}" for k, x in self.versions.items() if x)
        return [
            f"host {self.host}, {self.started_at}, git {self.git}",
            f"CPU {self.cpu}: {self.logical_cpus} logical, {self.usable_cpus} usable; "
            f"memory {self.memory_gib or 0:.1f} GiB; {self.os}",
            f"GPU {self.gpu or 'none'}",
            f"Python {self.python}; {v}",
            f"ONNX Runtime providers listed: {', '.join(self.ort_available_providers)}",
            "env "
            + (" ".join(f"{k}={x}" for k, x in self.env.items()) or "(no thread variables set)"),
            f"load average {self.loadavg_start[0]:.2f} at start, {self.loadavg_end[0]:.2f} at end",
            *self.notes,
        ]


_ENV_KEYS = (
    "NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES", "NUMBA_ENABLE_CUDASIM",
)  # fmt: skip


def thread_env() -> dict[str, str]:
    """The environment variables that size thread pools, as set now."""
    return {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}


def system_info(env: dict[str, str] | None = None) -> SystemInfo:
    """Describe this machine and the library versions (imports onnxruntime).

    Args:
        env: the thread variables to report (default: :func:`thread_env` now).
    """
    import onnxruntime as ort

    dists = (
        "kanjian", "numpy", "numba", "onnxruntime", "onnxruntime-gpu", "opencv-python",
        "opencv-python-headless", "ultralytics", "torch", "torchvision", "sqlite-utils",
    )  # fmt: skip
    versions: dict[str, str | None] = {d: _version(d) for d in dists}
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    return SystemInfo(
        host=socket.gethostname(),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        cpu=_cpu_model(),
        logical_cpus=os.cpu_count() or 0,
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        memory_gib=_mem_gib(),
        os=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        gpu=gpu_name(),
        versions=versions,
        ort_available_providers=tuple(ort.get_available_providers()),
        git=_git_rev(),
        env=thread_env() if env is None else env,
        loadavg_start=os.getloadavg(),
    )


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, paths and NumPy scalars -> plain JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
