"""``kanjian dataset import``: any supported source format to one YOLO dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kanjian.training.layout import BoxMasks, DatasetSummary, Task, write_yolo
from kanjian.training.records import ReadResult
from kanjian.training.voc import read_voc

SourceFormat = Literal["auto", "voc", "coco", "yolo"]


def detect_format(source: Path) -> Literal["voc", "coco", "yolo"]:
    """Guess the format of ``source``: a ``.json`` file is COCO, a folder with
    ``data.yaml`` or ``labels/`` is YOLO, a folder with ``*.xml`` is VOC.

    Raises:
        ValueError: when none fits.
    """
    if source.is_file() and source.suffix.lower() == ".json":
        return "coco"
    if source.is_file() and source.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if source.is_dir():
        if (source / "data.yaml").is_file() or (source / "labels").is_dir():
            return "yolo"
        if next(source.rglob("*.xml"), None) is not None:
            return "voc"
        if len(list(source.glob("*.json"))) == 1:
            return "coco"
    raise ValueError(
        f"{source}: cannot tell the format (expected VOC *.xml, a COCO .json, "
        "or a YOLO folder with data.yaml); pass --format"
    )


def read_source(
    source: Path,
    fmt: SourceFormat = "auto",
    images: Path | None = None,
    class_names: tuple[str, ...] | None = None,
) -> tuple[str, ReadResult]:
    """Read a source dataset; returns the format used and what was read."""
    chosen = detect_format(source) if fmt == "auto" else fmt
    if chosen == "voc":
        annotations = source / "annotations" if (source / "annotations").is_dir() else source
        if (source / "Annotations").is_dir():
            annotations = source / "Annotations"
        return chosen, read_voc(annotations, images, class_names)
    if chosen == "coco":
        from kanjian.training.coco import read_coco

        return chosen, read_coco(source, images, class_names)
    from kanjian.training.yolo_source import read_yolo

    return chosen, read_yolo(source, images, class_names)


def import_dataset(
    source: Path,
    output: Path,
    *,
    fmt: SourceFormat = "auto",
    images: Path | None = None,
    task: Task = "detect",
    val_fraction: float = 0.2,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
    box_masks: BoxMasks = "ellipse",
) -> DatasetSummary:
    """Convert ``source`` to a YOLO dataset under ``output``; faults are reported, not fatal.

    Args:
        source: VOC folder (``annotations/`` + ``images/``, or XML beside images),
            COCO JSON file, or YOLO folder / ``data.yaml``.
        output: new folder for the YOLO dataset.
        fmt: ``auto`` guesses from ``source``.
        images: image folder when it is not where the format expects it.
        task: layout to write (see :mod:`kanjian.training.layout`).
        val_fraction, seed: the deterministic stratified split.
        class_names: fixed class list; None takes the classes found.
        box_masks: segment only: mask shape for boxes without a polygon.
    """
    chosen, result = read_source(source, fmt, images, class_names)
    return write_yolo(
        result,
        output,
        source=str(source),
        source_format=chosen,
        task=task,
        val_fraction=val_fraction,
        seed=seed,
        box_masks=box_masks,
    )
