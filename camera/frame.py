"""The unit every frame source hands on: one captured image, or why none came."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Frame:
    """One captured image.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR, or ``(H, W)`` uint8 grey. C-contiguous.
        frame_id: 0-based index of the frame within its source's run.
        source_id: the configured name of the source (e.g. ``"cam0"``).
        captured_at: UTC wall-clock time the frame was grabbed (timezone-aware).
        trigger_id: the trigger that asked for this frame, in triggered mode.
        uri: where the frame came from (file path, ``url#frame``), for logs.
    """

    image: NDArray[np.uint8]
    frame_id: int
    source_id: str
    captured_at: datetime
    trigger_id: str | None = None
    uri: str | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise TypeError("Frame.image must be a uint8 numpy array")
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"Frame.image must be (H, W) or (H, W, 3), got {img.shape}")
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"Frame.image is empty: {img.shape}")
        if self.captured_at.tzinfo is None:
            raise ValueError("Frame.captured_at must be timezone-aware (UTC)")

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class FrameFailure:
    """A frame that was due but could not be had: unreadable file, stream timeout.

    The pipeline turns it into an ERROR (or MISSED, for a trigger) inspection,
    so every trigger and every file still gives exactly one row.

    Attributes:
        frame_id, source_id, captured_at, trigger_id, uri: as in :class:`Frame`.
        reason: a human-readable cause naming the file or stream.
        missed: ``True`` when no frame arrived in time (camera stalled);
            ``False`` when something arrived but could not be decoded.
    """

    frame_id: int
    source_id: str
    captured_at: datetime
    reason: str
    trigger_id: str | None = None
    uri: str | None = None
    missed: bool = False
