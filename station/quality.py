"""The image quality gate in force: one frozen :class:`QualityGate` the inspector holds.

Like the verdict rules (:class:`~kanjian.station.ruleset.RuleSet`), a change builds a
new gate and the inspector swaps it in with one reference assignment, so a frame is
measured and judged by one whole set of settings.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from kanjian.camera.imagefile import ImageFileError, decode_image_file
from kanjian.inference.quality_gate import QualityCode, QualityParams, judge_quality
from kanjian.kernels.quality import FrameQuality, QualityReference, frame_quality, quality_reference
from kanjian.station.quality_config import QualityConfig, QualitySettings

log = logging.getLogger(__name__)

__all__ = ["QualityError", "QualityGate", "gate_from_config"]

Origin = Literal["station.yaml", "api"]


class QualityError(ValueError):
    """The gate cannot be set up as asked (an unreadable reference image, a threshold that
    needs a reference without one); the message names the fix."""


@dataclass(frozen=True)
class QualityGate:
    """Everything that measures and judges a frame's image quality.

    Attributes:
        settings: on or off, and the thresholds.
        rows, low_clip, high_clip: how the numbers are measured (station.yaml only).
        reference: the reference frame's segment means, or ``None``.
        reference_path: where the reference image came from.
        origin, set_at, set_by: ``station.yaml``, or ``api`` with when (UTC ISO 8601)
            and by whom the settings were set.
    """

    settings: QualitySettings = field(default_factory=QualitySettings)
    rows: int | None = 8
    low_clip: int = 2
    high_clip: int = 253
    reference: QualityReference | None = None
    reference_path: Path | None = None
    origin: Origin = "station.yaml"
    set_at: str | None = None
    set_by: str | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def measure(self, image: NDArray[np.uint8]) -> FrameQuality:
        """The frame's numbers (with the reference difference when the sizes match)."""
        q = frame_quality(image, self.rows, self.low_clip, self.high_clip, self.reference)
        if self.reference is not None and q.reference_diff is None:
            _warn_size_once(self, (image.shape[0], image.shape[1]))
        return q

    def judge(self, q: FrameQuality) -> tuple[QualityCode, QualityParams] | None:
        """The check ``q`` fails, or ``None`` (:func:`~kanjian.inference.quality_gate.judge_quality`)."""
        return judge_quality(q, self.settings)


_warned: set[tuple[str, tuple[int, int]]] = set()
_warned_lock = threading.Lock()


def _warn_size_once(gate: QualityGate, frame_hw: tuple[int, int]) -> None:
    assert gate.reference is not None
    key = (str(gate.reference_path), frame_hw)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    rh, rw = gate.reference.frame_hw
    log.warning(
        "quality.reference %s is %dx%d but the camera's frames are %dx%d: the reference "
        "check (max_reference_diff) is skipped for them; take a reference at the camera's "
        "resolution",
        gate.reference_path, rw, rh, frame_hw[1], frame_hw[0],
    )  # fmt: skip


def load_reference(path: Path, rows: int | None) -> QualityReference:
    """The reference image's segment means.

    Raises:
        QualityError: the file cannot be read or decoded (the message names it).
    """
    try:
        image = decode_image_file(path)
    except ImageFileError as e:
        raise QualityError(f"quality.reference: {e}") from e
    return quality_reference(image, rows)


def gate_from_config(cfg: QualityConfig) -> QualityGate:
    """station.yaml's gate (its reference image read now).

    Raises:
        QualityError: the reference image cannot be read.
    """
    ref = None if cfg.reference is None else load_reference(cfg.reference, cfg.rows)
    return QualityGate(
        settings=cfg.settings(),
        rows=cfg.rows,
        low_clip=cfg.low_clip,
        high_clip=cfg.high_clip,
        reference=ref,
        reference_path=cfg.reference,
    )
