"""Read a YOLO dataset: ``data.yaml`` (or a folder with ``images/`` and ``labels/``).

Label files hold ``class cx cy w h`` (boxes) or ``class x1 y1 x2 y2 ...``
(polygons), normalised to [0, 1]; an image's label file is found by replacing
the last ``images`` path component with ``labels``, as Ultralytics does. The
source's own train/val split is not kept: the import draws its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kanjian.training.checks import clip_box, image_size
from kanjian.training.records import (
    IMAGE_SUFFIXES,
    Box,
    ImageRecord,
    Problem,
    ProblemKind,
    ReadResult,
)


def _names(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, dict):
        return tuple(str(raw[k]) for k in sorted(raw, key=int))
    if isinstance(raw, list):
        return tuple(str(v) for v in raw)
    raise ValueError(f"names must be a list or an index->name mapping, got {type(raw).__name__}")


def _image_files(root: Path, entry: Any) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_file() and p.suffix == ".txt":  # a list of image paths
            lines = p.read_text(encoding="utf-8").splitlines()
            out.extend((root / s.strip()) for s in lines if s.strip())
        elif p.is_dir():
            out.extend(q for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES)
    return out


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo(
    source: Path, images: Path | None = None, class_names: tuple[str, ...] | None = None
) -> ReadResult:
    """Read every image of a YOLO dataset (all splits) with its labels.

    Args:
        source: ``data.yaml`` or a folder holding it (or holding ``images/``, ``labels/``
            and ``classes.txt``).
        images: ignored unless the folder has no ``data.yaml``: the image folder.
        class_names: class list when the source gives none; a source's own names win
            and ids beyond the list are reported as unknown classes.
    """
    data_yaml = source if source.is_file() else source / "data.yaml"
    problems: list[Problem] = []
    if data_yaml.is_file():
        try:
            raw = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
            names = _names(raw["names"])
            root = Path(str(raw.get("path") or data_yaml.parent))
            if not root.is_absolute():
                root = data_yaml.parent / root
            if not root.is_dir():
                root = data_yaml.parent  # a copied dataset keeps its old absolute path
            files: list[Path] = []
            for split in ("train", "val", "test"):
                if raw.get(split):
                    files.extend(_image_files(root, raw[split]))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            problem = Problem(ProblemKind.UNREADABLE, str(data_yaml), f"bad data.yaml: {e!r}")
            return ReadResult((), tuple(class_names or ()), (problem,))
    else:
        folder = images or source / "images"
        files = [q for q in sorted(folder.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
        classes_txt = source / "classes.txt"
        if classes_txt.is_file():
            lines = classes_txt.read_text(encoding="utf-8").splitlines()
            names = tuple(s.strip() for s in lines if s.strip())
        elif class_names:
            names = class_names
        else:
            raise ValueError(f"{source}: no data.yaml or classes.txt; pass the class names")
    if class_names and tuple(class_names) != names:
        problems.append(
            Problem(
                ProblemKind.UNKNOWN_CLASS,
                str(data_yaml),
                f"source names {list(names)} differ from {list(class_names)}; source names kept",
            )
        )

    records: list[ImageRecord] = []
    seen: set[Path] = set()
    for img in files:
        if img in seen:
            continue
        seen.add(img)
        rec = _read_one(img, names, problems)
        if rec is not None:
            records.append(rec)
    return ReadResult(tuple(records), names, tuple(problems))


def _read_one(img: Path, names: tuple[str, ...], problems: list[Problem]) -> ImageRecord | None:
    label = _label_path(img)
    if not img.is_file():
        problems.append(Problem(ProblemKind.MISSING_IMAGE, str(img), "listed image not found"))
        return None
    try:
        w, h = image_size(img)
    except OSError as e:
        problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, str(img), f"{e}; skipped"))
        return None
    if not label.is_file():
        return ImageRecord(img, w, h, (), None)  # background image
    file = str(label)
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(ProblemKind.UNREADABLE, file, f"{e}; image skipped"))
        return None
    boxes: list[Box] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            values = [float(v) for v in line.split()]
            cls = int(values[0])
            if cls != values[0] or len(values) < 5:
                raise ValueError(line)
        except (ValueError, IndexError):
            problems.append(Problem(ProblemKind.BAD_BOX, file, f"{where}: cannot parse {line!r}"))
            continue
        if not 0 <= cls < len(names):
            problems.append(
                Problem(
                    ProblemKind.UNKNOWN_CLASS,
                    file,
                    f"{where}: class id {cls} not in 0..{len(names) - 1}; dropped",
                )
            )
            continue
        coords = values[1:]
        polygon = None
        if len(coords) == 4:
            cx, cy, bw, bh = coords
            xyxy = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = [x * w for x in coords[0::2]], [y * h for y in coords[1::2]]
            xyxy = (min(xs), min(ys), max(xs), max(ys))
            polygon = tuple(
                (min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h)))
                for x, y in zip(xs, ys, strict=True)
            )
        else:
            problems.append(
                Problem(ProblemKind.BAD_BOX, file, f"{where}: {len(coords)} coordinates")
            )
            continue
        clipped, problem = clip_box(xyxy, w, h, file, f"{where} ({names[cls]})")
        if problem is not None:
            problems.append(problem)
        if clipped is not None:
            boxes.append(Box(names[cls], clipped, polygon))
    return ImageRecord(img, w, h, tuple(boxes), label)
