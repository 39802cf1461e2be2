"""Write exported inspections one by one as a YOLO dataset, in constant memory.

Used by :func:`kanjian.training.station_export.export_station_log`: each item is
copied, labelled and added to ``inspections.csv`` (:mod:`kanjian.training.export_index`)
and ``label_studio.json`` as it comes, and nothing per item is kept, so memory does
not grow with the number exported.

The train/val split is decided per item, from ``(seed, inspection id)`` alone:
the item goes to val when ``sha256(f"{seed}:{inspection_id}")``'s first 8 bytes,
read as a fraction of 2**64 (uniform in [0, 1)), are below ``val_fraction``. The
same log exported twice splits the same way, an item's split never depends on
the others, and the val share is ``val_fraction`` in expectation (the summary
states the share measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import IO

import yaml

from kanjian.training.export_index import IndexWriter
from kanjian.training.label_studio import (
    LS_CONFIG,
    LS_TASKS,
    label_studio_config,
    label_studio_task,
)
from kanjian.training.layout import DATA_YAML, Task, label_line, majority_class
from kanjian.training.station_labels import ExportItem

CLASSES_TXT = "classes.txt"  # one class name a line, line index = class id


def val_share(seed: int, inspection_id: str) -> float:
    """Where an item falls in [0, 1) for the split: it goes to val below ``val_fraction``."""
    digest = hashlib.sha256(f"{seed}:{inspection_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class DatasetWriter:
    """Writes items into ``output`` as they come; :meth:`finish` writes the rest.

    Layouts as :func:`kanjian.training.layout.write_yolo` writes them (detect,
    segment: ``images/<split>/``, ``labels/<split>/``; classify:
    ``<split>/<class>/``); ``split=False``: ``images/`` and ``labels/`` alone.

    Attributes:
        images: images written per split.
        boxes_per_class: boxes written per class name.
        images_without_labels: background images written (not for classify).
    """

    def __init__(
        self,
        output: Path,
        class_names: tuple[str, ...],
        *,
        task: Task,
        val_fraction: float,
        seed: int,
        split: bool,
        ls_image_root: str,
    ) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.output, self.names, self.task = output, class_names, task
        self.val_fraction, self.seed, self.split = val_fraction, seed, split
        self.ls_image_root = ls_image_root
        self.index = {n: i for i, n in enumerate(class_names)}
        self.images = {"train": 0, "val": 0}
        self.boxes_per_class = dict.fromkeys(class_names, 0)
        self.images_without_labels = 0
        self._dropped = self._multi = self._derived = 0
        self._made: set[Path] = set()  # folders made: bounded by classes x splits
        output.mkdir(parents=True, exist_ok=True)
        self._ls_part = output / f".{LS_TASKS}.part"
        self._ls: IO[str] | None = None
        self._ls_count = 0
        self._index = IndexWriter(output)  # every layout: image -> inspection, score
        if task == "detect":
            # written under a temp name and renamed at the end: a crash leaves no
            # half JSON under the final name
            self._ls = self._ls_part.open("w", encoding="utf-8")

    def _folders(self, split: str) -> tuple[Path, Path]:
        """The images and labels folders of ``split`` (detect, segment)."""
        if not self.split:
            return self.output / "images", self.output / "labels"
        return self.output / "images" / split, self.output / "labels" / split

    def taken(self, name: str) -> bool:
        """Whether an image file ``name`` (or one of its stem) was already written."""
        stem = Path(name).stem
        for split in ("train", "val"):
            if self.task == "classify":
                if any((self.output / split / c / name).exists() for c in self.names):
                    return True
                continue
            images, labels = self._folders(split)
            if (images / name).exists() or (labels / f"{stem}.txt").exists():
                return True
        return False

    def _mkdir(self, folder: Path) -> None:
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)

    def write(self, item: ExportItem) -> None:
        """Copy ``item``'s image, write its labels and its Label Studio task."""
        r = item.record
        split = "train"
        if self.split and val_share(self.seed, item.inspection_id) < self.val_fraction:
            split = "val"
        if self.task == "classify":
            cls_name = majority_class(r)
            if cls_name is None:  # classify has no background class
                self._dropped += 1
                return
            self._multi += len({b.class_name for b in r.boxes}) > 1
            dst = self.output / split / cls_name / r.image.name
            self._mkdir(dst.parent)
            shutil.copyfile(r.image, dst)
        else:
            images, labels = self._folders(split)
            self._mkdir(images)
            self._mkdir(labels)
            dst = images / r.image.name
            shutil.copyfile(r.image, dst)
            lines = [
                label_line(b, self.index[b.class_name], r.width, r.height, self.task, "ellipse")
                for b in r.boxes
            ]
            (labels / f"{r.image.stem}.txt").write_text(
                "".join(f"{line}\n" for line in lines), encoding="utf-8"
            )
            self._derived += sum(1 for b in r.boxes if b.polygon is None)
            self.images_without_labels += not r.boxes
        self.images[split] += 1
        for b in r.boxes:
            self.boxes_per_class[b.class_name] += 1
        rel = dst.relative_to(self.output).as_posix()
        self._index.add(item, rel, split if self.split else "")
        if self._ls is not None:
            task = json.dumps(
                label_studio_task(item, rel, self.ls_image_root), indent=1, ensure_ascii=False
            )
            # the array json.dumps(tasks, indent=1) writes, one element at a time
            self._ls.write(("[\n" if not self._ls_count else ",\n") + _indent(task))
            self._ls_count += 1

    def finish(self) -> list[str]:
        """Write data.yaml, classes.txt, the index and the Label Studio files; notes for
        the summary."""
        notes: list[str] = []
        self._index.finish()
        if self.task == "classify":
            for split in ("train", "val"):
                for n in self.names:  # Ultralytics takes the class list from the folders
                    (self.output / split / n).mkdir(parents=True, exist_ok=True)
            if self._dropped:
                notes.append(f"classify: {self._dropped} images without labels left out")
            if self._multi:
                notes.append(
                    f"classify: {self._multi} images with several classes take the most frequent"
                )
        else:
            train, val = ("images", "images") if not self.split else ("images/train", "images/val")
            if not self.split:
                for folder in self._folders("train"):
                    folder.mkdir(parents=True, exist_ok=True)
            # no ``path:``: the folder of data.yaml is the root, so the dataset can move
            data = {"train": train, "val": val, "names": dict(enumerate(self.names))}
            (self.output / DATA_YAML).write_text(
                yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
            (self.output / CLASSES_TXT).write_text(
                "".join(f"{n}\n" for n in self.names), encoding="utf-8"
            )
        if self.task == "segment" and self._derived:
            notes.append(
                f"segment: {self._derived} boxes had no polygon; masks are the "
                "inscribed ellipse of the box"
            )
        if self._ls is not None:
            self._ls.write("\n]\n" if self._ls_count else "[]\n")
            self._ls.flush()
            os.fsync(self._ls.fileno())
            self._ls.close()
            self._ls = None
            os.replace(self._ls_part, self.output / LS_TASKS)
            (self.output / LS_CONFIG).write_text(label_studio_config(self.names), encoding="utf-8")
        return notes

    def abort(self) -> None:
        """Drop the unfinished Label Studio file and index (after an error)."""
        self._index.abort()
        if self._ls is not None:
            self._ls.close()
            self._ls = None
        self._ls_part.unlink(missing_ok=True)


def _indent(text: str) -> str:
    """Each line of ``text`` indented by one space (an element of an ``indent=1`` array)."""
    return "\n".join(f" {line}" for line in text.split("\n"))
