"""The CPU image-quality kernel against the NumPy/OpenCV reference.

Tolerance: none for everything the kernel computes, since it computes integers: the
pixel counts and the luma, Laplacian and segment sums are compared exactly with the
reference's (which gets them from ``cv2.cvtColor`` and ``cv2.Laplacian``). The floats
are compared with ``rel=1e-12``: the kernel divides exact integers once (the variance
as ``(n S2 - S1^2) / n^2`` in Python integers), while the reference's ``np.var``
subtracts a float64 mean from each value and sums the squares pairwise, which may
differ in the last bits (a few ulp, nowhere near 1e-12).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from kanjian.kernels import configure_threads
from kanjian.kernels.letterbox_cpu import _POOL
from kanjian.kernels.quality import (
    SEGMENT,
    FrameQuality,
    frame_quality,
    quality_reference,
    quality_sums,
    sample_rows,
)
from kanjian.kernels.quality_kernel import (
    BRIGHT,
    DARK,
    N_LAP,
    N_SUMS,
    SUM_LAP,
    SUM_LAP2,
    SUM_Y,
    N,
    quality_kernel,
    quality_kernel_serial,
)
from tests.support.quality_reference import (
    ReferenceQuality,
    quality_reference_numbers,
    reference_rows,
)

REL = 1e-12

# odd sizes, 1-pixel sides, frames under 3 rows / columns (no interior), narrower than a
# segment, exact multiples of a segment, camera sizes
SHAPES = [
    (1, 1),
    (1, 40),
    (2, 5),
    (3, 3),
    (5, 2),
    (37, 53),
    (64, 96),
    (65, 97),
    (31, 33),
    (480, 640),
    (1080, 1920),
    (997, 1283),
]
ROWS: list[int | None] = [None, 1, 2, 8, 16, 5000]


def _frame(shape: tuple[int, ...], seed: int, kind: str = "noise") -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    # a smooth picture with saturated corners: counts at both clip levels, small Laplacian
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 300 // max(h, 1) + xx * 3) % 280 - 12
    img = np.clip(base, 0, 255).astype(np.uint8)
    return img if len(shape) == 2 else np.stack([img, 255 - img, img // 2], axis=2)


def _assert_equal(
    got_sums: NDArray[np.int64], segments: NDArray[np.int64], r: ReferenceQuality
) -> None:
    assert got_sums.shape == (N_SUMS,)
    assert int(got_sums[N]) == r.pixels
    assert int(got_sums[SUM_Y]) == r.luma_sum
    assert int(got_sums[DARK]) == r.dark_count
    assert int(got_sums[BRIGHT]) == r.bright_count
    assert int(got_sums[N_LAP]) == r.focus_pixels
    assert int(got_sums[SUM_LAP]) == r.lap_sum
    assert int(got_sums[SUM_LAP2]) == r.lap_sq_sum
    assert np.array_equal(segments, r.segments)


def _assert_close(q: FrameQuality, r: ReferenceQuality) -> None:
    assert q.focus == pytest.approx(r.focus, rel=REL, abs=1e-12)
    assert q.mean == pytest.approx(r.mean, rel=REL, abs=1e-12)
    assert q.dark == pytest.approx(r.dark, rel=REL, abs=1e-15)
    assert q.bright == pytest.approx(r.bright, rel=REL, abs=1e-15)
    assert (q.pixels, q.focus_pixels) == (r.pixels, r.focus_pixels)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("grey", [False, True])
def test_cpu_kernel_equals_reference(shape: tuple[int, int], grey: bool) -> None:
    full = shape if grey else (*shape, 3)
    for kind in ("noise", "smooth"):
        image = _frame(full, seed=shape[0] * 7 + shape[1], kind=kind)
        for rows in ROWS:
            r = quality_reference_numbers(image, rows)
            sums, segments = quality_sums(image, rows)
            _assert_equal(sums, segments, r)
            q = frame_quality(image, rows)
            _assert_close(q, r)
            assert q.rows == len(reference_rows(shape[0], rows))


def test_luma_is_opencv_bgr2gray_for_every_colour() -> None:
    # all 2**24 BGR colours in one 4096 x 4096 frame; the exposure sums see each luma once
    v = np.arange(1 << 24, dtype=np.uint32)
    image = np.stack([v & 255, (v >> 8) & 255, v >> 16], axis=-1).astype(np.uint8)
    image = image.reshape(4096, 4096, 3)
    luma = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    sums, segments = quality_sums(image, None, low_clip=0, high_clip=255)
    assert int(sums[SUM_Y]) == int(luma.sum(dtype=np.int64))
    assert int(sums[DARK]) == int((luma == 0).sum()) and int(sums[BRIGHT]) == int(
        (luma == 255).sum()
    )
    # per segment, so a wrong luma cannot hide in a total
    want = luma.reshape(4096, 4096 // SEGMENT, SEGMENT).sum(axis=2, dtype=np.int64)
    assert np.array_equal(segments, want)


def test_clip_levels_count_at_and_beyond() -> None:
    image = np.array([[0, 1, 2, 3, 250, 252, 253, 254, 255]], np.uint8)
    q = frame_quality(image, None, low_clip=2, high_clip=253)
    assert (q.dark, q.bright) == (3 / 9, 3 / 9)
    assert q.clipped == 6 / 9
    q = frame_quality(image, None, low_clip=0, high_clip=255)
    assert (q.dark, q.bright) == (1 / 9, 1 / 9)


def test_sample_rows() -> None:
    for h in (1, 2, 3, 4, 37, 1080, 2048):
        for rows in ROWS:
            got = sample_rows(h, rows)
            assert got.tolist() == reference_rows(h, rows), (h, rows)
            assert not got.flags.writeable  # shared between calls
    # R rows, interior, one in each of R equal bands of rows 1 .. H-2
    got = sample_rows(1080, 8)
    band = 1078 / 8
    assert len(got) == 8 and all(1 + i * band <= y < 1 + (i + 1) * band for i, y in enumerate(got))
    for bad in (0, -1, 2.0, True, "8"):
        with pytest.raises(ValueError, match="rows must be None"):
            sample_rows(100, bad)  # type: ignore[arg-type]


def test_reference_difference() -> None:
    a = _frame((96, 130, 3), seed=1, kind="smooth")
    b = _frame((96, 130, 3), seed=2)
    for rows in (None, 8):
        ref = quality_reference(a, rows)
        assert ref.segment_means.shape == (len(sample_rows(96, rows)), 130 // SEGMENT)
        assert frame_quality(a, rows, reference=ref).reference_diff == 0.0
        got = frame_quality(b, rows, reference=ref).reference_diff
        want = quality_reference_numbers(b, rows).reference_diff(quality_reference_numbers(a, rows))
        assert got is not None and want is not None and got > 10
        assert got == pytest.approx(want, rel=REL)
    # another size, other rows, a frame narrower than a segment: nothing to compare
    ref = quality_reference(a, 8)
    assert frame_quality(a[:, :100], 8, reference=ref).reference_diff is None
    assert frame_quality(a, 16, reference=ref).reference_diff is None
    assert frame_quality(a, None, reference=ref).reference_diff is None
    narrow = a[:, :20]
    assert frame_quality(narrow, 8, reference=quality_reference(narrow, 8)).reference_diff is None


def test_blur_and_darkness_move_the_numbers_the_right_way() -> None:
    image = _frame((480, 640, 3), seed=5)
    sharp = frame_quality(image, 8)
    blurred = frame_quality(cv2.GaussianBlur(image, (0, 0), 3), 8)
    dark = frame_quality((image // 40).astype(np.uint8), 8)  # levels 0-6
    assert blurred.focus < sharp.focus / 50
    assert dark.mean < sharp.mean / 30 and dark.dark > 0.1 > sharp.dark


def test_serial_and_parallel_kernels_agree() -> None:
    image = _frame((333, 517, 3), seed=9)
    ys = sample_rows(333, None)
    flat = image.reshape(333, -1)
    expected = quality_reference_numbers(image, None)
    for chunks in (1, 2, 3, 7, 400):  # more shares than rows leaves some empty
        sums = np.full((chunks, N_SUMS), -1, np.int64)
        segments = np.full((len(ys), 517 // SEGMENT), -1, np.int64)
        kernel = quality_kernel_serial if chunks == 1 else quality_kernel
        with _POOL:
            kernel(flat, 3, ys, 2, 253, sums, segments, chunks)
        _assert_equal(sums.sum(axis=0), segments, expected)


def test_one_and_two_threads_agree() -> None:
    image = _frame((1080, 1920, 3), seed=4)  # every row: large enough for the parallel kernel
    expected = quality_reference_numbers(image, None)
    layer = _current_layer()
    try:
        for n in (1, 2):
            configure_threads(n, layer=layer)
            _assert_equal(*quality_sums(image, None), expected)
    finally:
        configure_threads(None, layer=layer)


def test_strided_input_is_handled() -> None:
    image = _frame((100, 160, 3), seed=3)
    view = image[::2, 10:150, ::-1]  # rows skipped, a crop, channels flipped
    expected = quality_reference_numbers(np.ascontiguousarray(view), 8)
    _assert_equal(*quality_sums(view, 8), expected)


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        ([[1, 2]], TypeError, "numpy array"),
        (np.zeros((4, 4), np.float32), TypeError, "uint8"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, "grey or"),
        (np.zeros((0, 4), np.uint8), ValueError, "empty"),
    ],
)
def test_bad_images_are_refused_clearly(image: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        frame_quality(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), [(-1, 253), (2, 256), (2.5, 253), (True, 253)])
def test_bad_clip_levels_are_refused_clearly(low: object, high: object) -> None:
    with pytest.raises(ValueError, match="must be an int in \\[0, 255\\]"):
        frame_quality(np.zeros((4, 4), np.uint8), None, low, high)  # type: ignore[arg-type]


def test_values_are_what_the_store_keeps() -> None:
    image = _frame((64, 96, 3), seed=8)
    q = frame_quality(image, 8, reference=quality_reference(image, 8))
    v = q.values()
    assert set(v) == {"focus", "mean", "dark", "bright", "rows", "reference_diff"}
    assert v["focus"] == round(q.focus, 2) and v["rows"] == 8
    assert "reference_diff" not in frame_quality(image, 8).values()


def _current_layer() -> str:
    import numba

    try:
        return str(getattr(numba, "threading_layer")())  # noqa: B009 (untyped in numba)
    except ValueError:
        return "workqueue"
