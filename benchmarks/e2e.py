"""End to end on a 1080p video: the station, the model alone, Ultralytics' predict loop.

Contenders, all built once and then run round-robin (each round: ``warm``
untimed frames, then ``frames`` timed ones, per contender):

- the station: :func:`kanjian.station.pipeline.build_station` on a looping
  ``video`` source, ``lossless`` policy, the store in a temp dir with
  ``synchronous=FULL``; one contender per (inference workers, intra-op threads)
  setting; ``Station.run`` in the calling thread. Between rounds the store is
  flushed (untimed) so its writer does not run into the next contender.
- the model alone at the same settings: ONNX Runtime's ``session.run`` on a
  preallocated input, ``workers`` threads sharing one session (what the
  station could reach if decode, preprocessing, NMS and logging were free).
- Ultralytics: ``YOLO(onnx).predict(video, stream=True)``, its own loop
  (decode, preprocess, ONNX Runtime with its default session, NMS, Results).

FPS is frames / wall time of a round. Stage latencies come from each
inspection's ``timings_ms`` (station), each call (model alone) and
``Results.speed`` (Ultralytics).

Trigger-to-verdict latency runs a second station in triggered mode on the same
looping video: triggers are sent one at a time, each after the previous one's
future resolved and a short gap; latency is the time from ``Station.trigger()``
to the future's result (the row committed).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Summary, summarize

#: the decode-alone contender's name
DECODE = "video decode alone"


@dataclass(frozen=True)
class StationSetting:
    """``runtime.inference_workers`` and ``model.intra_op_threads`` of one station contender."""

    workers: int
    intra_op_threads: int | None

    @property
    def label(self) -> str:
        t = "default" if self.intra_op_threads is None else str(self.intra_op_threads)
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} x {t} intra-op"


@dataclass(frozen=True)
class Contender:
    """Results of one contender over all rounds.

    Attributes:
        name: e.g. ``station, 2 workers x 1 intra-op``.
        kind: ``station``, ``model``, ``ultralytics`` or ``decode`` (the video's
            decoding alone, one thread: what the frame pump costs).
        setting: the station/model thread setting (None for Ultralytics).
        runs_on: the execution provider ONNX Runtime really ran the model on.
        fps: per round.
        cpu_ms_per_frame: process CPU time (all threads) per timed frame, per round;
            less sensitive to other load than FPS: on a saturated machine FPS
            follows the CPU each frame costs.
        stages_ms: per-frame stage latency over all timed frames.
        frames: timed frames in all.
    """

    name: str
    kind: str
    setting: StationSetting | None
    runs_on: str
    fps: Summary
    cpu_ms_per_frame: Summary
    stages_ms: dict[str, Summary]
    frames: int


@dataclass(frozen=True)
class Ratio:
    """``numerator`` FPS / ``denominator`` FPS, paired round by round."""

    numerator: str
    denominator: str
    per_round: Summary  # median, spread of the per-round ratios
    of_medians: float


@dataclass(frozen=True)
class TriggerLatency:
    """Trigger-to-verdict latency of a triggered station.

    Attributes:
        setting: threads of that station. triggers: timed triggers. gap_ms: idle
        time between a result and the next trigger.
        latency_ms: ``Station.trigger()`` -> future resolved (row committed).
        stages_ms: ``wait_frame`` (trigger -> fresh frame captured), the model's
            stages, and ``emit_commit`` (the rest: sinks, group commit, resolve).
        missed: triggers answered with a MISSED/ERROR row.
        stale_per_trigger: frames the pump read and ``grab_fresh`` then discarded
            as older than the trigger, per timed trigger (decoding spent for nothing).
        cpu_ms_per_trigger: process CPU time per timed trigger (all threads).
    """

    setting: StationSetting
    triggers: int
    gap_ms: float
    latency_ms: Summary
    stages_ms: dict[str, Summary]
    missed: int
    stale_per_trigger: float = 0.0
    cpu_ms_per_trigger: float = 0.0


@dataclass(frozen=True)
class E2EResult:
    """Everything the end-to-end benchmark measured."""

    video: str
    resolution_wh: tuple[int, int]
    rounds: int
    frames_per_round: int
    warm_frames: int
    contenders: tuple[Contender, ...]
    ratios: tuple[Ratio, ...]
    triggered: tuple[TriggerLatency, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def has_workers_knob() -> bool:
    """Whether this checkout's station has ``runtime.inference_workers``."""
    from kanjian.station.config import RuntimeConfig

    return "inference_workers" in RuntimeConfig.model_fields


def station_config(
    model: Path, video: Path, data_dir: Path, s: StationSetting, triggered: bool = False
) -> Any:
    """A :class:`~kanjian.station.config.StationConfig` for the benchmark."""
    from kanjian.camera.config import VideoSourceConfig
    from kanjian.station.config import (
        ModelConfig,
        RuntimeConfig,
        StationConfig,
        StoreConfig,
        TriggerConfig,
    )

    runtime: dict[str, Any] = {}
    if s.workers > 1:
        runtime["inference_workers"] = s.workers
        # Numba's workqueue pool takes one parallel launch at a time; each
        # worker runs the kernel on its own thread instead.
        runtime["numba_threads"] = 1
    return StationConfig(
        camera=VideoSourceConfig(kind="video", path=video, loop=True),
        policy="lossless",
        model=ModelConfig(path=model, providers=["auto"], intra_op_threads=s.intra_op_threads),
        store=StoreConfig(data_dir=data_dir, synchronous="FULL"),
        runtime=RuntimeConfig(**runtime),
        trigger=TriggerConfig(mode="triggered" if triggered else "free_run"),
    )


class _StationRunner:
    """A built station; ``block(n)`` inspects ``n`` more frames in the calling thread."""

    def __init__(self, cfg: Any) -> None:
        from kanjian.station.pipeline import build_station

        self.station = build_station(cfg)
        self.runs_on = str(self.station.inspector.model.session_info.provider)
        self.stages: dict[str, list[float]] = {}
        self._record = False
        self._cumulative: bool | None = None

    def _on(self, insp: Any) -> None:
        if self._record:
            for k, v in insp.timings_ms.items():
                self.stages.setdefault(k, []).append(v)

    def _run(self, n: int) -> None:
        from kanjian.station.runtime import configure_threads

        st = self.station
        # thread settings are process-wide: apply this station's before its round
        configure_threads(st.config.runtime)
        before = st.stats.frames
        if self._cumulative is None:  # does run(max_frames) count per call or in all?
            st.run(max_frames=n, on_inspection=self._on)
            st.run(max_frames=1, on_inspection=self._on)
            self._cumulative = st.stats.frames == before + n
            return
        st.run(max_frames=before + n if self._cumulative else n, on_inspection=self._on)

    def block(self, n: int, record: bool) -> None:
        self._record = record
        self._run(n)
        self._record = False

    def settle(self) -> None:
        self.station.store.flush()

    def close(self) -> None:
        self.station.close()


class _ModelRunner:
    """The model alone at a station setting: ``workers`` threads, one session."""

    def __init__(self, model: Path, s: StationSetting) -> None:
        from benchmarks.infer import InferSetting, _Runner

        provider = "cuda" if _cuda_present() else "cpu"
        self.runner = _Runner(model, InferSetting(provider, s.workers, s.intra_op_threads), None)
        self.runs_on = self.runner.active
        self.stages: dict[str, list[float]] = {}

    def block(self, n: int, record: bool) -> None:
        self.runner.calls_ms.clear()
        self.runner.block(n)
        if record:
            self.stages.setdefault("infer", []).extend(self.runner.calls_ms)

    def settle(self) -> None:
        return None

    def close(self) -> None:
        return None


class _DecodeRunner:
    """The video's decoding alone (``cv2.VideoCapture.read``, looping), as the station's
    frame pump does it: what decoding costs the CPU per frame."""

    def __init__(self, video: Path) -> None:
        import cv2

        self._cv2 = cv2
        self.video = str(video)
        self.cap = cv2.VideoCapture(self.video, cv2.CAP_FFMPEG)
        self.runs_on = "cv2 FFmpeg"
        self.stages: dict[str, list[float]] = {}

    def block(self, n: int, record: bool) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            ok, _img = self.cap.read()
            if not ok:  # end of file: start again, as the looping source does
                self.cap.release()
                self.cap = self._cv2.VideoCapture(self.video, self._cv2.CAP_FFMPEG)
                ok, _img = self.cap.read()
                if not ok:
                    raise RuntimeError(f"cannot decode {self.video}")
            if record:
                self.stages.setdefault("decode", []).append((time.perf_counter() - t0) * 1e3)

    def settle(self) -> None:
        return None

    def close(self) -> None:
        self.cap.release()


class _UltralyticsRunner:
    """Ultralytics' own predict loop over the video, from its first frame each round."""

    def __init__(self, model: Path, video: Path, imgsz: int) -> None:
        from ultralytics.models import YOLO

        self.yolo = YOLO(str(model), task="detect")
        self.video = str(video)
        self.imgsz = imgsz
        self.stages: dict[str, list[float]] = {}
        self._gen: Any = None
        self.runs_on = "unknown"

    def block(self, n: int, record: bool) -> None:
        if self._gen is None:  # a new pass over the video (warm-up blocks start one)
            self._gen = iter(
                self.yolo.predict(self.video, stream=True, verbose=False, imgsz=self.imgsz)
            )
            next(self._gen)  # sets the predictor up; one frame more of warm-up
            n -= 1
            # AutoBackend -> ONNX backend -> InferenceSession (Ultralytics 8.4)
            with contextlib.suppress(AttributeError, IndexError):
                predictor: Any = self.yolo.predictor
                self.runs_on = predictor.model.backend.session.get_providers()[0]
        for _ in range(n):
            r = next(self._gen)
            if record:
                for k, v in r.speed.items():
                    if v is not None:
                        self.stages.setdefault(k, []).append(float(v))
        if record:
            self._gen.close()
            self._gen = None

    def settle(self) -> None:
        return None

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()


def _cuda_present() -> bool:
    from kanjian.inference.session import cuda_device_present

    return cuda_device_present()


def run_e2e(
    model: Path,
    video: Path,
    settings: list[StationSetting],
    rounds: int = 3,
    frames: int = 60,
    warm: int = 5,
    imgsz: int = 640,
    ultralytics: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[Contender], list[Ratio]]:
    """Run the station, model-alone and Ultralytics contenders round-robin.

    The video must hold at least ``warm + frames`` frames (Ultralytics reads it
    from the start each round; the station loops it).
    """
    if warm < 1 or frames < 1 or rounds < 1:
        raise ValueError(f"rounds, frames and warm must be >= 1, got {rounds}, {frames}, {warm}")
    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-e2e-"))
    runners: dict[str, Any] = {}
    kinds: dict[str, tuple[str, StationSetting | None]] = {}
    try:
        for i, s in enumerate(settings):
            name = f"station, {s.label}"
            log(f"  building {name}")
            runners[name] = _StationRunner(station_config(model, video, tmp / f"st{i}", s))
            kinds[name] = ("station", s)
            name = f"model alone, {s.label}"
            if name not in runners:
                runners[name] = _ModelRunner(model, s)
                kinds[name] = ("model", s)
        if ultralytics:
            runners["Ultralytics predict"] = _UltralyticsRunner(model, video, imgsz)
            kinds["Ultralytics predict"] = ("ultralytics", None)
        runners[DECODE] = _DecodeRunner(video)
        kinds[DECODE] = ("decode", None)
        fps: dict[str, list[float]] = {n: [] for n in runners}
        cpu: dict[str, list[float]] = {n: [] for n in runners}
        order = list(runners)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                run = runners[name]
                run.block(warm, record=False)
                t0, c0 = time.perf_counter(), time.process_time()
                run.block(frames, record=True)
                c1, t1 = time.process_time(), time.perf_counter()
                fps[name].append(frames / (t1 - t0))
                cpu[name].append((c1 - c0) * 1e3 / frames)
                run.settle()
            log(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {v[-1]:.1f}" for n, v in fps.items())
            )
        contenders = [
            Contender(
                name=n,
                kind=kinds[n][0],
                setting=kinds[n][1],
                runs_on=runners[n].runs_on,
                fps=summarize(fps[n]),
                cpu_ms_per_frame=summarize(cpu[n]),
                stages_ms={k: summarize(v) for k, v in runners[n].stages.items() if v},
                frames=rounds * frames,
            )
            for n in order
        ]
    finally:
        for run in runners.values():
            run.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return contenders, _ratios(contenders, fps)


def _ratios(contenders: list[Contender], fps: dict[str, list[float]]) -> list[Ratio]:
    out = []

    def ratio(a: str, b: str) -> Ratio:
        per = [x / y for x, y in zip(fps[a], fps[b], strict=True)]
        return Ratio(a, b, summarize(per), float(np.median(fps[a]) / np.median(fps[b])))

    models = [c for c in contenders if c.kind == "model"]
    best_model = max(models, key=lambda c: c.fps.median) if models else None
    for c in contenders:
        if c.kind != "station":
            continue
        same = f"model alone, {c.setting.label}" if c.setting else ""
        if same in fps:
            out.append(ratio(c.name, same))
        if best_model is not None and best_model.name != same:
            out.append(ratio(c.name, best_model.name))
        if "Ultralytics predict" in fps:
            out.append(ratio(c.name, "Ultralytics predict"))
    if "Ultralytics predict" in fps and best_model is not None:
        out.append(ratio("Ultralytics predict", best_model.name))
    return out


def run_triggered(
    model: Path,
    video: Path,
    setting: StationSetting,
    triggers: int = 50,
    warm: int = 3,
    gap_s: float = 0.05,
    timeout_s: float = 30.0,
) -> TriggerLatency:
    """Trigger-to-verdict latency: one trigger at a time on a triggered station."""
    from kanjian.inference.types import Verdict
    from kanjian.station.pipeline import build_station

    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-trig-"))
    station = build_station(station_config(model, video, tmp, setting, triggered=True))
    loop = threading.Thread(target=station.run, name="bench-triggered", daemon=True)
    loop.start()
    lat: list[float] = []
    stages: dict[str, list[float]] = {}
    missed = 0
    stale0 = cpu0 = 0.0
    try:
        for i in range(warm + triggers):
            if i == warm:
                stale0, cpu0 = station.pump.stats().stale_skipped, time.process_time()
            time.sleep(gap_s)
            sent_utc = datetime.now(timezone.utc)
            t0 = time.perf_counter()
            fut = station.trigger(f"bench-{i}")
            insp = fut.result(timeout=timeout_s)
            dt = (time.perf_counter() - t0) * 1e3
            if i < warm:
                continue
            lat.append(dt)
            if insp.verdict in (Verdict.MISSED, Verdict.ERROR):
                missed += 1
                continue
            wait = (insp.frame.captured_at - sent_utc).total_seconds() * 1e3
            parts = {"wait_frame": wait, **insp.timings_ms}
            parts["emit_commit"] = dt - wait - insp.timings_ms.get("total", 0.0)
            for k, v in parts.items():
                stages.setdefault(k, []).append(v)
        cpu = (time.process_time() - cpu0) * 1e3 / triggers
        stale = (station.pump.stats().stale_skipped - stale0) / triggers
    finally:
        station.stop()
        loop.join(timeout=timeout_s)
        station.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return TriggerLatency(
        setting=setting,
        triggers=triggers,
        gap_ms=gap_s * 1e3,
        latency_ms=summarize(lat),
        stages_ms={k: summarize(v) for k, v in stages.items()},
        missed=missed,
        stale_per_trigger=stale,
        cpu_ms_per_trigger=cpu,
    )
