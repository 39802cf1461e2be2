"""Read a YOLO dataset in one of three layouts.

- Ultralytics: ``data.yaml`` (``names``, ``train``/``val``/``test`` folders or
  image-list files, optional ``path``); an image's label file is found by
  replacing the last ``images`` path component with ``labels``, as Ultralytics does.
- A folder with ``images/``, ``labels/`` and ``classes.txt`` (LabelImg and
  Label Studio's YOLO export), same label lookup; exported without its images,
  ``labels/`` + ``classes.txt`` and the images from another folder, matched by path.
- CVAT's "YOLO 1.1" (darknet) export: ``obj.names`` (one class a line),
  ``obj.data``, ``obj_<subset>_data/`` with each image and its ``.txt`` side by
  side, and ``train.txt``/``valid.txt`` lists (not needed: the folders are read).
  Exported without images, the images come from another folder, matched by subset
  and file stem (see :func:`_darknet_with_images`).

Label files hold ``class cx cy w h`` (boxes) or ``class x1 y1 x2 y2 ...``
(polygons), normalised to [0, 1]. A label file that no image claims is
reported as ``missing_image`` (the image was lost or renamed). The source's own
train/val split is not kept: the import draws its own.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
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

#: text files that sit beside labels in exports but are not label files
_NOT_LABELS = frozenset({"classes.txt", "train.txt", "val.txt", "valid.txt", "test.txt"})


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


def _label_dir(images: Path) -> Path:
    """The label folder of an image folder: last ``images`` component -> ``labels``."""
    return _label_path(images / "x.jpg").parent


def _image_dir(label: Path) -> Path:
    """Inverse of :func:`_label_path` for the folder: last ``labels`` -> ``images``."""
    parts = list(label.parent.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "labels":
            parts[i] = "images"
            return Path(*parts)
    return label.parent


def _text_lines(path: Path) -> tuple[str, ...]:
    """Non-empty stripped lines of a class-name file.

    Raises:
        ValueError: naming the file, when it cannot be read as UTF-8 text.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the class names: {e}") from e
    return tuple(s.strip() for s in lines if s.strip())


@dataclass(frozen=True)
class _Layout:
    """Where a YOLO source keeps its parts.

    Attributes:
        names: class list, index = class id.
        names_file: the file the names came from (for messages).
        files: images to read (some may be missing when a list file names them).
        label_of: the label file of an image (may not exist: background image).
        label_dirs: folders whose ``*.txt`` files must each belong to an image.
        image_dir_of: the folder where a label file's image would lie.
        problems: faults found while laying the source out (a label several images match).
    """

    names: tuple[str, ...]
    names_file: Path
    files: list[Path]
    label_of: Callable[[Path], Path]
    label_dirs: list[Path]
    image_dir_of: Callable[[Path], Path]
    problems: tuple[Problem, ...] = ()


class _BadDataYaml(ValueError):
    """data.yaml cannot be used; the message says why."""


def _ultralytics_layout(data_yaml: Path) -> _Layout:
    """Read ``data.yaml``.

    Raises:
        _BadDataYaml: unreadable, not YAML, or without names or image entries.
    """
    try:
        raw = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        # YAML errors span lines (with a caret); a summary problem is one line
        raise _BadDataYaml(f"cannot read it: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict):
        raise _BadDataYaml(f"not a YAML mapping (got {type(raw).__name__})")
    if raw.get("names") is not None:
        try:
            names = _names(raw["names"])
        except (TypeError, ValueError) as e:
            raise _BadDataYaml(f"bad 'names:': {e}") from e
    elif isinstance(raw.get("nc"), int):  # Ultralytics' own default for a bare nc
        names = tuple(f"class_{i}" for i in range(raw["nc"]))
    else:
        raise _BadDataYaml("no 'names:' (or 'nc:')")
    root = Path(str(raw.get("path") or data_yaml.parent))
    if not root.is_absolute():
        root = data_yaml.parent / root
    if not root.is_dir():
        root = data_yaml.parent  # a copied dataset keeps its old absolute path
    files: list[Path] = []
    label_dirs: list[Path] = []
    splits = [raw[k] for k in ("train", "val", "test") if raw.get(k)]
    if not splits:
        raise _BadDataYaml("no 'train:', 'val:' or 'test:' entry")
    for entry in splits:
        try:
            listed = _image_files(root, entry)
        except (OSError, UnicodeDecodeError) as e:
            raise _BadDataYaml(f"cannot read the image list {entry!r}: {e}") from e
        files.extend(listed)
        # label folders to check for orphans: that of each image folder named (even a
        # missing one: its labels are then all orphans) and of each listed image;
        # only true labels/ folders, not image folders with labels beside (they may
        # hold other text files)
        folders = [root / str(i) for i in (entry if isinstance(entry, list) else [entry])]
        folders = [f for f in folders if f.suffix != ".txt"]
        label_dirs.extend(_label_dir(f) for f in folders if _label_dir(f) != f)
        label_dirs.extend(
            {_label_path(q).parent for q in listed if _label_path(q).parent != q.parent}
        )
    dirs = list(dict.fromkeys(label_dirs))
    return _Layout(names, data_yaml, files, _label_path, dirs, _image_dir)


def _darknet_names_file(root: Path) -> Path:
    """``names = ...`` of CVAT's ``obj.data`` (written relative to darknet's ``data/``)."""
    try:
        lines = (root / "obj.data").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []  # obj.data is optional; obj.names is the usual name
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "names" and value.strip():
            rel = Path(value.strip())
            cands = [root / rel]
            if len(rel.parts) > 1 and rel.parts[0] == "data":
                cands.append(root.joinpath(*rel.parts[1:]))
            found = next((c for c in cands if c.is_file()), None)
            if found is not None:
                return found
    return root / "obj.names"


def _darknet_layout(root: Path, images: Path | None) -> _Layout:
    """CVAT "YOLO 1.1": images and labels side by side in ``obj_<subset>_data/``.

    Raises:
        ValueError: without ``obj.names`` or without any ``obj_*_data`` folder.
    """
    names_file = _darknet_names_file(root)
    if not names_file.is_file():
        raise ValueError(f"{root}: CVAT YOLO export without obj.names")
    names = _text_lines(names_file)
    dirs = sorted(d for d in root.glob("obj_*_data") if d.is_dir())
    if not dirs:
        raise ValueError(f"{root}: CVAT YOLO export without an obj_<subset>_data/ folder")
    if images is None:
        files = [
            q for d in dirs for q in sorted(d.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES
        ]
        return _Layout(names, names_file, files, _beside, dirs, _parent)
    return _darknet_with_images(names, names_file, dirs, images)


def _subset(folder: Path) -> str:
    """The subset an ``obj_<subset>_data`` folder holds: ``obj_train_data`` -> ``train``."""
    return folder.name[len("obj_") : -len("_data")]


def _darknet_with_images(
    names: tuple[str, ...], names_file: Path, dirs: list[Path], images: Path
) -> _Layout:
    """CVAT "YOLO 1.1" exported without images: the images come from ``images``.

    A label is ``obj_<subset>_data/.../<stem>.txt``; an image is matched to it by file
    stem within its subset. An image's subset is the first folder on its path below
    ``images`` named ``<subset>`` or ``obj_<subset>_data`` (any case); an image in no
    such folder takes the one label of its stem, or the first subset's when several
    subsets have one (a ``duplicate`` problem: put each subset's images in a
    ``<subset>/`` folder). Of two labels of one stem in sub-folders of one subset, the
    first is used (a ``duplicate`` problem on the other). A label no image claimed is
    looked for in ``images/<subset>/`` (or ``images/obj_<subset>_data/``) when there is
    one, else in ``images``.
    """
    subsets = {_subset(d).lower(): _subset(d) for d in dirs}
    labels: dict[tuple[str, str], Path] = {}  # (subset, stem) -> label file
    problems: list[Problem] = []
    for d in dirs:
        for t in sorted(d.rglob("*.txt")):
            first = labels.setdefault((_subset(d), t.stem), t)
            if first != t:  # same stem in two sub-folders of one subset
                problems.append(
                    Problem(
                        ProblemKind.DUPLICATE,
                        str(t),
                        f"same file stem as {first}: an image from {images} is matched by "
                        "subset and stem, so only that one is used; this one is ignored",
                    )
                )

    def subset_of(image: Path) -> str | None:
        for part in image.relative_to(images).parts[:-1]:
            low = part.lower()
            if low.startswith("obj_") and low.endswith("_data"):
                low = low[len("obj_") : -len("_data")]
            if low in subsets:
                return subsets[low]
        return None

    files = [q for q in sorted(images.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
    chosen: dict[Path, Path] = {}  # image -> its label file (absent: a background image)
    found: dict[tuple[str | None, str], Path] = {}  # (image's subset, stem) -> first image
    for q in files:
        sub = subset_of(q)
        found.setdefault((sub, q.stem), q)
        if sub is not None:
            cands = [labels[(sub, q.stem)]] if (sub, q.stem) in labels else []
        else:
            cands = [t for (_, stem), t in labels.items() if stem == q.stem]
        if len(cands) > 1:
            problems.append(
                Problem(
                    ProblemKind.DUPLICATE,
                    str(q),
                    f"labels {', '.join(map(str, cands))} match it by stem; the first is "
                    f"used (put each subset's images in a <subset>/ folder of {images})",
                )
            )
        if cands:
            chosen[q] = cands[0]

    def image_dir_of(label: Path) -> Path:
        sub = next(_subset(d) for d in dirs if label.is_relative_to(d))
        image = found.get((sub, label.stem)) or found.get((None, label.stem))
        if image is not None:  # an image of this stem took another label (a duplicate)
            return image.parent
        return next((f for f in (images / sub, images / f"obj_{sub}_data") if f.is_dir()), images)

    return _Layout(
        names,
        names_file,
        files,
        lambda q: chosen.get(q, _beside(q)),
        dirs,
        image_dir_of,
        tuple(problems),
    )


def _beside(image: Path) -> Path:
    return image.with_suffix(".txt")


def _parent(label: Path) -> Path:
    return label.parent


def _find_layout(source: Path, images: Path | None, class_names: tuple[str, ...] | None) -> _Layout:
    """Which of the three layouts ``source`` is.

    Raises:
        _BadDataYaml: data.yaml is there but unusable.
        ValueError: no class names anywhere.
    """
    if source.is_file() and source.suffix == ".data":
        return _darknet_layout(source.parent, images)
    data_yaml = source if source.is_file() else source / "data.yaml"
    if data_yaml.is_file():
        return _ultralytics_layout(data_yaml)
    if (source / "obj.names").is_file() or (source / "obj.data").is_file():
        return _darknet_layout(source, images)
    folder = images or source / "images"
    files = [q for q in sorted(folder.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
    classes_txt = source / "classes.txt"
    if classes_txt.is_file():
        names = _text_lines(classes_txt)
    elif class_names:
        names = class_names
    else:
        raise ValueError(f"{source}: no data.yaml, classes.txt or obj.names; pass the class names")
    own, labels = source / "labels", _label_dir(folder)
    if images is not None and own.is_dir() and own != labels:
        # exported without its images: its own labels, by path below ``images`` (never
        # the ones beside those images: a station export's, the model's before correction)
        pics = images
        return _Layout(names, classes_txt, files,
                       lambda q: (own / q.relative_to(pics)).with_suffix(".txt"),
                       [own], lambda t: pics / t.parent.relative_to(own))  # fmt: skip
    return _Layout(
        names, classes_txt, files, _label_path, [labels] if labels != folder else [], _image_dir
    )


def read_yolo(
    source: Path, images: Path | None = None, class_names: tuple[str, ...] | None = None
) -> ReadResult:
    """Read every image of a YOLO dataset (all splits) with its labels.

    Args:
        source: ``data.yaml`` or a folder holding it (or holding ``images/``, ``labels/``
            and ``classes.txt``, or CVAT's ``obj.names`` and ``obj_*_data/``).
        images: ignored when there is a ``data.yaml``: the image folder (CVAT: for an
            export without images; labels are matched by file stem).
        class_names: class list when the source gives none; a source's own names win
            and ids beyond the list are reported as unknown classes.

    Raises:
        ValueError: the source has no class names and ``class_names`` is None.
    """
    problems: list[Problem] = []
    try:
        layout = _find_layout(source, images, class_names)
    except _BadDataYaml as e:
        data_yaml = source if source.is_file() else source / "data.yaml"
        problem = Problem(ProblemKind.UNREADABLE, str(data_yaml), f"bad data.yaml: {e}")
        return ReadResult((), tuple(class_names or ()), (problem,))
    names = layout.names
    problems.extend(layout.problems)
    if class_names and tuple(class_names) != names:
        problems.append(
            Problem(
                ProblemKind.UNKNOWN_CLASS,
                str(layout.names_file),
                f"source names {list(names)} differ from {list(class_names)}; source names kept",
            )
        )

    records: list[ImageRecord] = []
    seen: set[Path] = set()
    claimed: set[Path] = set()
    for img in layout.files:
        if img in seen:
            continue
        seen.add(img)
        label = layout.label_of(img)
        claimed.add(label)
        rec = _read_one(img, label, names, problems)
        if rec is not None:
            records.append(rec)
    for label in _orphan_labels(layout, claimed):
        problems.append(
            Problem(
                ProblemKind.MISSING_IMAGE,
                str(label),
                f"no image {label.stem}.* in {layout.image_dir_of(label)} for this "
                "label file; skipped",
            )
        )
    return ReadResult(tuple(records), names, tuple(problems))


def _orphan_labels(layout: _Layout, claimed: set[Path]) -> list[Path]:
    """Label files that no image claimed and whose image is not there either, sorted.

    A label whose image exists but was not read (a split data.yaml leaves out)
    is not an orphan: the image was left out on purpose.
    """
    found = {
        t
        for d in layout.label_dirs
        if d.is_dir()
        for t in d.rglob("*.txt")
        if t.name not in _NOT_LABELS and t.is_file()
    }
    return sorted(t for t in found - claimed if not _has_image(layout.image_dir_of(t), t.stem))


def _has_image(folder: Path, stem: str) -> bool:
    """Whether ``folder`` holds an image named ``stem`` with any image suffix (any case)."""
    return any(
        q.suffix.lower() in IMAGE_SUFFIXES
        for q in folder.glob(f"{glob.escape(stem)}.*")
        if q.is_file()
    )


def _read_one(
    img: Path, label: Path, names: tuple[str, ...], problems: list[Problem]
) -> ImageRecord | None:
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
