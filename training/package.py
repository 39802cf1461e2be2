"""Write a model bundle: ``model.onnx``, ``manifest.json`` and a golden set.

The golden set holds a few validation images with the detections the station's
own runtime (:mod:`kanjian.inference`, CPU) gives on them (an anomaly model's: raw
scores and region counts, :mod:`kanjian.training.anomaly_golden`); a station replays it
before activating the bundle (``kanjian.inference.golden.check_bundle``).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from kanjian.inference import bundle as b
from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.display_names import DisplayNames
from kanjian.inference.golden_set import GoldenDetection, GoldenImage, GoldenSet
from kanjian.inference.verdict import VerdictRules
from kanjian.training.checks import read_bgr

#: golden images are preferably chosen so no detection lies this close to the golden
#: ``conf``: such a box could cross the threshold on another machine (another execution
#: provider moves fp32 scores by ~1e-4) and fail a good bundle
_CONF_MARGIN = 0.005


def _golden_entry(model: object, path: Path, conf: float, iou: float) -> tuple[GoldenImage, bool]:
    """Expected output for one image, and whether it is far from the thresholds."""
    from kanjian.inference.model import OnnxModel

    assert isinstance(model, OnnxModel)
    image = read_bgr(path)
    if model.info.task == "classify":
        pred = model.predict(image)
        assert pred.probs is not None
        probs = [float(p) for p in pred.probs]
        ranked = sorted(probs, reverse=True)
        stable = len(ranked) < 2 or ranked[0] - ranked[1] > _CONF_MARGIN
        top = max(range(len(probs)), key=probs.__getitem__)
        return GoldenImage(file=path.name, top_class=top, probs=probs), stable
    low = model.predict(image, conf=max(conf - _CONF_MARGIN, 0.0), iou=iou).detections
    dets = low.select(low.confidence >= conf)
    stable = not bool(
        ((low.confidence > conf - _CONF_MARGIN) & (low.confidence < conf + _CONF_MARGIN)).any()
    )
    entry = GoldenImage(
        file=path.name,
        detections=[
            GoldenDetection(
                xyxy=(float(x1), float(y1), float(x2), float(y2)),
                confidence=float(c),
                class_id=int(k),
            )
            for (x1, y1, x2, y2), c, k in zip(
                dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), strict=True
            )
        ],
    )
    return entry, stable


def _lower_confs(conf: float) -> list[float]:
    """``conf``, then halved down to 0.01: the confs a golden set may fall back to."""
    confs = [conf]
    while confs[-1] / 2 >= 0.01:
        confs.append(round(confs[-1] / 2, 6))
    return confs


def write_golden(
    bundle_dir: Path, candidates: Sequence[Path], *, conf: float, iou: float, count: int = 4
) -> GoldenSet:
    """Pick ``count`` golden images from ``candidates`` and record their expected output.

    Images with detections come first; among them, images with no score within
    0.005 of ``conf`` first, then the most detections. When no candidate has a
    detection at ``conf``, ``conf`` is halved (down to 0.01) until one has: the set's
    own ``conf`` records the one used. The bundle's ``model.onnx`` must already be in
    place.
    """
    from kanjian.inference.model import load_model

    model = load_model(bundle_dir / b.MODEL_NAME, providers=("cpu",))
    # a golden set without a single detection would pass any weights: lower the conf
    # until the chosen images hold some (a weak model, or a high --conf)
    for golden_conf in _lower_confs(conf):
        scored = []
        for i, path in enumerate(candidates):
            entry, stable = _golden_entry(model, path, golden_conf, iou)
            n = len(entry.detections) if entry.probs is None else 1
            scored.append((n == 0, not stable, -n, i, path, entry))
        scored.sort(key=lambda t: t[:4])
        chosen = scored[:count]
        if any(not t[0] for t in chosen):
            break
    conf = golden_conf
    gdir = bundle_dir / b.GOLDEN_DIR
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    images = []
    for *_, path, entry in sorted(chosen, key=lambda t: t[4].name):
        shutil.copyfile(path, gdir / path.name)
        images.append(entry)
    golden = GoldenSet(conf=conf, iou=iou, images=images)
    (gdir / b.GOLDEN_EXPECTED).write_text(golden.dump_json() + "\n", encoding="utf-8")
    return golden


def write_bundle(
    onnx: Path,
    bundle_dir: Path,
    *,
    name: str,
    version: str,
    thresholds: b.Thresholds,
    metrics: dict[str, float],
    training: b.TrainingInfo,
    golden_candidates: Sequence[Path],
    golden_count: int = 4,
    golden_conf: float | None = None,
    rules: VerdictRules | None = None,
    display_names: DisplayNames | None = None,
    calibration: AnomalyCalibration | None = None,
    weights: Path | None = None,
) -> b.BundleManifest:
    """Copy ``onnx`` into ``bundle_dir``, write its manifest and golden set.

    Task, class names, input size and stride come from the metadata written into the
    ONNX file (by Ultralytics, or by kanjian's anomaly training).

    Args:
        golden_candidates: images to choose the golden set from. Anomaly models: give
            good and defective ones (e.g. the calibration split); the lowest- and
            highest-scoring are kept (:mod:`kanjian.training.anomaly_golden`).
        golden_conf: conf threshold of the golden set; default ``thresholds.conf``.
            A weak model needs a lower one to have detections worth checking.
            Not used by anomaly models.
        rules: default verdict rules for the manifest (None: the station's defaults).
        display_names: {lang: {class_name: name}} for the screen (None: none).
        calibration: anomaly models: thresholds in the model's raw units, written into
            the manifest (None: its raw outputs are taken as normalised already).
        weights: the run's checkpoint, copied in as ``weights.pt`` and recorded in the
            manifest's ``training.weights`` so a later run can continue from the bundle
            (:mod:`kanjian.training.bundle_weights`); None: the bundle has none.

    Raises:
        ValueError: a calibration for a model that is not an anomaly model.
        FileNotFoundError: ``weights`` is not a file.
    """
    from kanjian.inference.model import load_model

    bundle_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_dir / b.MODEL_NAME
    if onnx.resolve() != target.resolve():
        shutil.copyfile(onnx, target)
    info = load_model(target, providers=("cpu",)).info
    if calibration is not None and info.task != "anomaly":
        raise ValueError(
            f"{onnx}: a calibration is for anomaly models; this one's task is {info.task!r}"
        )
    if weights is not None:
        from kanjian.training.bundle_weights import copy_weights

        training = training.model_copy(update={"weights": copy_weights(weights, bundle_dir)})
    manifest = b.BundleManifest(
        name=name,
        version=version,
        task=info.task,
        class_names=list(info.class_names),
        imgsz=info.imgsz,
        stride=info.stride,
        thresholds=thresholds,
        rules=rules,
        onnx_sha256=b.sha256_file(target),
        metrics=metrics,
        training=training,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        display_names=display_names or {},
        calibration=calibration,
    )
    b.write_manifest(bundle_dir, manifest)
    if info.task == "anomaly":
        from kanjian.training.anomaly_golden import write_anomaly_golden

        write_anomaly_golden(bundle_dir, golden_candidates, count=golden_count)
        return manifest
    write_golden(
        bundle_dir,
        golden_candidates,
        conf=thresholds.conf if golden_conf is None else golden_conf,
        iou=thresholds.iou,
        count=golden_count,
    )
    return manifest


def data_summary_for(data: Path) -> tuple[dict[str, object], str]:
    """The summary of a dataset and its content hash.

    A dataset made by ``kanjian dataset import`` has its summary in
    ``summary.json``; for any other (a ``data.yaml`` written by hand or by another
    tool) the images per split and the boxes per class are counted here. The hash
    covers the folder the images are read from: ``data.yaml``'s ``path:`` when it
    points elsewhere (resolved as Ultralytics does: :func:`layout.training_root`).
    Unreadable label files are counted, never fatal: this runs after training.
    """
    from kanjian.training.layout import SUMMARY_NAME, dataset_sha256, training_root

    root = data
    raw: dict[str, Any] = {}
    candidates = [data / SUMMARY_NAME]  # classify: the dataset folder
    if data.is_file():
        raw = yaml.safe_load(data.read_text(encoding="utf-8")) or {}
        root = training_root(data, raw)
        candidates = [root / SUMMARY_NAME, data.parent / SUMMARY_NAME]
    summary_path = next((p for p in candidates if p.is_file()), None)
    if summary_path is None:
        return _count_summary(data, root, raw), dataset_sha256(root)
    full = json.loads(summary_path.read_text(encoding="utf-8"))
    keep = (
        "source_format",
        "task",
        "class_names",
        "images",
        "boxes_per_class",
        "images_without_labels",
        "problem_counts",
        "seed",
        "val_fraction",
    )
    return {k: full[k] for k in keep if k in full}, dataset_sha256(root)


def _count_summary(data: Path, root: Path, raw: dict[str, Any]) -> dict[str, object]:
    """Images per split, boxes per class and unlabelled images, counted from the files."""
    from kanjian.training.records import IMAGE_SUFFIXES
    from kanjian.training.yolo_source import _image_files, _label_path, _names

    if not data.is_file():  # classify: root/<split>/<class>/<image>
        per_split = {
            split.name: sum(1 for q in split.glob("*/*") if q.suffix.lower() in IMAGE_SUFFIXES)
            for split in sorted(root.iterdir())
            if split.is_dir()
        }
        return {"task": "classify", "images": per_split}
    names = _names(raw.get("names", []))
    boxes: Counter[str] = Counter()
    images: dict[str, int] = {}
    unlabelled = unreadable = 0
    for split in ("train", "val", "test"):
        if split not in raw:
            continue
        files = _image_files(root, raw[split])
        images[split] = len(files)
        for image in files:
            label = _label_path(image)
            try:
                rows = label.read_text(encoding="utf-8").split("\n") if label.is_file() else []
                ids = [int(float(r.split()[0])) for r in rows if r.strip()]
            except (OSError, UnicodeDecodeError, ValueError):
                unreadable += 1  # Ultralytics skips such a file too
                continue
            unlabelled += not ids
            for i in ids:
                boxes[names[i] if 0 <= i < len(names) else str(i)] += 1
    return {
        "source_format": "yolo (counted from the files)",
        "class_names": list(names),
        "images": images,
        "boxes_per_class": dict(sorted(boxes.items())),
        "images_without_labels": unlabelled,
        "unreadable_label_files": unreadable,
    }
