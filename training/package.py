"""Write a model bundle: ``model.onnx``, ``manifest.json`` and a golden set.

The golden set holds a few validation images with the detections the station's
own runtime (:mod:`kanjian.inference`, CPU) gives on them; a station replays it
before activating the bundle (``kanjian.inference.golden.check_bundle``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from kanjian.inference import bundle as b
from kanjian.training.checks import read_bgr

#: golden images are preferably chosen so no detection lies this close to the golden
#: ``conf``: such a box could cross the threshold on another machine (another execution
#: provider moves fp32 scores by ~1e-4) and fail a good bundle
_CONF_MARGIN = 0.005


def _golden_entry(model: object, path: Path, conf: float, iou: float) -> tuple[b.GoldenImage, bool]:
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
        return b.GoldenImage(file=path.name, top_class=top, probs=probs), stable
    low = model.predict(image, conf=max(conf - _CONF_MARGIN, 0.0), iou=iou).detections
    dets = low.select(low.confidence >= conf)
    stable = not bool(
        ((low.confidence > conf - _CONF_MARGIN) & (low.confidence < conf + _CONF_MARGIN)).any()
    )
    entry = b.GoldenImage(
        file=path.name,
        detections=[
            b.GoldenDetection(
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


def write_golden(
    bundle_dir: Path, candidates: Sequence[Path], *, conf: float, iou: float, count: int = 4
) -> b.GoldenSet:
    """Pick ``count`` golden images from ``candidates`` and record their expected output.

    Images with detections come first; among them, images with no score within
    0.005 of ``conf`` first, then the most detections. The bundle's ``model.onnx`` must
    already be in place.
    """
    from kanjian.inference.model import load_model

    model = load_model(bundle_dir / b.MODEL_NAME, providers=("cpu",))
    scored = []
    for i, path in enumerate(candidates):
        entry, stable = _golden_entry(model, path, conf, iou)
        n = len(entry.detections) if entry.probs is None else 1
        scored.append((n == 0, not stable, -n, i, path, entry))
    scored.sort(key=lambda t: t[:4])
    chosen = scored[:count]
    gdir = bundle_dir / b.GOLDEN_DIR
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    images = []
    for *_, path, entry in sorted(chosen, key=lambda t: t[4].name):
        shutil.copyfile(path, gdir / path.name)
        images.append(entry)
    golden = b.GoldenSet(conf=conf, iou=iou, images=images)
    (gdir / b.GOLDEN_EXPECTED).write_text(golden.model_dump_json(indent=2) + "\n", encoding="utf-8")
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
) -> b.BundleManifest:
    """Copy ``onnx`` into ``bundle_dir``, write its manifest and golden set.

    Task, class names, input size and stride come from the metadata Ultralytics
    wrote into the ONNX file.

    Args:
        golden_conf: conf threshold of the golden set; default ``thresholds.conf``.
            A weak model needs a lower one to have detections worth checking.
    """
    from kanjian.inference.model import load_model

    bundle_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_dir / b.MODEL_NAME
    if onnx.resolve() != target.resolve():
        shutil.copyfile(onnx, target)
    info = load_model(target, providers=("cpu",)).info
    manifest = b.BundleManifest(
        name=name,
        version=version,
        task=info.task,
        class_names=list(info.class_names),
        imgsz=info.imgsz,
        stride=info.stride,
        thresholds=thresholds,
        onnx_sha256=b.sha256_file(target),
        metrics=metrics,
        training=training,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    b.write_manifest(bundle_dir, manifest)
    write_golden(
        bundle_dir,
        golden_candidates,
        conf=thresholds.conf if golden_conf is None else golden_conf,
        iou=thresholds.iou,
        count=golden_count,
    )
    return manifest


def data_summary_for(data: Path) -> tuple[dict[str, object], str]:
    """The import summary of a dataset (``summary.json``) and its content hash."""
    from kanjian.training.layout import SUMMARY_NAME, dataset_sha256

    root = data.parent if data.is_file() else data
    summary_path = root / SUMMARY_NAME
    summary: dict[str, object] = {}
    if summary_path.is_file():
        raw = json.loads(summary_path.read_text(encoding="utf-8"))
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
        summary = {k: raw[k] for k in keep if k in raw}
    return summary, dataset_sha256(root)
