"""``kanjian train`` end to end: train, export, gates, bundle."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kanjian.inference import bundle as b
from kanjian.inference.display_names import DisplayNames, check_display_names
from kanjian.inference.golden_set import GoldenSet
from kanjian.inference.verdict import VerdictRules, unknown_classes
from kanjian.training.gates import ParityReport, accuracy_gate, parity_gate
from kanjian.training.records import IMAGE_SUFFIXES
from kanjian.training.train import (
    TrainConfig,
    TrainResult,
    check_extra,
    check_model_source,
    check_run_dir,
    config_dict,
    train,
)
from kanjian.training.weak import DEFAULT_MIN_MAP50, weak_before_bundle, weak_golden


@dataclass(frozen=True)
class PipelineOptions:
    """What to do after training.

    Attributes:
        name, version: bundle identity.
        bundle_dir: where to write the bundle; None: ``<run>/bundle``.
        conf, iou: the bundle's default thresholds.
        rules: the bundle's default verdict rules (None: kanjian's, fail 0.5 / review 0.25).
        parity_conf: conf both sides use in the parity gate (lower = more boxes compared).
        parity_images: how many val images the parity gate uses.
        min_parity: the parity gate (match rate).
        min_map50: the accuracy gate on the ONNX model's mAP50 (top-1 for classify);
            0 only reports (see :mod:`kanjian.training.weak` for the default).
        allow_weak: write the bundle even when the model is weak (below ``min_map50``,
            parity compared no detection, or a golden set with none), with warnings.
        golden_images, golden_conf: size and conf of the golden set (conf default: ``conf``).
        command: the command line, recorded in the manifest.
        display_names: {lang: {class_name: name}} for the manifest (checked against the
            dataset's classes before training).
        weights: put the run's checkpoint in the bundle as ``weights.pt`` (the next
            ``kanjian train --model <bundle>`` continues from it).
    """

    name: str
    version: str = "1"
    bundle_dir: Path | None = None
    conf: float = 0.25
    iou: float = 0.7
    rules: VerdictRules | None = None
    parity_conf: float = 0.1
    parity_images: int = 50
    min_parity: float = 0.99
    min_map50: float = DEFAULT_MIN_MAP50
    allow_weak: bool = False
    golden_images: int = 4
    golden_conf: float | None = None
    command: str = ""
    display_names: DisplayNames = field(default_factory=dict)
    weights: bool = True


@dataclass(frozen=True)
class PipelineOutcome:
    """Result of :func:`run_pipeline`.

    Attributes:
        passed: both gates held and the bundle was written.
        bundle_dir: the bundle (None when a gate failed).
        onnx: the exported file (kept in the run folder either way).
        parity: the parity report.
        metrics: accuracy of the ONNX model on the val split.
        train: the training result.
        failures: why it did not pass.
    """

    passed: bool
    bundle_dir: Path | None
    onnx: Path
    parity: ParityReport
    metrics: dict[str, float]
    train: TrainResult
    failures: tuple[str, ...]


def val_images(data: Path, task: str) -> list[Path]:
    """Images of the val split: ``data/val/*/*`` (classify) or ``data.yaml``'s ``val``."""
    if task == "classify":
        root = data if data.is_dir() else data.parent
        return sorted(p for p in (root / "val").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    from kanjian.training.layout import training_root
    from kanjian.training.yolo_source import _image_files

    raw = yaml.safe_load(data.read_text(encoding="utf-8"))
    return sorted(_image_files(training_root(data, raw), raw["val"]))


def spread(items: list[Path], n: int) -> list[Path]:
    """``n`` items evenly spaced over ``items`` (all when fewer).

    Val images sorted by name come grouped by class in many datasets (NEU-DET:
    ``crazing_*`` first); the first ``n`` would test one class only.
    """
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def dataset_class_names(data: Path, task: str) -> list[str]:
    """Class names by id: ``data.yaml``'s ``names``, or a classify dataset's train folders."""
    if task == "classify":
        root = data if data.is_dir() else data.parent
        return sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    from kanjian.training.yolo_source import _names

    return list(_names(yaml.safe_load(data.read_text(encoding="utf-8")).get("names") or []))


def run_pipeline(
    config: TrainConfig, options: PipelineOptions, log: Callable[[str], None] = print
) -> PipelineOutcome:
    """Train, export ONNX, run the parity and accuracy gates, write the bundle if both hold.

    ``config.model`` may be a bundle folder: training continues from its ``weights.pt``
    (:func:`kanjian.training.bundle_weights.weights_from_bundle`), recorded in the new
    manifest's ``training.started_from``.
    """
    from kanjian.training.bundle_weights import BundleStart, check_classes, weights_from_bundle
    from kanjian.training.export import export_onnx
    from kanjian.training.package import data_summary_for, write_bundle

    started: dict[str, Any] = {}
    start: BundleStart | None = None
    if config.model and Path(config.model).is_dir():
        start = weights_from_bundle(Path(config.model), config.task)
        config = replace(config, model=str(start.weights))
        started = {"started_from": start.provenance()}
        m = start.manifest
        log(f"continuing from {start.bundle}: {m.name} {m.version}'s {start.weights.name}")
    check_model_source(config.resolved_model())  # before anything else: never download
    if not config.data.exists():
        raise FileNotFoundError(f"{config.data}: dataset not found")
    # refuse to replace earlier work, or a misspelt argument, now: not after hours of training
    check_run_dir(config)
    check_extra(config.extra)
    bd = options.bundle_dir
    if bd is not None and bd.exists() and any(bd.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{bd}: a bundle is there; choose another --bundle or --overwrite")
    summary, data_sha = data_summary_for(config.data)  # read before training, not after
    names = dataset_class_names(config.data, config.task)
    note = None if start is None else check_classes(start, names)
    if note is not None:
        log(note)
    missing = unknown_classes(options.rules, names)
    if missing:  # a misspelt class would silently fall back to the default rule
        raise ValueError(
            f"rules name classes the dataset lacks: {', '.join(missing)}; "
            f"its classes are: {', '.join(names)}"
        )
    # a misspelt class would keep its id on the screen: say so now, not after training
    check_display_names(options.display_names, names)
    images = val_images(config.data, config.task)
    if not images:
        raise ValueError(f"{config.data}: the val split has no images; gates need some")
    result = train(config)
    log(f"trained {result.epochs_run} epochs in {result.duration_s:.0f} s on {result.hardware}")
    onnx = export_onnx(result.weights, result.weights.with_suffix(".onnx"), config.imgsz)
    log(f"exported {onnx}")
    t0 = time.perf_counter()
    parity = parity_gate(
        result.weights,
        onnx,
        spread(images, options.parity_images),
        imgsz=config.imgsz,
        conf=options.parity_conf,
        iou=options.iou,
        min_rate=options.min_parity,
    )
    log(parity.line())
    for line in parity.mismatches:
        log(f"  {line}")
    metrics = accuracy_gate(onnx, config.data, task=config.task, imgsz=config.imgsz)
    log("accuracy (ONNX, val split): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    log(f"gates took {time.perf_counter() - t0:.0f} s")
    failures = []
    if not parity.passed:
        failures.append(parity.line())
    weak = weak_before_bundle(config.task, metrics, options.min_map50, parity)
    if options.allow_weak:
        for w in weak:
            log(f"WARNING (--allow-weak): {w}")
    else:
        failures += weak
    if failures:
        if weak and not options.allow_weak:
            log("a weak model writes no bundle; --allow-weak writes it anyway (smoke runs)")
        for f in failures:
            log(f)
        log(f"no bundle written; the ONNX file stays at {onnx}")
        return PipelineOutcome(False, None, onnx, parity, metrics, result, tuple(failures))

    bundle_dir = options.bundle_dir or result.run_dir / "bundle"
    # written beside, moved into place once the golden set holds: a refused bundle
    # never replaces the one an --overwrite run would have replaced
    staging = bundle_dir.with_name(f".{bundle_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    all_metrics = {**metrics, "parity_match_rate": parity.match_rate}
    all_metrics |= {f"train_{k}": v for k, v in result.metrics.items()}
    write_bundle(
        onnx,
        staging,
        name=options.name,
        version=options.version,
        thresholds=b.Thresholds(conf=options.conf, iou=options.iou),
        rules=options.rules,
        metrics=all_metrics,
        training=b.TrainingInfo(
            command=options.command,
            data_summary=summary,
            data_sha256=data_sha,
            hardware=result.hardware,
            duration_s=round(result.duration_s, 1),
            # TrainingInfo allows extra fields; the values used, not "auto" / None
            config=config_dict(config)
            | {"device": result.device, "nbs": config.nbs or config.batch},
            epochs_run=result.epochs_run,
            **started,
        ),
        golden_candidates=images,
        golden_count=options.golden_images,
        golden_conf=options.golden_conf,
        display_names=options.display_names,
        weights=result.weights if options.weights else None,
    )
    golden = GoldenSet.model_validate_json(
        (staging / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).read_text(encoding="utf-8")
    )
    dets = sum(len(g.detections) for g in golden.images)
    log(f"golden set: {len(golden.images)} images, {dets} detections at conf {golden.conf}")
    empty = weak_golden(config.task, golden)
    if empty and not options.allow_weak:
        shutil.rmtree(staging)
        log(empty)
        log(f"no bundle written; the ONNX file stays at {onnx}")
        return PipelineOutcome(False, None, onnx, parity, all_metrics, result, (empty,))
    if empty:
        log(f"WARNING (--allow-weak): {empty}")
    if bundle_dir.exists():  # empty, or --overwrite (checked before training)
        shutil.rmtree(bundle_dir)
    staging.rename(bundle_dir)
    log(f"bundle written: {bundle_dir}")
    return PipelineOutcome(True, bundle_dir, onnx, parity, all_metrics, result, ())
