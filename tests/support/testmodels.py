"""Small real models for the test suite, trained by our own code on NEU-DET images.

The suite needs real ONNX files exported by :mod:`kanjian.training` (not mocks),
but training from scratch costs minutes on a CPU, so results are cached under
``<cache_root>/<key>/`` where ``key`` names the task and the Ultralytics version and
hashes the model-making training modules, this file, the Ultralytics and torch
versions, the recipe and the chosen images. A developer's
rerun is instant; a clean clone trains afresh. A file lock keeps parallel test
runs from training the same model twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from kanjian.training.layout import Task

CLASS_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
_INFO = "info.json"
#: the training modules whose code changes what a test model is (not the CLI, gates or
#: bundling); this file is hashed too
_MODEL_MAKING_MODULES = (
    "_env.py",
    "checks.py",
    "export.py",
    "importer.py",
    "layout.py",
    "records.py",
    "train.py",
    "voc.py",
)


@dataclass(frozen=True)
class Recipe:
    """How a test model is made.

    Attributes:
        task: detect, segment (masks are the ellipses inscribed in the VOC boxes) or
            classify (each image's class is its most frequent box class).
        per_class: NEU-DET images taken per class (the lowest-numbered ones).
        epochs, imgsz, batch, lr0, optimizer: training settings. Every batch is an
            optimizer step (``nbs = batch``): from scratch on ~60 images the score
            logits need many steps before anything passes conf 0.05.
        val_fraction, seed: the split.
    """

    task: Task
    per_class: int
    epochs: int
    imgsz: int
    batch: int = 8
    lr0: float = 0.003
    optimizer: str = "AdamW"
    val_fraction: float = 0.25
    seed: int = 0


RECIPES: dict[str, Recipe] = {
    "detect": Recipe("detect", per_class=14, epochs=30, imgsz=256),
    "segment": Recipe("segment", per_class=10, epochs=30, imgsz=256),
    "classify": Recipe("classify", per_class=12, epochs=10, imgsz=128),
}


@dataclass(frozen=True)
class TrainedModel:
    """A model trained and exported by :mod:`kanjian.training` for tests.

    Attributes:
        task: detect, segment or classify.
        pt: the Ultralytics checkpoint.
        onnx: the exported ONNX file (static ``(1, 3, imgsz, imgsz)`` input).
        data_dir: the YOLO dataset written by ``import_dataset``.
        data: what Ultralytics trains on: ``data.yaml`` (detect, segment) or ``data_dir``.
        val_images: the validation split's images, sorted.
        class_names: index = class id.
        imgsz: training and export size in pixels.
    """

    task: Task
    pt: Path
    onnx: Path
    data_dir: Path
    data: Path
    val_images: tuple[Path, ...]
    class_names: tuple[str, ...]
    imgsz: int


def _pick_images(neu_det: Path, per_class: int) -> list[str]:
    """The ``per_class`` lowest-numbered images of each class that have annotations."""
    chosen: list[str] = []
    for name in CLASS_NAMES:
        stems = [
            p.stem
            for p in (neu_det / "images").glob(f"{name}_*.jpg")
            if (neu_det / "annotations" / f"{p.stem}.xml").is_file()
        ]
        stems.sort(key=lambda s: int(s.rsplit("_", 1)[1]))
        if len(stems) < per_class:
            raise FileNotFoundError(f"{neu_det}: only {len(stems)} {name} images")
        chosen.extend(stems[:per_class])
    return chosen


def cache_key(recipe: Recipe, neu_det: Path) -> str:
    """Hash of everything that changes the model: our source, library versions, recipe, data."""
    import torch
    import ultralytics

    import kanjian.training

    training = Path(kanjian.training.__file__).parent
    h = hashlib.sha256()
    for src in (*(training / name for name in _MODEL_MAKING_MODULES), Path(__file__)):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    h.update(f"{ultralytics.__version__}|{torch.__version__}".encode())
    h.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    for stem in _pick_images(neu_det, recipe.per_class):
        h.update(stem.encode())
        h.update((neu_det / "images" / f"{stem}.jpg").read_bytes())
        h.update((neu_det / "annotations" / f"{stem}.xml").read_bytes())
    # the Ultralytics version is in the name too, so a moved pin shows which folders to delete
    return f"{recipe.task}-ultralytics{ultralytics.__version__}-{h.hexdigest()[:16]}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(folder: Path) -> TrainedModel:
    raw = json.loads((folder / _INFO).read_text())
    data_dir = folder / "dataset"
    if raw["task"] == "classify":
        val = sorted((data_dir / "val").glob("*/*.jpg"))
        data = data_dir
    else:
        val = sorted((data_dir / "images" / "val").glob("*.jpg"))
        data = data_dir / "data.yaml"
        _point_yaml(data, data_dir)  # the cache may have moved with its checkout
    return TrainedModel(
        task=raw["task"],
        pt=folder / "model.pt",
        onnx=folder / "model.onnx",
        data_dir=data_dir,
        data=data,
        val_images=tuple(val),
        class_names=tuple(raw["class_names"]),
        imgsz=int(raw["imgsz"]),
    )


def build_test_model(task: Task, neu_det: Path, cache_root: Path) -> TrainedModel:
    """Return the cached test model for ``task``, training and exporting it if needed."""
    from kanjian.training.export import export_onnx
    from kanjian.training.importer import import_dataset
    from kanjian.training.train import TrainConfig, train

    recipe = RECIPES[task]
    key = cache_key(recipe, neu_det)
    folder = cache_root / key
    with _locked(cache_root / f"{key}.lock"):
        if (folder / _INFO).is_file():
            return _load(folder)
        cache_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache_root))
        try:
            src = work / "voc"
            (src / "images").mkdir(parents=True)
            (src / "annotations").mkdir()
            for stem in _pick_images(neu_det, recipe.per_class):
                shutil.copyfile(neu_det / "images" / f"{stem}.jpg", src / "images" / f"{stem}.jpg")
                shutil.copyfile(
                    neu_det / "annotations" / f"{stem}.xml", src / "annotations" / f"{stem}.xml"
                )
            # the path inside data.yaml must be the final one, so import into place
            final_data = folder / "dataset"
            staged = work / "dataset"
            import_dataset(
                src,
                staged,
                fmt="voc",
                task=task,
                val_fraction=recipe.val_fraction,
                seed=recipe.seed,
                class_names=CLASS_NAMES,
            )
            data = staged if task == "classify" else staged / "data.yaml"
            if task != "classify":
                _point_yaml(data, staged)
            result = train(
                TrainConfig(
                    data=data,
                    task=task,
                    epochs=recipe.epochs,
                    imgsz=recipe.imgsz,
                    batch=recipe.batch,
                    lr0=recipe.lr0,
                    optimizer=recipe.optimizer,
                    nbs=recipe.batch,
                    warmup_epochs=1.0,
                    close_mosaic=max(1, recipe.epochs // 4),
                    workers=0,
                    seed=recipe.seed,
                    project=work / "runs",
                    name="train",
                    val_during_training=False,
                )
            )
            shutil.copyfile(result.weights, work / "model.pt")
            export_onnx(work / "model.pt", work / "model.onnx", recipe.imgsz)
            shutil.rmtree(work / "runs")
            shutil.rmtree(src)
            for cache in staged.rglob("*.cache"):
                cache.unlink()
            if task != "classify":
                _point_yaml(data, final_data)
            (work / _INFO).write_text(
                json.dumps(
                    {
                        "task": task,
                        "class_names": list(CLASS_NAMES),
                        "imgsz": recipe.imgsz,
                        "recipe": asdict(recipe),
                        "train_seconds": round(result.duration_s, 1),
                        "hardware": result.hardware,
                    },
                    indent=2,
                )
            )
            if folder.exists():
                shutil.rmtree(folder)
            work.rename(folder)
        finally:
            if work.exists():
                shutil.rmtree(work)
        return _load(folder)


def _point_yaml(data_yaml: Path, root: Path) -> None:
    """Rewrite ``path:`` in ``data.yaml`` to ``root`` (absolute)."""
    import yaml

    raw = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    if raw.get("path") == str(root.resolve()):
        return
    raw["path"] = str(root.resolve())
    data_yaml.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
