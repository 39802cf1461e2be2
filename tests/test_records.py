"""The stored inspection's one read model (``kanjian.station.records``) on real databases.

A property test writes random inspections through the real store and reads them
back; a second test holds the HTTP API's JSON, the sync message and the dataset
export of the same stored inspection to the same values.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanjian.appliance_api.http.routes_inspections import get_inspection, list_inspections
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.records import (
    INSPECTION_COLUMNS,
    StoredInspection,
    load_inspection,
    utc_iso,
)
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.messages import inspection_message
from kanjian.station.sync.outbox import Outbox
from kanjian.training.export_filter import ExportFilter
from kanjian.training.station_log import read_station_log_items

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # UTF-8-encodable
_SCORE = st.floats(0.0, 1.0, width=32)
_TIME = st.datetimes(
    datetime(2000, 1, 1),
    datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
)


@st.composite
def inspections(draw: st.DrawFn) -> Inspection:
    """Any inspection the store must keep: frame or failure, boxes, masks, probs, an
    anomaly score, no model."""
    at = draw(_TIME)
    fid = draw(st.integers(0, 2**31))
    src, trig, uri = draw(_TEXT), draw(st.none() | _TEXT), draw(st.none() | _TEXT)
    frame: Frame | FrameFailure
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if draw(st.booleans()):
        frame = Frame(np.full((h, w, 3), 7, np.uint8), fid, src, at, trigger_id=trig, uri=uri)
    else:
        frame = FrameFailure(fid, src, at, draw(_TEXT), trigger_id=trig, uri=uri)
    n = draw(st.integers(0, 4))
    names = tuple(draw(st.lists(_TEXT, max_size=3)))
    coord = st.floats(-1e4, 1e4, width=32)
    dets = Detections(
        xyxy=np.array(
            draw(st.lists(st.tuples(coord, coord, coord, coord), min_size=n, max_size=n)),
            np.float32,
        ).reshape(n, 4),
        confidence=np.array(draw(st.lists(_SCORE, min_size=n, max_size=n)), np.float32),
        class_id=np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.int32),
        masks=np.array(draw(st.lists(st.booleans(), min_size=n * 9, max_size=n * 9)), bool).reshape(
            n, 3, 3
        )
        if draw(st.booleans())
        else None,
    )
    probs = None
    if draw(st.booleans()):
        probs = np.array(draw(st.lists(_SCORE, min_size=1, max_size=4)), np.float32)
    model = draw(
        st.none()
        | st.builds(ModelRef, _TEXT, _TEXT, st.text("0123456789abcdef", min_size=64, max_size=64))
    )
    timings = draw(st.dictionaries(_TEXT, st.floats(0, 1e6), max_size=3))
    return Inspection(
        frame,
        draw(st.sampled_from(Verdict)),
        draw(_TEXT),
        model,
        dets,
        names,
        probs,
        score=draw(st.none() | st.floats(0.0, 1.0)),
        timings_ms=timings,  # a fresh uuid4 each: one store keeps every example
    )


@pytest.fixture(scope="module")
def store() -> Iterator[ResultStore]:
    # one store for every example: a hypothesis example must not get a fresh tmp_path
    with tempfile.TemporaryDirectory() as tmp:
        s = ResultStore(Path(tmp), station_id="st-prop", save_verdicts=("FAIL",))
        yield s
        s.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(insp=inspections())
def test_an_inspection_reads_back_as_it_was_written(store: ResultStore, insp: Inspection) -> None:
    store.put(insp)
    assert store.flush()
    conn = sqlite3.connect(store.db_path)
    try:
        got = load_inspection(conn, str(insp.inspection_id))
    finally:
        conn.close()
    assert got is not None
    # the object the store wrote from is the object read back, field for field
    want = StoredInspection.from_inspection(
        insp, station_id="st-prop", seq=got.seq, image_path=got.image_path, judged_at=got.judged_at
    )
    assert got == want
    # ...and it says what the inspection said
    f = insp.frame
    assert got.id == str(insp.inspection_id) and got.verdict is insp.verdict
    assert (got.frame_id, got.source_id, got.trigger_id, got.uri) == (
        f.frame_id,
        f.source_id,
        f.trigger_id,
        f.uri,
    )
    assert datetime.fromisoformat(got.captured_at) == f.captured_at
    assert len(got.captured_at) == len(got.judged_at) == 32 and got.captured_at.endswith("+00:00")
    assert got.num_detections == len(insp.detections) == len(got.detections)
    d = insp.detections
    for i, sd in enumerate(got.detections):
        assert sd.idx == i and sd.class_id == int(d.class_id[i])
        assert np.float32(sd.confidence) == d.confidence[i]
        assert np.array_equal(np.array(sd.xyxy, np.float32), d.xyxy[i])
        assert sd.mask_area == (None if d.masks is None else int(d.masks[i].sum()))
    if insp.probs is None:
        assert got.probs is None
    else:
        assert got.probs is not None and np.array_equal(np.array(got.probs, np.float32), insp.probs)
    assert got.score == insp.score  # a double both ways: exact
    assert (got.model_sha256 is None) == (insp.model is None)
    assert (got.image_path is not None) == (insp.verdict is Verdict.FAIL and isinstance(f, Frame))
    assert got.row().keys() == set(INSPECTION_COLUMNS)


def test_utc_iso_is_fixed_width_utc_text_in_time_order() -> None:
    t = datetime(2026, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert utc_iso(t) == "2026-02-28T23:00:00.000000+00:00"
    times = [t + timedelta(microseconds=k * 999_983) for k in range(50)]
    assert sorted(map(utc_iso, times)) == [utc_iso(x) for x in sorted(times)]


# -- one stored inspection, three readers -----------------------------------------------------


def test_api_json_sync_message_and_export_agree(tmp_path: Path) -> None:
    names = ("crazing", "scratches")
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)
    at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)
    dets = Detections(
        xyxy=np.array([[1.25, 2.5, 30.125, 35.0], [10.0, 4.0, 50.5, 39.0]], np.float32),
        confidence=np.array([0.8123, 0.41], np.float32),
        class_id=np.array([1, 0], np.int32),
    )
    insp = Inspection(
        Frame(img, 7, "cam0", at, trigger_id="t-1", uri="part-7.png"),
        Verdict.FAIL,
        "scratches 0.81",
        ModelRef("neu", "1.2", "ab" * 32),
        dets,
        names,
        timings_ms={"preprocess": 0.8125, "infer": 41.0},
    )
    store = ResultStore(tmp_path, station_id="st-1")
    store.put(insp)
    assert store.flush()
    store.close()
    iid = str(insp.inspection_id)
    db = sqlite_utils.Database(sqlite3.connect(tmp_path / DB_NAME))
    db["feedback"].insert(  # type: ignore[union-attr]
        {
            "inspection_id": iid,
            "kind": "wrong_class",
            "class_name": "crazing",
            "actor": "op",
            "created_at": utc_iso(at + timedelta(minutes=1)),
        }
    )

    state: Any = SimpleNamespace(pool=SimpleNamespace(get=lambda: db))
    reader: Any = None  # the route functions called directly: no token to check
    detail = json.loads(get_inspection(state, reader, insp.inspection_id).model_dump_json())
    page = list_inspections(state, reader, None, None, None, None, None, None, None, 50)
    listed = json.loads(page.items[0].model_dump_json())

    ob = Outbox(tmp_path / DB_NAME)
    (entry,) = ob.fetch_fresh(0, 10)
    msg = json.loads(
        inspection_message(
            entry, site="s", line="l", station="st-1", stream=ob.stream_id, bucket=None, key=None
        )
    )
    ob.close()

    log = read_station_log_items(tmp_path, ExportFilter(label_conf=0.0), names)
    (item,) = log.items

    # one stored inspection: the same id, times, verdict, model, size, timings, boxes
    assert detail["id"] == listed["id"] == msg["inspection_id"] == item.inspection_id == iid
    assert detail["captured_at"] == msg["captured_at"] == item.captured_at == utc_iso(at)
    assert detail["judged_at"] == msg["judged_at"]
    assert detail["verdict"] == msg["verdict"] == item.verdict == "FAIL"
    assert detail["reason"] == msg["reason"] == "scratches 0.81"
    assert (detail["source_id"], detail["frame_id"], detail["trigger_id"], detail["uri"]) == (
        msg["source_id"], msg["frame_id"], msg["trigger_id"], msg["uri"]
    ) == ("cam0", 7, "t-1", "part-7.png")  # fmt: skip
    assert detail["model"] == msg["model"] == {"name": "neu", "version": "1.2", "sha256": "ab" * 32}
    assert item.model == f"neu 1.2 ({('ab' * 32)[:12]})"
    assert (detail["width"], detail["height"]) == (msg["width"], msg["height"]) == (60, 40)
    assert (item.record.width, item.record.height) == (60, 40)
    assert detail["timings_ms"] == msg["timings_ms"] == {"preprocess": 0.812, "infer": 41.0}
    assert detail["probs"] is None and msg["probs"] is None
    assert detail["top_confidence"] == item.top_confidence == float(np.float32(0.8123))
    assert detail["top_class"] == "scratches" and detail["num_detections"] == 2
    api_boxes = [(d["class_name"], d["confidence"], d["xyxy"]) for d in detail["detections"]]
    assert api_boxes == [
        ("scratches", float(np.float32(0.8123)), [1.25, 2.5, 30.125, 35.0]),
        ("crazing", float(np.float32(0.41)), [10.0, 4.0, 50.5, 39.0]),
    ]
    assert [(d["class_name"], d["confidence"], d["xyxy"]) for d in msg["detections"]] == [
        (n, round(c, 6), [round(v, 2) for v in xy]) for n, c, xy in api_boxes
    ]
    # the export applies the operator's feedback (wrong_class: every box is crazing)
    assert (
        item.feedback == detail["feedback"]["kind"] == listed["feedback"]["kind"] == "wrong_class"
    )
    assert [(b.class_name, list(b.xyxy)) for b in item.record.boxes] == [
        ("crazing", xy) for _, _, xy in api_boxes
    ]
    assert list(item.scores) == [c for _, c, _ in api_boxes]
    # the list shows what the detail shows, less the detail's own fields
    detail_only = {"detections", "probs", "feedback_history"}
    assert listed == {k: v for k, v in detail.items() if k not in detail_only}
    db.conn.close()
