"""Write an anomaly dataset (``--task anomaly``) and read it back for the trainer.

Layout written under OUTPUT (see docs/training.md, "Anomaly data layout")::

    good/NAME.jpg                  good images, copied as they are
    defect/<kind>/NAME.jpg         defect images, copied as they are
    defect/<kind>/NAME.png         its mask: same size, 0 or 255 (NAME_mask.png for a PNG image)
    split.json                     train / calibration / validation: image paths
    summary.json                   counts per kind and split, masks, problems, content hash

The split: the good images named by ``train_list`` train (else MVTec's
``train/good``, else a seeded ``1 - held_back`` share of each exposure group);
every other image (held-back good, all defects) goes half to calibration and
half to validation within each (kind, exposure group) stratum. Defects never
train: the model learns "good" only.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from kanjian.training.anomaly_source import (
    GOOD,
    AnomalyFormat,
    AnomalyItem,
    exposure_group,
    mask_name,
    read_anomaly_source,
)
from kanjian.training.checks import image_size
from kanjian.training.layout import SUMMARY_NAME, dataset_sha256
from kanjian.training.records import Problem, ProblemKind

SPLIT_NAME = "split.json"
SPLITS = ("train", "calibration", "validation")
#: a mask pixel above this is a defect pixel (JPEG-like fringes in magnetic-tile's masks)
MASK_THRESHOLD = 127


class AnomalySample(NamedTuple):
    """One image of an imported anomaly dataset.

    Attributes:
        image: the image file.
        mask: its binary mask (uint8 0/255 PNG, same size), None for good images and
            for defects imported without a usable mask.
        kind: ``"good"`` or the defect kind.
    """

    image: Path
    mask: Path | None
    kind: str


@dataclass(frozen=True)
class AnomalyDataset:
    """An imported anomaly dataset, as :func:`load_anomaly_dataset` reads it.

    Attributes:
        root: the dataset folder.
        train: good images to learn from.
        calibration: held-back good and defect images that set the thresholds.
        validation: held-back good and defect images the metrics are reported on.
        kinds: defect kinds, sorted.
        data_sha256: the content hash written by the import.
    """

    root: Path
    train: tuple[AnomalySample, ...]
    calibration: tuple[AnomalySample, ...]
    validation: tuple[AnomalySample, ...]
    kinds: tuple[str, ...]
    data_sha256: str


@dataclass(frozen=True)
class AnomalySummary:
    """What an anomaly import wrote, and what it had to fix or leave out.

    Attributes:
        source, output, source_format: input, output folder, layout read.
        task: always ``"anomaly"``.
        kinds: defect kinds, sorted.
        images: images per split.
        per_kind: images per kind and split (``{"good": {"train": 578, ...}, ...}``).
        per_group: images per exposure group (``exp0``...; ``""``: names without one).
        masks: ``written``, ``missing``, ``empty``, ``binarised`` (held values other
            than 0 and 255, thresholded at > 127) and ``resized`` (size differed).
        problems: one line per fault, ``file: kind: message``.
        problem_counts: faults per kind.
        seed, held_back: how the split was drawn; ``train_list``: the list used, if any.
        data_sha256: content hash of the written files (split.json included).
        notes: remarks on what was left out or chosen.
    """

    source: str
    output: str
    source_format: str
    task: str
    kinds: tuple[str, ...]
    images: dict[str, int]
    per_kind: dict[str, dict[str, int]]
    per_group: dict[str, int]
    masks: dict[str, int]
    problems: tuple[str, ...]
    problem_counts: dict[str, int]
    seed: int
    held_back: float
    train_list: str | None
    data_sha256: str
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        """Pretty JSON, stable key order."""
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @property
    def total(self) -> int:
        """Images written over all splits."""
        return sum(self.images.values())


def read_train_list(path: Path) -> set[str]:
    """File names (or stems) of good images to train on: one a line, ``#`` comments.

    Raises:
        ValueError: naming the file when it cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the train list: {e}") from e
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {Path(line).name for line in lines if line}


def split_items(
    items: Sequence[AnomalyItem],
    *,
    seed: int = 0,
    held_back: float = 0.2,
    train_names: set[str] | None = None,
) -> dict[str, list[AnomalyItem]]:
    """Deterministic split into train / calibration / validation.

    Train: the good images in ``train_names`` (matched by file name or stem) when
    given, else those the source marks (MVTec), else ``round(n * (1 - held_back))``
    of each exposure group's good images, drawn with ``seed``. The rest are
    shuffled with ``seed`` within each (kind, exposure group) stratum and halved;
    a stratum's odd image goes to calibration and validation in turn, so odd
    strata do not all favour one side. Items are sorted by path first, so the
    result depends only on the data and the arguments.
    """
    if not 0.0 <= held_back < 1.0:
        raise ValueError(f"held_back must be in [0, 1), got {held_back}")
    rng = random.Random(seed)
    ordered = sorted(items, key=lambda i: str(i.image))
    good = [i for i in ordered if i.kind == GOOD]
    if train_names is not None:
        train = [i for i in good if i.image.name in train_names or i.image.stem in train_names]
    elif any(i.train for i in good):
        train = [i for i in good if i.train]
    else:
        train = []
        for _, group in sorted(_strata(good).items()):
            rng.shuffle(group)
            n_hold = round(len(group) * held_back)
            if held_back > 0 and n_hold == 0 and len(group) >= 2:
                n_hold = 1  # every exposure group reaches calibration and validation
            train.extend(group[n_hold:])
    chosen = {i.image for i in train}
    out: dict[str, list[AnomalyItem]] = {"train": train, "calibration": [], "validation": []}
    odd_to_calibration = True
    for _, group in sorted(_strata(i for i in ordered if i.image not in chosen).items()):
        rng.shuffle(group)
        half = len(group) // 2
        if len(group) % 2:
            half += odd_to_calibration
            odd_to_calibration = not odd_to_calibration
        out["calibration"].extend(group[:half])
        out["validation"].extend(group[half:])
    return {k: sorted(v, key=lambda i: str(i.image)) for k, v in out.items()}


def _strata(items: Iterable[AnomalyItem]) -> dict[tuple[str, str], list[AnomalyItem]]:
    strata: dict[tuple[str, str], list[AnomalyItem]] = defaultdict(list)
    for i in items:
        strata[(i.kind, i.group)].append(i)
    return strata


def _out_names(items: Sequence[AnomalyItem]) -> dict[Path, str]:
    """Output names, unique per folder by case-folded stem (``_1``, ``_2``... on clashes).

    Stems, not names: ``a.jpg`` and ``a.png`` would share the mask ``a.png``. Folded
    case: ``A.jpg`` and ``a.jpg`` are one file on FAT/NTFS/APFS.
    """
    taken: dict[str, set[str]] = defaultdict(set)
    out: dict[Path, str] = {}
    for i in sorted(items, key=lambda i: str(i.image)):
        used = taken[i.kind.casefold()]
        stem, n = i.image.stem, 0
        while (stem if n == 0 else f"{stem}_{n}").casefold() in used:
            n += 1
        final = stem if n == 0 else f"{stem}_{n}"
        used.add(final.casefold())
        out[i.image] = f"{final}{i.image.suffix}"
    return out


def _folder(kind: str) -> Path:
    return Path(GOOD) if kind == GOOD else Path("defect") / kind


def _write_mask(item: AnomalyItem, dst: Path, masks: Counter[str], problems: list[Problem]) -> None:
    """Binarise ``item``'s mask at > 127 to ``dst``; faults are reported, the image kept."""
    if item.mask is None:
        masks["missing"] += 1
        problems.append(
            Problem(
                ProblemKind.MISSING_MASK,
                str(item.image),
                f"no mask beside it (expected {mask_name(item.image.name)}); "
                "kept for image metrics, no pixel metrics",
            )
        )
        return
    raw = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        masks["missing"] += 1
        problems.append(
            Problem(
                ProblemKind.UNREADABLE_MASK,
                str(item.mask),
                "cannot decode the mask; image kept for image metrics, no pixel metrics",
            )
        )
        return
    w, h = image_size(item.image)
    if raw.shape != (h, w):
        masks["resized"] += 1
        problems.append(
            Problem(
                ProblemKind.SIZE_MISMATCH,
                str(item.mask),
                f"mask is {raw.shape[1]}x{raw.shape[0]}, the image {w}x{h}; "
                "resized (nearest neighbour)",
            )
        )
        raw = cv2.resize(raw, (w, h), interpolation=cv2.INTER_NEAREST)
    if np.any((raw != 0) & (raw != 255)):
        masks["binarised"] += 1
    binary = np.where(raw > MASK_THRESHOLD, 255, 0).astype(np.uint8)
    if not binary.any():
        masks["empty"] += 1
        problems.append(
            Problem(
                ProblemKind.EMPTY_MASK,
                str(item.mask),
                "the mask marks no defect pixel; kept (a defect for image metrics, "
                "no positive pixels)",
            )
        )
    if not cv2.imwrite(str(dst), binary):
        raise OSError(f"{dst}: cannot write the mask")
    masks["written"] += 1


def import_anomaly_dataset(
    source: Path,
    output: Path,
    *,
    fmt: AnomalyFormat = "auto",
    seed: int = 0,
    held_back: float = 0.2,
    train_list: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnomalySummary:
    """Import ``source`` (any layout of :mod:`kanjian.training.anomaly_source`) to ``output``.

    Faults are reported per file, never fatal. ``progress`` is told ``(images
    written, images in all)``.

    Returns:
        the summary, also written to ``output/summary.json``.

    Raises:
        ValueError: unknown layout, unreadable train list.
        FileExistsError: ``output`` is not empty.
    """
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; choose a new output folder")
    names = read_train_list(train_list) if train_list is not None else None
    read = read_anomaly_source(source, fmt)
    problems = list(read.problems)
    notes = list(read.notes)
    good = [i for i in read.items if i.kind == GOOD]
    if names is not None:
        found = {i.image.name for i in good} | {i.image.stem for i in good}
        matched = sum(1 for i in good if i.image.name in names or i.image.stem in names)
        missing = sum(1 for n in names if n not in found and Path(n).stem not in found)
        notes.append(
            f"train list {train_list}: {matched} good images train; "
            f"{missing} of its {len(names)} names are not among the good images"
        )
    split = split_items(read.items, seed=seed, held_back=held_back, train_names=names)
    out_names = _out_names(read.items)
    output.mkdir(parents=True, exist_ok=True)
    masks: Counter[str] = Counter()
    listing: dict[str, list[str]] = {}
    total, done = len(read.items), 0
    for part in SPLITS:
        listing[part] = []
        for item in split[part]:
            if progress is not None:
                progress(done, total)
            done += 1
            rel = _folder(item.kind) / out_names[item.image]
            (output / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.image, output / rel)
            if item.kind != GOOD:
                _write_mask(item, output / rel.parent / mask_name(rel.name), masks, problems)
            listing[part].append(rel.as_posix())
    if progress is not None and total:
        progress(total, total)
    split_doc = {"seed": seed, "held_back": held_back, **{p: sorted(listing[p]) for p in SPLITS}}
    (output / SPLIT_NAME).write_text(json.dumps(split_doc, indent=1) + "\n", encoding="utf-8")
    kinds = sorted({i.kind for i in read.items if i.kind != GOOD})
    per_kind = {
        k: {p: sum(1 for i in split[p] if i.kind == k) for p in SPLITS}
        for k in ([GOOD] if good else []) + kinds
    }
    if masks["binarised"]:
        notes.append(
            f"{masks['binarised']} masks held values other than 0 and 255; "
            f"binarised at > {MASK_THRESHOLD}"
        )
    summary = AnomalySummary(
        source=str(source),
        output=str(output),
        source_format=read.layout,
        task="anomaly",
        kinds=tuple(kinds),
        images={p: len(split[p]) for p in SPLITS},
        per_kind=per_kind,
        per_group=dict(sorted(Counter(i.group for i in read.items).items())),
        masks={k: masks[k] for k in ("written", "missing", "empty", "binarised", "resized")},
        problems=tuple(str(p) for p in problems),
        problem_counts=dict(sorted(Counter(p.kind.value for p in problems).items())),
        seed=seed,
        held_back=held_back,
        train_list=str(train_list) if train_list is not None else None,
        data_sha256=dataset_sha256(output),
        notes=tuple(notes),
    )
    (output / SUMMARY_NAME).write_text(summary.to_json(), encoding="utf-8")
    return summary


def load_anomaly_dataset(root: Path) -> AnomalyDataset:
    """Read a dataset written by :func:`import_anomaly_dataset` (``split.json`` + files).

    Raises:
        ValueError: naming the file, when ``split.json`` is missing or malformed or
            lists an image that is not there.
    """
    path = root / SPLIT_NAME
    if not path.is_file():
        raise ValueError(
            f"{path}: not found; make the dataset with "
            f"`kanjian dataset import SOURCE {root} --task anomaly`"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        lists = {p: [str(s) for s in doc[p]] for p in SPLITS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable split ({e!r}); import the dataset again") from e
    parts: dict[str, tuple[AnomalySample, ...]] = {}
    for name, rels in lists.items():
        samples = []
        for rel in rels:
            image, rel_parts = root / rel, Path(rel).parts
            if not image.is_file():
                raise ValueError(f"{path}: {name} lists {rel}, which is not in {root}")
            shape = {GOOD: 2, "defect": 3}.get(rel_parts[0])
            if shape != len(rel_parts):
                raise ValueError(f"{path}: {name} lists {rel}, not in good/ or defect/<kind>/")
            kind = GOOD if rel_parts[0] == GOOD else rel_parts[1]
            mask = image.parent / mask_name(image.name)
            samples.append(
                AnomalySample(image, mask if kind != GOOD and mask.is_file() else None, kind)
            )
        parts[name] = tuple(samples)
    sha = ""
    if (root / SUMMARY_NAME).is_file():
        sha = str(
            json.loads((root / SUMMARY_NAME).read_text(encoding="utf-8")).get("data_sha256", "")
        )
    kinds = sorted({s.kind for p in parts.values() for s in p if s.kind != GOOD})
    return AnomalyDataset(
        root=root,
        train=parts["train"],
        calibration=parts["calibration"],
        validation=parts["validation"],
        kinds=tuple(kinds),
        data_sha256=sha,
    )


__all__ = [
    "AnomalyDataset",
    "AnomalySample",
    "AnomalySummary",
    "exposure_group",
    "import_anomaly_dataset",
    "load_anomaly_dataset",
    "split_items",
]
