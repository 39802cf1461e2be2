"""Where on the part a defect is (3x3 grid of the frame), its size in mm, and the reason
that says both: made by the inspector, stored as English, read back by the screen's
parser, including rows stored before reasons said where."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kanjian.camera.frame import Frame
from kanjian.camera.source import utc_now
from kanjian.inference.model import load_model
from kanjian.inference.reason_where import place_reason
from kanjian.inference.types import Detections, Verdict
from kanjian.inference.verdict import (
    VerdictRules,
    explain_reason,
    judge_detections,
    judge_probs,
    reason_text,
)
from kanjian.inference.where import WHERE, size_mm, where_on_frame
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from kanjian.station.inspector import Inspector

NAMES = ("crazing", "scratches")


def _dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4].copy(), a[:, 4].copy(), a[:, 5].astype(np.int32))


def _cell(cx: float, cy: float, w: int, h: int) -> tuple[int, int]:
    """Row and column of a point in thirds, by comparison (the grid's definition)."""
    col = 0 if cx < w / 3 else 1 if cx < 2 * w / 3 else 2
    row = 0 if cy < h / 3 else 1 if cy < 2 * h / 3 else 2
    return row, col


def test_the_nine_cells_read_row_by_row() -> None:
    w, h = 300, 150
    for row in range(3):
        for col in range(3):
            cx, cy = (col + 0.5) * w / 3, (row + 0.5) * h / 3
            got = where_on_frame((cx - 5, cy - 5, cx + 5, cy + 5), (w, h))
            vert = ("top", "", "bottom")[row]
            horiz = ("left", "", "right")[col]
            assert got == ("_".join(p for p in (vert, horiz) if p) or "centre")
    assert WHERE[4] == "centre" and len(set(WHERE)) == 9


@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.floats(-0.2, 1.2),
    st.floats(-0.2, 1.2),
    st.floats(0, 0.5),
    st.floats(0, 0.5),
)
def test_a_box_is_in_the_cell_of_its_centre(
    w: int, h: int, fx: float, fy: float, fw: float, fh: float
) -> None:
    cx, cy = fx * w, fy * h
    box = (cx - fw * w, cy - fh * h, cx + fw * w, cy + fh * h)
    got = where_on_frame(box, (w, h))
    ccx, ccy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # centre as the code sees it
    # on a third's line float rounding may go either way: the docstring's rule is for reals
    assume(all(abs(3 * c / n - k) > 1e-9 for c, n in ((ccx, w), (ccy, h)) for k in (1, 2)))
    row, col = _cell(min(max(ccx, 0), w - 1e-9), min(max(ccy, 0), h - 1e-9), w, h)
    assert got == WHERE[3 * row + col]


def test_size_in_mm_has_one_decimal_and_any_corner_order() -> None:
    assert size_mm((10, 20, 133, 65), 0.1) == [12.3, 4.5]
    assert size_mm((133, 65, 10, 20), 0.1) == [12.3, 4.5]
    with pytest.raises(ValueError, match="positive"):
        where_on_frame((0, 0, 1, 1), (0, 10))


def test_placed_reasons_say_where_and_size_and_read_back() -> None:
    fail = judge_detections(
        _dets((10, 20, 133, 65, 0.9, 0), (0, 0, 9, 9, 0.6, 1)), NAMES, VerdictRules()
    )
    review = judge_detections(_dets((250, 250, 290, 290, 0.3, 1)), NAMES, VerdictRules())
    frame = (300, 300)
    placed = place_reason(fail, frame, 0.1)
    assert placed.reason == "crazing 0.90 at [10,20,133,65], top left, 12.3x4.5 mm (+1 more)"
    assert placed.params == {**fail.params, "where": "top_left", "size_mm": [12.3, 4.5]}
    no_scale = place_reason(review, frame)
    assert no_scale.reason == "uncertain: scratches 0.30 at [250,250,290,290], bottom right"
    assert "size_mm" not in no_scale.params
    for r in (placed, no_scale, place_reason(review, frame, 0.05)):
        assert r.reason == reason_text(r.code, r.params)
        assert explain_reason(r.verdict, r.reason) == (r.code, r.params), r.reason
        # the sentence itself says it: the frame size given again changes nothing
        assert explain_reason(r.verdict, r.reason, (10, 10)) == (r.code, r.params)
    # nothing to place in other reasons
    for other in (
        judge_detections(Detections.empty(), NAMES, VerdictRules()),
        judge_probs(np.array([0.9, 0.1], np.float32), NAMES, VerdictRules()),
    ):
        assert place_reason(other, frame, 0.1) == other


def test_rows_stored_before_reasons_said_where_get_it_from_their_box() -> None:
    old = "crazing 0.90 at [10,20,133,65] (+1 more)"  # the sentence stored until issue 13
    code, params = explain_reason("FAIL", old)
    assert code == "defect_fail" and "where" not in params  # no frame size: nothing invented
    code, params = explain_reason("FAIL", old, (300, 300))
    assert params == {
        "class": "crazing",
        "confidence": 0.9,
        "box": [10, 20, 133, 65],
        "more": 1,
        "where": where_on_frame((10, 20, 133, 65), (300, 300)),
    }  # and no size: the scale of that day is not known
    code, params = explain_reason("REVIEW", "uncertain: a, top 0.30 at [250,0,290,40]", (300, 300))
    assert code == "defect_review" and params["class"] == "a, top"
    assert params["where"] == "top_right"


@given(
    st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s and "\n" not in s),
    st.tuples(*[st.integers(0, 999)] * 4),
    st.floats(0.5, 1.0),
    st.one_of(st.none(), st.floats(0.001, 10)),
    st.integers(1, 2000),
    st.integers(1, 2000),
)
def test_any_class_name_box_and_scale_round_trip(
    name: str,
    box: tuple[int, int, int, int],
    conf: float,
    mm: float | None,
    w: int,
    h: int,
) -> None:
    x1, y1, x2, y2 = box
    dets = _dets((x1, y1, x2, y2, conf, 0))
    r = place_reason(judge_detections(dets, (name,), VerdictRules()), (w, h), mm)
    assert r.verdict is Verdict.FAIL
    assert explain_reason(r.verdict, r.reason) == (r.code, r.params), r.reason


def test_the_inspector_places_the_demo_models_defects(tmp_path: Path) -> None:
    model = load_model(DEMO_MODEL, ("cpu",))
    scale = 0.05
    ins = Inspector(model, VerdictRules(), conf=0.05, mm_per_px=scale)
    plain = Inspector(model, VerdictRules(), conf=0.05)
    seen = 0
    for i, p in enumerate(sorted(DEMO_IMAGES.glob("*.jpg"))):
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        frame = Frame(image, i, "t", utc_now(), uri=str(p))
        insp, without = ins.inspect(frame), plain.inspect(frame)
        code, params = explain_reason(insp.verdict, insp.reason)
        if code not in ("defect_fail", "defect_review"):
            continue
        seen += 1
        box = params["box"]
        assert isinstance(box, list)
        h, w = image.shape[:2]
        assert params["where"] == where_on_frame(box, (w, h))
        assert params["size_mm"] == [
            round((box[2] - box[0]) * scale, 1),
            round((box[3] - box[1]) * scale, 1),
        ]
        # without a scale: where, no size; the verdict is the same
        _, params2 = explain_reason(without.verdict, without.reason)
        assert without.verdict == insp.verdict and "size_mm" not in params2
        assert params2["where"] == params["where"]
    assert seen >= 4, "the demo images give defects at conf 0.05"
