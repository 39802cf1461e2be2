"""Labels on the pictures drawn for the screen: Chinese display names through Pillow's
FreeType and the app's own font, not OpenCV's empty boxes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from kanjian.appliance_api.http.annotate import Box, draw
from kanjian.inference.heads import label_text
from kanjian.inference.heads.drawing import box_label, class_colour, detection_boxes
from kanjian.inference.heads.label_text import FONT_FILE, label_font, put_label, text_mask
from kanjian.inference.types import Detections, Inspection, Verdict

#: a font without CJK glyphs, the one a bare Debian has: every hanzi is its .notdef box
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
TOFU = "\U0010ffff"  # a code point no font maps: .notdef in any font


def _mask(text: str, font: Path, px: int = 32) -> np.ndarray:
    m = text_mask(text, px, font)
    assert m is not None, font
    return m


def test_the_shipped_font_draws_hanzi_where_a_latin_font_draws_boxes() -> None:
    assert DEJAVU.is_file(), "Debian's fonts-dejavu-core (a Chromium dependency)"
    # the oracle for "tofu": without CJK glyphs two different hanzi render identically,
    # and identically to a code point no font has
    assert np.array_equal(_mask("合", DEJAVU), _mask("格", DEJAVU))
    assert np.array_equal(_mask("合", DEJAVU), _mask(TOFU, DEJAVU))
    ours = {c: _mask(c, FONT_FILE) for c in ("合", "格", TOFU)}
    assert not np.array_equal(ours["合"], ours["格"])
    assert ours["合"].shape == ours[TOFU].shape and not np.array_equal(ours["合"], ours[TOFU])
    assert ours["合"].max() == 255 and (ours["合"] > 0).mean() > 0.1  # real ink, not a hairline
    # the demo model's Chinese names too (the font is a subset: they must be in it)
    for name in ("龟裂", "夹杂", "斑块", "麻点", "压入氧化皮", "划痕"):
        for c in name:
            assert not np.array_equal(_mask(c, FONT_FILE), ours[TOFU]), c


def test_a_label_is_white_on_its_class_colour_and_stays_in_the_picture() -> None:
    img = np.zeros((120, 200, 3), np.uint8)
    colour = class_colour(3)
    assert put_label(img, "划痕 0.81", (150, 10), colour, 16)  # near the right and top edges
    drawn = (img != 0).any(axis=2)
    ys, xs = np.nonzero(drawn)
    assert xs.max() == 199 and ys.min() >= 0  # moved left to stay whole, not cut off
    assert ys.min() == 10  # no room above the box: inside it, from its top edge
    plate = img[drawn].astype(int)
    # every drawn pixel lies between the plate's colour and white, channel by channel
    assert (plate >= np.array(colour) - 1).all()
    assert (plate == 255).all(axis=1).sum() > 20  # white text strokes
    assert (plate == colour).all(axis=1).sum() > 200  # on the class's colour


def test_pictures_carry_display_names_and_fall_back_to_class_names() -> None:
    d = Detections(
        np.array([[20, 40, 120, 140], [150, 60, 190, 100]], np.float32),
        np.array([0.81, 0.4], np.float32),
        np.array([1, 0], np.int32),
    )
    insp = Inspection(
        frame=None,  # type: ignore[arg-type]  # detection_boxes reads detections only
        verdict=Verdict.FAIL,
        reason="",
        detections=d,
        class_names=("crazing", "scratches"),
    )
    boxes, idx = detection_boxes(insp, None, {"scratches": "划痕"})
    assert [b.label for b in boxes] == ["划痕 0.81", "crazing 0.40"] and idx == [0, 1]
    assert box_label("scratches", 0.814, None) == "scratches 0.81"
    image = np.full((240, 240, 3), 90, np.uint8)
    zh, en = draw(image, boxes, "FAIL"), draw(image, detection_boxes(insp)[0], "FAIL")
    assert not np.array_equal(zh, en)
    # the label of the box without a display name is the same in both pictures
    assert np.array_equal(zh[30:60, 150:240], en[30:60, 150:240])


def test_without_a_readable_font_labels_fall_back_to_opencv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "nofont.woff2"
    broken.write_bytes(b"wOF2 but not really")  # e.g. a FreeType built without brotli
    with caplog.at_level(logging.WARNING):
        assert label_font(20, broken) is None
    assert "cannot read the label font" in caplog.text
    img = np.zeros((50, 50, 3), np.uint8)
    assert not put_label(img, "x", (5, 30), (0, 0, 255), 20, broken)
    assert not img.any()  # nothing drawn: the caller draws it with OpenCV
    image = np.full((120, 120, 3), 90, np.uint8)
    boxes = [Box((10.0, 40.0, 100.0, 100.0), 0, "crazing 0.81")]
    good = draw(image, boxes, None)
    monkeypatch.setattr(label_text, "FONT_FILE", broken)
    fallback = draw(image, boxes, None)
    plate = (fallback[:40] == class_colour(0)).all(axis=2)
    assert plate.sum() > 100  # OpenCV's label plate above the box
    assert not np.array_equal(fallback, good)
