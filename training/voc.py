"""Read Pascal VOC: one XML per image with ``<size>`` and ``<object><bndbox>``.

The size written in the XML is checked against the real image: NEU-DET's XML
files say 200x200 (and give corners in that frame) for 416x416 images. Boxes are
then rescaled by real/stated size and the file is reported as ``size_mismatch``.

Objects marked ``<difficult>1</difficult>`` are kept by default: a box left out
becomes background in YOLO training, teaching the model that a real (if hard)
defect is none. ``drop_difficult`` leaves them out as Ultralytics' own VOC
converter does, and the summary counts them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from kanjian.training.checks import clip_box, image_size
from kanjian.training.records import (
    IMAGE_SUFFIXES,
    Box,
    ImageRecord,
    Problem,
    ProblemKind,
    ReadResult,
)


def read_voc(
    annotations: Path,
    images: Path | None = None,
    class_names: tuple[str, ...] | None = None,
    *,
    drop_difficult: bool = False,
) -> ReadResult:
    """Read every ``*.xml`` under ``annotations``.

    Args:
        annotations: folder of VOC XML files (searched recursively).
        images: folder of the images; default: ``annotations/../images`` if it exists,
            then ``annotations/../JPEGImages``, then ``annotations`` itself.
        class_names: the class list; None collects the names found, sorted.
        drop_difficult: skip objects marked ``<difficult>1</difficult>`` (counted in
            the notes); by default they are kept.

    Returns:
        records for every readable file, problems for every fault.
    """
    images = images or _default_images_dir(annotations)
    problems: list[Problem] = []
    parsed: list[tuple[Path, Path, int, int, list[Box]]] = []
    seen: set[Path] = set()
    skipped: Counter[str] = Counter()  # objects left out on purpose, by reason
    for xml_path in sorted(annotations.rglob("*.xml")):
        here: Counter[str] = Counter()  # counted only if this file is used
        item = _read_one(xml_path, images, problems, drop_difficult, here)
        if item is None:
            continue
        if item[1] in seen:
            problems.append(
                Problem(ProblemKind.DUPLICATE, str(xml_path), f"{item[1].name} already annotated")
            )
            continue
        seen.add(item[1])
        parsed.append(item)
        skipped.update(here)

    names = class_names or tuple(sorted({b.class_name for *_, bs in parsed for b in bs}))
    known = set(names)
    records = []
    for xml_path, img_path, w, h, boxes in parsed:
        kept = []
        for i, b in enumerate(boxes):
            if b.class_name not in known:
                problems.append(
                    Problem(
                        ProblemKind.UNKNOWN_CLASS,
                        str(xml_path),
                        f"object {i}: class {b.class_name!r} is not one of {list(names)}; dropped",
                    )
                )
                continue
            kept.append(b)
        records.append(ImageRecord(img_path, w, h, tuple(kept), xml_path))
    notes = (
        (f"voc: {skipped['difficult']} difficult objects skipped (--drop-difficult)",)
        if skipped["difficult"]
        else ()
    )
    return ReadResult(tuple(records), tuple(names), tuple(problems), notes)


def _default_images_dir(annotations: Path) -> Path:
    for name in ("images", "JPEGImages"):
        cand = annotations.parent / name
        if cand.is_dir():
            return cand
    return annotations


def _find_image(images: Path, filename: str, xml_path: Path) -> Path | None:
    cand = images / filename
    if filename and cand.is_file():
        return cand
    # <filename> is often stale (renamed files, missing extension): fall back to the XML stem
    for suffix in IMAGE_SUFFIXES:
        for stem in (Path(filename).stem, xml_path.stem):
            cand = images / f"{stem}{suffix}"
            if stem and cand.is_file():
                return cand
    return None


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = None if node is None else node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _read_one(
    xml_path: Path,
    images: Path,
    problems: list[Problem],
    drop_difficult: bool,
    skipped: Counter[str],
) -> tuple[Path, Path, int, int, list[Box]] | None:
    """One XML file: (xml, image, real width, real height, boxes), or None when skipped."""
    file = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(Problem(ProblemKind.UNREADABLE, file, f"cannot parse XML: {e}; skipped"))
        return None
    filename = _text(root, "filename") or ""
    img_path = _find_image(images, filename, xml_path)
    if img_path is None:
        problems.append(
            Problem(
                ProblemKind.MISSING_IMAGE,
                file,
                f"image {filename or xml_path.stem!r} not found in {images}; skipped",
            )
        )
        return None
    try:
        real_w, real_h = image_size(img_path)
    except OSError as e:
        problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, str(img_path), f"{e}; skipped"))
        return None

    size = root.find("size")
    sx = sy = 1.0
    try:
        stated_w = int(float(_text(size, "width") or 0))
        stated_h = int(float(_text(size, "height") or 0))
    except ValueError:
        stated_w = stated_h = 0
    if stated_w > 0 and stated_h > 0 and (stated_w, stated_h) != (real_w, real_h):
        sx, sy = real_w / stated_w, real_h / stated_h
        problems.append(
            Problem(
                ProblemKind.SIZE_MISMATCH,
                file,
                f"XML says {stated_w}x{stated_h} but {img_path.name} is {real_w}x{real_h}; "
                f"boxes rescaled by {sx:.4g}x{sy:.4g}",
            )
        )

    boxes: list[Box] = []
    for i, obj in enumerate(root.iter("object")):
        name = _text(obj, "name") or ""
        label = f"object {i} ({name})"
        if drop_difficult and _text(obj, "difficult") == "1":
            skipped["difficult"] += 1  # dropped before its box is checked: no fault to report
            continue
        bb = obj.find("bndbox")
        try:
            raw = tuple(float(_text(bb, k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.append(Problem(ProblemKind.BAD_BOX, file, f"{label}: non-numeric bndbox"))
            continue
        if not name:
            problems.append(Problem(ProblemKind.BAD_BOX, file, f"object {i}: no <name>; dropped"))
            continue
        x1, y1, x2, y2 = raw
        scaled = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        clipped, problem = clip_box(scaled, real_w, real_h, file, label)
        if problem is not None:
            problems.append(problem)
        if clipped is not None:
            boxes.append(Box(name, clipped))
    return xml_path, img_path, real_w, real_h, boxes
