"""Read COCO detection JSON: ``images``, ``annotations`` (``bbox`` = x, y, w, h), ``categories``.

Layouts found from a folder:

- one ``*.json`` in the folder, images in ``images/`` beside it or in the folder;
- CVAT's "COCO 1.0" export and the standard COCO layout: ``annotations/*.json``
  (only ``instances_*.json`` when there are any, so ``captions_*`` and
  ``person_keypoints_*`` files are not read as detections) beside ``images/``;
  the images of ``instances_<subset>.json`` may also lie in ``images/<subset>/``
  or ``<subset>/`` (COCO 2017's ``train2017/``). Several files are read as one
  dataset (the import draws its own split).

Polygon ``segmentation`` is kept for segment datasets; RLE masks are not
polygons and are read as boxes only. Crowd regions (``iscrowd: 1``) are
skipped and counted in the notes, as Ultralytics' ``convert_coco`` does. As with
VOC, the size stated per image is checked against the real file and boxes
rescaled on mismatch. A malformed image, annotation or category row is
reported and skipped on its own; only a file that is not a COCO JSON at all
is skipped whole.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanjian.training.checks import clip_box, image_size
from kanjian.training.records import Box, ImageRecord, Problem, ProblemKind, ReadResult

#: JSON keys that identify images and categories: ints in COCO, strings in some tools
_Id = int | str


def coco_files(source: Path) -> list[Path]:
    """The COCO JSON files of ``source`` (a file, or a folder in one of the layouts above).

    Raises:
        ValueError: when a folder holds no JSON file where one is expected, or
            several beside each other without an ``annotations/`` folder.
    """
    if not source.is_dir():
        return [source]
    found = sorted((source / "annotations").glob("*.json"))
    if found:
        return [p for p in found if p.name.startswith("instances_")] or found
    found = sorted(source.glob("*.json"))
    if len(found) != 1:
        raise ValueError(
            f"{source}: expected exactly one COCO .json (or annotations/*.json), found {len(found)}"
        )
    return found


def read_coco(
    source: Path, images: Path | None = None, class_names: tuple[str, ...] | None = None
) -> ReadResult:
    """Read a COCO JSON file, or the COCO files of a folder (see :func:`coco_files`).

    Args:
        source: the JSON file, or a folder holding one, or ``annotations/*.json``.
        images: image folder (``file_name`` is taken relative to it, then to
            ``images/<subset>``); default: the folders listed in the module doc.
        class_names: fixed class list (matched by name); None: categories in id order
            (over all files; a name is listed once).
    """
    problems: list[Problem] = []
    parsed = [f for f in (_load(p, problems) for p in coco_files(source)) if f is not None]
    if class_names:
        names = tuple(class_names)
    else:
        pairs = [(cid, n) for f in parsed for cid, n in f.cats.items()]
        pairs.sort(key=lambda c: (0, c[0], "") if isinstance(c[0], int) else (1, 0, c[0]))
        names = tuple(dict.fromkeys(n for _, n in pairs))
    known = set(names)
    records: list[ImageRecord] = []
    crowd = 0
    for f in parsed:
        crowd += _read_file(f, images, known, records, problems)
    notes = (
        (f"coco: {crowd} crowd annotations (iscrowd: 1) skipped, as Ultralytics' converter does",)
        if crowd
        else ()
    )
    return ReadResult(tuple(records), names, tuple(problems), notes)


@dataclass(frozen=True)
class _CocoFile:
    """One parsed COCO file: its rows, checked only for being lists."""

    path: Path
    cats: dict[_Id, str]
    image_rows: list[Any]
    ann_rows: list[Any]


def _load(json_path: Path, problems: list[Problem]) -> _CocoFile | None:
    file = str(json_path)
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise TypeError(f"top level is {type(raw).__name__}, not an object")
        image_rows, cat_rows = raw["images"], raw["categories"]
        ann_rows = raw.get("annotations") or []
        for key, rows in (
            ("images", image_rows),
            ("categories", cat_rows),
            ("annotations", ann_rows),
        ):
            if not isinstance(rows, list):
                raise TypeError(f"{key!r} is {type(rows).__name__}, not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems.append(
            Problem(ProblemKind.UNREADABLE, file, f"not a COCO detection file: {e!r}; skipped")
        )
        return None
    cats: dict[_Id, str] = {}
    for i, c in enumerate(cat_rows):
        cid = _id(c.get("id")) if isinstance(c, dict) else None
        name = c.get("name") if isinstance(c, dict) else None
        if cid is None or not isinstance(name, str) or not name:
            problems.append(
                Problem(
                    ProblemKind.BAD_ENTRY,
                    f"{file}#categories[{i}]",
                    f"category {c!r} needs an integer id and a name; skipped",
                )
            )
            continue
        cats[cid] = name
    return _CocoFile(json_path, cats, image_rows, ann_rows)


def _id(value: object) -> _Id | None:
    """A row id as a dict key: an int (from an int, integral float or digit string),
    else a non-empty string; None when it is none of these (null, list, bool...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            return int(value)  # "3" and 3 name the same category
        except ValueError:
            return value
    return None


def _image_dirs(json_path: Path, images: Path | None) -> list[Path]:
    """Where the images of one COCO file may lie, most specific first."""
    subset = json_path.stem.removeprefix("instances_")
    if images is not None:
        return [images, *([images / subset] if (images / subset).is_dir() else [])]
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    dirs = [root / "images" / subset, root / "images", root / subset, json_path.parent / "images"]
    return [*dict.fromkeys(d for d in dirs if d.is_dir()), json_path.parent]


def _read_file(
    f: _CocoFile,
    images: Path | None,
    known: set[str],
    records: list[ImageRecord],
    problems: list[Problem],
) -> int:
    """Append the records of one COCO file; returns how many crowd annotations it skipped."""
    file = str(f.path)
    anns: dict[_Id, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    crowd = 0
    for i, a in enumerate(f.ann_rows):
        image_id = _id(a.get("image_id")) if isinstance(a, dict) else None
        if not isinstance(a, dict) or image_id is None:
            problems.append(
                Problem(
                    ProblemKind.BAD_BOX,
                    f"{file}#annotations[{i}]",
                    f"annotation {_short(a)} has no usable image_id; dropped",
                )
            )
            continue
        if a.get("iscrowd"):
            crowd += 1  # a region of many objects, no single box to learn
            continue
        anns[image_id].append((i, a))
    dirs = _image_dirs(f.path, images)
    ids: set[_Id] = set()
    for i, row in enumerate(f.image_rows):
        image_id = _id(row.get("id")) if isinstance(row, dict) else None
        if image_id is not None and image_id in ids:
            problems.append(
                Problem(
                    ProblemKind.DUPLICATE,
                    f"{file}#images[{i}]",
                    f"image id {image_id!r} listed twice; second entry ignored",
                )
            )
            continue
        if image_id is not None:
            ids.add(image_id)
        own = anns.get(image_id, []) if image_id is not None else []
        rec = _read_image(row, i, image_id, own, dirs, f, known, problems)
        if rec is not None:
            records.append(rec)
    orphans = sum(len(v) for k, v in anns.items() if k not in ids)
    if orphans:
        problems.append(
            Problem(ProblemKind.BAD_BOX, file, f"{orphans} annotations name no listed image")
        )
    return crowd


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stated_size(row: dict[str, Any]) -> tuple[int, int]:
    """``width, height`` written in an image row; 0 when absent.

    Raises:
        ValueError: when a value is present but not a positive-or-zero finite number.
    """
    out = []
    for key in ("width", "height"):
        v = row.get(key)
        if v is None:
            out.append(0)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"{key} {v!r} is not a number")
        number = float(v)  # ValueError for "abc"
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{key} {v!r} is not a size")
        out.append(int(number))
    return out[0], out[1]


def _read_image(
    row: object,
    index: int,
    image_id: _Id | None,
    anns: list[tuple[int, dict[str, Any]]],
    dirs: list[Path],
    f: _CocoFile,
    known: set[str],
    problems: list[Problem],
) -> ImageRecord | None:
    file = str(f.path)
    name = row.get("file_name") if isinstance(row, dict) else None
    if not isinstance(row, dict) or image_id is None or not isinstance(name, str) or not name:
        problems.append(
            Problem(
                ProblemKind.BAD_ENTRY,
                f"{file}#images[{index}]",
                f"image {_short(row)} needs an id and a file_name; skipped",
            )
        )
        return None
    where = f"{file}#{name}"
    try:
        stated_w, stated_h = _stated_size(row)
    except ValueError as e:
        problems.append(Problem(ProblemKind.BAD_ENTRY, where, f"{e}; image skipped"))
        return None
    img_path = next((d / name for d in dirs if (d / name).is_file()), None)
    if img_path is None:
        problems.append(
            Problem(
                ProblemKind.MISSING_IMAGE,
                where,
                f"image {name!r} not in {', '.join(str(d) for d in dirs)}; skipped",
            )
        )
        return None
    try:
        real_w, real_h = image_size(img_path)
    except OSError as e:
        problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, str(img_path), f"{e}; skipped"))
        return None
    sx = sy = 1.0
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
    for i, a in anns:
        label = f"annotation {a.get('id', f'#{i}')!r}"
        cat_id = _id(a.get("category_id"))
        if cat_id is None:
            problems.append(
                Problem(
                    ProblemKind.BAD_BOX,
                    where,
                    f"{label}: category_id {a.get('category_id')!r} is not an id; dropped",
                )
            )
            continue
        cat = f.cats.get(cat_id)
        if cat is None or cat not in known:
            problems.append(
                Problem(
                    ProblemKind.UNKNOWN_CLASS,
                    where,
                    f"{label}: category {cat_id!r} ({cat}) is not a known class; dropped",
                )
            )
            continue
        bbox = a.get("bbox")
        try:
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(bbox)
            x, y, w, h = (_number(v) for v in bbox)
        except (TypeError, ValueError):
            problems.append(
                Problem(
                    ProblemKind.BAD_BOX, where, f"{label}: malformed bbox {_short(bbox)}; dropped"
                )
            )
            continue
        xyxy = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        clipped, problem = clip_box(xyxy, real_w, real_h, where, label)
        if problem is not None:
            problems.append(problem)
        if clipped is None:
            continue
        boxes.append(Box(cat, clipped, _polygon(a.get("segmentation"), sx, sy, real_w, real_h)))
    return ImageRecord(img_path, real_w, real_h, tuple(boxes), f.path)


def _number(value: object) -> float:
    """A JSON number, or a numeric string, as float.

    Raises:
        TypeError: for null, bools, lists, objects.
        ValueError: for a string that is not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(value)
    return float(value)


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
        pts = [_number(v) for v in best]
    except (TypeError, ValueError):
        return None
    return tuple(
        (min(max(pts[i] * sx, 0.0), float(w)), min(max(pts[i + 1] * sy, 0.0), float(h)))
        for i in range(0, len(pts), 2)
    )
