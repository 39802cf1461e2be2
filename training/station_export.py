"""``kanjian dataset export``: the station's log back into a YOLO dataset.

Reads the station's SQLite store (``kanjian.db``: ``inspections``,
``detections``, ``feedback``, ``models``) read-only, so it can run beside a live
station, and the saved frames under its data folder. Labels are the station's
own detections at or above ``label_conf`` (pseudo-labels, for review in a
labelling tool), corrected by the operators' latest feedback:

- ``not_defect``: a false positive; the image is kept as a background image
  (no boxes), a true negative;
- ``wrong_class``: every kept box takes the class the operator named;
- ``confirm_defect`` or none: the boxes are kept as detected.

An image is never written as background because its boxes were taken away:
an image without labels is kept only when an operator said ``not_defect``, or
when the model found nothing in a ``PASS`` inspection without feedback. The
others (every box below ``label_conf``, a box of a class outside the class
list, feedback that says "defect" with no box to show where) are left out and
counted. Only inspections with a saved image can be exported; the rest are
counted too.

Class ids are the model's: the class list is read from the model's bundle in
the station's model registry, unless one is given.
"""

from __future__ import annotations

from pathlib import Path

from kanjian.training.export_filter import FEEDBACK_KINDS, ExportFilter, parse_utc
from kanjian.training.export_writer import CLASSES_TXT, DatasetWriter, val_share
from kanjian.training.label_studio import (
    LS_CONFIG,
    LS_FROM_NAME,
    LS_IMAGE_ROOT,
    LS_TASKS,
    LS_TO_NAME,
    label_studio_config,
    label_studio_tasks,
)
from kanjian.training.layout import SUMMARY_NAME, DatasetSummary, Task, dataset_sha256
from kanjian.training.records import ProblemLog
from kanjian.training.station_log import (
    DB_NAME,
    ExportItem,
    Progress,
    StationLog,
    StationLogStream,
    read_station_log,
    read_station_log_items,
)

# re-exported: callers imported these from here before the split into
# export_filter, station_log and label_studio, and may go on doing so
__all__ = [
    "CLASSES_TXT",
    "DB_NAME",
    "FEEDBACK_KINDS",
    "LS_CONFIG",
    "LS_FROM_NAME",
    "LS_IMAGE_ROOT",
    "LS_TASKS",
    "LS_TO_NAME",
    "ExportFilter",
    "ExportItem",
    "StationLog",
    "StationLogStream",
    "export_station_log",
    "label_studio_config",
    "label_studio_tasks",
    "parse_utc",
    "read_station_log",
    "read_station_log_items",
    "val_share",
]

_ALL_INSPECTIONS = ExportFilter()  # the default filter; frozen, so sharing it is safe
PROBLEM_EXAMPLES = 20  # problems listed in the summary per kind; all are counted


def export_station_log(
    data_dir: Path,
    output: Path,
    *,
    flt: ExportFilter = _ALL_INSPECTIONS,
    class_names: tuple[str, ...] | None = None,
    task: Task = "detect",
    val_fraction: float = 0.2,
    seed: int = 0,
    split: bool = True,
    ls_image_root: str = LS_IMAGE_ROOT,
    progress: Progress | None = None,
) -> DatasetSummary:
    """Write the station's saved frames and corrected labels as a YOLO dataset.

    Besides the YOLO layout (``data.yaml`` names = the class list in id order) it
    writes ``classes.txt`` (one name a line, id order), ``inspections.csv`` (one row
    per image: its inspection, verdict, feedback, scores; see
    :mod:`kanjian.training.export_index`) and, for ``detect``,
    ``label_studio.json`` + ``label_studio.xml`` (tasks with the detections and
    their scores as predictions, and the labelling config they match).

    Args:
        data_dir: the station's data folder (holding ``kanjian.db`` and ``images/``),
            or the database file itself.
        output: new folder for the dataset.
        flt: which inspections and detections to take.
        class_names: the class list (index = class id); None: the model's.
        split: False: no train/val split, all images in ``images/`` and labels in
            ``labels/`` (a review set); data.yaml points train and val there.
        ls_image_root: URL prefix of the images in ``label_studio.json``.
        progress: told (steps done, steps in all) over the whole export: every
            selected row is read twice, to settle the class list and then to write
            its image, so the steps are twice the rows selected.

    Memory does not grow with the log nor with the images exported: items are
    written as they are read (:mod:`kanjian.training.export_writer`, which also
    gives the split rule: per image, from ``(seed, inspection id)``, val share =
    ``val_fraction`` in expectation), and the summary lists the first
    :data:`PROBLEM_EXAMPLES` problems of each kind (all are counted).
    """
    if not split and task == "classify":
        raise ValueError("no split is for detect and segment layouts, not classify")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; choose a new output folder")
    problems = ProblemLog(PROBLEM_EXAMPLES)
    with StationLogStream(data_dir, flt, class_names, progress, problems) as log:
        writer = DatasetWriter(
            output,
            log.class_names,
            task=task,
            val_fraction=val_fraction if split else 0.0,
            seed=seed,
            split=split,
            ls_image_root=ls_image_root,
        )
        try:
            for item in log.items(writer.taken):
                writer.write(item)
            notes = [*writer.finish(), *log.notes]
        except BaseException:
            writer.abort()
            raise
        counts = dict(sorted(log.counts.items()))
    written = writer.images["train"] + writer.images["val"]
    if not split:
        notes.append(f"no split: all {written} images in images/, labels in labels/")
    else:
        share = writer.images["val"] / written if written else 0.0
        notes.append(
            f"split: per image, by a hash of (seed {seed}, inspection id): val share "
            f"{share:.3f} of {written} ({val_fraction} in expectation)"
        )
    notes.append("station log: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if problems.left_out:
        notes.append(
            f"problems: {problems.left_out} more not listed (the first {PROBLEM_EXAMPLES} "
            "of each kind are; problem_counts has them all)"
        )
    summary = DatasetSummary(
        source=str(data_dir),
        output=str(output),
        source_format="station",
        task=task,
        class_names=log.class_names,
        images=dict(writer.images),
        boxes_per_class=dict(writer.boxes_per_class),
        images_without_labels=writer.images_without_labels,
        problems=tuple(str(p) for p in problems.problems),
        problem_counts=dict(sorted(problems.counts.items())),
        seed=seed,
        val_fraction=val_fraction if split else 0.0,
        data_sha256=dataset_sha256(output),
        notes=tuple(notes),
    )
    (output / SUMMARY_NAME).write_text(summary.to_json(), encoding="utf-8")
    return summary
