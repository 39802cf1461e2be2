"""Letterbox geometry: where a source frame lands inside the model input, and back.

One function, :func:`letterbox_geometry`, decides the resize and the padding;
the CPU kernel, the CUDA kernel, the NumPy reference and the inference decoder
all read the same :class:`Letterbox`, so they cannot disagree about a pixel.

The rules are Ultralytics' ``LetterBox(new_shape, auto=False, scale_fill=False,
scaleup=True, center=True)`` (ultralytics 8.4, ``data/augment.py``):

- ``scale = min(dst_h / src_h, dst_w / src_w)``;
- ``new_w = max(round(src_w * scale), 1)``, ``new_h`` likewise (Python's
  ``round``: halves go to the even neighbour);
- the padding is split around the image: ``pad_left = round(dw / 2 - 0.1)``,
  ``pad_right = round(dw / 2 + 0.1)`` with ``dw = dst_w - new_w``, and the same
  for top/bottom. The ``-0.1/+0.1`` puts the odd pixel on the right/bottom.

The inverse, :func:`boxes_to_source`, is Ultralytics' ``ops.scale_boxes`` with
``ratio_pad=None``: it divides by the per-axis gains ``new_w / src_w`` and
``new_h / src_h`` (not by ``scale``: the rounding of the new size makes them
differ slightly), then clips to the source frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: grey level of the letterbox border, as Ultralytics pads (before /255)
PAD_VALUE = 114

__all__ = ["Letterbox", "boxes_to_source", "letterbox_geometry"]


@dataclass(frozen=True)
class Letterbox:
    """How a ``src_h x src_w`` frame is resized and padded into ``dst_h x dst_w``.

    All sizes and paddings are in pixels.

    Attributes:
        src_h, src_w: source frame size.
        dst_h, dst_w: model input size (the letterboxed tensor is
            ``(3, dst_h, dst_w)``).
        scale: ``min(dst_h / src_h, dst_w / src_w)``, the requested zoom.
        new_h, new_w: size of the resized image inside the input, at least 1.
        pad_top, pad_left: rows above and columns left of the resized image.
    """

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    scale: float
    new_h: int
    new_w: int
    pad_top: int
    pad_left: int

    @property
    def pad_bottom(self) -> int:
        """Rows below the resized image."""
        return self.dst_h - self.new_h - self.pad_top

    @property
    def pad_right(self) -> int:
        """Columns right of the resized image."""
        return self.dst_w - self.new_w - self.pad_left

    @property
    def gain_x(self) -> float:
        """``new_w / src_w``: input pixels per source pixel along x."""
        return self.new_w / self.src_w

    @property
    def gain_y(self) -> float:
        """``new_h / src_h``: input pixels per source pixel along y."""
        return self.new_h / self.src_h

    @property
    def is_identity_resize(self) -> bool:
        """True when the frame is only padded, not resampled."""
        return self.new_h == self.src_h and self.new_w == self.src_w


def _check_hw(name: str, hw: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = hw
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (height, width) pair, got {hw!r}") from None
    if isinstance(h, bool) or isinstance(w, bool):
        raise ValueError(f"{name} must be integers, got {hw!r}")
    try:
        ih, iw = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers, got {hw!r}") from None
    if ih != h or iw != w:
        raise ValueError(f"{name} must be integers, got {hw!r}")
    if ih < 1 or iw < 1:
        raise ValueError(f"{name} must be positive, got {hw!r}")
    return ih, iw


def letterbox_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
    """The letterbox that fits a ``src_hw`` frame into a ``dst_hw`` input.

    Args:
        src_hw: source frame ``(height, width)`` in pixels, e.g. ``image.shape[:2]``.
        dst_hw: model input ``(height, width)`` in pixels, e.g. ``(640, 640)``.

    Returns:
        The geometry; identical to Ultralytics' ``LetterBox.get_params`` for
        ``auto=False, scale_fill=False, scaleup=True, center=True``.

    Raises:
        ValueError: a size is not a pair of positive integers.
    """
    src_h, src_w = _check_hw("src_hw", src_hw)
    dst_h, dst_w = _check_hw("dst_hw", dst_hw)
    scale = min(dst_h / src_h, dst_w / src_w)
    # Python's round (half to even) on purpose: it is what Ultralytics uses.
    new_w = max(round(src_w * scale), 1)
    new_h = max(round(src_h * scale), 1)
    pad_left = round((dst_w - new_w) / 2 - 0.1)
    pad_top = round((dst_h - new_h) / 2 - 0.1)
    return Letterbox(
        src_h=src_h,
        src_w=src_w,
        dst_h=dst_h,
        dst_w=dst_w,
        scale=scale,
        new_h=new_h,
        new_w=new_w,
        pad_top=pad_top,
        pad_left=pad_left,
    )


def boxes_to_source(
    xyxy: NDArray[np.floating], geometry: Letterbox, clip: bool = True
) -> NDArray[np.float32]:
    """Map boxes from model-input pixels back to source-frame pixels.

    Same arithmetic as Ultralytics' ``ops.scale_boxes(dst_hw, boxes, src_hw)``
    on a float32 array: subtract the padding, divide by the per-axis gain,
    clip to ``[0, src_w] x [0, src_h]``; all in float32.

    Args:
        xyxy: ``(n, 4)`` (or ``(..., 4)``) boxes ``x1, y1, x2, y2`` in
            model-input pixels; any float dtype, converted to float32.
        geometry: the letterbox the input was made with.
        clip: clip to the source frame (Ultralytics always does for xyxy).

    Returns:
        A new float32 array of the same shape in source-frame pixels; the input
        is not modified.

    Raises:
        ValueError: the last axis is not 4 long.
    """
    boxes = np.array(xyxy, dtype=np.float32, copy=True)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"xyxy must have shape (..., 4), got {boxes.shape}")
    boxes[..., 0] -= geometry.pad_left
    boxes[..., 1] -= geometry.pad_top
    boxes[..., 2] -= geometry.pad_left
    boxes[..., 3] -= geometry.pad_top
    # Python-float divisors keep the division in float32 (NEP 50), like the
    # in-place `/=` of scale_boxes.
    boxes[..., 0] /= geometry.gain_x
    boxes[..., 1] /= geometry.gain_y
    boxes[..., 2] /= geometry.gain_x
    boxes[..., 3] /= geometry.gain_y
    if clip:
        np.clip(boxes[..., 0::2], 0, geometry.src_w, out=boxes[..., 0::2])
        np.clip(boxes[..., 1::2], 0, geometry.src_h, out=boxes[..., 1::2])
    return boxes
