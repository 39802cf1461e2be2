"""kanjian.inference.agreement: verdict matrix and kappa, box pairing, defect calls
against labels and operator feedback.

Oracles: a published kappa example, counts recounted naively here, and the golden-set
matcher (:func:`kanjian.inference.matching.match_detections`) for the same-class pairs.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kanjian.inference import agreement as ag
from kanjian.inference.matching import match_detections
from kanjian.inference.types import Detections, Verdict

VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR")


def test_kappa_of_a_published_example() -> None:
    """Wikipedia's "Cohen's kappa" worked example: 50 proposals, two readers, yes/no:
    20 both yes, 15 both no, 5 only A yes, 10 only B yes; kappa = 0.4."""
    pairs = [("FAIL", "FAIL")] * 20 + [("PASS", "PASS")] * 15
    pairs += [("FAIL", "PASS")] * 5 + [("PASS", "FAIL")] * 10
    got = ag.verdict_agreement(pairs)
    assert got.kappa == pytest.approx(0.4)
    assert (got.n, got.agreed, got.agreement) == (50, 35, 0.7)
    assert got.matrix[1][0] == 5 and got.matrix[0][1] == 10  # rows: the first model
    assert got.models == ("active", "shadow") and got.labels == VERDICTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(VERDICTS), st.sampled_from(VERDICTS)), max_size=60))
def test_verdict_matrix_recounted(pairs: list[tuple[str, str]]) -> None:
    got = ag.verdict_agreement([(a.lower(), Verdict(b)) for a, b in pairs], ("A", "B"))
    counts = Counter(pairs)
    assert [[counts[(a, b)] for b in VERDICTS] for a in VERDICTS] == [list(r) for r in got.matrix]
    n = len(pairs)
    agreed = sum(a == b for a, b in pairs)
    assert (got.n, got.agreed) == (n, agreed)
    if n == 0:
        assert got.agreement is None and got.kappa is None
        return
    chance = sum(
        sum(a == v for a, _ in pairs) * sum(b == v for _, b in pairs) for v in VERDICTS
    ) / (n * n)
    if chance == 1:
        assert got.kappa is None
    else:
        assert got.kappa == pytest.approx((agreed / n - chance) / (1 - chance))
    judged = [(a, b) for a, b in pairs if "ERROR" not in (a, b)]
    same = sum((a in ("FAIL", "REVIEW")) == (b in ("FAIL", "REVIEW")) for a, b in judged)
    assert (got.defect_call_pairs, got.defect_call_agreed) == (len(judged), same)


def test_missed_counts_as_error_and_unknown_verdicts_are_refused() -> None:
    got = ag.verdict_agreement([("MISSED", "PASS")])
    assert got.matrix[3][0] == 1 and got.defect_call_pairs == 0
    with pytest.raises(ValueError, match="unknown verdict 'OK'"):
        ag.verdict_agreement([("OK", "PASS")])


def _box(name: str, conf: float, x1: float, y1: float, x2: float, y2: float) -> ag.DetBox:
    return ag.DetBox(name, conf, (x1, y1, x2, y2))


def test_boxes_pair_by_class_then_by_iou_alone() -> None:
    a = [
        _box("scratch", 0.9, 0, 0, 10, 10),  # same object, same class in b
        _box("dent", 0.8, 50, 50, 60, 60),  # same object, b says scratch
        _box("dent", 0.7, 100, 100, 110, 110),  # nothing in b
        _box("dent", 0.6, 0, 0, 10, 11),  # overlaps a[0]'s object; b's box is taken
    ]
    b = [
        _box("scratch", 0.5, 0, 0, 10, 10),
        _box("scratch", 0.5, 50, 50, 60, 61),
        _box("dent", 0.5, 200, 200, 210, 210),  # nothing in a
    ]
    m = ag.match_boxes(a, b)
    assert [(i, j) for i, j, _ in m.pairs] == [(0, 0)]
    assert [(i, j) for i, j, _ in m.class_swaps] == [(1, 1)]
    assert (m.only_a, m.only_b) == ((2, 3), (2,))
    assert m.class_swaps[0][2] == pytest.approx(100 / 110)
    assert not m.agrees and ag.match_boxes(a[:1], b[:1]).agrees and ag.match_boxes([], []).agrees
    got = ag.detection_agreement([(a, b), (a[:1], b[:1])], 0.5, ["dent", "scratch", "hole"])
    by = {c.class_name: c for c in got.classes}
    assert [c.class_name for c in got.classes] == ["dent", "scratch", "hole"]
    assert (by["scratch"].a_boxes, by["scratch"].b_boxes, by["scratch"].matched) == (2, 3, 2)
    assert (by["scratch"].swapped_b, by["dent"].swapped_a, by["dent"].only_a) == (1, 1, 2)
    assert (by["dent"].only_b, by["dent"].agreement, by["hole"].agreement) == (1, 0.0, None)
    assert by["scratch"].agreement == pytest.approx(4 / 5) and by["scratch"].mean_iou == 1.0
    assert [asdict(s) for s in got.class_swaps] == [
        {"a_class": "dent", "b_class": "scratch", "count": 1}
    ]
    assert (got.images, got.images_agreeing, got.matched, got.swapped) == (2, 1, 2, 1)
    json.dumps(asdict(got))  # what an API returns as it is


def _dets(boxes: list[ag.DetBox], names: list[str]) -> Detections:
    return Detections(
        np.array([b.xyxy for b in boxes], np.float32).reshape(-1, 4),
        np.array([b.confidence for b in boxes], np.float32),
        np.array([names.index(b.class_name) for b in boxes], np.int32),
    )


def test_same_class_pairs_equal_the_golden_set_matcher() -> None:
    rng = random.Random(0)
    names = ["a", "b"]
    for _ in range(200):

        def boxes(k: int) -> list[ag.DetBox]:
            out = []
            for _ in range(k):
                x, y = rng.randint(0, 40), rng.randint(0, 40)
                w, h = rng.randint(2, 20), rng.randint(2, 20)
                conf = round(rng.choice([0.3, 0.5, 0.9]) + rng.random() * 0.05, 2)
                out.append(_box(rng.choice(names), conf, x, y, x + w, y + h))
            return out

        a, b = boxes(rng.randint(0, 7)), boxes(rng.randint(0, 7))
        # float32 copies: what the matcher sees, so both compare the same numbers
        a = ag.boxes_of(_dets(a, names), names)
        b = ag.boxes_of(_dets(b, names), names)
        m = ag.match_boxes(a, b, 0.3)
        ref = match_detections(_dets(a, names), _dets(b, names), 0.3, max_conf_diff=1.0)
        assert len(m.pairs) == ref.matched
        used = sorted([i for i, _, _ in m.pairs + m.class_swaps] + list(m.only_a))
        assert used == list(range(len(a)))
        used_b = sorted([j for _, j, _ in m.pairs + m.class_swaps] + list(m.only_b))
        assert used_b == list(range(len(b)))
        assert all(a[i].class_name == b[j].class_name and iou >= 0.3 for i, j, iou in m.pairs)
        assert all(a[i].class_name != b[j].class_name and iou >= 0.3 for i, j, iou in m.class_swaps)


def test_defect_calls_against_labels() -> None:
    judged = [("FAIL", True), ("REVIEW", False), ("PASS", True), ("PASS", False)]
    judged += [("REVIEW", True), ("ERROR", True)]
    s = ag.defect_call_score(judged, "A")
    assert (s.tp, s.fp, s.fn, s.tn, s.unjudged, s.n) == (2, 1, 1, 1, 1, 5)
    assert (s.precision, s.recall) == (2 / 3, 2 / 3)
    empty = ag.defect_call_score([("PASS", False)])
    assert (empty.precision, empty.recall) == (None, None)


def test_feedback_truth_scores_both_models_and_says_who_was_right() -> None:
    F = ag.FeedbackRecord
    records = [
        F("FAIL", "FAIL", "confirm_defect", None, "1"),  # both right, no disagreement
        F("FAIL", "PASS", "not_defect", None, "2"),  # shadow right
        F("PASS", "REVIEW", "confirm_defect", None, "3"),  # missed by active: shadow right
        F("FAIL", "PASS", "wrong_class", "dent", "4"),  # a defect all the same: active right
        F("FAIL", "REVIEW", "confirm_defect", None, "5"),  # both called it
        F("REVIEW", "FAIL", "not_defect", None, "6"),  # both wrong
        F("ERROR", "PASS", "confirm_defect", None, "7"),  # the one that judged was wrong
        F("PASS", "PASS", "not_defect", None, "8"),
    ]
    got = ag.feedback_truth(records)
    assert (got.n, got.defective, got.good) == (8, 5, 3)
    assert [(d.inspection_id, d.right) for d in got.listed] == [
        ("2", "b"), ("3", "b"), ("4", "a"), ("5", "both"), ("6", "neither"), ("7", "neither"),
    ]  # fmt: skip
    assert (got.disagreements, got.a_right, got.b_right, got.both_right, got.neither_right) == (
        6, 1, 2, 1, 2,
    )  # fmt: skip
    assert got.listed[2].feedback_class == "dent" and got.listed[2].defective
    # recounted: truth is "not not_defect"; a defect call is FAIL or REVIEW; ERROR apart
    for score, pick in ((got.a, 0), (got.b, 1)):
        c: Counter[str] = Counter()
        for r in records:
            v = (r.a_verdict, r.b_verdict)[pick]
            if v == "ERROR":
                c["unjudged"] += 1
                continue
            truth, call = r.feedback_kind != "not_defect", v in ("FAIL", "REVIEW")
            c[{(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}[(truth, call)]] += 1
        assert (score.tp, score.fp, score.fn, score.tn, score.unjudged) == tuple(
            c[k] for k in ("tp", "fp", "fn", "tn", "unjudged")
        )
        assert score.precision == c["tp"] / (c["tp"] + c["fp"])
        assert score.recall == c["tp"] / (c["tp"] + c["fn"])
    assert (got.a.model, got.b.model) == ("active", "shadow")
    assert len(ag.feedback_truth(records, max_listed=2).listed) == 2
    json.dumps(asdict(got))
    with pytest.raises(ValueError, match="unknown feedback kind 'maybe'"):
        ag.feedback_truth([F("PASS", "PASS", "maybe")])
