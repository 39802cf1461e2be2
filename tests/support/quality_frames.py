"""Frames for the image quality gate's station tests, made from real pictures.

One product on the line: NEU-DET's ``crazing_7`` steel plate (the demo bundle's data),
with three more takes of it as the next parts look to the camera (shifted a pixel or
two, sensor noise, a slightly different exposure); then what a gate is for: takes out
of focus (Gaussian blur), a dark one (the light failed), an overexposed one, one with
its contrast blown (both ends clipped), and another product in the fixture (two
MVTec-style magnetic-tile pictures from the anomaly demo, scaled to the frame size).
Written as PNG, so the station reads exactly the pixels made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.camera.imagefile import decode_image_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "station" / "demo"
DEMO_BUNDLE = DEMO / "model"
PRODUCT = DEMO / "images" / "crazing_7.jpg"
OTHER_PRODUCT = sorted((DEMO / "magnetic-tile" / "images").glob("*.jpg"))[:2]


@dataclass(frozen=True)
class QualityFrames:
    """The frames written, by file name, with what each one is.

    Attributes:
        folder: the camera's folder.
        reference: a good take of the product (outside the folder), for
            ``quality.reference``.
        kinds: file name -> ``good``, ``blurred``, ``dark``, ``bright``, ``clipped``
            or ``wrong``.
    """

    folder: Path
    reference: Path
    kinds: dict[str, str]


def _take(image: NDArray[np.uint8], dx: int, dy: int, noise: float, gain: float,
          rng: np.random.Generator) -> NDArray[np.uint8]:  # fmt: skip
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    moved = cv2.warpAffine(image, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
    noisy = moved.astype(np.float32) * gain + rng.normal(0.0, noise, moved.shape)
    out: NDArray[np.uint8] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def make_quality_frames(tmp: Path) -> QualityFrames:
    """Write the frames into ``tmp / "frames"`` and the reference beside it."""
    rng = np.random.default_rng(15)
    base = decode_image_file(PRODUCT)
    h, w = base.shape[:2]
    takes = [base] + [
        _take(base, *args, rng=rng)
        for args in ((2, 1, 3.0, 1.0), (-2, 2, 4.0, 0.97), (1, -2, 3.0, 1.03))
    ]
    stretched = cv2.convertScaleAbs(base.astype(np.float32) - 174.0, alpha=2.5, beta=174.0)
    frames: list[tuple[str, NDArray[np.uint8]]] = [
        ("good", takes[0]),
        ("blurred", cv2.GaussianBlur(takes[0], (0, 0), 3.0)),
        ("good", takes[1]),
        ("dark", (takes[1].astype(np.float32) * 0.12).astype(np.uint8)),
        ("good", takes[2]),
        ("bright", cv2.convertScaleAbs(takes[2], alpha=1.6, beta=40.0)),
        ("wrong", cv2.resize(decode_image_file(OTHER_PRODUCT[0]), (w, h))),
        ("clipped", stretched),
        ("blurred", cv2.GaussianBlur(takes[1], (0, 0), 2.5)),
        ("good", takes[3]),
        ("wrong", cv2.resize(decode_image_file(OTHER_PRODUCT[1]), (w, h))),
    ]
    folder = tmp / "frames"
    folder.mkdir(parents=True)
    kinds = {}
    for i, (kind, image) in enumerate(frames):
        name = f"{i:02d}_{kind}.png"
        assert cv2.imwrite(str(folder / name), image)
        kinds[name] = kind
    reference = tmp / "reference.png"
    assert cv2.imwrite(str(reference), _take(base, 1, 1, 2.0, 1.0, rng))
    return QualityFrames(folder, reference, kinds)
