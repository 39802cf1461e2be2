"""``kanjian dataset export``: a station's log back into a YOLO dataset, for review and training.

Mounted on ``kanjian dataset`` by :mod:`kanjian.appliance_api.cli.training`.
Importing this module is cheap: the export itself is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # whole lines: logs get grepped
out = Console(soft_wrap=True)


def dataset_export_command(
    data_dir: Annotated[Path, typer.Argument(help="station data folder (kanjian.db, images/)")],
    output: Annotated[Path, typer.Argument(help="new folder for the YOLO dataset")],
    since: Annotated[
        str | None,
        typer.Option(
            help="captured at or after: ISO 8601 date or time (no offset: UTC; "
            "a bare date: 00:00 UTC that day)"
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="captured before: ISO 8601 date or time (no offset: UTC; "
            "a bare date: that whole UTC day included)"
        ),
    ] = None,
    model_sha256: Annotated[str | None, typer.Option(help="only this model's results")] = None,
    reviewed_only: Annotated[
        bool, typer.Option(help="only inspections with operator feedback")
    ] = False,
    include_reviewed: Annotated[
        bool,
        typer.Option(
            help="also every inspection with operator feedback, whatever its verdict and "
            "scores (--verdict, --min/max-conf, --min/max-score do not apply to it): the "
            "uncertain band and the answers in one dataset"
        ),
    ] = False,
    feedback: Annotated[
        list[str] | None,
        typer.Option(
            help="only this latest feedback: confirm_defect, not_defect, wrong_class or "
            "none (repeatable)"
        ),
    ] = None,
    label_conf: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="detections at or above this become label boxes"),
    ] = 0.25,
    min_conf: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="only inspections whose top detection score is at least this "
            "(an inspection with no detection counts as 0)",
        ),
    ] = None,
    max_conf: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="only inspections whose top detection score is at most this "
            "(an inspection with no detection counts as 0)",
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="only inspections whose anomaly image score is at least this "
            "(0.5: the model's fail point; inspections without a score are left out)",
        ),
    ] = None,
    max_score: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="only inspections whose anomaly image score is at most this "
            "(inspections without a score are left out)",
        ),
    ] = None,
    verdict: Annotated[
        list[str] | None,
        typer.Option(help="only these verdicts, any case: PASS, FAIL, REVIEW... (repeatable)"),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="comma-separated class list, index = class id (default: the model's); "
            "an image with a box of another class is left out"
        ),
    ] = None,
    has_class: Annotated[
        str | None,
        typer.Option(
            help="comma-separated: only images with a label box of one of these classes "
            "(all their boxes are kept)"
        ),
    ] = None,
    split: Annotated[
        bool,
        typer.Option(
            "--split/--no-split",
            help="--no-split: all images in images/, labels in labels/ (a review set)",
        ),
    ] = True,
    ls_image_root: Annotated[
        str, typer.Option(help="URL prefix of the images in label_studio.json")
    ] = "/data/local-files/?d=",
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Turn the station's log (saved frames + detections + operator feedback) into a
    YOLO dataset with the model's detections as pre-annotations, plus classes.txt, an
    index of the images' inspections with their scores (inspections.csv) and Label
    Studio tasks (label_studio.json, label_studio.xml). Feedback corrects the
    labels (not_defect: no boxes, a true negative; wrong_class: the named class);
    an image whose boxes were taken away is left out, never kept as background."""
    from rich.markup import escape

    from kanjian.appliance_api.cli.progress import ReadProgress
    from kanjian.station.schema import StoreTooNewError
    from kanjian.training.export_filter import ExportFilter
    from kanjian.training.station_export import export_station_log

    def names(text: str | None) -> tuple[str, ...]:
        return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()

    # the whole export: each selected row is read twice (class list, then images written)
    progress = ReadProgress(console, "exporting the station log", unit="row reads")
    try:
        flt = ExportFilter(
            since=since,
            until=until,
            model_sha256=model_sha256,
            reviewed_only=reviewed_only,
            label_conf=label_conf,
            min_conf=min_conf,
            max_conf=max_conf,
            min_score=min_score,
            max_score=max_score,
            verdicts=tuple(verdict or ()),
            has_classes=names(has_class),
            feedback=tuple(feedback or ()),
            include_reviewed=include_reviewed,
        )
        summary = export_station_log(
            data_dir,
            output,
            flt=flt,
            class_names=names(classes) or None,
            val_fraction=val_fraction,
            seed=seed,
            split=split,
            ls_image_root=ls_image_root,
            progress=progress,
        )
    except (ValueError, FileExistsError, FileNotFoundError, StoreTooNewError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from e
    finally:
        progress.close()
    if as_json:
        out.print_json(summary.to_json())
        return
    out.print(f"station log -> {summary.output}", markup=False)
    out.print(
        f"images: train {summary.images['train']}, val {summary.images['val']}, "
        f"without labels {summary.images_without_labels}"
    )
    for name, n in summary.boxes_per_class.items():
        out.print(f"  {name}: {n} boxes", markup=False)
    for note in summary.notes:
        out.print(f"note: {note}", markup=False)
    for line in summary.problems[:10]:
        out.print(f"  {line}", markup=False)
