"""Write records as one YOLO dataset: split, copy images, labels, ``data.yaml``.

Layouts (``task``):

- detect: ``images/{train,val}/x.jpg``, ``labels/{train,val}/x.txt`` with
  ``class cx cy w h`` normalised to [0, 1]; ``data.yaml`` beside them, without
  ``path:`` (the dataset root is the folder of data.yaml, so it can be moved).
- segment: the same, labels are ``class x1 y1 x2 y2 ...`` normalised polygons.
  Boxes without a polygon become the ellipse inscribed in the box
  (``box_masks="ellipse"``) or its rectangle (``"box"``), a coarse mask that is
  better than none and said so in the summary.
- classify: ``{train,val}/<class>/x.jpg``; an image's class is its most
  frequent box class (ties: the first box). Background images are left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kanjian.training.records import Box, ImageRecord, Problem, ReadResult

Task = Literal["detect", "segment", "classify"]
BoxMasks = Literal["ellipse", "box"]

SUMMARY_NAME = "summary.json"
DATA_YAML = "data.yaml"
_ELLIPSE_POINTS = 24


@dataclass(frozen=True)
class DatasetSummary:
    """What an import wrote, and what it had to fix or leave out.

    Attributes:
        source, output: input location and output folder.
        source_format: ``voc``, ``coco`` or ``yolo``.
        task: the layout written.
        class_names: index = class id.
        images: written images per split, e.g. ``{"train": 80, "val": 20}``.
        boxes_per_class: box count per class name over both splits.
        images_without_labels: background images written (not for classify).
        problems: one line per fault, ``file: kind: message``.
        problem_counts: faults per kind.
        seed, val_fraction: how the split was drawn.
        data_sha256: content hash of the written images and labels.
        notes: remarks on derived data (e.g. masks made from boxes).
    """

    source: str
    output: str
    source_format: str
    task: str
    class_names: tuple[str, ...]
    images: dict[str, int]
    boxes_per_class: dict[str, int]
    images_without_labels: int
    problems: tuple[str, ...]
    problem_counts: dict[str, int]
    seed: int
    val_fraction: float
    data_sha256: str
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        """Pretty JSON, stable key order."""
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def split_records(
    records: Sequence[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Deterministic train/val split, stratified by each image's rarest class.

    Images are sorted by path first, so the split depends only on the data,
    ``val_fraction`` and ``seed``. Each stratum (rarest class of the image, or
    background) sends ``round(n * val_fraction)`` images to val, at least one
    when the stratum has two or more and ``val_fraction > 0``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    totals = Counter(b.class_name for r in records for b in r.boxes)
    strata: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: str(r.image)):
        names = {b.class_name for b in r.boxes}
        key = min(names, key=lambda n: (totals[n], n)) if names else ""
        strata[key].append(r)
    rng = random.Random(seed)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        if val_fraction > 0 and n_val == 0 and len(group) >= 2:
            n_val = 1
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return sorted(train, key=lambda r: str(r.image)), sorted(val, key=lambda r: str(r.image))


def ellipse_polygon(xyxy: tuple[float, float, float, float]) -> tuple[tuple[float, float], ...]:
    """The ellipse inscribed in a box, as ``_ELLIPSE_POINTS`` vertices in the box's pixels."""
    x1, y1, x2, y2 = xyxy
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return tuple(
        (cx + rx * math.cos(t), cy + ry * math.sin(t))
        for t in (2 * math.pi * k / _ELLIPSE_POINTS for k in range(_ELLIPSE_POINTS))
    )


def _box_polygon(xyxy: tuple[float, float, float, float]) -> tuple[tuple[float, float], ...]:
    x1, y1, x2, y2 = xyxy
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


def label_line(box: Box, cls: int, w: int, h: int, task: Task, box_masks: BoxMasks) -> str:
    if task == "segment":
        poly = box.polygon or (
            ellipse_polygon(box.xyxy) if box_masks == "ellipse" else _box_polygon(box.xyxy)
        )
        coords = " ".join(
            f"{min(max(x / w, 0.0), 1.0):.6f} {min(max(y / h, 0.0), 1.0):.6f}" for x, y in poly
        )
        return f"{cls} {coords}"
    x1, y1, x2, y2 = box.xyxy
    return (
        f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
    )


def _unique_names(records: Sequence[ImageRecord]) -> dict[Path, str]:
    """Output file names whose stems differ, compared case-insensitively.

    The stem must be unique, not the name: ``a.jpg`` and ``a.png`` would both
    write ``labels/<split>/a.txt``, and Ultralytics would pair that one label
    file with both images. Case is folded because ``A.jpg`` and ``a.jpg`` are one
    file on FAT/NTFS/APFS, where a copied dataset may land. The first image (by
    path) of each stem keeps its name, and every stem found in the source is
    reserved first, so a renamed ``a_1.jpg`` never takes the place of a real one;
    the others get ``_1``, ``_2``... (the first number not taken).
    """
    ordered = sorted(records, key=lambda r: str(r.image))
    taken = {r.image.stem.casefold() for r in ordered}
    kept: set[str] = set()
    out: dict[Path, str] = {}
    for r in ordered:
        stem = r.image.stem
        if stem.casefold() not in kept:
            kept.add(stem.casefold())
            out[r.image] = r.image.name
            continue
        n = 1
        while f"{stem}_{n}".casefold() in taken:
            n += 1
        taken.add(f"{stem}_{n}".casefold())
        out[r.image] = f"{stem}_{n}{r.image.suffix}"
    return out


def majority_class(record: ImageRecord) -> str | None:
    """The most frequent box class of an image (first box wins ties); None if no boxes."""
    if not record.boxes:
        return None
    counts = Counter(b.class_name for b in record.boxes)
    best = max(counts.values())
    return next(b.class_name for b in record.boxes if counts[b.class_name] == best)


def write_yolo(
    result: ReadResult,
    output: Path,
    *,
    source: str,
    source_format: str,
    task: Task = "detect",
    val_fraction: float = 0.2,
    seed: int = 0,
    box_masks: BoxMasks = "ellipse",
    problems: Sequence[Problem] = (),
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSummary:
    """Split ``result`` and write it under ``output`` (which must be empty or absent).

    ``progress`` is told ``(images written, images in all)`` after each image.

    Returns:
        the summary, also written to ``output/summary.json``.
    """
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; choose a new output folder")
    names = list(result.class_names)
    index = {n: i for i, n in enumerate(names)}
    records = list(result.records)
    notes: list[str] = list(result.notes)
    if task == "classify":
        dropped = [r for r in records if not r.boxes]
        records = [r for r in records if r.boxes]
        if dropped:
            notes.append(f"classify: {len(dropped)} images without labels left out")
        multi = sum(1 for r in records if len({b.class_name for b in r.boxes}) > 1)
        if multi:
            notes.append(f"classify: {multi} images with several classes take the most frequent")
    if task == "segment":
        derived = sum(1 for r in records for b in r.boxes if b.polygon is None)
        if derived:
            notes.append(
                f"segment: {derived} boxes had no polygon; masks are the "
                f"{'inscribed ellipse' if box_masks == 'ellipse' else 'rectangle'} of the box"
            )
    train, val = split_records(records, val_fraction, seed)
    out_names = _unique_names(records)
    output.mkdir(parents=True, exist_ok=True)
    total, done = len(train) + len(val), 0
    if not total:
        progress = None  # nothing to copy: no bar, no "0 of 0" line
    for split, group in (("train", train), ("val", val)):
        for r in group:
            if progress is not None:
                progress(done, total)
            done += 1
            name = out_names[r.image]
            if task == "classify":
                cls_name = majority_class(r)
                assert cls_name is not None
                dst = output / split / cls_name / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(r.image, dst)
                continue
            img_dst = output / "images" / split / name
            lbl_dst = output / "labels" / split / f"{Path(name).stem}.txt"
            img_dst.parent.mkdir(parents=True, exist_ok=True)
            lbl_dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r.image, img_dst)
            lines = [
                label_line(b, index[b.class_name], r.width, r.height, task, box_masks)
                for b in r.boxes
            ]
            lbl_dst.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    if progress is not None:
        progress(total, total)
    if task == "classify":
        for split in ("train", "val"):
            for n in names:  # Ultralytics takes the class list from the folders
                (output / split / n).mkdir(parents=True, exist_ok=True)
    else:
        # no ``path:``: Ultralytics (check_det_dataset) and our readers then take the
        # folder of data.yaml as the root, so the dataset still loads after a move
        data = {
            "train": "images/train",
            "val": "images/val",
            "names": dict(enumerate(names)),
        }
        (output / DATA_YAML).write_text(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    all_problems = [*result.problems, *problems]
    summary = DatasetSummary(
        source=source,
        output=str(output),
        source_format=source_format,
        task=task,
        class_names=tuple(names),
        images={"train": len(train), "val": len(val)},
        boxes_per_class={
            n: sum(1 for r in records for b in r.boxes if b.class_name == n) for n in names
        },
        images_without_labels=sum(1 for r in records if not r.boxes),
        problems=tuple(str(p) for p in all_problems),
        problem_counts=dict(sorted(Counter(p.kind.value for p in all_problems).items())),
        seed=seed,
        val_fraction=val_fraction,
        data_sha256=dataset_sha256(output),
        notes=tuple(notes),
    )
    (output / SUMMARY_NAME).write_text(summary.to_json(), encoding="utf-8")
    return summary


def _files(root: Path, parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Path]]:
    """Every file under ``root`` (symlinked folders not entered), as (relative parts, path).

    Lazy (``os.scandir``), so a folder of a million images is never listed in memory.
    """
    with os.scandir(root) as it:
        for entry in it:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                yield from _files(path, (*parts, entry.name))
            elif path.is_file():
                yield (*parts, entry.name), path


def dataset_sha256(root: Path) -> str:
    """Content hash of a dataset folder: sha256 over sorted (relative path, file sha256).

    ``summary.json``, ``data.yaml`` and Ultralytics' ``*.cache`` files are left
    out, so a copy elsewhere hashes the same (older data.yaml files held an
    absolute ``path:``; leaving the file out keeps recorded hashes valid).

    Files are sorted as ``sorted(root.rglob("*"))`` sorts them (by path parts) in
    a temporary SQLite table, so memory stays bounded however many files there are.
    """
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="kanjian-hash-") as tmp:
        db = sqlite3.connect(Path(tmp) / "files.db")
        try:
            # parts joined by NUL sort as the tuple of parts does (NUL sorts first);
            # UTF-8 bytes sort as code points do
            db.execute("CREATE TABLE f (key BLOB PRIMARY KEY, rel TEXT, digest BLOB) WITHOUT ROWID")
            for parts, p in _files(root):
                if p.name in (SUMMARY_NAME, DATA_YAML) or p.suffix == ".cache":
                    continue
                key = "\0".join(parts).encode("utf-8", "surrogatepass")
                with p.open("rb") as f:  # in chunks: label_studio.json grows with the items
                    digest = hashlib.file_digest(f, "sha256").digest()
                db.execute("INSERT INTO f VALUES (?, ?, ?)", (key, "/".join(parts), digest))
            for rel, digest in db.execute("SELECT rel, digest FROM f ORDER BY key"):
                h.update(str(rel).encode("utf-8", "surrogateescape"))
                h.update(b"\0")
                h.update(bytes(digest))
        finally:
            db.close()
    return h.hexdigest()


def training_root(data_yaml: Path, raw: dict[str, Any]) -> Path:
    """The folder Ultralytics reads a ``data.yaml``'s splits from, resolved as it does.

    No ``path:``: the yaml's own folder. A relative ``path:`` is taken from the
    current directory, else from Ultralytics' ``DATASETS_DIR`` (not from the yaml's
    folder): the gates, summary and hash must describe the files that trained.
    """
    if not raw.get("path"):
        return data_yaml.parent
    root = Path(str(raw["path"]))
    if root.exists() or root.is_absolute():
        return root.resolve()
    from kanjian.training._env import ultralytics_module

    ultralytics_module()
    from ultralytics.utils import DATASETS_DIR

    return (Path(DATASETS_DIR) / root).resolve()
