"""``kanjian dataset import``: a labelled dataset to YOLO layout, or an anomaly dataset.

Mounted on ``kanjian dataset`` by :mod:`kanjian.appliance_api.cli.training`.
Importing this module is cheap: the readers are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.console import Console

if TYPE_CHECKING:
    from kanjian.training.anomaly_data import AnomalySummary

console = Console(stderr=True, soft_wrap=True)  # whole lines: logs get grepped
out = Console(soft_wrap=True)

TaskOpt = Literal["detect", "segment", "classify"]
SourceFormat = Literal["auto", "voc", "coco", "yolo"]
BoxMasks = Literal["ellipse", "box"]
AnomalyFormat = Literal["auto", "good-defect", "magnetic-tile", "mvtec"]


def dataset_import_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="VOC folder, COCO .json or folder, YOLO folder/data.yaml, or CVAT export "
            "folder; --task anomaly: good/ + defect/<kind>/, magnetic-tile MT_*/ or an "
            "MVTec-AD category"
        ),
    ],
    output: Annotated[Path, typer.Argument(help="new folder for the dataset")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="auto, voc, coco or yolo; --task anomaly: auto, good-defect, magnetic-tile "
            "or mvtec",
        ),
    ] = "auto",
    images: Annotated[
        Path | None, typer.Option(help="image folder, when not where the format expects it")
    ] = None,
    task: Annotated[
        str, typer.Option(help="layout: detect, segment, classify or anomaly")
    ] = "detect",
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="share of images for validation; --task anomaly: share of the good "
            "images held back from training (for calibration and validation)",
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the train/val split")] = 0,
    classes: Annotated[
        str | None, typer.Option(help="comma-separated class list (default: the classes found)")
    ] = None,
    box_masks: Annotated[
        str, typer.Option(help="segment: mask for boxes without polygon: ellipse or box")
    ] = "ellipse",
    drop_difficult: Annotated[
        bool,
        typer.Option(help="VOC: skip <difficult>1</difficult> objects (default: keep them)"),
    ] = False,
    train_list: Annotated[
        Path | None,
        typer.Option(
            help="--task anomaly: file of good image names to train on, one a line "
            "(the other good images are held back)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Convert a dataset to YOLO layout with a seeded, class-stratified train/val split
    (--task anomaly: to good/ + defect/<kind>/ with masks, see below).

    Faults (missing images, boxes outside, unknown classes, unreadable files,
    stated sizes that differ from the image) are reported per file and skipped or
    repaired; the summary is written to OUTPUT/summary.json. Exit code 0 when
    images were imported (even with faults), 2 when none was.

    --task anomaly writes good/, defect/<kind>/ with binary masks and split.json
    (train / calibration / validation) instead (docs/training.md).
    """
    from rich.markup import escape

    from kanjian.appliance_api.cli.progress import ReadProgress
    from kanjian.training.importer import import_dataset

    if task == "anomaly":
        yolo_only = {
            "--images": images is not None,
            "--classes": classes is not None,
            "--box-masks": box_masks != "ellipse",
            "--drop-difficult": drop_difficult,
        }
        _import_anomaly(source, output, fmt, val_fraction, seed, train_list, as_json, yolo_only)
        return
    if train_list is not None:
        raise typer.BadParameter("only for --task anomaly", param_hint="--train-list")
    if fmt not in ("auto", "voc", "coco", "yolo"):
        raise typer.BadParameter(f"unknown format {fmt!r}", param_hint="--format")
    if task not in ("detect", "segment", "classify"):
        raise typer.BadParameter(f"unknown task {task!r}", param_hint="--task")
    if box_masks not in ("ellipse", "box"):
        raise typer.BadParameter(f"unknown box mask {box_masks!r}", param_hint="--box-masks")
    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    try:
        # reading the source: a spinner on a terminal (nothing in a log); copying the
        # images, the long part of a big import: a bar (a line every tenth in a log)
        reading = console.status(f"reading {escape(str(source))}")
        reading.start()
        bar = ReadProgress(console, f"writing {output}", unit="images")

        def progress(done: int, total: int) -> None:
            reading.stop()  # the source is read: the copy begins
            bar(done, total)

        try:
            summary = import_dataset(
                source,
                output,
                fmt=cast(SourceFormat, fmt),
                images=images,
                task=cast(TaskOpt, task),
                val_fraction=val_fraction,
                seed=seed,
                class_names=names,
                box_masks=cast(BoxMasks, box_masks),
                drop_difficult=drop_difficult,
                progress=progress,
            )
        finally:
            reading.stop()
            bar.close()
    except (ValueError, OSError) as e:  # OSError: FileExistsError, unwritable output...
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    if as_json:
        out.print_json(summary.to_json())
    else:
        out.print(f"{summary.source_format} -> {summary.output} ({summary.task})")
        out.print(
            f"images: train {summary.images['train']}, val {summary.images['val']}, "
            f"without labels {summary.images_without_labels}"
        )
        for name, n in summary.boxes_per_class.items():
            out.print(f"  {name}: {n} boxes")
        for note in summary.notes:
            out.print(f"note: {note}", markup=False)
        if summary.problems:
            counts = ", ".join(f"{k} {v}" for k, v in summary.problem_counts.items())
            out.print(f"problems: {len(summary.problems)} ({counts}); first ones:")
            for line in summary.problems[:10]:
                out.print(f"  {line}", markup=False)
            out.print(f"all problems: {Path(summary.output) / 'summary.json'}")
    if summary.images["train"] + summary.images["val"] == 0:
        # a dataset with nothing in it must stop a script before `kanjian train` runs
        first = f"; first: {' '.join(summary.problems[0].split())}" if summary.problems else ""
        console.print(
            f"[red]error:[/red] {escape(f'no images imported from {source}')} "
            f"({len(summary.problems)} problems{escape(first)})"
        )
        raise typer.Exit(2)


def _import_anomaly(
    source: Path,
    output: Path,
    fmt: str,
    held_back: float,
    seed: int,
    train_list: Path | None,
    as_json: bool,
    yolo_only: dict[str, bool],
) -> None:
    """``dataset import --task anomaly``: see :func:`kanjian.training.anomaly_data.import_anomaly_dataset`."""
    from rich.markup import escape

    from kanjian.appliance_api.cli.progress import ReadProgress
    from kanjian.training.anomaly_data import import_anomaly_dataset

    for flag, given in yolo_only.items():
        if given:
            raise typer.BadParameter("does not apply to --task anomaly", param_hint=flag)
    if fmt not in ("auto", "good-defect", "magnetic-tile", "mvtec"):
        raise typer.BadParameter(
            f"unknown anomaly format {fmt!r} (auto, good-defect, magnetic-tile or mvtec)",
            param_hint="--format",
        )
    bar = ReadProgress(console, f"writing {output}", unit="images")
    try:
        summary = import_anomaly_dataset(
            source,
            output,
            fmt=cast(AnomalyFormat, fmt),
            seed=seed,
            held_back=held_back,
            train_list=train_list,
            progress=bar,
        )
    except (ValueError, OSError) as e:  # OSError: FileExistsError, unwritable output...
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from e
    finally:
        bar.close()
    if as_json:
        out.print_json(summary.to_json())
    else:
        _print_anomaly(summary)
    if summary.total == 0:
        first = f"; first: {' '.join(summary.problems[0].split())}" if summary.problems else ""
        console.print(
            f"[red]error:[/red] {escape(f'no images imported from {source}')} "
            f"({len(summary.problems)} problems{escape(first)})",
            highlight=False,
        )
        raise typer.Exit(2)


def _print_anomaly(summary: AnomalySummary) -> None:
    out.print(f"{summary.source_format} -> {summary.output} (anomaly)", markup=False)
    out.print(", ".join(f"{k} {v}" for k, v in summary.images.items()), markup=False)
    for kind, counts in summary.per_kind.items():
        out.print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), markup=False)
    masks = summary.masks
    out.print(
        f"masks: {masks['written']} written, {masks['missing']} missing, {masks['empty']} empty",
        markup=False,
    )
    for note in summary.notes:
        out.print(f"note: {note}", markup=False)
    if summary.problems:
        kinds = ", ".join(f"{k} {v}" for k, v in summary.problem_counts.items())
        out.print(f"problems: {len(summary.problems)} ({kinds}); first ones:", markup=False)
        for line in summary.problems[:10]:
            out.print(f"  {line}", markup=False)
        out.print(f"all problems: {Path(summary.output) / 'summary.json'}", markup=False)
