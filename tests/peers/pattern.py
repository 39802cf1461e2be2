"""A frame pattern that carries its own index, so tests can check content, not just counts.

The picture is a grid of 40x40 blocks on a dark background: rows 0 and 1 hold
the 16-bit frame index (8 bits per row, most significant first), row 2 holds an
8-bit tag (e.g. which server generation sent it). A set bit is a white block,
a clear bit a black one. The blocks are big enough to survive JPEG/MJPG and
H.264 compression at normal quality.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

BLOCK = 40
WIDTH = 320
HEIGHT = 240
_COLS = 8


def _bit_cells(value: int, nbits: int, first_row: int) -> list[tuple[int, int, bool]]:
    cells = []
    for i in range(nbits):
        bit = (value >> (nbits - 1 - i)) & 1
        cells.append((first_row + i // _COLS, i % _COLS, bool(bit)))
    return cells


def draw(index: int, tag: int = 0) -> NDArray[np.uint8]:
    """A ``(240, 320, 3)`` uint8 BGR image carrying ``index`` (0..65535) and ``tag`` (0..255)."""
    if not (0 <= index < 1 << 16 and 0 <= tag < 1 << 8):
        raise ValueError(f"index {index} or tag {tag} out of range")
    img = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    for row, col, bit in _bit_cells(index, 16, 0) + _bit_cells(tag, 8, 2):
        y, x = row * BLOCK, col * BLOCK
        img[y + 4 : y + BLOCK - 4, x + 4 : x + BLOCK - 4] = 255 if bit else 0
    return img


def read(image: NDArray[np.uint8]) -> tuple[int, int]:
    """Decode ``(index, tag)`` from an image made by :func:`draw` (BGR or grey)."""
    grey = image if image.ndim == 2 else image.mean(axis=2)
    if grey.shape != (HEIGHT, WIDTH):
        raise ValueError(f"expected a {WIDTH}x{HEIGHT} image, got shape {image.shape}")

    def value(nbits: int, first_row: int) -> int:
        out = 0
        for row, col, _ in _bit_cells(0, nbits, first_row):
            cy, cx = row * BLOCK + BLOCK // 2, col * BLOCK + BLOCK // 2
            bit = grey[cy - 8 : cy + 8, cx - 8 : cx + 8].mean() > 128
            out = (out << 1) | int(bit)
        return out

    return value(16, 0), value(8, 2)
