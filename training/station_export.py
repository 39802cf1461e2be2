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

import json
from pathlib import Path

import yaml

from kanjian.training.export_filter import FEEDBACK_KINDS, ExportFilter, parse_utc
from kanjian.training.label_studio import (
    LS_CONFIG,
    LS_FROM_NAME,
    LS_IMAGE_ROOT,
    LS_TASKS,
    LS_TO_NAME,
    label_studio_config,
    label_studio_tasks,
)
from kanjian.training.layout import (
    DATA_YAML,
    SUMMARY_NAME,
    DatasetSummary,
    Task,
    dataset_sha256,
    write_yolo,
)
from kanjian.training.records import ReadResult
from kanjian.training.station_log import (
    DB_NAME,
    ExportItem,
    Progress,
    StationLog,
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
    "export_station_log",
    "label_studio_config",
    "label_studio_tasks",
    "parse_utc",
    "read_station_log",
    "read_station_log_items",
]

CLASSES_TXT = "classes.txt"  # one class name a line, line index = class id
_ALL_INSPECTIONS = ExportFilter()  # the default filter; frozen, so sharing it is safe


def _flatten(output: Path) -> None:
    """Move ``images/train/*`` to ``images/`` (and labels), and point data.yaml there."""
    for kind in ("images", "labels"):
        base = output / kind
        for split in ("train", "val"):
            folder = base / split
            if folder.is_dir():
                for f in sorted(folder.iterdir()):
                    f.rename(base / f.name)
                folder.rmdir()
        base.mkdir(exist_ok=True)
    data_yaml = output / DATA_YAML
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    data["train"] = data["val"] = "images"  # Ultralytics accepts the same folder twice
    data_yaml.write_text(
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


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
    writes ``classes.txt`` (one name a line, id order) and, for ``detect``,
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
        progress: told (rows read, rows selected) as the log is read.
    """
    if not split and task == "classify":
        raise ValueError("no split is for detect and segment layouts, not classify")
    log = read_station_log_items(data_dir, flt, class_names, progress)
    result = ReadResult(tuple(i.record for i in log.items), log.class_names, log.problems)
    summary = write_yolo(
        result,
        output,
        source=str(data_dir),
        source_format="station",
        task=task,
        val_fraction=val_fraction if split else 0.0,
        seed=seed,
    )
    notes = [*summary.notes, *log.notes]
    if not split:
        _flatten(output)
        notes.append(f"no split: all {len(log.items)} images in images/, labels in labels/")
    if task != "classify":
        (output / CLASSES_TXT).write_text(
            "".join(f"{n}\n" for n in log.class_names), encoding="utf-8"
        )
    if task == "detect":
        tasks = label_studio_tasks(log.items, output, ls_image_root)
        (output / LS_TASKS).write_text(
            json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (output / LS_CONFIG).write_text(label_studio_config(log.class_names), encoding="utf-8")
    notes.append("station log: " + ", ".join(f"{k} {v}" for k, v in log.counts.items()))
    patched = DatasetSummary(
        **{
            **summary.__dict__,
            "val_fraction": summary.val_fraction if split else 0.0,
            "data_sha256": dataset_sha256(output),  # files were moved and added
            "notes": tuple(notes),
        }
    )
    (output / SUMMARY_NAME).write_text(patched.to_json(), encoding="utf-8")
    return patched
