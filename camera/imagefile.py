"""Decode one image file, refusing truncated or garbage files with a reason.

``cv2.imread`` returns ``None`` for garbage. What it does with a truncated file
depends on the build: OpenCV 4.x decodes a cut JPEG "successfully" (libjpeg
prints "Premature end of JPEG file" and fills the missing rows with grey), the
5.0 wheel returns ``None``. An inspection of a grey-filled image would judge
pixels the camera never saw, and ``None`` says nothing about why, so the
container is checked for its end first (JPEG EOI, PNG IEND, BMP/WebP declared
size) and only complete files are decoded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

# Some writers pad files with zero bytes or a newline after the end marker.
_PADDING = b"\x00\r\n\t "
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


class ImageFileError(ValueError):
    """An image file that cannot be used; the message names the file and the cause."""


def container_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete image file, or ``None`` if no problem is seen.

    Only formats with a cheap completeness check are checked (JPEG, PNG, BMP,
    WebP); others are left to the decoder.
    """
    if not data:
        return "file is empty"
    if len(data) < 16:
        # shorter than any image header: a write cut off almost at once
        return f"truncated: only {len(data)} bytes, too short to be an image"
    if data[:3] == b"\xff\xd8\xff":
        if not data.rstrip(_PADDING).endswith(b"\xff\xd9"):
            return "truncated JPEG: no end-of-image marker (FFD9) at the end"
    elif data[:8] == _PNG_MAGIC:
        if not data.rstrip(_PADDING).endswith(_PNG_IEND):
            return "truncated PNG: no IEND chunk at the end"
    elif data[:2] == b"BM" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if len(data) < declared:
            return f"truncated BMP: {len(data)} of {declared} declared bytes"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            return f"truncated WebP: {len(data)} of {declared} declared bytes"
    return None


def decode_image_file(path: Path) -> NDArray[np.uint8]:
    """Read ``path`` as an ``(H, W, 3)`` uint8 BGR image.

    Grey, 16-bit and alpha images are converted to 8-bit BGR (what the models
    take). EXIF orientation is applied.

    Raises:
        ImageFileError: the file cannot be read, is truncated, or is not an image
            OpenCV can decode; the message names ``path`` and the cause.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    problem = container_problem(data)
    if problem is not None:
        raise ImageFileError(f"{path}: {problem}")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as exc:
        raise ImageFileError(f"{path}: OpenCV failed to decode it: {exc}") from exc
    if image is None:
        raise ImageFileError(
            f"{path}: not an image OpenCV can decode ({len(data)} bytes, starting {data[:8].hex()})"
        )
    return np.ascontiguousarray(image, dtype=np.uint8)
