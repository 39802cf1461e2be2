"""kanjian.kernels: preprocessing kernels of the inspection runtime.

Each operation has a Numba CPU kernel, a ``numba.cuda`` twin with the same
signature, and a slow NumPy reference that the tests hold both to.

- :func:`letterbox_cpu` / :func:`letterbox_cuda`: uint8 BGR or grey frame ->
  letterboxed float32 RGB CHW model input, in one pass, equal to Ultralytics'
  preprocessing bit for bit.
- :class:`Letterbox`, :func:`letterbox_geometry`, :func:`boxes_to_source`: the
  geometry shared by the kernels and the inference decoder.
- :func:`frame_quality` / :func:`frame_quality_cuda`: the image quality gate's
  numbers of a uint8 frame (focus, exposure, difference to a reference frame:
  :mod:`kanjian.kernels.quality`), with :func:`quality_reference`.
- :func:`configure_threads`, :func:`warmup`: start-up (threading layer, JIT).

``letterbox_cuda`` and ``frame_quality_cuda`` are imported lazily, so importing this
package never imports ``numba.cuda``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kanjian.kernels.geometry import Letterbox, boxes_to_source, letterbox_geometry
from kanjian.kernels.letterbox_cpu import letterbox_cpu
from kanjian.kernels.quality import (
    FrameQuality,
    QualityReference,
    frame_quality,
    quality_reference,
    warmup_quality,
)
from kanjian.kernels.threads import ThreadConfig, configure_threads
from kanjian.kernels.warmup import WarmupReport, warmup

if TYPE_CHECKING:
    from kanjian.kernels.letterbox_cuda import letterbox_cuda
    from kanjian.kernels.quality_cuda import frame_quality_cuda

__all__ = [
    "FrameQuality",
    "Letterbox",
    "QualityReference",
    "ThreadConfig",
    "WarmupReport",
    "boxes_to_source",
    "configure_threads",
    "frame_quality",
    "frame_quality_cuda",
    "letterbox_cpu",
    "letterbox_cuda",
    "letterbox_geometry",
    "quality_reference",
    "warmup",
    "warmup_quality",
]


def __getattr__(name: str) -> Any:
    if name == "letterbox_cuda":
        from kanjian.kernels.letterbox_cuda import letterbox_cuda

        return letterbox_cuda
    if name == "frame_quality_cuda":
        from kanjian.kernels.quality_cuda import frame_quality_cuda

        return frame_quality_cuda
    raise AttributeError(f"module 'kanjian.kernels' has no attribute {name!r}")
