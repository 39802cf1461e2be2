"""Training commands of the ``kanjian`` CLI: ``dataset import|export``, ``train``, ``model check``.

The dataset commands themselves live in :mod:`kanjian.appliance_api.cli.dataset_import`
and :mod:`kanjian.appliance_api.cli.dataset_export`.
Mounted by ``kanjian.appliance_api.cli.main`` through :func:`register`. Importing
this module is cheap: torch and Ultralytics are imported inside the commands.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.console import Console

from kanjian.appliance_api.cli.dataset_export import dataset_export_command
from kanjian.appliance_api.cli.dataset_import import dataset_import_command

console = Console(stderr=True, soft_wrap=True)  # whole lines: logs get grepped
out = Console(soft_wrap=True)

dataset_app = typer.Typer(help="Import and convert datasets.", no_args_is_help=True)
dataset_app.command("import")(dataset_import_command)
dataset_app.command("export")(dataset_export_command)

TaskOpt = Literal["detect", "segment", "classify"]


def train_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="data.yaml (detect/segment), folder (classify) or an imported anomaly "
            "dataset folder (anomaly: `kanjian dataset import SRC OUT --task anomaly`)"
        ),
    ],
    task: Annotated[str, typer.Option(help="detect, segment, classify or anomaly")] = "detect",
    model: Annotated[
        str,
        typer.Option(
            help="model YAML (yolo11n.yaml...), a local .pt, or a bundle folder with "
            "weights.pt (e.g. a station's data_dir/models/<sha>/) to continue from; default "
            "per task (anomaly: an earlier run's model.pt to continue from)"
        ),
    ] = "",
    epochs: Annotated[int, typer.Option(min=1)] = 100,
    imgsz: Annotated[
        int | None,
        typer.Option(min=32, help="square input size in pixels (default 640; anomaly 256)"),
    ] = None,
    batch: Annotated[int, typer.Option(min=1)] = 16,
    patience: Annotated[int, typer.Option(min=0, help="early stop after N flat epochs")] = 30,
    lr0: Annotated[float, typer.Option(min=0.0, help="initial learning rate")] = 0.01,
    optimizer: Annotated[str, typer.Option(help="auto, SGD, AdamW...")] = "auto",
    mosaic: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    close_mosaic: Annotated[int, typer.Option(min=0)] = 10,
    fliplr: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    flipud: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    cache: Annotated[bool, typer.Option(help="keep decoded images in RAM")] = False,
    workers: Annotated[int, typer.Option(min=0)] = 2,
    device: Annotated[
        str, typer.Option(help="auto (the GPU if torch sees one, else cpu), cpu, 0, 0,1 ...")
    ] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    fraction: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="share of the training split to use")
    ] = 1.0,
    nbs: Annotated[
        int | None,
        typer.Option(
            min=1, help="nominal batch (gradient accumulation); default = --batch: step each batch"
        ),
    ] = None,
    warmup_epochs: Annotated[float, typer.Option(min=0.0)] = 3.0,
    val_each_epoch: Annotated[
        bool, typer.Option(help="validate after every epoch (slow on CPU)")
    ] = True,
    time_hours: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="wall-time budget in hours; Ultralytics fits the epochs (and LR) to it"
        ),
    ] = None,
    project: Annotated[Path, typer.Option(help="runs folder")] = Path("runs/kanjian"),
    name: Annotated[str, typer.Option(help="run name (and bundle name)")] = "model",
    version: Annotated[str, typer.Option(help="bundle version")] = "1",
    bundle: Annotated[
        Path | None, typer.Option(help="bundle folder to write (default: RUN/bundle)")
    ] = None,
    conf: Annotated[float, typer.Option(min=0.0, max=1.0, help="bundle default conf")] = 0.25,
    iou: Annotated[float, typer.Option(min=0.0, max=1.0, help="bundle default NMS IoU")] = 0.7,
    fail_conf: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="bundle's verdict rule: a defect this sure fails"),
    ] = 0.5,
    review_conf: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="bundle's verdict rule: a defect this sure goes to review"
        ),
    ] = 0.25,
    pass_class: Annotated[
        list[str] | None,
        typer.Option(help="classify: a class that means a good part (repeat for several)"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an existing run folder and bundle folder")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="any other Ultralytics train argument, e.g. --set degrees=10 --set scale=0.3",
        ),
    ] = None,
    parity_conf: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="conf used by the parity gate")
    ] = 0.1,
    parity_images: Annotated[int, typer.Option(min=1, help="val images for parity")] = 50,
    min_parity: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.99,
    min_map50: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="accuracy gate on the ONNX model's val mAP50 (top-1 for classify); 0: report only",
        ),
    ] = 0.05,  # = kanjian.training.weak.DEFAULT_MIN_MAP50 (not imported: --help stays light)
    allow_weak: Annotated[
        bool,
        typer.Option(
            "--allow-weak",
            help="write the bundle of a weak model anyway (below --min-map50, parity with "
            "no detection to compare, a golden set with none), with warnings",
        ),
    ] = False,
    weights: Annotated[
        bool,
        typer.Option(
            "--weights/--no-weights",
            help="put the run's weights in the bundle (weights.pt, half the ONNX's size): "
            "a later run continues from it with --model BUNDLE",
        ),
    ] = True,
    golden_images: Annotated[int, typer.Option(min=1)] = 4,
    golden_conf: Annotated[
        float | None, typer.Option(help="golden set conf (default: --conf)")
    ] = None,
    names_zh: Annotated[
        str | None,
        typer.Option(
            "--names-zh",
            metavar="CLASS=NAME,...",
            help="Chinese names the screen shows for the classes, e.g. "
            "'scratches=划痕,crazing=龟裂' (written into the manifest's display_names)",
        ),
    ] = None,
    names_file: Annotated[
        Path | None,
        typer.Option(
            "--names",
            metavar="FILE",
            help="YAML/JSON file of display names per language: {zh: {scratches: 划痕}, "
            "en: {scratches: Scratch}}; --names-zh wins for the classes it names",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="anomaly: draem, draem-lite or patchknn (docs/anomaly.md)")
    ] = "draem",
    steps: Annotated[
        int | None, typer.Option(min=1, help="anomaly (draem): optimiser steps")
    ] = None,
    target_frr: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.5, help="anomaly: share of held-back good parts allowed to fail"
        ),
    ] = 0.01,
    review_frr: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.9, help="anomaly: share of held-back good parts sent to review or failed"
        ),
    ] = 0.05,
    bank_size: Annotated[
        int, typer.Option(min=16, help="anomaly (patchknn): patches in the memory bank")
    ] = 4096,
    eval_every: Annotated[
        int, typer.Option(min=1, help="anomaly (draem): calibration check every N steps")
    ] = 500,
    threads: Annotated[
        int | None, typer.Option(min=1, help="anomaly: torch CPU threads (default: torch's)")
    ] = None,
) -> None:
    """Train offline, export ONNX, gate it (parity, accuracy) and write a bundle.

    --task anomaly trains on the good images of an imported anomaly dataset (with
    --method, --steps or --time-hours, --batch, --imgsz, --seed, --target-frr,
    --review-frr), calibrates on its held-back images and writes a bundle whose
    manifest holds the thresholds and the validation metrics (docs/anomaly.md).

    No network is used: the model is built from a YAML (random weights) or a
    local .pt. After training, the ONNX file run by kanjian's own runtime must
    give the same detections as the PyTorch model in Ultralytics (--min-parity),
    and its mAP50 on the val split must reach --min-map50; a golden set with no
    detection is refused too (exit 1, no bundle) unless --allow-weak. Only then
    is the bundle (model.onnx, manifest.json, golden/) written.
    """
    from kanjian.inference.verdict import ClassRule, VerdictRules
    from kanjian.training.pipeline import PipelineOptions, run_pipeline
    from kanjian.training.train import TrainConfig

    if task == "anomaly":
        from kanjian.appliance_api.cli.train_anomaly import (
            DEFAULT_IMGSZ,
            AnomalyArgs,
            run_anomaly_command,
        )

        run_anomaly_command(
            AnomalyArgs(
                data=data,
                method=method,
                imgsz=imgsz or DEFAULT_IMGSZ,
                batch=batch,
                seed=seed,
                steps=steps,
                time_hours=time_hours,
                target_frr=target_frr,
                review_frr=review_frr,
                bank_size=bank_size,
                eval_every=eval_every,
                project=project,
                name=name,
                version=version,
                bundle=bundle,
                golden_images=golden_images,
                overwrite=overwrite,
                threads=threads,
                init=Path(model) if model else None,
            )
        )
        return
    if task not in ("detect", "segment", "classify"):
        raise typer.BadParameter(f"unknown task {task!r}", param_hint="--task")
    try:
        rules = VerdictRules(
            default=ClassRule(fail_confidence=fail_conf, review_confidence=review_conf),
            pass_classes=pass_class or [],
        )
    except ValueError as e:  # review above fail
        raise typer.BadParameter("--review-conf must be <= --fail-conf") from e
    from kanjian.appliance_api.cli.model_names import names_from_flags

    display_names = names_from_flags(names_zh, names_file)
    config = TrainConfig(
        data=data,
        task=cast(TaskOpt, task),
        model=model,
        epochs=epochs,
        imgsz=imgsz or 640,
        batch=batch,
        patience=patience,
        lr0=lr0,
        optimizer=optimizer,
        mosaic=mosaic,
        close_mosaic=close_mosaic,
        fliplr=fliplr,
        flipud=flipud,
        cache=cache,
        workers=workers,
        device=device,
        seed=seed,
        project=project,
        name=name,
        fraction=fraction,
        nbs=nbs,
        warmup_epochs=warmup_epochs,
        val_during_training=val_each_epoch,
        overwrite=overwrite,
        extra=_extra_args(set_ or [], time_hours),
    )
    options = PipelineOptions(
        name=name,
        version=version,
        bundle_dir=bundle,
        conf=conf,
        iou=iou,
        rules=rules,
        parity_conf=parity_conf,
        parity_images=parity_images,
        min_parity=min_parity,
        min_map50=min_map50,
        allow_weak=allow_weak,
        golden_images=golden_images,
        golden_conf=golden_conf,
        command=shlex.join(["kanjian", *sys.argv[1:]]),
        display_names=display_names,
        weights=weights,
    )
    try:
        outcome = run_pipeline(config, options, log=lambda s: console.print(s, markup=False))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if not outcome.passed:
        raise typer.Exit(1)
    out.print(str(outcome.bundle_dir))


def _extra_args(pairs: list[str], time_hours: float | None) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs (values read as YAML: 10, 0.3, true, [0, 1]) and --time-hours."""
    import yaml

    extra: dict[str, object] = {} if time_hours is None else {"time": time_hours}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--set")
        try:
            extra[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"{pair!r}: unreadable value: {e}", param_hint="--set") from e
    return extra


def register(app: typer.Typer) -> None:
    """Mount ``dataset``, ``train`` and ``model`` on the ``kanjian`` app."""
    app.add_typer(dataset_app, name="dataset")
    app.command("train")(train_command)
    from kanjian.appliance_api.cli.model import model_app

    app.add_typer(model_app, name="model")
