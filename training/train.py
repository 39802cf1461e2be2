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
        device: ``auto`` (the first CUDA GPU if torch sees one, else the CPU), ``cpu``,
            ``0``, ``0,1``...
        seed: for weights, augmentation and data order.
        project, name: the run folder is ``project/name``.
        val_during_training: validate after each epoch (costs time on CPU).
        fraction: share of the training split used (a quick first model).
        nbs: nominal batch: gradients accumulate over ``nbs / batch`` batches per step;
            ``None`` (= ``batch``) steps every batch: more steps for a small dataset
            (Ultralytics' own default, 64, takes one step per 4 batches of 16).
        warmup_epochs: learning-rate warm-up.
        overwrite: replace an existing run folder ``project/name``; without it such a
            folder (an earlier run's weights) stops training before it starts.
        extra: any other Ultralytics train argument, passed through (``--set k=v``);
            checked by :func:`check_extra` before training.
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
    device: str = "auto"
    seed: int = 0
    project: Path = Path("runs/kanjian")
    name: str = "train"
    val_during_training: bool = True
    fraction: float = 1.0
    nbs: int | None = None
    warmup_epochs: float = 3.0
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_model(self) -> str:
        """The model to build or load: ``model`` or the task's default YAML."""
        return self.model or DEFAULT_MODELS[self.task]

    def run_dir(self) -> Path:
        """Ultralytics' run folder for this config (absolute)."""
        return (self.project / self.name).resolve()


def resolve_device(device: str) -> str:
    """``auto`` -> ``"0"`` when torch sees a CUDA GPU, else ``"cpu"``; others unchanged."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


#: train arguments kanjian decides itself (where the run goes, what it trains on, the
#: offline switches) or that have their own ``kanjian train`` option: ``--set`` for one
#: of them would silently fight the option (e.g. ``batch`` without ``nbs``)
_MANAGED = frozenset(
    {"data", "model", "project", "name", "exist_ok", "mode", "task", "resume", "amp", "plots",
     "deterministic", "val", "epochs", "imgsz", "batch", "patience", "lr0", "optimizer",
     "mosaic", "close_mosaic", "fliplr", "flipud", "cache", "workers", "device", "seed",
     "fraction", "nbs", "warmup_epochs"}
)  # fmt: skip


def check_extra(extra: dict[str, Any]) -> None:
    """Refuse pass-through arguments Ultralytics does not know or kanjian manages.

    Raises:
        ValueError: naming the key (and the close names Ultralytics has).
    """
    import difflib

    ultralytics_module()
    from ultralytics.utils import DEFAULT_CFG_DICT

    for key in extra:
        if key in _MANAGED:
            raise ValueError(
                f"--set {key}=...: kanjian sets {key} itself; use its own option "
                f"(--{key.replace('_', '-')}) if it has one"
            )
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, list(DEFAULT_CFG_DICT), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {key}=...: not an Ultralytics train argument{hint}")


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to train over an earlier run's folder unless ``overwrite`` is set.

    Raises:
        FileExistsError: naming the folder and the two ways out.
    """
    run_dir = config.run_dir()
    if run_dir.exists() and not config.overwrite:
        raise FileExistsError(
            f"{run_dir}: an earlier run is there (its weights would be deleted); "
            "choose another --name or --project, or pass --overwrite"
        )


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
        device: the device it ran on (``auto`` resolved).
    """

    weights: Path
    run_dir: Path
    duration_s: float
    epochs_run: int
    metrics: dict[str, float]
    hardware: str
    device: str = "cpu"


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
    check_run_dir(config)
    device = resolve_device(config.device)
    ultralytics = ultralytics_module()
    model = ultralytics.YOLO(model_src, task=config.task)
    run_dir = config.run_dir()
    if run_dir.exists():  # --overwrite: exist_ok alone would mix old and new results
        shutil.rmtree(run_dir)
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
        "device": device,
        "seed": config.seed,
        "deterministic": True,
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
        "val": config.val_during_training,
        "fraction": config.fraction,
        "nbs": config.nbs or config.batch,
        "warmup_epochs": config.warmup_epochs,
        "plots": False,  # plots fetch fonts and cost minutes on CPU
        # CPU has no AMP; on a GPU, ultralytics_module() replaced the AMP check (which
        # downloads yolo26n.pt) with one that needs no file
        "amp": device != "cpu",
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
        hardware=hardware_line(device),
        device=device,
    )


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """``config`` as plain JSON-able values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
