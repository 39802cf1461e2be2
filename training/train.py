"""Train a YOLO model with Ultralytics, offline, from a model YAML or a local ``.pt``."""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kanjian.training._env import ultralytics_module

Task = Literal["detect", "segment", "classify"]

#: the model each task starts from when none is given (random weights: nothing is downloaded)
DEFAULT_MODELS: dict[str, str] = {
    "detect": "yolo11n.yaml",
    "segment": "yolo11n-seg.yaml",
    "classify": "yolo11n-cls.yaml",
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters, with defaults for small industrial datasets (hundreds of images).

    Attributes:
        data: ``data.yaml`` (detect, segment) or the dataset folder (classify).
        task: what the model does.
        model: a model YAML name/path (``yolo11n.yaml``) or a local ``.pt`` to start from.
        epochs: passes over the training split.
        imgsz: square training size in pixels (multiple of 32).
        batch: images per step.
        patience: stop after this many epochs without a better val fitness.
        lr0: initial learning rate.
        optimizer: Ultralytics optimizer name (``auto``, ``SGD``, ``AdamW``...).
        mosaic, close_mosaic: mosaic probability, and the last epochs trained without it.
        fliplr, flipud, degrees: augmentation; surfaces often allow flips both ways.
        cache: keep decoded images in RAM (fast when they fit).
        workers: dataloader worker processes (0: load in the main process).
        device: ``cpu``, ``0``, ``0,1``...
        seed: for weights, augmentation and data order.
        project, name: the run folder is ``project/name``.
        val_during_training: validate after each epoch (costs time on CPU).
        fraction: share of the training split used (a quick first model).
        nbs: nominal batch: gradients accumulate over ``nbs / batch`` batches per step;
            ``nbs = batch`` steps every batch (more steps for a tiny dataset).
        warmup_epochs: learning-rate warm-up.
        extra: any other Ultralytics train argument, passed through.
    """

    data: Path
    task: Task = "detect"
    model: str = ""
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    patience: int = 30
    lr0: float = 0.01
    optimizer: str = "auto"
    mosaic: float = 1.0
    close_mosaic: int = 10
    fliplr: float = 0.5
    flipud: float = 0.0
    degrees: float = 0.0
    cache: bool = False
    workers: int = 2
    device: str = "cpu"
    seed: int = 0
    project: Path = Path("runs/kanjian")
    name: str = "train"
    val_during_training: bool = True
    fraction: float = 1.0
    nbs: int = 64
    warmup_epochs: float = 3.0
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_model(self) -> str:
        """The model to build or load: ``model`` or the task's default YAML."""
        return self.model or DEFAULT_MODELS[self.task]


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind.

    Attributes:
        weights: best checkpoint (``.pt``), last if no val ran.
        run_dir: Ultralytics' run folder (args.yaml, results.csv, weights/).
        duration_s: wall time of ``train()`` in seconds.
        epochs_run: epochs completed (less than asked after early stopping).
        metrics: Ultralytics' final val metrics, e.g. ``metrics/mAP50(B)``.
        hardware: one line: CPU/GPU model, core count, torch version.
    """

    weights: Path
    run_dir: Path
    duration_s: float
    epochs_run: int
    metrics: dict[str, float]
    hardware: str


def hardware_line(device: str = "cpu") -> str:
    """Describe where training runs, e.g. ``'x86_64 Intel(R) Xeon(R) ..., 2 cores, torch 2.x'``."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    if device != "cpu" and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def check_model_source(model: str) -> None:
    """Refuse anything that would make Ultralytics download weights.

    A ``.pt`` must be a local file; a YAML may be a local file or one of the
    model YAMLs packaged with Ultralytics (``yolo11n.yaml``...).

    Raises:
        FileNotFoundError: naming the missing ``.pt``.
        ValueError: for a model that is neither ``.pt`` nor ``.yaml``.
    """
    suffix = Path(model).suffix.lower()
    if suffix == ".pt":
        if not Path(model).is_file():
            raise FileNotFoundError(
                f"{model}: no such local weights file (pretrained weights are never downloaded; "
                "give a path to a .pt, or a model YAML such as yolo11n.yaml to train from scratch)"
            )
    elif suffix not in (".yaml", ".yml"):
        raise ValueError(f"{model}: model must be a .yaml model definition or a local .pt file")


def train(config: TrainConfig) -> TrainResult:
    """Train with Ultralytics, offline, on CPU or GPU; progress goes to the terminal.

    Raises:
        FileNotFoundError, ValueError: bad model or data (see :func:`check_model_source`).
    """
    model_src = config.resolved_model()
    check_model_source(model_src)
    if not config.data.exists():
        raise FileNotFoundError(f"{config.data}: dataset not found")
    ultralytics = ultralytics_module()
    model = ultralytics.YOLO(model_src, task=config.task)
    run_dir = (config.project / config.name).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)  # exist_ok would mix old and new results
    args: dict[str, Any] = {
        "data": str(config.data),
        "epochs": config.epochs,
        "imgsz": config.imgsz,
        "batch": config.batch,
        "patience": config.patience,
        "lr0": config.lr0,
        "optimizer": config.optimizer,
        "mosaic": config.mosaic,
        "close_mosaic": config.close_mosaic,
        "fliplr": config.fliplr,
        "flipud": config.flipud,
        "degrees": config.degrees,
        "cache": "ram" if config.cache else False,
        "workers": config.workers,
        "device": config.device,
        "seed": config.seed,
        "deterministic": True,
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
        "val": config.val_during_training,
        "fraction": config.fraction,
        "nbs": config.nbs,
        "warmup_epochs": config.warmup_epochs,
        "plots": False,  # plots fetch fonts and cost minutes on CPU
        "amp": config.device != "cpu",  # the AMP check downloads yolo11n.pt; CPU has no AMP
        "verbose": True,
        **config.extra,
    }
    start = time.perf_counter()
    model.train(**args)
    duration = time.perf_counter() - start
    trainer = model.trainer
    best = Path(trainer.best)
    weights = best if best.is_file() else Path(trainer.last)
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    return TrainResult(
        weights=weights,
        run_dir=Path(trainer.save_dir),
        duration_s=duration,
        epochs_run=int(trainer.epoch) + 1,
        metrics=metrics,
        hardware=hardware_line(config.device),
    )


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """``config`` as plain JSON-able values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
