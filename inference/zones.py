"""Zones on the picture: ROI polygons and ignore masks of the verdict rules, and the exact
geometry that says how much of a detection lies in them.

An engineer draws polygons on the live picture (the ``/zones`` page) in source-frame
pixels. ``roi`` zones say where the part is: a detection counts only when at least
:attr:`ZoneOverlap.roi` of it lies inside their union. ``ignore`` zones say where
findings mean nothing (a clamp, a label, the conveyor's edge): a detection with at
least :attr:`ZoneOverlap.ignore` of it inside their union does not count. Both hold
at once when both kinds are drawn.

"Of it" is the share of the detection's box area, computed exactly; for a
segment model, whose detections carry instance masks, it is the share of the mask's
pixels instead, because a long thin defect's box covers far more than the defect.

Box shares are exact (the geometry is in :mod:`kanjian.inference.zone_geometry`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from kanjian.inference.types import Detections
from kanjian.inference.zone_geometry import Trapezoids, fill_centres, polygon_area, self_crossing

__all__ = [
    "MAX_COORD",
    "MAX_POINTS",
    "MAX_TOTAL_POINTS",
    "MAX_ZONES",
    "Trapezoids",
    "Zone",
    "ZoneKind",
    "ZoneOverlap",
    "ZoneSet",
    "Zones",
    "fill_centres",
    "polygon_area",
]

ZoneKind = Literal["roi", "ignore"]
MAX_ZONES = 16
MAX_POINTS = 64
MAX_TOTAL_POINTS = 512
#: largest coordinate, source pixels (no camera frame is wider or taller)
MAX_COORD = 65535.0
#: smallest polygon area accepted, square source pixels (less is a slip of the mouse)
MIN_AREA_PX = 1.0
_F64 = NDArray[np.float64]
#: shares within this of a threshold count as reaching it (float rounding of a box
#: exactly half inside must not flip a verdict)
EPS = 1e-9


class Zone(BaseModel):
    """One polygon drawn on the picture, in source-frame pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, max_length=64, description="shown in lists and the audit; unique"
    )
    kind: ZoneKind = Field(
        description="roi: detections count only inside (their union); "
        "ignore: detections inside do not count"
    )
    points: tuple[tuple[float, float], ...] = Field(
        min_length=3,
        max_length=MAX_POINTS + 1,
        description=f"vertices [x, y] in source-frame pixels (0..{MAX_COORD:.0f}), in "
        f"drawing order, 3 to {MAX_POINTS}; the outline is closed by itself (a last point "
        "equal to the first is dropped); edges may not cross; the area must be at least "
        f"{MIN_AREA_PX:.0f} square pixel",
    )

    @field_validator("points", mode="after")
    @classmethod
    def _open_ring(cls, pts: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        if len(pts) > 3 and pts[-1] == pts[0]:
            pts = pts[:-1]  # a closed ring (GeoJSON-style) is the same polygon
        if len(pts) > MAX_POINTS:
            raise ValueError(f"{len(pts)} points; a zone has at most {MAX_POINTS}")
        return pts

    @model_validator(mode="after")
    def _polygon(self) -> Zone:
        """A polygon the geometry can trust: finite, in range, simple, with an area."""
        pts, name = self.points, self.name
        for i, (x, y) in enumerate(pts):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(
                    f"zone {name!r}: point {i} is [{x}, {y}]; coordinates must be finite numbers"
                )
            if not (0 <= x <= MAX_COORD and 0 <= y <= MAX_COORD):
                raise ValueError(
                    f"zone {name!r}: point {i} is [{x}, {y}]; coordinates are source pixels, "
                    f"0 to {MAX_COORD:.0f}"
                )
        p = self.array()
        k = len(p)
        same = np.flatnonzero((p == np.roll(p, -1, axis=0)).all(axis=1))
        if len(same):
            i = int(same[0])
            raise ValueError(
                f"zone {name!r}: points {i} and {(i + 1) % k} are the same "
                f"[{pts[i][0]}, {pts[i][1]}]; remove one"
            )
        crossing = self_crossing(p)
        if crossing is not None:
            i, j = crossing
            raise ValueError(
                f"zone {name!r}: edge {i}-{(i + 1) % k} meets edge {j}-{(j + 1) % k}, so the "
                "outline crosses or touches itself; put the points in order around the shape "
                "(a figure eight is two zones)"
            )
        area = polygon_area(p)
        if area < MIN_AREA_PX:
            raise ValueError(
                f"zone {name!r}: the polygon encloses {area:.3g} square pixels (at least "
                f"{MIN_AREA_PX:.0f}); its points lie on a line or too close together"
            )
        return self

    def array(self) -> NDArray[np.float64]:
        """The vertices as ``(k, 2)`` float64 x, y."""
        return np.array(self.points, np.float64)


def _check_zones(zones: tuple[Zone, ...]) -> tuple[Zone, ...]:
    seen: set[str] = set()
    for z in zones:
        if z.name in seen:
            raise ValueError(f"two zones are named {z.name!r}; give each zone its own name")
        seen.add(z.name)
    total = sum(len(z.points) for z in zones)
    if total > MAX_TOTAL_POINTS:
        raise ValueError(
            f"the zones have {total} points in all; at most {MAX_TOTAL_POINTS} "
            "(simplify the outlines)"
        )
    for kind in ("roi", "ignore"):
        # decomposed here once (a few ms) so that a case the geometry cannot handle is a
        # refused request, never an error in the inspection loop
        polys = [z.array() for z in zones if z.kind == kind]
        try:
            area = Trapezoids.of_union(polys).area() if polys else 1.0
        except Exception as e:  # pragma: no cover - no valid polygon is known to get here
            raise ValueError(f"the {kind} zones could not be prepared: {e!r}") from e
        if not math.isfinite(area) or area <= 0:  # pragma: no cover - as above
            raise ValueError(f"the {kind} zones' union has no area ({area})")
    return zones


#: the ``zones`` field of the verdict rules
Zones = Annotated[tuple[Zone, ...], Field(max_length=MAX_ZONES), AfterValidator(_check_zones)]


class ZoneOverlap(BaseModel):
    """How much of a detection must lie in the zones (shares of its box area, or of its
    mask's pixels for segment models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roi: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a detection counts only when at least this share of it lies inside the "
        "union of the roi zones (when there are any)",
    )
    ignore: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a detection with at least this share inside the union of the ignore "
        "zones does not count",
    )


class ZoneSet:
    """The zones of one rules object, compiled for judging frame after frame.

    Args:
        zones: the rules' zones.
        overlap: the shares that decide.
    """

    def __init__(self, zones: Sequence[Zone], overlap: ZoneOverlap) -> None:
        self.overlap = overlap
        self.polygons: dict[ZoneKind, list[_F64]] = {
            kind: [z.array() for z in zones if z.kind == kind] for kind in ("roi", "ignore")
        }
        self.union: dict[ZoneKind, Trapezoids | None] = {
            k: Trapezoids.of_union(p) if p else None for k, p in self.polygons.items()
        }
        # rasters for mask shares, for the last frame size seen (one camera: one size)
        self._raster: tuple[tuple[int, int], dict[ZoneKind, NDArray[np.bool_]]] | None = None

    def box_shares(self, kind: ZoneKind, xyxy: _F64) -> _F64:
        """``(n,)`` share of each box's area inside the union of ``kind``'s zones, in
        ``[0, 1]``; a box without area gives 1 or 0 by whether its centre is inside."""
        u = self.union[kind]
        if u is None:
            return np.zeros(len(xyxy), np.float64)
        wh = np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None)
        area = wh[:, 0] * wh[:, 1]
        out = np.zeros(len(xyxy), np.float64)
        has = area > 0
        out[has] = np.clip(u.box_areas(xyxy[has]) / area[has], 0.0, 1.0)
        if not has.all():
            centre = (xyxy[~has, :2] + xyxy[~has, 2:]) / 2
            out[~has] = u.contains(centre).astype(np.float64)
        return out

    def raster(self, kind: ZoneKind, hw: tuple[int, int]) -> NDArray[np.bool_]:
        """``(H, W)`` bool: the pixels whose centres lie in ``kind``'s zones."""
        if self._raster is None or self._raster[0] != hw:
            self._raster = (hw, {})
        cache = self._raster[1]
        if kind not in cache:
            img = np.zeros(hw, bool)
            for p in self.polygons[kind]:
                fill_centres(p, hw, img)
            cache[kind] = img
        return cache[kind]

    def shares(self, kind: ZoneKind, dets: Detections) -> _F64:
        """``(n,)`` share of each detection inside ``kind``'s zones: of its mask's pixels
        when it has a mask with pixels near its box, else of its box area."""
        xyxy = dets.xyxy.astype(np.float64)
        out = self.box_shares(kind, xyxy)
        masks = dets.masks
        if masks is None or not len(masks) or self.union[kind] is None:
            return out
        h, w = masks.shape[1:]
        zone = self.raster(kind, (h, w))
        # masks are cut to the box at the model's input scale; once resized to the source
        # frame they reach at most a few pixels past it (a 640 px input on a 16k frame:
        # 26 px; this margin is 66 there)
        margin = math.ceil(max(h, w) / 256) + 2
        for i, (x1, y1, x2, y2) in enumerate(xyxy.tolist()):
            c0, r0 = max(0, math.floor(x1) - margin), max(0, math.floor(y1) - margin)
            c1, r1 = min(w, math.ceil(x2) + margin), min(h, math.ceil(y2) + margin)
            m = masks[i, r0:r1, c0:c1]
            total = int(np.count_nonzero(m))
            if total:
                out[i] = np.count_nonzero(zone[r0:r1, c0:c1] & m) / total
        return out

    def counts(self, dets: Detections) -> NDArray[np.bool_]:
        """``(n,)`` bool: detections the zones let count."""
        keep = np.ones(len(dets), bool)
        if not len(dets):
            return keep
        if self.union["roi"] is not None:
            keep &= self.shares("roi", dets) >= self.overlap.roi - EPS
        if self.union["ignore"] is not None:
            keep &= self.shares("ignore", dets) < self.overlap.ignore - EPS
        return keep
