"""Model inference alone, per execution provider and thread setting, batch 1.

Sessions are made by :func:`kanjian.inference.session.create_session`, so they
carry the station's options (no spinning intra-op threads). Each contender is
one (provider, workers, intra-op threads) setting; a round runs ``frames``
calls on a preallocated input, split over ``workers`` threads sharing the
session (the station's ``runtime.inference_workers``). Rounds go round-robin.

Batch: the station never batches (one frame per ``session.run``), and
Ultralytics' ONNX export has a static batch of 1, so only batch 1 is measured.

On CUDA two variants are measured: host input (``session.run`` with a NumPy
array, copied to the device on every call) and I/O binding with input and
outputs already on the device (the model's own speed).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Summary, round_robin, summarize


@dataclass(frozen=True)
class InferSetting:
    """One way to run the model: provider, threads sharing one session, ORT intra-op threads."""

    provider: str  # config name: cpu, cuda, tensorrt
    workers: int = 1
    intra_op_threads: int | None = None
    io_binding: bool = False  # CUDA/TensorRT: input and outputs stay on the device

    @property
    def label(self) -> str:
        t = "default" if self.intra_op_threads is None else str(self.intra_op_threads)
        s = f"{self.provider}, {self.workers} worker{'s' if self.workers > 1 else ''} x {t} intra-op"
        return s + (", device I/O binding" if self.io_binding else "")


@dataclass(frozen=True)
class InferRow:
    """Measured speed of one setting.

    Attributes:
        setting: what ran; ``active_provider``: what ONNX Runtime really ran on.
        batch: frames per ``session.run`` (always 1, see module docstring).
        latency_ms: per ``session.run`` call, all rounds pooled.
        fps: frames per second per round (frames / wall time of the round).
        session_s: seconds to create the session (TensorRT: includes the engine build
            or cache load).
        error: why the setting could not run (then the numbers are absent).
    """

    setting: InferSetting
    active_provider: str
    batch: int
    latency_ms: Summary | None
    fps: Summary | None
    session_s: float
    error: str | None = None

    @property
    def label(self) -> str:
        return self.setting.label


class _Runner:
    """A session plus one preallocated input per worker; ``block(n)`` runs ``n`` frames."""

    def __init__(self, model: Path, setting: InferSetting, trt_cache: Path | None) -> None:
        from kanjian.inference.session import PROVIDER_ALIASES, create_session

        opts: dict[str, dict[str, Any]] = {}
        if setting.provider == "tensorrt":
            assert trt_cache is not None
            opts["TensorrtExecutionProvider"] = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(trt_cache),
            }
        chain = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}
        t0 = time.perf_counter()
        self.session, info = create_session(
            model,
            chain[setting.provider],
            setting.intra_op_threads,
            provider_options=opts,
            allow_fallback=True,  # a fallback is measured and reported, not refused
        )
        self.active = info.provider
        self.fell_back = self.active != PROVIDER_ALIASES[setting.provider]
        inp = self.session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        rng = np.random.default_rng(0)
        self.inputs = [rng.random(shape, dtype=np.float32) for _ in range(setting.workers)]
        self.input_name = inp.name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.setting = setting
        self.calls_ms: list[float] = []
        self._lock = threading.Lock()
        self._run_one: list[Callable[[], None]] = [
            self._make_call(i) for i in range(setting.workers)
        ]
        self._run_one[0]()  # first call allocates (and on TensorRT may build): untimed
        self.session_s = time.perf_counter() - t0

    def _make_call(self, i: int) -> Callable[[], None]:
        if not self.setting.io_binding:
            feed = {self.input_name: self.inputs[i]}

            def host() -> None:
                self.session.run(self.outputs, feed)

            return host
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(
            self.input_name, ort.OrtValue.ortvalue_from_numpy(self.inputs[i], "cuda", 0)
        )
        for name in self.outputs:
            binding.bind_output(name, "cuda", 0)

        def call() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return call

    def block(self, frames: int) -> None:
        """Run ``frames`` calls, split over the workers; records each call's time."""
        w = self.setting.workers

        def work(i: int, n: int) -> None:
            call = self._run_one[i]
            local = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                call()
                local.append((time.perf_counter_ns() - t0) / 1e6)
            with self._lock:
                self.calls_ms.extend(local)

        shares = [frames // w + (1 if i < frames % w else 0) for i in range(w)]
        if w == 1:
            work(0, frames)
            return
        threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(shares)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def default_settings(
    cpus: int, providers: tuple[str, ...], workers_knob: bool = True, gpu: bool = True
) -> list[InferSetting]:
    """CPU: all cores in one call, one core, and (if the station has the knob) two
    workers sharing the cores; CUDA/TensorRT (when ``gpu``: an NVIDIA device is
    present; onnxruntime-gpu lists them everywhere): host input and device I/O binding."""
    out = [InferSetting("cpu", 1, cpus)]
    if cpus > 1:
        out.append(InferSetting("cpu", 1, 1))
        if workers_knob:
            out.append(InferSetting("cpu", 2, max(1, cpus // 2)))
    if gpu and "CUDAExecutionProvider" in providers:
        out += [InferSetting("cuda", 1, None), InferSetting("cuda", 1, None, io_binding=True)]
    if gpu and "TensorrtExecutionProvider" in providers:
        out.append(InferSetting("tensorrt", 1, None, io_binding=True))
    return out


def _blocks(runner: _Runner, frames: int) -> Callable[[int], None]:
    return lambda _round: runner.block(frames)


def run_inference(
    model: Path,
    settings: list[InferSetting],
    frames: int = 10,
    rounds: int = 5,
    warmup: int = 1,
    trt_cache: Path | None = None,
) -> list[InferRow]:
    """Time every setting round-robin; a setting that cannot run gets a row with ``error``."""
    trt_dir = trt_cache or Path(tempfile.mkdtemp(prefix="kanjian-trt-"))
    runners: dict[str, _Runner] = {}
    rows: list[InferRow] = []
    failed: dict[str, InferRow] = {}
    for s in settings:
        try:
            r = _Runner(model, s, trt_dir)
        except Exception as e:  # a provider that cannot start is a result, not a crash
            failed[s.label] = InferRow(s, "none", 1, None, None, 0.0, f"{type(e).__name__}: {e}")
            continue
        if r.fell_back:
            failed[s.label] = InferRow(
                s, r.active, 1, None, None, r.session_s,
                f"asked for {s.provider}, ONNX Runtime runs {r.active}: not measured",
            )  # fmt: skip
            continue
        runners[s.label] = r
    walls = round_robin({name: _blocks(r, frames) for name, r in runners.items()}, rounds, warmup)
    for s in settings:
        if s.label in failed:
            rows.append(failed[s.label])
            continue
        r = runners[s.label]
        skip = warmup * frames  # calls made in warm-up rounds
        rows.append(
            InferRow(
                setting=s,
                active_provider=r.active,
                batch=1,
                latency_ms=summarize(r.calls_ms[skip:] or r.calls_ms),
                fps=summarize([frames / (ms / 1e3) for ms in walls[s.label]]),
                session_s=r.session_s,
            )
        )
    return rows
