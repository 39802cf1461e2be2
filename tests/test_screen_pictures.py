"""The screen's pictures by id in memory (appliance_api/http/pictures.py): bounded by
count per pool and by bytes, defects kept through a run of PASS parts, each picture
drawn once, failures (no image) never kept. Real frames, the real drawing and JPEG
encoding of the live hub."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.appliance_api.http.annotate import annotate_inspection, encode_jpeg
from kanjian.appliance_api.http.pictures import PictureCache
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.types import Detections, Inspection, Verdict

#: display names by language, as a model's manifest gives them
NAMES = {"zh": {"scratches": "划痕"}, "en": {"scratches": "scratches"}}


def _insp(verdict: Verdict, side: int = 64, value: int = 0, boxes: int = 0) -> Inspection:
    img = np.full((side, side, 3), value, np.uint8)
    frame = Frame(img, 0, "cam0", datetime.now(timezone.utc))
    dets = Detections(
        xyxy=np.array([[10, 10, side // 2, side // 2]] * boxes, np.float32).reshape(-1, 4),
        confidence=np.full(boxes, 0.81, np.float32),
        class_id=np.zeros(boxes, np.int32),
    )
    task = "detect" if boxes else ""
    return Inspection(
        frame=frame, verdict=verdict, detections=dets, class_names=("scratches",), task=task
    )


def _same_names(insp: Inspection, lang: str) -> Any:
    return ()  # as with a model without display names: every language reads the same


class Counting:
    """The hub's own drawing, counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, insp: Inspection, lang: str) -> Any:
        with self.lock:
            self.calls += 1
        return annotate_inspection(insp, 960, None, NAMES[lang])


def test_defects_survive_a_run_of_other_parts() -> None:
    cache = PictureCache(Counting(), encode_jpeg, recent=3, defects=2)
    fails = [_insp(Verdict.FAIL) for _ in range(3)]
    passes = [_insp(Verdict.PASS) for _ in range(10)]
    cache.add(fails[0])
    for p in passes[:5]:
        cache.add(p)
    cache.add(fails[1])
    cache.add(fails[2])
    for p in passes[5:]:
        cache.add(p)
    kept = set(cache.ids())
    assert kept == {str(i.inspection_id) for i in passes[-3:] + fails[1:]}
    assert cache.jpeg(str(fails[0].inspection_id)) is None  # the oldest defect went
    assert cache.jpeg(str(fails[1].inspection_id)) is not None  # ten PASS later, still here


def test_bytes_are_bounded_and_a_picture_is_drawn_once() -> None:
    draw = Counting()
    side = 200
    frame_bytes = side * side * 3
    cache = PictureCache(
        draw,
        encode_jpeg,
        recent=100,
        defects=100,
        max_bytes=5 * frame_bytes,
        variant=_same_names,
    )
    items = [_insp(Verdict.PASS if i % 2 else Verdict.REVIEW, side, i) for i in range(12)]
    for insp in items:
        cache.add(insp)
        assert cache.bytes_held <= 5 * frame_bytes
    assert len(cache) == 5  # undrawn frames count in full
    newest = str(items[-1].inspection_id)
    first = cache.jpeg(newest)
    assert first is not None and cache.jpeg(newest) == first
    assert draw.calls == 1
    # once drawn, only the JPEG is held: the bound now leaves room for more
    assert cache.bytes_held == 4 * frame_bytes + len(first)
    decoded = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (side, side, 3)
    # the picture is the frame's (value 11 inside its verdict frame)
    assert abs(float(decoded[side // 2, side // 2].mean()) - 11) <= 2


def test_concurrent_requests_get_the_same_bytes() -> None:
    draw = Counting()
    cache = PictureCache(draw, encode_jpeg, variant=_same_names)
    insp = _insp(Verdict.FAIL, 400, 30)
    cache.add(insp)
    out: list[bytes | None] = []
    threads = [
        threading.Thread(target=lambda: out.append(cache.jpeg(str(insp.inspection_id))))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and len(set(out)) == 1 and out[0] is not None
    assert len(cache) == 1


def test_labels_are_drawn_in_each_language_once() -> None:
    # one screen in Chinese, another in English: each gets its labels, the frame is let
    # go once both are drawn, and languages whose labels read the same share a drawing
    draw = Counting()
    cache = PictureCache(draw, encode_jpeg, variant=lambda insp, lang: tuple(NAMES[lang].items()))
    insp = _insp(Verdict.FAIL, 400, 200, boxes=1)
    cache.add(insp)
    iid = str(insp.inspection_id)
    zh, en = cache.jpeg(iid, "zh"), cache.jpeg(iid, "en")
    assert zh is not None and en is not None and zh != en
    assert draw.calls == 2 and cache.jpeg(iid) == zh  # the first language is the default
    assert cache.bytes_held == len(zh) + len(en)
    for lang, got in (("zh", zh), ("en", en)):  # each is what that language's drawing makes
        want = annotate_inspection(insp, 960, None, NAMES[lang])
        assert want is not None and got == encode_jpeg(want)
    with pytest.raises(ValueError, match="zh, en"):
        cache.jpeg(iid, "de")
    same = Counting()
    one = PictureCache(same, encode_jpeg, variant=_same_names)
    one.add(insp)
    assert one.jpeg(iid, "en") == one.jpeg(iid, "zh") and same.calls == 1
    assert one.bytes_held == len(one.jpeg(iid) or b"")


def test_failures_and_unknown_ids_have_no_picture() -> None:
    cache = PictureCache(Counting(), encode_jpeg)
    failure = FrameFailure(3, "cam0", datetime.now(timezone.utc), "camera timeout", missed=True)
    insp = Inspection(frame=failure, verdict=Verdict.MISSED)
    cache.add(insp)
    assert len(cache) == 0
    assert cache.jpeg(str(insp.inspection_id)) is None
    assert cache.jpeg("00000000-0000-4000-8000-000000000000") is None


@pytest.mark.parametrize(("recent", "defects", "max_bytes"), [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_bad_bounds_are_refused(recent: int, defects: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="recent >= 1, defects >= 0, max_bytes >= 1"):
        PictureCache(Counting(), encode_jpeg, recent=recent, defects=defects, max_bytes=max_bytes)
