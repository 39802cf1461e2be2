"""Read COCO detection JSON: ``images``, ``annotations`` (``bbox`` = x, y, w, h), ``categories``.

Polygon ``segmentation`` is kept for segment datasets; RLE masks and crowd
regions are not polygons and are read as boxes only. As with VOC, the size
stated per image is checked against the real file and boxes rescaled on mismatch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from kanjian.training.checks import clip_box, image_size
from kanjian.training.records import Box, ImageRecord, Problem, ProblemKind, ReadResult


def read_coco(
    source: Path, images: Path | None = None, class_names: tuple[str, ...] | None = None
) -> ReadResult:
    """Read a COCO JSON file (or the single ``*.json`` in a folder).

    Args:
        source: the JSON file, or a folder holding exactly one.
        images: image folder; default: ``images/`` beside the JSON, else the JSON's folder.
        class_names: fixed class list (matched by name); None: categories in id order.
    """
    json_path = source
    if source.is_dir():
        found = sorted(source.glob("*.json"))
        if len(found) != 1:
            raise ValueError(f"{source}: expected exactly one COCO .json, found {len(found)}")
        json_path = found[0]
    file = str(json_path)
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
        cats = {int(c["id"]): str(c["name"]) for c in raw["categories"]}
        image_rows = list(raw["images"])
        ann_rows = list(raw.get("annotations", []))
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = Problem(ProblemKind.UNREADABLE, file, f"not a COCO detection file: {e!r}")
        return ReadResult((), tuple(class_names or ()), (problem,))
    if images is None:
        images = json_path.parent / "images"
        if not images.is_dir():
            images = json_path.parent
    names = class_names or tuple(cats[k] for k in sorted(cats))
    known = set(names)
    problems: list[Problem] = []

    anns: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for a in ann_rows:
        anns[a.get("image_id")].append(a)
    records = []
    for row in image_rows:
        rec = _read_image(row, anns.get(row.get("id"), []), images, cats, known, file, problems)
        if rec is not None:
            records.append(rec)
    ids = {row.get("id") for row in image_rows}
    orphans = sum(len(v) for k, v in anns.items() if k not in ids)
    if orphans:
        problems.append(
            Problem(ProblemKind.BAD_BOX, file, f"{orphans} annotations name no listed image")
        )
    return ReadResult(tuple(records), tuple(names), tuple(problems))


def _read_image(
    row: dict[str, Any],
    anns: list[dict[str, Any]],
    images: Path,
    cats: dict[int, str],
    known: set[str],
    file: str,
    problems: list[Problem],
) -> ImageRecord | None:
    name = str(row.get("file_name", ""))
    where = f"{file}#{name or row.get('id')}"
    img_path = images / name
    if not name or not img_path.is_file():
        problems.append(
            Problem(ProblemKind.MISSING_IMAGE, where, f"image {name!r} not in {images}; skipped")
        )
        return None
    try:
        real_w, real_h = image_size(img_path)
    except OSError as e:
        problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, str(img_path), f"{e}; skipped"))
        return None
    sx = sy = 1.0
    stated_w, stated_h = int(row.get("width") or 0), int(row.get("height") or 0)
    if stated_w > 0 and stated_h > 0 and (stated_w, stated_h) != (real_w, real_h):
        sx, sy = real_w / stated_w, real_h / stated_h
        problems.append(
            Problem(
                ProblemKind.SIZE_MISMATCH,
                where,
                f"JSON says {stated_w}x{stated_h} but {name} is {real_w}x{real_h}; "
                f"boxes rescaled by {sx:.4g}x{sy:.4g}",
            )
        )
    boxes: list[Box] = []
    for a in anns:
        label = f"annotation {a.get('id')}"
        cat = cats.get(int(a.get("category_id", -1)))
        if cat is None or cat not in known:
            problems.append(
                Problem(
                    ProblemKind.UNKNOWN_CLASS,
                    where,
                    f"{label}: category {a.get('category_id')} ({cat}) is not a known class; "
                    "dropped",
                )
            )
            continue
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            problems.append(Problem(ProblemKind.BAD_BOX, where, f"{label}: malformed bbox"))
            continue
        xyxy = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        clipped, problem = clip_box(xyxy, real_w, real_h, where, label)
        if problem is not None:
            problems.append(problem)
        if clipped is None:
            continue
        boxes.append(Box(cat, clipped, _polygon(a.get("segmentation"), sx, sy, real_w, real_h)))
    return ImageRecord(img_path, real_w, real_h, tuple(boxes), Path(file))


def _polygon(
    seg: object, sx: float, sy: float, w: int, h: int
) -> tuple[tuple[float, float], ...] | None:
    """The largest polygon of a COCO ``segmentation``, clipped, or None (RLE / absent)."""
    if not isinstance(seg, list) or not seg or not all(isinstance(p, list) for p in seg):
        return None
    best = max(seg, key=len)
    if len(best) < 6 or len(best) % 2:
        return None
    try:
        pts = [float(v) for v in best]
    except (TypeError, ValueError):
        return None
    return tuple(
        (min(max(pts[i] * sx, 0.0), float(w)), min(max(pts[i + 1] * sy, 0.0), float(h)))
        for i in range(0, len(pts), 2)
    )
