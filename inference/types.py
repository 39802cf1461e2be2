"""Result types that leave ``kanjian.inference``: detections, verdicts, inspections."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from kanjian.camera.frame import Frame, FrameFailure
from kanjian.kernels.quality import FrameQuality


class Verdict(str, Enum):
    """What the station says about one inspection."""

    PASS = "PASS"
    FAIL = "FAIL"
    REVIEW = "REVIEW"
    #: the frame arrived but could not be judged (unreadable image, model error)
    ERROR = "ERROR"
    #: a trigger came but no frame arrived in time
    MISSED = "MISSED"


@dataclass(frozen=True)
class Detections:
    """Objects found in one frame, in original-image pixel coordinates.

    Attributes:
        xyxy: ``(n, 4)`` float32, ``x1, y1, x2, y2`` in pixels of the source frame.
        confidence: ``(n,)`` float32 in ``[0, 1]``.
        class_id: ``(n,)`` int32, index into the model's class names.
        masks: optional ``(n, H, W)`` bool, instance masks at source-frame size.
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    class_id: NDArray[np.int32]
    masks: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must be (n, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must be ({n},), got {self.confidence.shape}")
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must be ({n},), got {self.class_id.shape}")
        if self.masks is not None and (self.masks.ndim != 3 or len(self.masks) != n):
            raise ValueError(f"masks must be ({n}, H, W), got {self.masks.shape}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
        )

    @property
    def area(self) -> NDArray[np.float32]:
        """``(n,)`` float32 box areas in square pixels."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        area: NDArray[np.float32] = (wh[:, 0] * wh[:, 1]).astype(np.float32)
        return area

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> Detections:
        """A subset by boolean mask or index array."""
        return Detections(
            xyxy=self.xyxy[keep],
            confidence=self.confidence[keep],
            class_id=self.class_id[keep],
            masks=None if self.masks is None else self.masks[keep],
        )


@dataclass(frozen=True)
class ModelRef:
    """Which model judged an inspection."""

    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Inspection:
    """One judged (or failed) frame: the record that is logged, shown and synced.

    Attributes:
        inspection_id: made once, used everywhere (SQLite, MQTT, PLC, file names).
        frame: the frame, or the failure that stood in for it.
        model: the model that judged it; ``None`` when no model ran.
        verdict: PASS / FAIL / REVIEW / ERROR / MISSED.
        reason: why the verdict (the rule that fired, or the error), for people.
        detections: boxes in source-frame pixels (empty for classify / errors).
        class_names: the model's class names, index = ``class_id``.
        probs: classify only: ``(num_classes,)`` float32 class probabilities.
        score: anomaly models: the image's anomaly score, normalised to ``[0, 1]`` by the
            bundle's calibration (0.25 review, 0.5 fail: :mod:`kanjian.inference.calibration`).
        anomaly_map: anomaly models: ``(H, W)`` float32 per-pixel score at source-frame
            size, normalised as ``score``.
        timings_ms: per-stage wall time in milliseconds, e.g.
            ``{"preprocess": 0.8, "infer": 42.1, "postprocess": 0.6}``.
        task: the judging model's task (the name of its head in
            :mod:`kanjian.inference.heads`, which stores and draws it); ``""`` when no
            model output came with it.
        quality: the frame's image-quality numbers when the station's quality gate is
            on (:mod:`kanjian.inference.quality_gate`), else ``None``.
    """

    frame: Frame | FrameFailure
    verdict: Verdict
    reason: str = ""
    model: ModelRef | None = None
    detections: Detections = field(default_factory=Detections.empty)
    class_names: tuple[str, ...] = ()
    probs: NDArray[np.float32] | None = None
    score: float | None = None
    anomaly_map: NDArray[np.float32] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    inspection_id: uuid.UUID = field(default_factory=uuid.uuid4)
    task: str = ""
    quality: FrameQuality | None = None

    @property
    def short_id(self) -> str:
        """First 8 hex digits of the UUID, for screens and PLC registers."""
        return self.inspection_id.hex[:8]
