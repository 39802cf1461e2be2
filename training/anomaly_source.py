"""Read an anomaly dataset (good images, defect images with masks) in one of three layouts.

- ``good-defect``, kanjian's own: ``good/*`` images, ``defect/<kind>/*`` images with
  the mask beside each (``NAME.png`` for a ``NAME.jpg``; ``NAME_mask.png`` for any
  image, the only form a PNG image can have).
- ``magnetic-tile``, the Magnetic Tile Defects set (Huang, Qiu, Yuan): ``MT_Free/``
  (good) and ``MT_<Kind>/`` folders, each ``NAME.jpg`` with its ``NAME.png`` mask
  beside it, directly or under ``Imgs/`` as in the published archive.
- ``mvtec``, one MVTec-AD category: ``train/good/``, ``test/good/``,
  ``test/<kind>/NAME.png`` with ``ground_truth/<kind>/NAME_mask.png``. Its
  ``train/good`` images are the default training images.

Only paths are read here (and each image's header, to drop undecodable files);
masks are decoded and checked by the writer (:mod:`kanjian.training.anomaly_data`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kanjian.training.checks import image_size
from kanjian.training.records import IMAGE_SUFFIXES, Problem, ProblemKind

AnomalyFormat = Literal["auto", "good-defect", "magnetic-tile", "mvtec"]
GOOD = "good"
MASK_SUFFIX = "_mask"
_GROUP = re.compile(r"^(exp\d+)[_-]", re.IGNORECASE)


@dataclass(frozen=True)
class AnomalyItem:
    """One source image.

    Attributes:
        image: the image file.
        kind: ``"good"`` or the defect kind (a folder name, lower case for magnetic-tile).
        mask: the mask file found beside it (defects only; None: none found).
        group: exposure group read from the name (``exp0``...), ``""`` when it carries none.
        train: the source itself puts it in training (MVTec's ``train/good``).
    """

    image: Path
    kind: str
    mask: Path | None = None
    group: str = ""
    train: bool = False


@dataclass(frozen=True)
class AnomalySource:
    """What :func:`read_anomaly_source` found: items, the layout, faults and remarks."""

    layout: str
    items: tuple[AnomalyItem, ...]
    problems: tuple[Problem, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


def exposure_group(name: str) -> str:
    """The exposure group a file name starts with (``"exp3_num_45042.jpg"`` -> ``"exp3"``).

    Magnetic-tile names carry it; ``""`` for names without one.
    """
    m = _GROUP.match(name)
    return m.group(1).lower() if m else ""


def mask_name(image_name: str) -> str:
    """The mask's file name beside an image in the ``good-defect`` layout.

    ``NAME.png`` for a ``NAME.jpg`` (or any other non-PNG image); ``NAME_mask.png``
    for a PNG image, whose own name ``NAME.png`` is taken.
    """
    p = Path(image_name)
    return f"{p.stem}{MASK_SUFFIX}.png" if p.suffix.lower() == ".png" else f"{p.stem}.png"


def detect_anomaly_format(source: Path) -> Literal["good-defect", "magnetic-tile", "mvtec"]:
    """Guess the layout of ``source``.

    Raises:
        ValueError: when none fits (naming the layouts expected), or when ``source`` is an
            MVTec-AD root holding several categories (one must be chosen).
    """
    if not source.is_dir():
        raise ValueError(f"{source}: not a folder (an anomaly dataset is a folder)")
    if (source / "train" / GOOD).is_dir() and (source / "test").is_dir():
        return "mvtec"
    if (source / GOOD).is_dir():
        return "good-defect"
    if any(p.is_dir() for p in source.glob("MT_*")):
        return "magnetic-tile"
    categories = sorted(p.name for p in source.iterdir() if (p / "train" / GOOD).is_dir())
    if categories:
        raise ValueError(
            f"{source}: an MVTec-AD folder with {len(categories)} categories "
            f"({', '.join(categories[:5])}{'...' if len(categories) > 5 else ''}); "
            f"import one category at a time, e.g. {source / categories[0]}"
        )
    raise ValueError(
        f"{source}: cannot tell the anomaly layout (expected good/ and defect/<kind>/, "
        "magnetic-tile MT_*/ folders, or MVTec-AD train/good/ + test/); pass --format"
    )


def read_anomaly_source(source: Path, fmt: AnomalyFormat = "auto") -> AnomalySource:
    """Read ``source``; undecodable images are reported and left out.

    Raises:
        ValueError: when the layout cannot be told or ``source`` does not hold it.
    """
    chosen = detect_anomaly_format(source) if fmt == "auto" else fmt
    if chosen == "mvtec":
        items, problems, notes = _read_mvtec(source)
    elif chosen == "magnetic-tile":
        items, problems, notes = _read_magnetic_tile(source)
    else:
        items, problems, notes = _read_good_defect(source)
    kept: list[AnomalyItem] = []
    for item in sorted(items, key=lambda i: str(i.image)):
        try:
            image_size(item.image)
        except OSError as e:
            problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, str(item.image), f"{e}; skipped"))
            continue
        kept.append(item)
    return AnomalySource(chosen, tuple(kept), tuple(problems), tuple(notes))


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pair(folder: Path) -> list[tuple[Path, Path | None]]:
    """The images of ``folder`` with the mask beside each (see :func:`mask_name`)."""
    files = _image_files(folder)
    names = {p.name for p in files}
    non_png = {p.stem for p in files if p.suffix.lower() != ".png"}

    def is_mask(p: Path) -> bool:
        if p.suffix.lower() != ".png":
            return False
        if p.stem in non_png:  # NAME.png beside NAME.jpg
            return True
        base = p.stem[: -len(MASK_SUFFIX)] if p.stem.endswith(MASK_SUFFIX) else None
        return base is not None and any(f"{base}{s}" in names for s in IMAGE_SUFFIXES)

    out: list[tuple[Path, Path | None]] = []
    for p in files:
        if is_mask(p):
            continue
        beside = folder / mask_name(p.name)
        other = folder / f"{p.stem}{MASK_SUFFIX}.png"
        mask = beside if beside.is_file() else other if other.is_file() else None
        out.append((p, mask))
    return out


def _item(image: Path, kind: str, mask: Path | None, train: bool = False) -> AnomalyItem:
    return AnomalyItem(
        image, kind, mask if kind != GOOD else None, exposure_group(image.name), train
    )


Read = tuple[list[AnomalyItem], list[Problem], list[str]]


def _read_good_defect(source: Path) -> Read:
    if not (source / GOOD).is_dir():
        raise ValueError(f"{source}: no good/ folder (the good-defect layout needs one)")
    items = [_item(p, GOOD, None) for p, _ in _pair(source / GOOD)]
    problems: list[Problem] = []
    notes: list[str] = []
    defect = source / "defect"
    if defect.is_dir():
        for entry in sorted(defect.iterdir()):
            if entry.is_dir():
                if entry.name.casefold() == GOOD:
                    notes.append(f"{entry}: 'good' is not a defect kind; folder left out")
                    continue
                items.extend(_item(p, entry.name, m) for p, m in _pair(entry))
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                problems.append(
                    Problem(
                        ProblemKind.BAD_ENTRY,
                        str(entry),
                        "a defect image must lie in defect/<kind>/; skipped",
                    )
                )
    others = sorted(
        p.name for p in source.iterdir() if p.is_dir() and p.name not in (GOOD, "defect")
    )
    if others:
        notes.append(f"folders other than good/ and defect/ left out: {', '.join(others)}")
    return items, problems, notes


def _read_magnetic_tile(source: Path) -> Read:
    items: list[AnomalyItem] = []
    notes: list[str] = []
    for folder in sorted(p for p in source.glob("MT_*") if p.is_dir()):
        name = folder.name[3:]
        kind = GOOD if name.casefold() == "free" else name.lower()
        where = folder / "Imgs" if (folder / "Imgs").is_dir() else folder
        # every PNG here is a mask: the images are JPEGs
        pairs = [(p, m) for p, m in _pair(where) if p.suffix.lower() != ".png"]
        if not pairs:
            notes.append(f"{folder}: no images; left out")
        items.extend(_item(p, kind, m) for p, m in pairs)
    if not items:
        raise ValueError(f"{source}: no images in its MT_*/ folders")
    return items, [], notes


def _read_mvtec(source: Path) -> Read:
    if not (source / "train" / GOOD).is_dir() or not (source / "test").is_dir():
        raise ValueError(f"{source}: no train/good/ and test/ (the mvtec layout needs both)")
    items = [_item(p, GOOD, None, train=True) for p in _image_files(source / "train" / GOOD)]
    items += [_item(p, GOOD, None) for p in _image_files(source / "test" / GOOD)]
    for folder in sorted(p for p in (source / "test").iterdir() if p.is_dir()):
        if folder.name == GOOD:
            continue
        for p in _image_files(folder):
            mask = source / "ground_truth" / folder.name / f"{p.stem}{MASK_SUFFIX}.png"
            items.append(_item(p, folder.name, mask if mask.is_file() else None))
    notes = ["mvtec: train/good images train, test/ images go to calibration and validation"]
    return items, [], notes
