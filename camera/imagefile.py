"""Decode one image file, refusing truncated or garbage files with a reason.

``cv2.imread`` returns ``None`` for garbage. What it does with a truncated file
depends on the build: OpenCV 4.x decodes a cut JPEG "successfully" (libjpeg
prints "Premature end of JPEG file" and fills the missing rows with grey), the
5.0 wheel returns ``None``. An inspection of a grey-filled image would judge
pixels the camera never saw, and ``None`` says nothing about why, so the
container is checked for its end first (JPEG EOI, PNG IEND, BMP/WebP declared
size) and only complete files are decoded. A JPEG is walked segment by segment to
its end-of-image marker: bytes after it (camera metadata, a second picture) are
not truncation, and are left out of the decode.
"""

from __future__ import annotations

import os
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


def printable_path(path: Path | str) -> str:
    """``path`` as text that any UTF-8 store, log or JSON takes.

    A file name that is not valid UTF-8 comes from ``os.listdir`` with its bad
    bytes as lone surrogates (PEP 383), which SQLite and JSON refuse. Each such
    byte is written as a backslash escape, ``\\xNN`` (two lower-case hex digits):
    ``b"bad\\xff.jpg"`` reads ``bad\\xff.jpg``. Valid names are returned as they
    are; a name that itself contains a backslash followed by ``x`` reads the same
    as an escaped one (the escape is for people, not a way back to the bytes).
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the end-of-image marker (FFD9) of the JPEG at the start of ``data``.

    Segments with a length (APPn with an EXIF thumbnail and its own FFD9, tables,
    scan headers) are skipped whole; in entropy-coded data a 0xFF byte is followed
    by 0x00 (stuffing) or a restart marker, so the first other marker there is
    the next segment or the end. Stray bytes between segments are passed over,
    as libjpeg does. Returns ``None`` when the data ends before the marker
    (a file cut short).
    """
    n, i = len(data), 2  # after SOI
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= n:
            return None
        m = data[j + 1]
        if m == 0xD9:
            return j + 2
        if m in (0x00, 0xFF, 0x01) or 0xD0 <= m <= 0xD7:
            i = j + 1 if m == 0xFF else j + 2  # stuffing, fill, TEM, RSTn: no length
            continue
        if j + 4 > n:
            return None
        length = int.from_bytes(data[j + 2 : j + 4], "big")
        if length < 2:  # not a segment: stray bytes
            i = j + 2
            continue
        i = j + 2 + length
        if i > n:
            return None


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
        if jpeg_end(data) is None:
            return "truncated JPEG: the data ends before the end-of-image marker (FFD9)"
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
    take). EXIF orientation is applied. A JPEG is decoded up to its end-of-image
    marker; bytes after it are ignored. Messages name the file by
    :func:`printable_path`.

    Raises:
        ImageFileError: the file cannot be read, is truncated, or is not an image
            OpenCV can decode; the message names ``path`` and the cause.
    """
    name = printable_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{name}: cannot read file: {exc.strerror or exc}") from exc
    problem = container_problem(data)
    if problem is not None:
        raise ImageFileError(f"{name}: {problem}")
    if data[:3] == b"\xff\xd8\xff":
        data = data[: jpeg_end(data)]  # what follows the picture is not the picture's
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as exc:
        raise ImageFileError(f"{name}: OpenCV failed to decode it: {exc}") from exc
    if image is None:
        raise ImageFileError(
            f"{name}: not an image OpenCV can decode ({len(data)} bytes, starting {data[:8].hex()})"
        )
    return np.ascontiguousarray(image, dtype=np.uint8)
