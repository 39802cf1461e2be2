"""``kanjian dataset import``: any supported source format to one YOLO dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from kanjian.training.layout import BoxMasks, DatasetSummary, Task, write_yolo
from kanjian.training.records import ReadResult
from kanjian.training.voc import read_voc

SourceFormat = Literal["auto", "voc", "coco", "yolo"]


def detect_format(source: Path) -> Literal["voc", "coco", "yolo"]:
    """Guess the format of ``source``, checked in this order:

    - a ``.json`` file: COCO; a ``.yaml`` file or CVAT's ``obj.data``: YOLO;
    - a folder with ``data.yaml``, ``labels/``, or CVAT "YOLO 1.1"'s ``obj.names``
      / ``obj.data``: YOLO;
    - a folder with ``annotations/*.json`` (CVAT "COCO 1.0", standard COCO): COCO;
    - a folder with ``*.xml`` anywhere below: VOC;
    - a folder with exactly one ``*.json``: COCO.

    Raises:
        ValueError: when none fits.
    """
    if source.is_file() and source.suffix.lower() == ".json":
        return "coco"
    if source.is_file() and source.suffix.lower() in (".yaml", ".yml", ".data"):
        return "yolo"
    if source.is_dir():
        if any((source / n).exists() for n in ("data.yaml", "labels", "obj.names", "obj.data")):
            return "yolo"
        if next((source / "annotations").glob("*.json"), None) is not None:
            return "coco"
        if next(source.rglob("*.xml"), None) is not None:
            return "voc"
        if len(list(source.glob("*.json"))) == 1:
            return "coco"
    raise ValueError(
        f"{source}: cannot tell the format (expected VOC *.xml, a COCO .json or "
        "annotations/*.json, a YOLO folder with data.yaml, or CVAT's obj.names); pass --format"
    )


def read_source(
    source: Path,
    fmt: SourceFormat = "auto",
    images: Path | None = None,
    class_names: tuple[str, ...] | None = None,
    *,
    drop_difficult: bool = False,
) -> tuple[str, ReadResult]:
    """Read a source dataset; returns the format used and what was read.

    ``drop_difficult`` applies to VOC only (see :func:`kanjian.training.voc.read_voc`).
    """
    chosen = detect_format(source) if fmt == "auto" else fmt
    if chosen == "voc":
        annotations = source / "annotations" if (source / "annotations").is_dir() else source
        if (source / "Annotations").is_dir():
            annotations = source / "Annotations"
        return chosen, read_voc(annotations, images, class_names, drop_difficult=drop_difficult)
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
    drop_difficult: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSummary:
    """Convert ``source`` to a YOLO dataset under ``output``; faults are reported, not fatal.

    Args:
        source: VOC folder (``annotations/`` + ``images/``, or XML beside images),
            COCO JSON file or folder (``annotations/*.json`` + ``images/``), YOLO
            folder / ``data.yaml``, or CVAT "YOLO 1.1" folder (``obj.names``).
        output: new folder for the YOLO dataset.
        fmt: ``auto`` guesses from ``source``.
        images: image folder when it is not where the format expects it.
        task: layout to write (see :mod:`kanjian.training.layout`).
        val_fraction, seed: the deterministic stratified split.
        class_names: fixed class list; None takes the classes found.
        box_masks: segment only: mask shape for boxes without a polygon.
        drop_difficult: VOC only: skip ``<difficult>1</difficult>`` objects, as
            Ultralytics' converter does, counted in the summary's notes (default: kept,
            since a skipped box trains as background).
        progress: told ``(images written, images in all)`` while the images are copied.
    """
    chosen, result = read_source(source, fmt, images, class_names, drop_difficult=drop_difficult)
    return write_yolo(
        result,
        output,
        source=str(source),
        source_format=chosen,
        task=task,
        val_fraction=val_fraction,
        seed=seed,
        box_masks=box_masks,
        progress=progress,
    )
