"""The letterbox kernel and geometry against Ultralytics itself (the training side's oracle).

Ultralytics' own preprocessing is ``LetterBox(imgsz, auto=False)`` then, in
``BasePredictor.preprocess``, HWC->CHW, BGR->RGB and ``.float().div_(255)`` in
torch. Grey frames are first made 3-channel BGR by ``cv2.cvtColor(GRAY2BGR)``
(``LoadPilAndNumpy``). Boxes go back with ``ops.scale_boxes``. All comparisons
are exact.
"""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

_cfg = os.path.join(tempfile.gettempdir(), "kanjian-test-ultralytics")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", _cfg)
os.environ.setdefault("MPLCONFIGDIR", _cfg)

torch = pytest.importorskip("torch")
augment = pytest.importorskip("ultralytics.data.augment")
ops = pytest.importorskip("ultralytics.utils.ops")

from kanjian.kernels import boxes_to_source, letterbox_cpu, letterbox_geometry  # noqa: E402


def _ultralytics_preprocess(
    image: NDArray[np.uint8], dst_hw: tuple[int, int]
) -> NDArray[np.float32]:
    """BasePredictor.pre_transform + preprocess for one frame, on the CPU."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    lb = augment.LetterBox(dst_hw, auto=False, scale_fill=False, scaleup=True, center=True)
    boxed = lb(image=bgr)
    t = torch.from_numpy(boxed).unsqueeze(0).permute(0, 3, 1, 2).contiguous().flip(1)
    result: NDArray[np.float32] = t.float().div_(255)[0].numpy()
    return result


def _frame(h: int, w: int, grey: bool, seed: int) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w) if grey else (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("src_hw", "dst_hw"),
    [
        ((1080, 1920), (640, 640)),
        ((2048, 2448), (640, 640)),
        ((480, 640), (640, 640)),
        ((416, 416), (640, 640)),
        ((720, 1280), (384, 640)),
        ((1, 1), (640, 640)),
        ((3, 2448), (640, 640)),
        ((2048, 3), (640, 640)),
        ((99, 101), (320, 320)),
    ],
)
@pytest.mark.parametrize("grey", [False, True])
def test_kernel_equals_ultralytics_preprocess(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], grey: bool
) -> None:
    image = _frame(*src_hw, grey=grey, seed=sum(src_hw))
    assert np.array_equal(letterbox_cpu(image, dst_hw), _ultralytics_preprocess(image, dst_hw))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 400),
    w=st.integers(1, 400),
    d=st.sampled_from([(32, 32), (320, 320), (640, 640), (480, 640), (640, 384)]),
    grey=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_property_kernel_equals_ultralytics(
    h: int, w: int, d: tuple[int, int], grey: bool, seed: int
) -> None:
    image = _frame(h, w, grey, seed)
    assert np.array_equal(letterbox_cpu(image, d), _ultralytics_preprocess(image, d))


@settings(max_examples=300, deadline=None)
@given(
    src_h=st.integers(1, 5000),
    src_w=st.integers(1, 5000),
    dst_h=st.integers(1, 2048),
    dst_w=st.integers(1, 2048),
)
def test_geometry_equals_ultralytics_get_params(
    src_h: int, src_w: int, dst_h: int, dst_w: int
) -> None:
    lb = augment.LetterBox((dst_h, dst_w), auto=False, scale_fill=False, scaleup=True, center=True)
    p = lb.get_params({"img": np.empty((src_h, src_w, 3), np.uint8)})
    g = letterbox_geometry((src_h, src_w), (dst_h, dst_w))
    assert (g.new_w, g.new_h) == p["new_unpad"]
    assert (g.pad_top, g.pad_left, g.pad_bottom, g.pad_right) == (
        p["top"],
        p["left"],
        p["bottom"],
        p["right"],
    )
    assert g.scale == p["ratio"][0]


@settings(max_examples=200, deadline=None)
@given(
    src_h=st.integers(1, 4000),
    src_w=st.integers(1, 4000),
    dst=st.sampled_from([(640, 640), (480, 640), (320, 320), (1024, 1024), (384, 640)]),
    seed=st.integers(0, 2**31),
)
def test_boxes_to_source_equals_scale_boxes(
    src_h: int, src_w: int, dst: tuple[int, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-20, max(dst) + 20, size=(17, 2, 2)).astype(np.float32)
    xyxy = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)  # x1<=x2, y1<=y2
    g = letterbox_geometry((src_h, src_w), dst)
    got = boxes_to_source(xyxy, g)
    assert got.dtype == np.float32 and got.shape == (17, 4)
    assert np.array_equal(got, ops.scale_boxes(dst, xyxy.copy(), (src_h, src_w)))
    # torch is what Ultralytics' predictor actually passes
    ref_t = ops.scale_boxes(dst, torch.from_numpy(xyxy.copy()), (src_h, src_w)).numpy()
    assert np.array_equal(got, ref_t)
    # the input is untouched
    assert np.array_equal(xyxy, np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1))


def test_boxes_round_trip_through_the_letterbox() -> None:
    """A box drawn in source pixels and mapped into the input comes back unchanged (to float32)."""
    g = letterbox_geometry((1080, 1920), (640, 640))
    src_box = np.array([[100.0, 200.0, 700.5, 1000.25]], np.float32)
    inp = np.empty_like(src_box)
    inp[:, 0::2] = src_box[:, 0::2] * g.gain_x + g.pad_left
    inp[:, 1::2] = src_box[:, 1::2] * g.gain_y + g.pad_top
    np.testing.assert_allclose(boxes_to_source(inp, g), src_box, rtol=0, atol=1e-3)


def test_boxes_to_source_refuses_wrong_shape() -> None:
    g = letterbox_geometry((1080, 1920), (640, 640))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        boxes_to_source(np.zeros((3, 5), np.float32), g)
