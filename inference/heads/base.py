"""The task-head interface and its registry: everything a model task decides.

A model's task (``detect``, ``segment``, ``classify`` ...) says how its input is made,
how its raw outputs become detections or class probabilities, which verdict rules
judge them, how its golden set is compared, which extra columns its inspections keep
and how its result is drawn. Each task is one :class:`TaskHead` registered under its
name; the runtime (model, golden check, store, annotated pictures) asks
:func:`head_for` and never branches on the task itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.types import Detections, Inspection
from kanjian.inference.verdict import VerdictResult, VerdictRules
from kanjian.kernels import Letterbox

if TYPE_CHECKING:
    from kanjian.inference.golden_set import GoldenImage, GoldenSet

#: decides whether a detection is drawn: ``keep(class_name, confidence)``
Keep = Callable[[str, float], bool]


class Decoded(NamedTuple):
    """What a head's decoder returns (a plain ``(detections, probs)`` tuple is accepted too).

    Attributes:
        detections: in source-frame pixels (an anomaly model's defect regions).
        probs: ``(num_classes,)`` float32 class probabilities, for tasks that have them.
        score: anomaly models: the normalised image score in ``[0, 1]``
            (:func:`kanjian.inference.calibration.normalise`).
        anomaly_map: anomaly models: ``(H, W)`` float32 normalised map, source-frame size.
        raw_score: anomaly models: the image score as the ONNX model gave it (raw units,
            before the calibration): what golden sets record, since the normalised one
            is clipped to ``[0, 1]`` and moves with the calibration.
    """

    detections: Detections
    probs: NDArray[np.float32] | None = None
    score: float | None = None
    anomaly_map: NDArray[np.float32] | None = None
    raw_score: float | None = None


@dataclass(frozen=True)
class DecodeThresholds:
    """Decoding thresholds for one frame.

    Attributes:
        conf: minimum confidence kept, in ``[0, 1]``.
        iou: IoU above which NMS suppresses a box, in ``[0, 1]``.
        max_det: most detections kept.
        calibration: anomaly models: the bundle's thresholds (``None``: raw outputs are
            taken as normalised already).
    """

    conf: float
    iou: float
    max_det: int
    calibration: AnomalyCalibration | None = None


class UnknownTaskError(ValueError):
    """A model or manifest names a task no head is registered for."""


class TaskHead(ABC):
    """One model task: preprocess, decode, judge, golden comparison, stored fields, drawing.

    Heads are stateless singletons; one registered instance serves every model of its
    task, on any number of threads.

    Class attributes:
        task: the name models and manifests give (Ultralytics' ``task`` metadata).
        letterbox_input: the input is exactly the letterbox kernel's output, so on a
            GPU session the CUDA letterbox twin may write it straight to device memory
            instead of :meth:`preprocess`.
        store_columns: extra ``inspections`` columns this task fills, name -> SQLite
            type (e.g. ``{"probs_json": "TEXT"}``); the store adds missing ones.
    """

    task: ClassVar[str]
    letterbox_input: ClassVar[bool] = False
    store_columns: ClassVar[Mapping[str, str]] = MappingProxyType({})

    @abstractmethod
    def preprocess(
        self,
        image: NDArray[np.uint8],
        imgsz: tuple[int, int],
        out: NDArray[np.float32] | None = None,
    ) -> tuple[NDArray[np.float32], Letterbox | None]:
        """Frame -> model input.

        Args:
            image: ``(H, W, 3)`` BGR or ``(H, W)`` grey uint8 frame.
            imgsz: model input ``(height, width)`` in pixels.
            out: a reusable ``(1, 3, height, width)`` float32 buffer the head may
                write into (and return) instead of allocating.

        Returns:
            ``(1, 3, height, width)`` float32 input, and the letterbox geometry that
            maps model-input pixels back to the frame (``None`` when the input is not
            letterboxed).
        """

    @abstractmethod
    def decode(
        self,
        outputs: Sequence[NDArray[np.float32]],
        geometry: Letterbox | None,
        thresholds: DecodeThresholds,
        num_classes: int,
        input_hw: tuple[int, int],
    ) -> Decoded:
        """Raw ONNX outputs (batch of one) -> detections in source pixels (+ probs)."""

    @abstractmethod
    def judge(
        self,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        names: tuple[str, ...],
        rules: VerdictRules,
    ) -> VerdictResult:
        """PASS / FAIL / REVIEW and its reason, by the verdict rules (``names[class_id]``)."""

    def judge_decoded(
        self, decoded: Decoded, names: tuple[str, ...], rules: VerdictRules
    ) -> VerdictResult:
        """Judge everything the decoder gave (an anomaly head also needs the image score);
        by default :meth:`judge` on the detections and probabilities."""
        return self.judge(decoded.detections, decoded.probs, names, rules)

    @abstractmethod
    def golden(
        self,
        expected: GoldenImage,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        tolerance: GoldenSet,
    ) -> list[str]:
        """Problems (one line each, naming ``expected.file``) where the model's answer
        for a golden image differs from the recorded one; empty when it matches."""

    def golden_decoded(
        self, expected: GoldenImage, decoded: Decoded, tolerance: GoldenSet
    ) -> list[str]:
        """Compare everything the decoder gave with a golden image (an anomaly head also
        compares the raw image score); by default :meth:`golden` on the detections and
        probabilities. :func:`kanjian.inference.golden.check_bundle` calls this one."""
        return self.golden(expected, decoded.detections, decoded.probs, tolerance)

    def store_fields(self, insp: Inspection) -> dict[str, Any]:
        """Values of :attr:`store_columns` for ``insp``'s row (JSON text, numbers, None)."""
        return {}

    @abstractmethod
    def draw(
        self,
        image: NDArray[np.uint8],
        insp: Inspection,
        keep: Keep | None = None,
        max_side: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> NDArray[np.uint8]:
        """A BGR copy of ``image`` with the task's result drawn on it (no verdict).

        Args:
            image: ``(H, W, 3)`` BGR or ``(H, W)`` grey uint8, the inspection's frame.
            keep: which detections to draw; ``None`` draws all.
            max_side: shrink so the longest side is at most this many pixels.
            names: display names by class name, in the station's language, for the
                labels (:func:`~kanjian.inference.heads.drawing.detection_boxes`);
                ``None`` or a class missing: its class name.

        Returns:
            ``(h, w, 3)`` uint8 BGR, scaled by ``min(1, max_side / max(H, W))``;
            ``image`` itself is left as it was.
        """


_HEADS: dict[str, TaskHead] = {}


def register_head(head: TaskHead, *, replace: bool = False) -> TaskHead:
    """Make ``head`` the one for ``head.task``; returns it.

    Register at import time, before a station opens its store: the store adds the
    head's :attr:`~TaskHead.store_columns` when it opens.

    Raises:
        ValueError: the task is already registered (and not ``replace``), its name is
            not an identifier, or a store column is not an identifier or clashes in
            type with another head's column of the same name.
    """
    task = head.task
    if not task.isidentifier():
        raise ValueError(f"task name {task!r} must be an identifier")
    if task in _HEADS and not replace:
        raise ValueError(f"a head for task {task!r} is already registered")
    others = task_columns(exclude=task)
    for col, sqltype in head.store_columns.items():
        if not col.isidentifier():  # it goes into SQL as a column name
            raise ValueError(f"task {task!r}: store column {col!r} must be an identifier")
        if others.get(col, sqltype) != sqltype:
            raise ValueError(
                f"task {task!r}: store column {col} is {sqltype}, another task's is {others[col]}"
            )
    _HEADS[task] = head
    return head


def unregister_head(task: str) -> None:
    """Forget the head for ``task`` (tests, plugins that unload); no error if absent."""
    _HEADS.pop(task, None)


def known_tasks() -> tuple[str, ...]:
    """Names of the registered tasks, sorted."""
    return tuple(sorted(_HEADS))


def unknown_task_message(task: object) -> str:
    """The sentence for a task no head is registered for, naming the known ones."""
    return f"task {task!r} is not supported; known tasks: {', '.join(known_tasks())}"


def find_head(task: str) -> TaskHead | None:
    """The head registered for ``task``, or ``None``."""
    return _HEADS.get(task)


def head_for(task: str) -> TaskHead:
    """The head registered for ``task``.

    Raises:
        UnknownTaskError: naming the task and the known ones.
    """
    head = _HEADS.get(task)
    if head is None:
        raise UnknownTaskError(unknown_task_message(task))
    return head


def task_columns(exclude: str | None = None) -> dict[str, str]:
    """Every registered head's extra ``inspections`` columns, name -> SQLite type."""
    cols: dict[str, str] = {}
    for task in known_tasks():
        if task != exclude:
            cols.update(_HEADS[task].store_columns)
    return cols


def store_fields(insp: Inspection) -> dict[str, Any]:
    """All per-task columns for ``insp``'s ``inspections`` row: its head's values, the
    other heads' columns ``None`` (every row of a batch insert has the same keys)."""
    row: dict[str, Any] = dict.fromkeys(task_columns())
    head = _HEADS.get(insp.task)
    if head is not None:
        row.update(head.store_fields(insp))
    return row
