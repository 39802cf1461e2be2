"""Exact plane geometry for the verdict rules' zones: polygon area and simplicity, the
union of polygons as disjoint trapezoids and a box's exact area inside it, and the
pixels whose centres lie in a polygon. No pydantic, no rules: see
:mod:`kanjian.inference.zones` for what the zones mean.

Exact box shares: the union of polygons is cut once into disjoint trapezoids with
vertical sides, by slabs between every vertex x and every x where edges of two
polygons cross; inside a slab no edges cross, so the union's cross section is a fixed
set of intervals bounded by straight edges. The area of a box inside one trapezoid is
the integral of ``max(0, min(top, y2) - max(bottom, y1))`` over the box's x range:
piecewise linear, with kinks only where the top or bottom edge meets ``y1`` or ``y2``,
so the trapezoid rule over those points is exact. Per frame this is a few numpy
operations over the (box, trapezoid) pairs whose bounding boxes meet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Trapezoids", "fill_centres", "polygon_area", "self_crossing"]


def polygon_area(points: NDArray[np.float64]) -> float:
    """Area of a simple polygon (shoelace), square pixels; ``points`` ``(k, 2)`` x, y."""
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _orient(a: NDArray[np.float64], b: NDArray[np.float64], c: NDArray[np.float64]) -> float:
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def _on_segment(a: NDArray[np.float64], b: NDArray[np.float64], p: NDArray[np.float64]) -> bool:
    return bool(min(a[0], b[0]) <= p[0] <= max(a[0], b[0])) and bool(
        min(a[1], b[1]) <= p[1] <= max(a[1], b[1])
    )


def _segments_meet(
    a: NDArray[np.float64], b: NDArray[np.float64], c: NDArray[np.float64], d: NDArray[np.float64]
) -> bool:
    """Segments ``ab`` and ``cd`` share at least one point (crossing or touching)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if ((o1 > 0 and o2 < 0) or (o1 < 0 and o2 > 0)) and (
        (o3 > 0 and o4 < 0) or (o3 < 0 and o4 > 0)
    ):
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def self_crossing(p: NDArray[np.float64]) -> tuple[int, int] | None:
    """The first pair of edges ``(i, j)`` (edge i runs from point i to i+1) of the closed
    polygon ``p`` that meet although they are not neighbours, else ``None``."""
    k = len(p)
    for i in range(k):
        a, b = p[i], p[(i + 1) % k]
        for j in range(i + 2, k):
            if i == 0 and j == k - 1:
                continue  # the last edge ends where the first begins
            if _segments_meet(a, b, p[j], p[(j + 1) % k]):
                return i, j
    return None


_F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Trapezoids:
    """A union of polygons as disjoint trapezoids with vertical sides.

    Trapezoid ``t`` spans ``xa[t] <= x <= xb[t]``, between its bottom edge
    ``lo_y[t] + lo_s[t] * (x - xa[t])`` and its top edge ``hi_y[t] + hi_s[t] * (x - xa[t])``
    (y grows downwards as in pictures; "bottom" is the smaller y). All ``(m,)`` float64,
    source pixels.
    """

    xa: _F64
    xb: _F64
    lo_y: _F64
    lo_s: _F64
    hi_y: _F64
    hi_s: _F64

    @property
    def y_min(self) -> _F64:
        return np.minimum(self.lo_y, self.lo_y + self.lo_s * (self.xb - self.xa))

    @property
    def y_max(self) -> _F64:
        return np.maximum(self.hi_y, self.hi_y + self.hi_s * (self.xb - self.xa))

    def __len__(self) -> int:
        return len(self.xa)

    @classmethod
    def of_union(cls, polygons: Sequence[_F64]) -> Trapezoids:
        """Decompose the union of simple polygons (each ``(k, 2)`` x, y)."""
        x0, y0, x1, y1, owner = [], [], [], [], []
        for n, p in enumerate(polygons):
            q = np.roll(p, -1, axis=0)
            for (ax, ay), (bx, by) in zip(p.tolist(), q.tolist(), strict=True):
                if ax == bx:
                    continue  # vertical: a slab border, never a slab's top or bottom
                if ax > bx:
                    ax, ay, bx, by = bx, by, ax, ay
                x0.append(ax)
                y0.append(ay)
                x1.append(bx)
                y1.append(by)
                owner.append(n)
        ex0, ey0, ex1, ey1 = (np.array(v, np.float64) for v in (x0, y0, x1, y1))
        own = np.array(owner, np.int64)
        slope = (ey1 - ey0) / (ex1 - ex0)
        xs = np.unique(
            np.concatenate([*(p[:, 0] for p in polygons), _crossings(ex0, ey0, ex1, slope, own)])
        )
        out: list[tuple[float, float, float, float, float, float]] = []
        for xa, xb in zip(xs[:-1].tolist(), xs[1:].tolist(), strict=True):
            act = np.flatnonzero((ex0 <= xa) & (ex1 >= xb))
            if len(act) < 2:
                continue
            xm = (xa + xb) / 2
            ym = ey0[act] + slope[act] * (xm - ex0[act])
            spans: list[tuple[float, float, int, int]] = []  # (y_lo, y_hi, edge_lo, edge_hi)
            for n in np.unique(own[act]).tolist():
                sel = act[own[act] == n]
                ys = ym[own[act] == n]
                order = np.argsort(ys, kind="stable")
                # inside between the 1st and 2nd crossing, the 3rd and 4th ...
                for a, b in zip(order[0::2].tolist(), order[1::2].tolist(), strict=False):
                    spans.append((float(ys[a]), float(ys[b]), int(sel[a]), int(sel[b])))
            spans.sort()
            merged: list[tuple[float, float, int, int]] = []
            for lo, hi, e_lo, e_hi in spans:
                if merged and lo <= merged[-1][1]:  # overlaps the one before: one span
                    if hi > merged[-1][1]:
                        merged[-1] = (merged[-1][0], hi, merged[-1][2], e_hi)
                else:
                    merged.append((lo, hi, e_lo, e_hi))
            for _, _, lo_e, hi_e in merged:
                out.append(
                    (
                        xa,
                        xb,
                        float(ey0[lo_e] + slope[lo_e] * (xa - ex0[lo_e])),
                        float(slope[lo_e]),
                        float(ey0[hi_e] + slope[hi_e] * (xa - ex0[hi_e])),
                        float(slope[hi_e]),
                    )
                )
        a = np.array(out, np.float64).reshape(-1, 6)
        return cls(*(a[:, i].copy() for i in range(6)))

    def area(self) -> float:
        """The union's area, square pixels."""
        w = self.xb - self.xa
        return float(np.sum(w * ((self.hi_y - self.lo_y) + (self.hi_s - self.lo_s) * w / 2)))

    def box_areas(self, xyxy: _F64) -> _F64:
        """``(n,)`` exact area of each box ``(n, 4)`` x1, y1, x2, y2 inside the union."""
        n = len(xyxy)
        if n == 0 or len(self) == 0:
            return np.zeros(n, np.float64)
        bx1, by1, bx2, by2 = (xyxy[:, i : i + 1] for i in range(4))
        meet = (self.xa < bx2) & (self.xb > bx1) & (self.y_min < by2) & (self.y_max > by1)
        bi, ti = np.nonzero(meet)
        if len(bi) == 0:
            return np.zeros(n, np.float64)
        x1, y1, x2, y2 = (xyxy[bi, i] for i in range(4))
        xa, ly, ls, hy, hs = self.xa[ti], self.lo_y[ti], self.lo_s[ti], self.hi_y[ti], self.hi_s[ti]
        a = np.maximum(xa, x1)
        b = np.minimum(self.xb[ti], x2)
        pts = [a, b]
        with np.errstate(divide="ignore", invalid="ignore"):
            for y0, s in ((ly, ls), (hy, hs)):  # where an edge meets y1 or y2: the kinks
                for yy in (y1, y2):
                    x = xa + (yy - y0) / s
                    pts.append(np.clip(np.where(np.isfinite(x), x, a), a, np.maximum(a, b)))
        xs = np.sort(np.stack(pts, axis=1), axis=1)  # (pairs, 6)
        dx = xa[:, None]
        lo = np.maximum(ly[:, None] + ls[:, None] * (xs - dx), y1[:, None])
        hi = np.minimum(hy[:, None] + hs[:, None] * (xs - dx), y2[:, None])
        g = np.maximum(hi - lo, 0.0)
        part = np.sum((g[:, 1:] + g[:, :-1]) * np.diff(xs, axis=1), axis=1) / 2
        return np.bincount(bi, weights=part, minlength=n).astype(np.float64, copy=False)

    def contains(self, xy: _F64) -> NDArray[np.bool_]:
        """``(n,)`` whether each point ``(n, 2)`` x, y lies in the union (edges included)."""
        if len(xy) == 0 or len(self) == 0:
            return np.zeros(len(xy), bool)
        x, y = xy[:, 0:1], xy[:, 1:2]
        lo = self.lo_y + self.lo_s * (x - self.xa)
        hi = self.hi_y + self.hi_s * (x - self.xa)
        inside = (self.xa <= x) & (x <= self.xb) & (lo <= y) & (y <= hi)
        return np.asarray(inside.any(axis=1), bool)


def _crossings(x0: _F64, y0: _F64, x1: _F64, slope: _F64, owner: NDArray[np.int64]) -> _F64:
    """x of every point where edges of two different polygons cross strictly inside both
    (a simple polygon's own edges meet only at its vertices)."""
    found: list[_F64] = []
    m = len(x0)
    for i in range(m - 1):  # one row at a time: memory O(m), m <= MAX_TOTAL_POINTS
        j = np.arange(i + 1, m)
        j = j[(owner[j] != owner[i]) & (x0[j] < x1[i]) & (x1[j] > x0[i])]
        ds = slope[i] - slope[j]
        j, ds = j[ds != 0], ds[ds != 0]
        x = (y0[j] - y0[i] + slope[i] * x0[i] - slope[j] * x0[j]) / ds
        lo = np.maximum(x0[i], x0[j])
        hi = np.minimum(x1[i], x1[j])
        found.append(x[(x > lo) & (x < hi)])
    return np.concatenate(found) if found else np.zeros(0, np.float64)


def fill_centres(
    poly: _F64, hw: tuple[int, int], out: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """``(H, W)`` bool: pixels of an ``H x W`` frame whose centres lie in ``poly``, OR-ed
    into ``out`` when given (which is returned).

    Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)``
    (the box convention of the detections). Even-odd scanlines through the centres, all
    rows at once; an edge counts for a row when its ``y`` range holds the row's centre
    half-open (``y0 <= y < y1``), so a vertex on a scanline counts once.
    """
    h, w = hw
    out = np.zeros(hw, bool) if out is None else out
    r0 = max(0, math.floor(float(poly[:, 1].min()) - 0.5))
    r1 = min(h, math.ceil(float(poly[:, 1].max()) + 0.5))
    c_lo = max(0, math.floor(float(poly[:, 0].min()) - 0.5))
    c_hi = min(w, math.ceil(float(poly[:, 0].max()) + 0.5))
    if r1 <= r0 or c_hi <= c_lo:
        return out
    y = (np.arange(r0, r1, dtype=np.float64) + 0.5)[:, None]  # (rows, 1)
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    crosses = (ay <= y) != (by <= y)  # (rows, edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = np.where(crosses, ax + (y - ay) * (bx - ax) / (by - ay), np.inf)
    xc.sort(axis=1)
    n = crosses.sum(axis=1)
    # +1 where a run of inside centres starts, -1 after it ends; at most MAX_POINTS / 2
    # runs a row, so int8 holds every partial sum
    diff = np.zeros((r1 - r0, c_hi - c_lo + 1), np.int8)
    for k in range(0, int(n.max(initial=0)), 2):
        rows = np.flatnonzero(n > k + 1)  # each row once: plain fancy indexing adds right
        # centres j + 0.5 in [xa, xb): columns ceil(xa - 0.5) .. ceil(xb - 0.5) - 1
        c0 = np.clip(np.ceil(xc[rows, k] - 0.5) - c_lo, 0, c_hi - c_lo).astype(np.intp)
        c1 = np.clip(np.ceil(xc[rows, k + 1] - 0.5) - c_lo, 0, c_hi - c_lo).astype(np.intp)
        diff[rows, c0] += 1
        diff[rows, c1] -= 1
    out[r0:r1, c_lo:c_hi] |= np.cumsum(diff[:, :-1], axis=1, dtype=np.int8) > 0
    return out
