"""The labelled folder ``kanjian model compare`` scores two models on.

Accepted, as kanjian's own tools write them:

- a YOLO dataset with ``data.yaml`` (``kanjian dataset import``, ``kanjian dataset
  export``; the folder or the file itself): the images of one split (``val`` by
  default), each with ``labels/.../<stem>.txt`` where its folder path has ``images``;
  ``names:`` gives the classes. A dataset exported with ``--no-split`` lists ``images``
  for both splits: every image is read.
- a plain folder with ``images/`` and ``labels/`` (same stems), the classes in
  ``classes.txt`` when there is one, else the models' own.

Label lines are ``class cx cy w h`` (or a polygon, segment layout: its bounding box),
normalised, as Ultralytics reads them. An image with boxes is a defective part; one
with an empty label file, or none in a folder that has labels, is a good part
(YOLO's background image). No torch or Ultralytics is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from kanjian.training.layout import DATA_YAML
from kanjian.training.records import IMAGE_SUFFIXES, Problem
from kanjian.training.yolo_source import _image_files, _label_path, _names, _read_one

CLASSES_TXT = "classes.txt"


class CompareDataError(ValueError):
    """The folder cannot be compared on; the message names the problem and the fix."""


@dataclass(frozen=True)
class LabelledImage:
    """One image and its label boxes.

    Attributes:
        image: the image file.
        xyxy: ``(m, 4)`` float32 label boxes, pixels of the image as read.
        class_id: ``(m,)`` int64 class ids into the set's class names.
        has_label_file: whether a label file was there (an empty one: a good part).
    """

    image: Path
    xyxy: NDArray[np.float32]
    class_id: NDArray[np.int64]
    has_label_file: bool

    @property
    def defective(self) -> bool:
        """The labels say the part has a defect (at least one box)."""
        return len(self.class_id) > 0


@dataclass(frozen=True)
class LabelledSet:
    """What :func:`read_labelled` found.

    Attributes:
        root: the dataset folder.
        source: how it was read, for people (``data.yaml, split val`` ...).
        class_names: the folder's classes, or None when it names none (plain folder
            without ``classes.txt``: the models' classes are taken).
        images: the images, sorted by path.
        problems: faults in label files (bad lines, unknown class ids...), one line each;
            such boxes are left out, as Ultralytics leaves them out.
    """

    root: Path
    source: str
    class_names: tuple[str, ...] | None
    images: tuple[LabelledImage, ...]
    problems: tuple[str, ...]


def _yaml_layout(data_yaml: Path, split: str) -> tuple[Path, list[Path], tuple[str, ...], str]:
    """Root, images of ``split``, class names and a description of a ``data.yaml``."""
    try:
        raw: Any = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CompareDataError(f"{data_yaml}: cannot read it: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict) or raw.get("names") is None:
        raise CompareDataError(f"{data_yaml}: no 'names:' (the class list) in it")
    try:
        names = _names(raw["names"])
    except (TypeError, ValueError) as e:
        raise CompareDataError(f"{data_yaml}: bad 'names:': {e}") from e
    # as kanjian's readers take it: ``path:`` from the yaml's folder; a copied dataset
    # whose ``path:`` no longer exists is read from the yaml's folder
    root = Path(str(raw.get("path") or data_yaml.parent))
    if not root.is_absolute():
        root = data_yaml.parent / root
    if not root.is_dir():
        root = data_yaml.parent
    if not raw.get(split):
        have = [k for k in ("train", "val", "test") if raw.get(k)]
        raise CompareDataError(
            f"{data_yaml}: no '{split}:' split; it has {', '.join(have) or 'none'} "
            "(choose one with --split)"
        )
    try:
        files = _image_files(root, raw[split])
    except (OSError, UnicodeDecodeError) as e:
        raise CompareDataError(
            f"{data_yaml}: cannot read the image list {raw[split]!r}: {e}"
        ) from e
    return root, files, names, f"{data_yaml.name}, split {split}"


def _plain_layout(folder: Path) -> tuple[list[Path], tuple[str, ...] | None]:
    images = folder / "images"
    if not images.is_dir():
        raise CompareDataError(
            f"{folder}: neither a {DATA_YAML} nor an images/ folder; give a YOLO dataset "
            "(kanjian dataset import / export writes one) or a folder with images/ and labels/"
        )
    files = sorted(q for q in images.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
    names = None
    if (folder / CLASSES_TXT).is_file():
        lines = (folder / CLASSES_TXT).read_text(encoding="utf-8").splitlines()
        names = tuple(s.strip() for s in lines if s.strip())
    return files, names


def read_labelled(
    data: Path, split: str = "val", class_names: tuple[str, ...] | None = None
) -> LabelledSet:
    """Read a labelled folder (see the module docstring for what is accepted).

    Args:
        data: the dataset folder, or its ``data.yaml``.
        split: which ``data.yaml`` split (not used for a plain folder).
        class_names: the classes to read label ids with when the folder names none.

    Raises:
        CompareDataError: no such folder, no images, no label file at all, no class
            names anywhere; the message says what to give instead.
    """
    if not data.exists():
        raise CompareDataError(f"{data}: no such folder or file")
    data_yaml = data if data.is_file() else data / DATA_YAML
    if data_yaml.is_file():
        root, files, names, source = _yaml_layout(data_yaml, split)
        own: tuple[str, ...] | None = names
    else:
        root = data
        files, own = _plain_layout(data)
        source = "images/ + labels/" + (f" + {CLASSES_TXT}" if own else "")
        names = own or class_names or ()
    files = sorted(dict.fromkeys(files))
    if not files:
        raise CompareDataError(f"{data}: no images found ({source})")
    if not names:
        raise CompareDataError(f"{data}: no class names ({CLASSES_TXT} or data.yaml's names:)")
    labels = [_label_path(f) for f in files]
    if not any(p.is_file() for p in labels):
        raise CompareDataError(
            f"{data}: none of its {len(files)} images has a label file (expected e.g. "
            f"{labels[0]}); without labels there is nothing to score the models against"
        )
    index = {n: i for i, n in enumerate(names)}
    problems: list[Problem] = []
    out = []
    for image, label in zip(files, labels, strict=True):
        rec = _read_one(image, label, names, problems)
        if rec is None:
            continue
        xyxy = np.array([b.xyxy for b in rec.boxes], np.float32).reshape(-1, 4)
        ids = np.array([index[b.class_name] for b in rec.boxes], np.int64)
        out.append(LabelledImage(image, xyxy, ids, label.is_file()))
    return LabelledSet(root, source, own, tuple(out), tuple(str(p) for p in problems))
