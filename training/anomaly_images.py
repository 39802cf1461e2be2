"""An anomaly dataset's images as the station's model sees them: letterboxed grey planes.

Training, calibration and the metrics all read images through :func:`load_letterboxed`,
which runs the station's own letterbox kernel (:func:`kanjian.kernels.letterbox_cpu`),
so a model learns exactly the input it will judge on the line. Masks are carried
through the same geometry (nearest neighbour, then ``> 127``) and a ``valid`` plane
marks the pixels that hold the part, not the letterbox padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.kernels import letterbox_cpu
from kanjian.kernels.geometry import letterbox_geometry
from kanjian.training.anomaly_data import MASK_THRESHOLD, AnomalySample
from kanjian.training.checks import read_bgr

__all__ = ["LetterboxedSet", "load_letterboxed"]


@dataclass(frozen=True)
class LetterboxedSet:
    """Images of one split, letterboxed to the model's input size.

    Attributes:
        images: ``(N, H, W)`` float32 in ``[0, 1]``: the grey plane of the letterbox
            kernel's output (the mean of its three planes; equal planes for a grey image),
            border ``114/255``.
        valid: ``(N, H, W)`` bool: True where the part is, False in the padding.
        masks: ``(N, H, W)`` bool: defect pixels (all False for good images and for
            defects without a mask).
        defective: ``(N,)`` bool: the image shows a defect (its kind is not ``good``).
        kinds: ``N`` kind names (``"good"`` or the defect kind).
        names: ``N`` image file names.
    """

    images: NDArray[np.float32]
    valid: NDArray[np.bool_]
    masks: NDArray[np.bool_]
    defective: NDArray[np.bool_]
    kinds: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: NDArray[np.intp] | Sequence[int]) -> LetterboxedSet:
        """The images at ``index``, in that order."""
        idx = np.asarray(index, np.intp)
        return LetterboxedSet(
            images=self.images[idx],
            valid=self.valid[idx],
            masks=self.masks[idx],
            defective=self.defective[idx],
            kinds=tuple(self.kinds[i] for i in idx),
            names=tuple(self.names[i] for i in idx),
        )


def _mask_plane(sample: AnomalySample, src_hw: tuple[int, int], imgsz: int) -> NDArray[np.bool_]:
    """The sample's mask on the letterboxed input, ``(imgsz, imgsz)`` bool."""
    out = np.zeros((imgsz, imgsz), np.bool_)
    if sample.mask is None:
        return out
    raw = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise ValueError(f"{sample.mask}: cannot read the mask; re-run `kanjian dataset import`")
    if raw.shape != src_hw:  # the import resizes masks to their image; be safe anyway
        raw = cv2.resize(raw, (src_hw[1], src_hw[0]), interpolation=cv2.INTER_NEAREST)
    g = letterbox_geometry(src_hw, (imgsz, imgsz))
    small = cv2.resize(raw, (g.new_w, g.new_h), interpolation=cv2.INTER_NEAREST)
    out[g.pad_top : g.pad_top + g.new_h, g.pad_left : g.pad_left + g.new_w] = small > MASK_THRESHOLD
    return out


def load_letterboxed(
    samples: Sequence[AnomalySample],
    imgsz: int,
    progress: Callable[[int, int], None] | None = None,
) -> LetterboxedSet:
    """Read and letterbox ``samples`` to ``imgsz x imgsz`` (see :class:`LetterboxedSet`).

    Args:
        samples: images of one split (:func:`~kanjian.training.anomaly_data.load_anomaly_dataset`).
        imgsz: the model's square input size in pixels.
        progress: called as ``progress(done, total)`` after each image.

    Raises:
        ValueError: an image or mask cannot be read (the message names the file).
    """
    n = len(samples)
    images = np.empty((n, imgsz, imgsz), np.float32)
    valid = np.zeros((n, imgsz, imgsz), np.bool_)
    masks = np.zeros((n, imgsz, imgsz), np.bool_)
    buf = np.empty((3, imgsz, imgsz), np.float32)
    for i, s in enumerate(samples):
        bgr = read_bgr(s.image)
        letterbox_cpu(bgr, (imgsz, imgsz), out=buf)
        images[i] = buf.mean(axis=0)
        g = letterbox_geometry(bgr.shape[:2], (imgsz, imgsz))
        valid[i, g.pad_top : g.pad_top + g.new_h, g.pad_left : g.pad_left + g.new_w] = True
        masks[i] = _mask_plane(s, bgr.shape[:2], imgsz)
        if progress is not None:
            progress(i + 1, n)
    return LetterboxedSet(
        images=images,
        valid=valid,
        masks=masks,
        defective=np.array([s.kind != "good" for s in samples], np.bool_),
        kinds=tuple(s.kind for s in samples),
        names=tuple(s.image.name for s in samples),
    )
