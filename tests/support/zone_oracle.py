"""Slow, obviously correct geometry for the zone tests (this module holds no tests).

- :func:`clip_convex`: Sutherland-Hodgman, a polygon clipped against a convex one, in
  plain Python. Against a convex clip window the clipped polygon's area is exact even
  for a concave subject (pieces joined along the window's border add no area), so
  ``area(clip_convex(P, box))`` is the exact area of ``P`` inside the box.
- :func:`union_area_convex`: the area of a box inside a union of convex polygons by
  inclusion-exclusion, each term a chain of Sutherland-Hodgman clips.
- :func:`inside`: even-odd point-in-polygon (ray casting) for many points, the oracle
  for sampled shares and for pixel rasters.
- :func:`star_polygon`, :func:`convex_polygon`: random simple polygons.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
from numpy.typing import NDArray

Pt = tuple[float, float]


def shoelace(poly: list[Pt]) -> float:
    """Area of a polygon (absolute), square units."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2


def _ccw(poly: list[Pt]) -> list[Pt]:
    s = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True))
    return poly if s > 0 else poly[::-1]


def clip_convex(subject: list[Pt], clip: list[Pt]) -> list[Pt]:
    """``subject`` clipped to the convex polygon ``clip`` (Sutherland-Hodgman)."""
    out = list(subject)
    clip = _ccw(clip)
    for (ax, ay), (bx, by) in zip(clip, clip[1:] + clip[:1], strict=True):
        if not out:
            break

        def side(p: Pt, ax: float = ax, ay: float = ay, bx: float = bx, by: float = by) -> float:
            return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)

        src, out = out, []
        for cur, nxt in zip(src, src[1:] + src[:1], strict=True):
            sc, sn = side(cur), side(nxt)
            if sc >= 0:
                out.append(cur)
            if (sc >= 0) != (sn >= 0):
                t = sc / (sc - sn)
                out.append((cur[0] + t * (nxt[0] - cur[0]), cur[1] + t * (nxt[1] - cur[1])))
    return out


def box_poly(x1: float, y1: float, x2: float, y2: float) -> list[Pt]:
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


def area_in_box(poly: list[Pt], box: tuple[float, float, float, float]) -> float:
    """Exact area of ``poly`` (any simple polygon) inside ``box``."""
    got = clip_convex(poly, box_poly(*box))
    return shoelace(got) if len(got) >= 3 else 0.0


def union_area_convex(polys: list[list[Pt]], box: tuple[float, float, float, float]) -> float:
    """Exact area of the union of convex ``polys`` inside ``box`` (inclusion-exclusion)."""
    total = 0.0
    for r in range(1, len(polys) + 1):
        for combo in itertools.combinations(polys, r):
            piece = box_poly(*box)
            for p in combo:
                piece = clip_convex(piece, p)
                if len(piece) < 3:
                    break
            a = shoelace(piece) if len(piece) >= 3 else 0.0
            total += a if r % 2 else -a
    return total


def inside(points: NDArray[np.float64], poly: list[Pt]) -> NDArray[np.bool_]:
    """``(n,)`` even-odd point-in-polygon for ``points`` ``(n, 2)`` (ray to +x)."""
    x, y = points[:, 0], points[:, 1]
    res = np.zeros(len(points), bool)
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        res ^= crosses & (x < xc)
    return res


def sampled_share(
    polys: list[list[Pt]], box: tuple[float, float, float, float], n: int = 300
) -> float:
    """Share of ``box`` inside the union of ``polys``, by ``n x n`` cell-centre samples."""
    x1, y1, x2, y2 = box
    xs = x1 + (np.arange(n) + 0.5) * (x2 - x1) / n
    ys = y1 + (np.arange(n) + 0.5) * (y2 - y1) / n
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    hit = np.zeros(len(pts), bool)
    for p in polys:
        hit |= inside(pts, p)
    return float(hit.mean())


def pixel_centres(polys: list[list[Pt]], hw: tuple[int, int]) -> NDArray[np.bool_]:
    """``(H, W)``: pixels whose centres (``j + 0.5, i + 0.5``) lie in the union."""
    h, w = hw
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    hit = np.zeros(len(pts), bool)
    for p in polys:
        hit |= inside(pts, p)
    return hit.reshape(h, w)


def star_polygon(rng: random.Random, centre: Pt, r_min: float, r_max: float, k: int) -> list[Pt]:
    """A simple (often concave) polygon: ``k`` points at sorted random angles and random
    radii around ``centre``."""
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(k))
    for i in range(1, k):  # distinct angles keep it simple
        angles[i] = max(angles[i], angles[i - 1] + 1e-3)
    return [
        (centre[0] + r * math.cos(a), centre[1] + r * math.sin(a))
        for a, r in zip(angles, (rng.uniform(r_min, r_max) for _ in range(k)), strict=True)
    ]


def convex_polygon(rng: random.Random, centre: Pt, radius: float, k: int) -> list[Pt]:
    """A convex polygon: ``k`` points at sorted random angles on a circle."""
    return star_polygon(rng, centre, radius, radius, k)
