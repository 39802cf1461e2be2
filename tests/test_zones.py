"""Zones of the verdict rules: exact geometry against slow references, the counting
rules (ROI union, ignore masks, thresholds, segment masks, the old rectangle), and the
validation messages an engineer sees."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from kanjian.inference.types import Detections, Verdict
from kanjian.inference.verdict import VerdictRules, judge_detections
from kanjian.inference.zones import (
    MAX_POINTS,
    MAX_TOTAL_POINTS,
    MAX_ZONES,
    Trapezoids,
    Zone,
    ZoneOverlap,
    ZoneSet,
    polygon_area,
)
from tests.support import zone_oracle as O

NAMES = ("crazing", "scratches")


def _zone(points: list[tuple[float, float]], kind: str = "roi", name: str = "z") -> Zone:
    return Zone(name=name, kind=kind, points=points)  # type: ignore[arg-type]


def _valid(rng: random.Random, make: Any) -> list[tuple[float, float]]:
    """A random polygon that the validator accepts (rarely, rounding makes a sliver)."""
    while True:
        p = make(rng)
        try:
            _zone(p)
        except ValidationError:
            continue
        return p  # type: ignore[no-any-return]


def _boxes(rng: random.Random, n: int, lo: float = 0, hi: float = 400) -> np.ndarray:
    out = []
    for _ in range(n):
        x1, y1 = rng.uniform(lo, hi), rng.uniform(lo, hi)
        out.append((x1, y1, x1 + rng.uniform(0.5, 200), y1 + rng.uniform(0.5, 200)))
    return np.array(out, np.float64)


def _dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4].copy(), a[:, 4].copy(), a[:, 5].astype(np.int32))


# -- geometry against the slow references ------------------------------------------------


def test_box_area_in_one_polygon_equals_sutherland_hodgman() -> None:
    rng = random.Random(1)
    for _ in range(150):
        k = rng.randint(3, 24)
        poly = _valid(
            rng,
            lambda r, k=k: O.star_polygon(
                r, (r.uniform(80, 320), r.uniform(80, 320)), r.uniform(1, 30), r.uniform(40, 120), k
            ),
        )
        tz = Trapezoids.of_union([np.array(poly)])
        assert tz.area() == pytest.approx(O.shoelace(poly), rel=1e-9)
        assert polygon_area(np.array(poly)) == pytest.approx(O.shoelace(poly), rel=1e-9)
        boxes = _boxes(rng, 20)
        got = tz.box_areas(boxes)
        want = [O.area_in_box(poly, tuple(b)) for b in boxes]
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)


def test_box_area_in_overlapping_convex_polygons_equals_inclusion_exclusion() -> None:
    rng = random.Random(2)
    for _ in range(80):
        polys = [
            _valid(
                rng,
                lambda r: O.convex_polygon(
                    r,
                    (r.uniform(120, 280), r.uniform(120, 280)),
                    r.uniform(20, 110),
                    r.randint(3, 9),
                ),
            )
            for _ in range(rng.randint(2, 4))
        ]
        tz = Trapezoids.of_union([np.array(p) for p in polys])
        boxes = np.vstack([_boxes(rng, 12), [[0, 0, 400, 400]]])  # the last holds everything
        got = tz.box_areas(boxes)
        want = [O.union_area_convex(polys, tuple(b)) for b in boxes]
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)
        assert tz.area() == pytest.approx(want[-1], rel=1e-9)


def test_box_share_in_overlapping_concave_polygons_equals_sampling() -> None:
    rng = random.Random(3)
    n = 300  # samples a side: a share's sampling error stays far below the tolerance
    for _ in range(12):
        polys = [
            _valid(
                rng,
                lambda r: O.star_polygon(
                    r, (r.uniform(120, 280), r.uniform(120, 280)), 10, 100, r.randint(5, 16)
                ),
            )
            for _ in range(3)
        ]
        zs = ZoneSet([_zone(p, name=str(i)) for i, p in enumerate(polys)], ZoneOverlap())
        boxes = _boxes(rng, 6, 60, 300)
        got = zs.box_shares("roi", boxes)
        want = [O.sampled_share(polys, tuple(b), n) for b in boxes]
        np.testing.assert_allclose(got, want, atol=0.01)


def test_union_edge_cases() -> None:
    square = [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)]
    right = [(100.0, 0.0), (200.0, 0.0), (200.0, 100.0), (100.0, 100.0)]
    inner = [(20.0, 20.0), (60.0, 20.0), (40.0, 70.0)]
    box = np.array([[50.0, 10.0, 150.0, 60.0]])
    # neighbours sharing an edge, a polygon twice, one inside another
    assert Trapezoids.of_union([np.array(square), np.array(right)]).box_areas(box)[0] == 5000
    assert Trapezoids.of_union([np.array(square)] * 2).area() == 10000
    assert Trapezoids.of_union([np.array(square), np.array(inner)]).area() == 10000
    # a box without area: its centre decides
    zs = ZoneSet([_zone(square)], ZoneOverlap())
    flat = np.array([[10.0, 10.0, 10.0, 30.0], [150.0, 10.0, 150.0, 30.0]])
    assert zs.box_shares("roi", flat).tolist() == [1.0, 0.0]


def test_mask_share_counts_pixel_centres_in_the_zone() -> None:
    rng = random.Random(4)
    speckle = np.random.default_rng(4)
    hw = (120, 160)
    for _ in range(10):
        polys = [
            _valid(
                rng,
                lambda r: O.star_polygon(
                    r, (r.uniform(30, 130), r.uniform(30, 90)), 5, 50, r.randint(3, 10)
                ),
            )
            for _ in range(2)
        ]
        zs = ZoneSet([_zone(p, name=str(i)) for i, p in enumerate(polys)], ZoneOverlap())
        raster = zs.raster("roi", hw)
        np.testing.assert_array_equal(raster, O.pixel_centres(polys, hw))
        masks = np.zeros((5, *hw), bool)
        boxes = []
        for m in masks:
            x1, y1 = rng.randint(0, 120), rng.randint(0, 80)
            x2, y2 = x1 + rng.randint(5, 40), y1 + rng.randint(5, 40)
            m[y1:y2, x1:x2] = speckle.random((y2 - y1, x2 - x1)) < 0.6
            m[y1, x1] = True  # never empty
            boxes.append((x1, y1, x2, y2))
        dets = Detections(
            np.array(boxes, np.float32), np.full(5, 0.9, np.float32), np.zeros(5, np.int32), masks
        )
        got = zs.shares("roi", dets)
        want = [(m & raster).sum() / m.sum() for m in masks]
        np.testing.assert_allclose(got, want, rtol=1e-12)


# -- the counting rules --------------------------------------------------------------------


LEFT = [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)]
RIGHT = [(100.0, 0.0), (200.0, 0.0), (200.0, 100.0), (100.0, 100.0)]
NEXT = [(100.0, 0.0), (140.0, 0.0), (140.0, 100.0), (100.0, 100.0)]


def _rules(*zones: Zone, roi: float = 0.5, ignore: float = 0.5, **kw: Any) -> VerdictRules:
    return VerdictRules(zones=zones, zone_overlap=ZoneOverlap(roi=roi, ignore=ignore), **kw)


def _verdict(rules: VerdictRules, *rows: tuple[float, float, float, float, float, int]) -> Verdict:
    return judge_detections(_dets(*rows), NAMES, rules).verdict


def test_roi_counts_a_detection_by_its_share_of_the_union() -> None:
    # the box lies 40 % in each of two touching ROI zones and 20 % outside: 80 % in the union
    across = (60, 10, 160, 20, 0.9, 0)
    assert _verdict(_rules(_zone(LEFT, name="a"), _zone(NEXT, name="b")), across) is Verdict.FAIL
    assert _verdict(_rules(_zone(LEFT, name="a"), _zone(NEXT, name="b"), roi=0.85), across) is (
        Verdict.PASS
    )
    # one zone alone holds 40 %: under the default 0.5 it no longer counts
    assert _verdict(_rules(_zone(LEFT)), across) is Verdict.PASS
    assert _verdict(_rules(_zone(LEFT), roi=0.4), across) is Verdict.FAIL
    # exactly half inside reaches 0.5 (no float rounding flips it)
    assert _verdict(_rules(_zone(LEFT)), (50, 10, 150, 20, 0.9, 0)) is Verdict.FAIL
    # outside: the reason names the counted detection, "more" counts counted ones only
    r = judge_detections(
        _dets((300, 300, 340, 340, 0.99, 1), (10, 10, 20, 20, 0.8, 0), (20, 20, 30, 30, 0.7, 0)),
        NAMES,
        _rules(_zone(LEFT)),
    )
    assert r.verdict is Verdict.FAIL and r.params["class"] == "crazing" and r.params["more"] == 1


def test_ignore_zones_remove_detections_inside() -> None:
    rules = _rules(_zone(LEFT, "ignore", "clamp"))
    assert _verdict(rules, (10, 10, 50, 50, 0.9, 0)) is Verdict.PASS  # all inside
    assert _verdict(rules, (60, 10, 160, 20, 0.9, 0)) is Verdict.FAIL  # 40 % inside
    assert _verdict(rules, (40, 10, 140, 20, 0.9, 0)) is Verdict.PASS  # 60 % inside
    assert _verdict(_rules(_zone(LEFT, "ignore"), ignore=0.7), (40, 10, 140, 20, 0.9, 0)) is (
        Verdict.FAIL
    )
    # both kinds: inside the part, but on the clamp
    both = _rules(
        _zone([(0, 0), (400, 0), (400, 400), (0, 400)], name="part"),
        _zone(LEFT, "ignore", "clamp"),
    )
    assert _verdict(both, (10, 10, 50, 50, 0.9, 0)) is Verdict.PASS
    assert _verdict(both, (210, 210, 250, 250, 0.9, 0)) is Verdict.FAIL
    assert _verdict(both, (500, 500, 550, 550, 0.9, 0)) is Verdict.PASS


def test_segment_detections_count_by_their_mask() -> None:
    # a thin diagonal crack: its box lies 75 % in the ROI, its mask only 8 %
    h, w = 100, 100
    mask = np.zeros((1, h, w), bool)
    for i in range(100):
        mask[0, i, max(0, i - 1) : i + 1] = True
    roi = _zone([(0, 0), (100, 0), (100, 50), (50, 50), (50, 100), (0, 100)])
    box = Detections(
        np.array([[0, 0, 100, 100]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32)
    )
    seg = Detections(box.xyxy, box.confidence, box.class_id, mask)
    rules = _rules(roi)
    assert rules.zone_set.shares("roi", box)[0] == pytest.approx(0.75)
    share = rules.zone_set.shares("roi", seg)[0]
    want = (mask[0] & O.pixel_centres([list(roi.points)], (h, w))).sum() / mask[0].sum()
    assert share == pytest.approx(want) and share == pytest.approx(0.5, abs=0.02)
    assert judge_detections(box, NAMES, _rules(roi, roi=0.6)).verdict is Verdict.FAIL
    assert judge_detections(seg, NAMES, _rules(roi, roi=0.6)).verdict is Verdict.PASS


def test_the_old_rectangle_still_works_and_combines_with_zones() -> None:
    rect = VerdictRules(roi_xyxy=(0, 0, 100, 100))
    assert _verdict(rect, (80, 80, 110, 110, 0.9, 0)) is Verdict.FAIL  # centred inside
    assert _verdict(rect, (90, 90, 150, 150, 0.9, 0)) is Verdict.PASS  # centred outside
    both = _rules(_zone(LEFT, "ignore"), roi_xyxy=(0, 0, 300, 300))
    assert _verdict(both, (10, 10, 20, 20, 0.9, 0)) is Verdict.PASS
    assert _verdict(both, (150, 150, 160, 160, 0.9, 0)) is Verdict.FAIL
    assert _verdict(both, (350, 350, 360, 360, 0.9, 0)) is Verdict.PASS
    # stored overrides from before zones existed read back unchanged
    old = '{"default":{"fail_confidence":0.5},"roi_xyxy":[0,0,100,100]}'
    assert VerdictRules.model_validate_json(old).zones == ()


def test_rules_with_zones_round_trip_through_json() -> None:
    rules = _rules(_zone(LEFT, name="a"), _zone(RIGHT, "ignore", "b"), roi=0.3, ignore=0.9)
    back = VerdictRules.model_validate_json(rules.model_dump_json())
    assert back == rules
    assert back.model_dump(mode="json")["zones"][1] == {
        "name": "b",
        "kind": "ignore",
        "points": [[100.0, 0.0], [200.0, 0.0], [200.0, 100.0], [100.0, 100.0]],
    }


# -- validation ----------------------------------------------------------------------------


def _error(zones: Any, **kw: Any) -> str:
    with pytest.raises(ValidationError) as e:
        VerdictRules.model_validate({"zones": zones, **kw})
    return str(e.value)


def _z(points: Any, **kw: Any) -> dict[str, Any]:
    return {"name": "part", "kind": "roi", "points": points, **kw}


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        (_z([[0, 0], [5, 5]]), "at least 3 items"),
        (_z([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]), None),  # a closed ring is fine
        (_z([[0, 0], [10, 10], [10, 0], [0, 10]]), "zone 'part': edge 0-1 meets edge 2-3"),
        (_z([[0, 0], [10, 0], [20, 0]]), "zone 'part': the polygon encloses 0 square pixels"),
        (_z([[0, 0], [10, 0], [10, 0], [0, 9]]), "zone 'part': points 1 and 2 are the same"),
        (_z([[0, 0], [70000, 0], [0, 9]]), "zone 'part': point 1 is [70000.0, 0.0]"),
        (_z([[0, 0], [-1, 0], [0, 9]]), "coordinates are source pixels, 0 to 65535"),
        (_z([[0, 0], [float("inf"), 0], [0, 9]]), "coordinates must be finite"),
        (_z([[0, 0], [10, 0], [10, 10]], kind="mask"), "'roi' or 'ignore'"),
        (_z([[0, 0], [10, 0], [10, 10]], colour="red"), "Extra inputs are not permitted"),
        (_z([[0, 0], [10, 0], [10, 10]], name=""), "at least 1 character"),
        (_z([[i, (i % 2) * 10] for i in range(MAX_POINTS + 1)]), f"at most {MAX_POINTS}"),
    ],
)
def test_bad_zones_are_refused_with_a_clear_message(zone: Any, message: str | None) -> None:
    if message is None:
        assert len(VerdictRules.model_validate({"zones": [zone]}).zones[0].points) == 4
    else:
        assert message in _error([zone])


def test_zone_lists_are_bounded_and_names_unique() -> None:
    tri = [[0, 0], [10, 0], [10, 10]]
    assert "two zones are named 'part'" in _error([_z(tri), _z(tri)])
    many = [_z(tri, name=str(i)) for i in range(MAX_ZONES + 1)]
    assert f"at most {MAX_ZONES} items" in _error(many)
    n = MAX_TOTAL_POINTS // MAX_POINTS + 1
    ring = [[50 + 40 * np.cos(a), 50 + 40 * np.sin(a)] for a in np.linspace(0, 6, MAX_POINTS)]
    big = [_z(ring, name=str(i)) for i in range(n)]
    assert f"at most {MAX_TOTAL_POINTS}" in _error(big)
    assert "less than or equal to 1" in _error([], zone_overlap={"roi": 1.5})
    assert "greater than 0" in _error([], zone_overlap={"ignore": 0})
