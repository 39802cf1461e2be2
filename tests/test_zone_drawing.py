"""Zones drawn on the pictures people look at: ROI outlines and hatched ignore masks, at
the picture's scale, on the stored images' drawing and on the live view's."""

from __future__ import annotations

import numpy as np

from kanjian.appliance_api.http.annotate import annotate_inspection, draw, rules_keep
from kanjian.camera.frame import Frame
from kanjian.camera.source import utc_now
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import VerdictRules
from kanjian.inference.zone_drawing import IGNORE_BGR, ROI_BGR
from tests.support import zone_oracle as O

ROI = [(40.0, 30.0), (360.0, 50.0), (300.0, 260.0), (60.0, 240.0)]
IGNORE = [(100.0, 100.0), (180.0, 100.0), (140.0, 180.0)]
RULES = VerdictRules.model_validate(
    {
        "zones": [
            {"name": "part", "kind": "roi", "points": ROI},
            {"name": "clamp", "kind": "ignore", "points": IGNORE},
        ]
    }
)


def _picture(h: int = 300, w: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 90, (h, w, 3), dtype=np.uint8)  # dark, grainy steel


def _edge_points(poly: list[tuple[float, float]], scale: float) -> list[tuple[int, int]]:
    """Pixels (row, col) on each edge of ``poly`` (quarter points), at ``scale``."""
    out = []
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True):
        for t in (0.25, 0.5, 0.75):
            x, y = (x0 + t * (x1 - x0)) * scale, (y0 + t * (y1 - y0)) * scale
            out.append((int(y), int(x)))  # the pixel holding the point
    return out


def _away_from_outlines(hw: tuple[int, int], scale: float, dist: float = 4.0) -> np.ndarray:
    h, w = hw
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    near = np.zeros(hw, bool)
    for poly in (ROI, IGNORE):
        p = [(x * scale, y * scale) for x, y in poly]
        for (x0, y0), (x1, y1) in zip(p, p[1:] + p[:1], strict=True):
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((gx - x0) * dx + (gy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
            near |= np.hypot(gx - (x0 + t * dx), gy - (y0 + t * dy)) <= dist
    return ~near


def _check(out: np.ndarray, base: np.ndarray, scale: float) -> None:
    """Outlines in their colours, the ignore zone tinted and hatched, the rest untouched."""
    hw = base.shape[:2]
    for poly, colour in ((ROI, ROI_BGR), (IGNORE, IGNORE_BGR)):
        for r, c in _edge_points(poly, scale):
            assert not np.array_equal(out[r, c], base[r, c]), (r, c)
            # closer to the zone's colour than it was
            want = np.array(colour, float)
            assert np.abs(out[r, c] - want).sum() < np.abs(base[r, c] - want).sum(), (r, c)
    away = _away_from_outlines(hw, scale)
    scaled_ignore = [[(x * scale, y * scale) for x, y in IGNORE]]
    in_ignore = O.pixel_centres(scaled_ignore, hw) & away
    assert in_ignore.sum() > 100
    tint = 0.75 * base[in_ignore].astype(float) + 0.25 * np.array(IGNORE_BGR, float)
    is_tint = np.abs(out[in_ignore] - tint).max(axis=1) <= 1
    is_hatch = (out[in_ignore] == IGNORE_BGR).all(axis=1)
    assert (is_tint | is_hatch).all()
    assert 0.05 < is_hatch.mean() < 0.5  # hatched, not filled
    rest = away & ~O.pixel_centres(scaled_ignore, hw)  # inside the ROI too: left as it is
    assert np.array_equal(out[rest], base[rest])


def test_stored_image_drawing_shows_the_zones() -> None:
    img = _picture()
    out = draw(img, [], None, zones=RULES)
    _check(out, img, 1.0)
    assert np.array_equal(draw(img, [], None), img)  # no zones: nothing drawn


def test_shrunk_pictures_draw_the_zones_at_their_scale() -> None:
    img = _picture()
    out = draw(img, [], None, max_side=200, zones=RULES)
    assert out.shape == (150, 200, 3)
    _check(out, draw(img, [], None, max_side=200), 0.5)


def test_live_view_draws_the_zones_of_the_rules_in_force() -> None:
    img = _picture()
    insp = Inspection(Frame(img, 0, "cam", utc_now()), Verdict.PASS, task="detect")
    with_zones = annotate_inspection(insp, keep=rules_keep(RULES))
    without = annotate_inspection(insp, keep=rules_keep(VerdictRules()))
    assert with_zones is not None and without is not None
    # the verdict's border is the same on both; everything else as on a stored image
    _check(with_zones, without, 1.0)
    # the old rectangle is drawn as an ROI outline
    rect = annotate_inspection(insp, keep=rules_keep(VerdictRules(roi_xyxy=(50, 50, 250, 200))))
    assert rect is not None
    assert (rect[125, 49:52] != without[125, 49:52]).any()
    assert np.abs(rect[50, 150].astype(float) - ROI_BGR).sum() < 60
