"""Label Studio files for ``kanjian dataset export``: tasks with predictions, and their config.

The tasks follow Label Studio's documented JSON for pre-annotations; the config
names the ``label`` and ``image`` tags every region refers to.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.request import pathname2url
from xml.sax.saxutils import quoteattr

if TYPE_CHECKING:
    from kanjian.training.station_log import ExportItem

LS_TASKS = "label_studio.json"  # Label Studio tasks with the detections as predictions
LS_CONFIG = "label_studio.xml"  # the labelling config those predictions match
LS_IMAGE_ROOT = "/data/local-files/?d="  # Label Studio's local-files URL prefix
LS_FROM_NAME, LS_TO_NAME = "label", "image"  # tag names in LS_CONFIG, used by every region


def label_studio_tasks(
    items: tuple[ExportItem, ...], output: Path, image_root: str = LS_IMAGE_ROOT
) -> list[dict[str, object]]:
    """Label Studio tasks (one per written image) with the detections as predictions.

    The format is Label Studio's documented JSON for pre-annotations: ``data.image``
    is ``image_root`` + the image's path relative to ``output`` (``data`` also holds the
    inspection's id, time, verdict, feedback, top detection score and, for anomaly
    models, its image ``score``); each box is a ``rectanglelabels`` region with
    ``x, y, width, height`` in percent of the image and its detection confidence as
    ``score``; the prediction's ``score`` is the inspection's top detection score
    (Label Studio sorts tasks by it).
    """
    written = {
        p.name: p.relative_to(output).as_posix()
        for p in sorted((output / "images").rglob("*"))
        if p.is_file()
    }
    tasks: list[dict[str, object]] = []
    for item in items:
        rel = written.get(item.record.image.name)
        if rel is not None:  # else not written (a layout that leaves it out)
            tasks.append(label_studio_task(item, rel, image_root))
    return tasks


def label_studio_task(
    item: ExportItem, rel: str, image_root: str = LS_IMAGE_ROOT
) -> dict[str, object]:
    """One Label Studio task, for ``item`` written at ``rel`` (relative to the dataset, posix).

    As :func:`label_studio_tasks` describes.
    """
    r = item.record
    regions = []
    for i, (box, score) in enumerate(zip(r.boxes, item.scores, strict=True)):
        x1, y1, x2, y2 = box.xyxy
        regions.append(
            {
                "id": f"{r.image.stem}-{i}",
                "type": "rectanglelabels",
                "from_name": LS_FROM_NAME,
                "to_name": LS_TO_NAME,
                "original_width": r.width,
                "original_height": r.height,
                "image_rotation": 0,
                "value": {
                    "x": round(x1 / r.width * 100, 4),
                    "y": round(y1 / r.height * 100, 4),
                    "width": round((x2 - x1) / r.width * 100, 4),
                    "height": round((y2 - y1) / r.height * 100, 4),
                    "rotation": 0,
                    "rectanglelabels": [box.class_name],
                },
                "score": round(score, 6),
            }
        )
    prediction: dict[str, object] = {"model_version": item.model or "unknown"}
    if item.top_confidence is not None:
        prediction["score"] = round(float(item.top_confidence), 6)
    prediction["result"] = regions
    data: dict[str, object] = {
        "image": image_root + pathname2url(rel),
        "inspection_id": item.inspection_id,
        "captured_at": item.captured_at,
        "verdict": item.verdict,
        "feedback": item.feedback or "none",
    }
    if item.top_confidence is not None:
        data["top_confidence"] = round(float(item.top_confidence), 6)
    if item.score is not None:  # anomaly models: the image score (sortable in the Data Manager)
        data["score"] = round(float(item.score), 6)
    return {"data": data, "predictions": [prediction]}


def label_studio_config(class_names: tuple[str, ...]) -> str:
    """The Label Studio labelling config that :func:`label_studio_tasks` regions match.

    Each label carries its class id as ``category``: Label Studio's YOLO and COCO exports
    number the labels without one in alphabetical order (label-studio-sdk's converter,
    ``_get_labels``), which would give the labelled set other class ids than the model's,
    and ``kanjian train --model BUNDLE`` would start each class from another one's weights.
    """
    labels = "".join(
        f'    <Label value={quoteattr(n)} category="{i}"/>\n' for i, n in enumerate(class_names)
    )
    return (
        "<View>\n"
        f'  <Image name="{LS_TO_NAME}" value="$image"/>\n'
        f'  <RectangleLabels name="{LS_FROM_NAME}" toName="{LS_TO_NAME}">\n'
        f"{labels}"
        "  </RectangleLabels>\n"
        "</View>\n"
    )
