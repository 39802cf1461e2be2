"""Anomaly models' per-image latency beside the YOLO detect model's, in one process.

Contenders (kanjian issue 14, point 4): the suite's YOLO detect model at its own
input size, and the anomaly models at theirs (256x256 by default): a trained
bundle when one is given or shipped (:data:`~benchmarks.anomaly_assets.DEMO_ANOMALY_MODEL`),
and untrained exports of DRAEM-S (width 1.0), DRAEM-S lite
(:data:`~kanjian.training.anomaly_draem.LITE_WIDTH`) and PatchKNN (bank 4,096)
(:mod:`benchmarks.anomaly_assets`). Each model runs two ways, at each thread count:

- **ORT alone**: ``session.run`` on a preallocated random input, a session made by
  :func:`kanjian.inference.session.create_session` with that many intra-op threads
  (:class:`benchmarks.infer._Runner`, as the inference section).
- **head path**: :func:`kanjian.inference.model.load_model` then ``predict(frame)``,
  what the station's inspector calls per frame: the letterbox kernel, ONNX Runtime
  and the task head's post-processing (detect: decode + NMS; anomaly: the map back
  on the frame, normalisation by the bundle's calibration, defect regions). Frames
  are real images read as the station's image sources read them (``cv2.IMREAD_COLOR``):
  a NEU-DET image for YOLO, a magnetic-tile defect image for the anomaly models.

Every contender is built first; then rounds go round-robin
(:func:`benchmarks.common.round_robin`, one untimed warm-up round): each round runs
``frames`` calls of every contender, in alternating order, so a slow minute on a
noisy machine hits them all alike. ``x YOLO`` is the median over rounds of this
contender's round time / YOLO's, same way and same thread count, same round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import Summary, round_robin, summarize

ORT = "ORT alone"
HEAD = "head path"


@dataclass(frozen=True)
class BenchModel:
    """One model of the comparison.

    Attributes:
        label: the row's name. source: ``suite model``, ``trained bundle`` or
            ``untrained export``.
        task: ``detect`` or ``anomaly`` (from the ONNX metadata).
        onnx: the ONNX file (ORT alone). load_path: what ``load_model`` gets (the
            bundle folder when a manifest sits beside the file).
        imgsz: model input ``(height, width)``.
        image: the frame the head path judges; image_wh: its size in pixels.
        sha256: the ONNX file's, first 12 hex digits.
    """

    label: str
    source: str
    task: str
    onnx: Path
    load_path: Path
    imgsz: tuple[int, int]
    image: Path
    image_wh: tuple[int, int]
    sha256: str


@dataclass(frozen=True)
class LatencyRow:
    """One model, one way, one thread count.

    Attributes:
        way: :data:`ORT` or :data:`HEAD`. threads: ONNX Runtime intra-op threads.
        ms: per call (all timed calls pooled). per_s: images per second per round.
        vs_yolo: per-round ratio of round times to YOLO's, same way and threads
            (None for YOLO itself).
        stages_ms: head path only: the prediction's ``preprocess``, ``infer``,
            ``postprocess``.
        found: head path only: detections (YOLO) or defect regions (anomaly) on the frame.
    """

    model: str
    way: str
    threads: int
    ms: Summary
    per_s: Summary
    vs_yolo: Summary | None
    stages_ms: dict[str, Summary]
    found: int | None


@dataclass(frozen=True)
class AnomalyLatency:
    """The whole comparison (see :meth:`markdown`)."""

    cpu: str
    usable_cpus: int
    frames: int
    rounds: int
    models: tuple[BenchModel, ...]
    rows: tuple[LatencyRow, ...]
    notes: tuple[str, ...] = ()

    def row(self, model: str, way: str, threads: int) -> LatencyRow | None:
        """The row of ``model`` run ``way`` at ``threads``, if measured."""
        return next(
            (r for r in self.rows if (r.model, r.way, r.threads) == (model, way, threads)), None
        )

    def markdown(self) -> str:
        """A Markdown table: per model and thread count, ORT alone and the head path."""
        out = [
            f"CPU {self.cpu}, {self.usable_cpus} usable; {self.rounds} rounds x {self.frames} "
            "images per contender after one warm-up round, round-robin in one process. "
            "`x YOLO`: median of per-round time ratios to the YOLO model, same way, same threads.",
            "",
            "| model | input | threads | ORT alone ms median | p90 | img/s | x YOLO "
            "| head path ms median | p90 | img/s | x YOLO | pre / infer / post ms | found |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        threads = sorted({r.threads for r in self.rows})
        for t in threads:
            for m in self.models:
                cells = [m.label, f"{m.imgsz[1]}x{m.imgsz[0]}", str(t)]
                for way in (ORT, HEAD):
                    r = self.row(m.label, way, t)
                    if r is None:
                        cells += [""] * 4
                        continue
                    vs = "1" if r.vs_yolo is None else f"{r.vs_yolo.median:.2f}"
                    cells += [f"{r.ms.median:.2f}", f"{r.ms.p90:.2f}", f"{r.per_s.median:.1f}", vs]
                h = self.row(m.label, HEAD, t)
                stages = (
                    " / ".join(
                        f"{h.stages_ms[k].median:.2f}"
                        for k in ("preprocess", "infer", "postprocess")
                        if k in h.stages_ms
                    )
                    if h
                    else ""
                )
                found = "" if h is None or h.found is None else str(h.found)
                cells += [stages, found]
                out.append("| " + " | ".join(cells) + " |")
        out += ["", "Models and frames:", ""]
        for m in self.models:
            out.append(
                f"- {m.label}: {m.source}, {m.task}, `{m.onnx}` (sha256 {m.sha256}); "
                f"head path on `{m.image.name}` ({m.image_wh[0]}x{m.image_wh[1]})"
            )
        out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def read_bgr(image: Path) -> NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 BGR, as the station's image sources read a file (grey too)."""
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {image}")
    return np.asarray(img, np.uint8)


def describe(
    label: str, source: str, path: Path, image: Path, task: str | None = None
) -> BenchModel:
    """Read a model's task, input size and hash, and its frame's size.

    Args:
        path: an ONNX file or a bundle folder; a ``model.onnx`` with ``manifest.json``
            beside it is loaded as its bundle (the manifest's calibration applies).
        task: the task it must have (ValueError naming the file otherwise).
    """

    from kanjian.inference.bundle import MANIFEST_NAME, MODEL_NAME
    from kanjian.inference.model import load_model

    if path.is_dir():
        onnx, load_path = path / MODEL_NAME, path
    elif (path.parent / MANIFEST_NAME).is_file():
        onnx, load_path = path, path.parent
    else:
        onnx, load_path = path, path
    m = load_model(load_path, ["cpu"], 1)
    if task is not None and m.info.task != task:
        raise ValueError(f"{path} is a {m.info.task} model, not {task}: pass an {task} model")
    h, w = read_bgr(image).shape[:2]
    return BenchModel(
        label, source, m.info.task, onnx, load_path, m.info.imgsz, image, (w, h), m.info.sha256[:12]
    )


def anomaly_method(onnx: Path) -> str:
    """The ``method`` in an anomaly ONNX file's ``kanjian_anomaly`` metadata ("" if none)."""
    import json

    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map.get("kanjian_anomaly", "{}")
    try:
        return str(json.loads(meta).get("method", ""))
    except (ValueError, AttributeError):
        return ""


class _Ort:
    """ORT alone: the inference section's runner, calls recorded when asked."""

    def __init__(self, m: BenchModel, threads: int) -> None:
        from benchmarks.infer import InferSetting, _Runner

        self.runner = _Runner(m.onnx, InferSetting("cpu", 1, threads), None)
        self.calls_ms: list[float] = []
        self.stages: dict[str, list[float]] = {}
        self.found: int | None = None

    def block(self, n: int, record: bool) -> None:
        self.runner.calls_ms.clear()
        self.runner.block(n)
        if record:
            self.calls_ms += self.runner.calls_ms


class _Head:
    """The head path: ``load_model(...).predict(frame)`` on one real image."""

    def __init__(self, m: BenchModel, threads: int) -> None:
        from kanjian.inference.model import load_model

        self.model = load_model(m.load_path, ["cpu"], threads)
        self.image = read_bgr(m.image)
        self.model.warmup()  # kernel JIT and ORT allocation, as the station's start-up
        self.found: int | None = len(self.model.predict(self.image).detections)
        self.calls_ms: list[float] = []
        self.stages: dict[str, list[float]] = {}

    def block(self, n: int, record: bool) -> None:
        import time

        for _ in range(n):
            t0 = time.perf_counter_ns()
            pred = self.model.predict(self.image)
            dt = (time.perf_counter_ns() - t0) / 1e6
            if record:
                self.calls_ms.append(dt)
                for k, v in pred.timings_ms.items():
                    self.stages.setdefault(k, []).append(v)


def run_anomaly_latency(
    models: Sequence[BenchModel],
    threads: Sequence[int],
    frames: int,
    rounds: int,
    cpu: str = "",
    usable_cpus: int = 0,
    notes: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> AnomalyLatency:
    """Time every model both ways at every thread count, round-robin.

    ``models[0]`` is the YOLO model the ratios divide by.
    """
    if frames < 1 or rounds < 1 or not threads or not models:
        raise ValueError(f"need models, threads and frames, rounds >= 1; got {frames}, {rounds}")
    runners: dict[tuple[str, str, int], Any] = {}
    for t in threads:
        for m in models:
            log(f"  building {m.label}, {t} thread{'s' if t > 1 else ''}")
            runners[(m.label, ORT, t)] = _Ort(m, t)
            runners[(m.label, HEAD, t)] = _Head(m, t)
    warmup = 1

    def call(run: Any) -> Callable[[int], None]:
        return lambda r: run.block(frames, record=r >= warmup)

    keys = list(runners)
    walls = round_robin({str(k): call(runners[k]) for k in keys}, rounds, warmup)
    yolo = models[0].label
    rows = []
    for key in keys:
        label, way, t = key
        run = runners[key]
        mine, ref = walls[str(key)], walls[str((yolo, way, t))]
        rows.append(
            LatencyRow(
                model=label,
                way=way,
                threads=t,
                ms=summarize(run.calls_ms),
                per_s=summarize([frames / (ms / 1e3) for ms in mine]),
                vs_yolo=None
                if label == yolo
                else summarize([a / b for a, b in zip(mine, ref, strict=True)]),
                stages_ms={k: summarize(v) for k, v in run.stages.items()},
                found=run.found,
            )
        )
        log(f"  {label}, {way}, {t} thr: {rows[-1].ms.median:.2f} ms")
    return AnomalyLatency(
        cpu, usable_cpus, frames, rounds, tuple(models), tuple(rows), tuple(notes)
    )


#: row names of the untrained exports
UNTRAINED_LABELS = {
    "draem": "DRAEM-S, width 1.0 (untrained)",
    "draem-lite": "DRAEM-S lite, width 0.75 (untrained)",
    "patchknn": "PatchKNN, bank 4096 (untrained)",
}


def build_models(
    yolo: Path,
    anomaly_model: Path | None,
    methods: Sequence[str],
    imgsz: int = 256,
    log: Callable[[str], None] = print,
) -> tuple[list[BenchModel], list[str]]:
    """The YOLO model first, then the trained bundle (if any), then the untrained exports.

    Args:
        yolo: the suite's model (ONNX file or bundle folder).
        anomaly_model: a trained anomaly bundle's ``model.onnx`` or folder; None: none.
        methods: untrained exports to add (:data:`benchmarks.anomaly_export.METHODS`).

    Returns:
        The models and notes for the report.

    Raises:
        ValueError: no anomaly model at all, or a model of the wrong task.
    """
    from benchmarks.anomaly_assets import magnetic_tile_image, torch_available, untrained_models
    from benchmarks.assets import neu_det_images

    if anomaly_model is None and not methods:
        raise ValueError("no anomaly model: pass --anomaly-model or --anomaly-methods")
    tile = magnetic_tile_image()
    name = yolo.parent.name if yolo.stem == "model" else yolo.stem  # a bundle's model.onnx
    models = [describe(f"YOLO detect ({name})", "suite model", yolo, neu_det_images()[0])]
    notes = [
        "CPU only (ONNX Runtime's CPU provider); each session has the station's options "
        "(create_session: no spinning intra-op threads)",
    ]
    if anomaly_model is not None:
        onnx = anomaly_model / "model.onnx" if anomaly_model.is_dir() else anomaly_model
        # a bundle's file is always model.onnx: its folder (or the bundle's) names it
        name = onnx.parent.name if onnx.name == "model.onnx" else onnx.stem
        if name == "model":  # station/demo/magnetic-tile/model/model.onnx
            name = onnx.parent.parent.name
        method = anomaly_method(onnx)
        label = f"trained bundle {name}" + (f" ({method})" if method else "")
        models.append(describe(label, "trained bundle", anomaly_model, tile, task="anomaly"))
    else:
        notes.append(
            "no trained anomaly bundle (the demo bundle is not in this checkout; "
            "--anomaly-model PATH adds one)"
        )
    if methods and anomaly_model is not None and not torch_available():
        # a runtime-only install (no torch) still times the trained bundle
        notes.append(
            f"untrained {', '.join(methods)} graphs left out: exporting them needs torch "
            "(pip install 'kanjian[training]')"
        )
        methods = ()
    if methods:
        log(f"  untrained anomaly graphs at {imgsz}: {', '.join(methods)} (exported once, cached)")
        for method, path in untrained_models(methods, imgsz).items():
            label = UNTRAINED_LABELS[method]
            models.append(describe(label, "untrained export", path, tile, task="anomaly"))
        notes.append(
            "untrained exports: random weights cost what trained ones cost in ONNX Runtime, "
            "but without a calibration their maps give 0 or 1 regions; a trained bundle's "
            "head path shows its calibrated post-processing"
        )
    return models, notes
