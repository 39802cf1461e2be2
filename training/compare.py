"""``kanjian model compare A B --data DIR``: two models scored on one labelled folder.

Each model runs as a station runs it (:func:`kanjian.inference.model.load_model`,
``predict``, ``judge`` with the bundle's own thresholds and verdict rules) on every image
of the folder (:mod:`kanjian.training.compare_data`). Each image is predicted once, at
Ultralytics' validation confidence (0.001) for mAP; the station's detections are those
above the bundle's ``conf`` (the decoder's strict ``>``): NMS keeps a box only against
higher-scoring ones, so that subset is exactly what a prediction at the bundle's
``conf`` gives.

The result holds, per model, mAP50 / mAP50-95 and per-class AP
(:mod:`kanjian.inference.map_metric`), its verdict counts and its defect calls against
the labels (an image with boxes: a defective part); between the two, the verdict
agreement matrix and the per-class box agreement (:mod:`kanjian.inference.agreement`).
No torch or Ultralytics: it runs on a station too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kanjian.inference import agreement as ag
from kanjian.inference.map_metric import (
    VAL_CONF,
    ImageMatches,
    MapResult,
    match_predictions,
    mean_average_precision,
)
from kanjian.inference.model import OnnxModel, Prediction
from kanjian.training.checks import read_bgr
from kanjian.training.compare_data import CompareDataError, LabelledSet

#: tasks whose boxes can be scored (segment: its boxes; masks are not compared)
BOX_TASKS = ("detect", "segment")


@dataclass(frozen=True)
class ModelScore:
    """One model on the folder.

    Attributes:
        label: ``A`` or ``B``, as given on the command line.
        path: the bundle (or .onnx) given.
        name, version, sha256, task: from the model.
        provider: the ONNX Runtime execution provider it ran on.
        conf: the bundle's confidence threshold (the station's detections).
        map: mAP50, mAP50-95 and per-class AP over predictions down to conf 0.001.
        verdicts: images per verdict (PASS, FAIL, REVIEW, ERROR), with the bundle's rules.
        vs_labels: its defect calls against the labels (boxes: defective; none: good).
        boxes: detections at or above ``conf`` over all images.
    """

    label: str
    path: str
    name: str
    version: str
    sha256: str
    task: str
    provider: str
    conf: float
    map: MapResult
    verdicts: dict[str, int]
    vs_labels: ag.DefectCallScore
    boxes: int


@dataclass(frozen=True)
class ImageResult:
    """One image: its labels and both models' verdicts.

    Attributes:
        image: path relative to the folder.
        labels: label boxes (0: a good part).
        a_verdict, b_verdict: verdicts; a_boxes, b_boxes: detections at the bundle's conf.
        boxes_agree: every box of one model has a same-class partner in the other.
    """

    image: str
    labels: int
    a_verdict: str
    b_verdict: str
    a_boxes: int
    b_boxes: int
    boxes_agree: bool


@dataclass(frozen=True)
class Comparison:
    """Everything ``kanjian model compare`` prints (``--json`` writes it, ``asdict``).

    Attributes:
        data: the folder; source: how it was read; problems: label faults found.
        class_names: the classes (the same in both models and the folder).
        images: images scored; defective, good: by their labels.
        a, b: each model's :class:`ModelScore`.
        verdicts: the verdict agreement matrix (rows A, columns B).
        detections: per-class box agreement (IoU >= ``detections.iou_threshold``).
        per_image: every image, sorted by path.
    """

    data: str
    source: str
    problems: tuple[str, ...]
    class_names: tuple[str, ...]
    images: int
    defective: int
    good: int
    a: ModelScore
    b: ModelScore
    verdicts: ag.VerdictAgreement
    detections: ag.DetectionAgreement
    per_image: tuple[ImageResult, ...]


def check_classes(
    a: OnnxModel, b: OnnxModel, data: LabelledSet, shown: tuple[str, str]
) -> tuple[str, ...]:
    """The class list all three share.

    Raises:
        CompareDataError: naming who differs from whom, and how.
    """
    lists = {
        f"A ({shown[0]})": tuple(a.info.class_names),
        f"B ({shown[1]})": tuple(b.info.class_names),
    }
    if data.class_names is not None:
        lists[f"the data ({data.source})"] = data.class_names
    first_name, first = next(iter(lists.items()))
    for who, names in lists.items():
        if names == first:
            continue
        how = "in another order" if sorted(names) == sorted(first) else ""
        if not how:
            extra, missing = set(names) - set(first), set(first) - set(names)
            how = "; ".join(
                part
                for part in (
                    f"has {', '.join(sorted(extra))}" if extra else "",
                    f"lacks {', '.join(sorted(missing))}" if missing else "",
                )
                if part
            )
        raise CompareDataError(
            f"class names differ: {who} has {list(names)}, {first_name} has {list(first)} "
            f"({who} {how} compared with {first_name}); models are compared on the same "
            "classes, by id"
        )
    return first


def _station_view(model: OnnxModel, pred: Prediction) -> Prediction:
    """The detections a station keeps at the bundle's ``conf`` (decode's strict ``>``)."""
    conf = np.float32(model.default_thresholds().conf)
    keep = pred.detections.confidence > conf
    return Prediction(detections=pred.detections.select(keep))


def _score(
    label: str, path: str, model: OnnxModel, matches: list[ImageMatches], verdicts: list[str],
    truth: list[bool], boxes: int, names: Sequence[str],
) -> ModelScore:  # fmt: skip
    counts = Counter(verdicts)
    return ModelScore(
        label=label,
        path=path,
        name=model.info.name,
        version=model.info.version,
        sha256=model.info.sha256,
        task=model.info.task,
        provider=model.session_info.provider,
        conf=model.default_thresholds().conf,
        map=mean_average_precision(matches, names),
        verdicts={v: counts[v] for v in ag.VERDICT_LABELS},
        vs_labels=ag.defect_call_score(zip(verdicts, truth, strict=True), label),
        boxes=boxes,
    )


def compare_models(
    a: OnnxModel,
    b: OnnxModel,
    data: LabelledSet,
    *,
    shown: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run both models on every image of ``data`` and score them (see the module doc).

    Args:
        a, b: loaded models (bundles: their thresholds and rules are used).
        data: the labelled folder.
        shown: how the two were named on the command line (paths), for messages.
        iou_threshold: the IoU two models' boxes need to count as the same object.
        progress: told ``(images done, images in all)``.

    Raises:
        CompareDataError: a model whose task has no boxes, or class lists that differ.
    """
    for who, m in zip(shown, (a, b), strict=True):
        if m.info.task not in BOX_TASKS:
            raise CompareDataError(
                f"{who}: a {m.info.task} model; compare scores boxes (detect or segment models)"
            )
    names = check_classes(a, b, data, shown)
    models = (a, b)
    matches: tuple[list[ImageMatches], list[ImageMatches]] = ([], [])
    verdicts: tuple[list[str], list[str]] = ([], [])
    box_lists: list[tuple[list[ag.DetBox], list[ag.DetBox]]] = []
    per_image = []
    truth = []
    problems = list(data.problems)
    for done, item in enumerate(data.images):
        if progress is not None:
            progress(done, len(data.images))
        try:
            image = read_bgr(item.image)
        except OSError as e:  # its header read, its pixels did not: as the reader skips it
            problems.append(f"{e}; skipped")
            continue
        kept = []
        for k, model in enumerate(models):
            pred = model.predict(image, conf=VAL_CONF)
            d = pred.detections
            matches[k].append(
                match_predictions(d.xyxy, d.confidence, d.class_id, item.xyxy, item.class_id)
            )
            station = _station_view(model, pred)
            verdicts[k].append(model.judge(station, model.default_rules()).verdict.value)
            kept.append(ag.boxes_of(station.detections, names))
        box_lists.append((kept[0], kept[1]))
        truth.append(item.defective)
        per_image.append(
            ImageResult(
                image=item.image.relative_to(data.root).as_posix()
                if item.image.is_relative_to(data.root)
                else str(item.image),
                labels=len(item.class_id),
                a_verdict=verdicts[0][-1],
                b_verdict=verdicts[1][-1],
                a_boxes=len(kept[0]),
                b_boxes=len(kept[1]),
                boxes_agree=ag.match_boxes(kept[0], kept[1], iou_threshold).agrees,
            )
        )
    if progress is not None:
        progress(len(data.images), len(data.images))
    return Comparison(
        data=str(data.root),
        source=data.source,
        problems=tuple(problems),
        class_names=names,
        images=len(per_image),
        defective=sum(truth),
        good=len(truth) - sum(truth),
        a=_score(
            "A",
            shown[0],
            a,
            matches[0],
            verdicts[0],
            truth,
            sum(len(x) for x, _ in box_lists),
            names,
        ),
        b=_score(
            "B",
            shown[1],
            b,
            matches[1],
            verdicts[1],
            truth,
            sum(len(y) for _, y in box_lists),
            names,
        ),
        verdicts=ag.verdict_agreement(zip(verdicts[0], verdicts[1], strict=True), ("A", "B")),
        detections=ag.detection_agreement(box_lists, iou_threshold, names, ("A", "B")),
        per_image=tuple(per_image),
    )
