"""A loaded ONNX defect model: preprocess, run, decode — one call per frame.

This is the runtime path: ONNX Runtime + NumPy + Numba kernels. It never
imports torch or Ultralytics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kanjian.inference import bundle as bundle_mod
from kanjian.inference.gpu_input import device_input_for
from kanjian.inference.heads import Decoded, DecodeThresholds, TaskHead, head_for
from kanjian.inference.metadata import ModelInfo, read_ultralytics_metadata
from kanjian.inference.session import ModelLoadError, create_session
from kanjian.inference.types import Detections, ModelRef
from kanjian.inference.verdict import VerdictResult, VerdictRules
from kanjian.kernels import Letterbox


@dataclass(frozen=True)
class Prediction:
    """What the model says about one frame, before verdict rules.

    Attributes:
        detections: boxes (and masks) in source-frame pixels; empty for classify.
        probs: classify only: ``(num_classes,)`` float32 probabilities.
        score: anomaly only: normalised image score in ``[0, 1]``.
        anomaly_map: anomaly only: ``(H, W)`` float32 normalised map at source-frame size.
        raw_score: anomaly only: the image score in the model's raw units (golden sets).
        timings_ms: ``preprocess``, ``infer``, ``postprocess`` wall times (ms).
    """

    detections: Detections
    probs: NDArray[np.float32] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    anomaly_map: NDArray[np.float32] | None = None
    raw_score: float | None = None

    def decoded(self) -> Decoded:
        """What the task head decoded, as the head's own type (to judge or golden-check)."""
        return Decoded(self.detections, self.probs, self.score, self.anomaly_map, self.raw_score)


class OnnxModel:
    """An ONNX Runtime session plus the task head (:mod:`kanjian.inference.heads`) that
    makes its input, decodes its outputs and judges them.

    Thread-safe: several pipeline workers may call :meth:`predict` at once
    (ONNX Runtime sessions allow concurrent ``run``; each thread has its own
    preallocated input buffer).
    """

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("cpu",),
        intra_op_threads: int | None = None,
        manifest: bundle_mod.BundleManifest | None = None,
        allow_fallback: bool = False,
    ) -> None:
        self.path = path
        self.session, self.session_info = create_session(
            path, providers, intra_op_threads, allow_fallback=allow_fallback
        )
        meta = read_ultralytics_metadata(self.session, path)
        sha = bundle_mod.sha256_file(path)
        if manifest is not None and manifest.onnx_sha256 != sha:
            raise ModelLoadError(
                f"{path}: sha256 {sha[:12]}… does not match the manifest's "
                f"{manifest.onnx_sha256[:12]}…; the file was altered or replaced"
            )
        self.manifest = manifest
        # made once: the inspector asks for them on every frame that has no rules set
        rules = manifest.rules if manifest else None
        self._default_rules = rules if rules is not None else VerdictRules()
        self.info = ModelInfo(
            name=manifest.name if manifest else path.stem,
            version=manifest.version if manifest else "0",
            task=meta["task"],
            class_names=meta["class_names"],
            imgsz=meta["imgsz"],
            stride=meta["stride"],
            sha256=sha,
        )
        self.head: TaskHead = head_for(self.info.task)
        self._end2end: bool = meta["end2end"]
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._local = threading.local()  # per-thread input buffer
        # On CUDA/TensorRT, a letterboxed input is made on the GPU in memory ORT reads
        # directly; other inputs are made by the head on the host.
        self._device = (
            device_input_for(self.session, self.info.imgsz) if self.head.letterbox_input else None
        )

    @property
    def ref(self) -> ModelRef:
        """Name, version and sha256, as recorded with each inspection."""
        return ModelRef(self.info.name, self.info.version, self.info.sha256)

    def default_thresholds(self) -> bundle_mod.Thresholds:
        """The manifest's thresholds, or Ultralytics' defaults for a bare ONNX."""
        return self.manifest.thresholds if self.manifest else bundle_mod.Thresholds()

    def default_rules(self) -> VerdictRules:
        """The manifest's verdict rules, or kanjian's defaults (fail 0.5, review 0.25)."""
        return self._default_rules

    def warmup(self) -> float:
        """Run one dummy frame so kernel JIT and ORT allocation happen at start-up.

        Returns the warm-up time in milliseconds.
        """
        t0 = time.perf_counter()
        h, w = self.info.imgsz
        self.predict(np.full((h, w, 3), 114, np.uint8))
        return (time.perf_counter() - t0) * 1e3

    def _input_buffer(self) -> NDArray[np.float32]:
        """This thread's reusable ``(1, 3, H, W)`` float32 input tensor."""
        buf: NDArray[np.float32] | None = getattr(self._local, "buffer", None)
        if buf is None:
            buf = np.empty((1, 3, *self.info.imgsz), np.float32)
            self._local.buffer = buf
        return buf

    def run(self, tensor: NDArray[np.float32]) -> list[Any]:
        """Raw ONNX Runtime call: ``(1, 3, H, W)`` float32 -> output arrays."""
        return self.session.run(self._output_names, {self._input_name: tensor})  # type: ignore[no-any-return]

    def predict(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Prediction:
        """Judge one frame.

        Args:
            image: ``(H, W, 3)`` BGR or ``(H, W)`` grey uint8.
            conf, iou, max_det: decoding thresholds; ``None`` takes the bundle's.
        """
        th = self.default_thresholds()
        conf = th.conf if conf is None else conf
        iou = th.iou if iou is None else iou
        max_det = th.max_det if max_det is None else max_det
        t0 = time.perf_counter()
        geom: Letterbox | None
        if self._device is not None:
            tensor: NDArray[np.float32] | None = None  # on the GPU, written by the CUDA kernel
            geom = self._device.letterbox(image)
        else:
            tensor, geom = self.head.preprocess(image, self.info.imgsz, self._input_buffer())
        t1 = time.perf_counter()
        if tensor is None:
            assert self._device is not None
            outputs: list[Any] = self._device.run()
        else:
            outputs = self.run(tensor)
        t2 = time.perf_counter()
        calibration = self.manifest.calibration if self.manifest else None
        # a plugin head may still return a plain (detections, probs) tuple
        decoded = Decoded(
            *self.head.decode(
                outputs,
                geom,
                DecodeThresholds(conf, iou, max_det, calibration),
                len(self.info.class_names),
                self.info.imgsz,
            )
        )
        t3 = time.perf_counter()
        return Prediction(
            detections=decoded.detections,
            probs=decoded.probs,
            score=decoded.score,
            anomaly_map=decoded.anomaly_map,
            raw_score=decoded.raw_score,
            timings_ms={
                "preprocess": (t1 - t0) * 1e3,
                "infer": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
        )

    def judge(self, pred: Prediction, rules: VerdictRules) -> VerdictResult:
        """PASS / FAIL / REVIEW for a prediction of this model, by its task's rules."""
        return self.head.judge_decoded(pred.decoded(), self.info.class_names, rules)


def load_model(
    path: Path | str,
    providers: Sequence[str] = ("auto",),
    intra_op_threads: int | None = None,
    allow_fallback: bool = False,
) -> OnnxModel:
    """Load a bundle directory (``model.onnx`` + ``manifest.json``) or a bare ONNX file.

    ``allow_fallback``: run on the next provider when the first one does not load
    (see :func:`~kanjian.inference.session.create_session`); off, that is refused.

    Raises:
        ModelLoadError / bundle.BundleError: naming the file that is missing or bad.
        ProviderUnavailableError: the first provider does not run and no fallback is allowed.
    """
    p = Path(path)
    if p.is_dir():
        manifest = bundle_mod.read_manifest(p)
        onnx = p / bundle_mod.MODEL_NAME
        return OnnxModel(onnx, providers, intra_op_threads, manifest, allow_fallback)
    if not p.exists():
        raise ModelLoadError(f"model not found: {p}")
    return OnnxModel(p, providers, intra_op_threads, allow_fallback=allow_fallback)


__all__ = ["OnnxModel", "Prediction", "load_model"]
