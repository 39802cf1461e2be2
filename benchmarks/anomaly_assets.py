"""What the anomaly-latency benchmark runs on: untrained anomaly graphs, a trained
bundle when there is one, and a real magnetic-tile image.

- Untrained graphs of each method (:data:`~benchmarks.anomaly_export.METHODS`) are
  exported once by a child process (:mod:`benchmarks.anomaly_export`, the only one
  that imports torch) and kept under ``<repo>/.cache/bench/models/``, keyed by a
  hash of the training modules that define the graphs, the export script and the
  torch version: editing a model's code exports it again.
- A trained bundle's ``model.onnx`` (``--anomaly-model``); by default the shipped
  demo bundle (:data:`DEMO_ANOMALY_MODEL`) when the checkout has it.
- Images: the first ``MT_Blowhole`` image of the magnetic-tile set (a real defect
  image, grey JPEG read as BGR as the station's image sources read files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from benchmarks.anomaly_export import METHODS
from benchmarks.common import CACHE, REPO

#: the anomaly demo bundle the station ships (when the checkout has it)
DEMO_ANOMALY_MODEL = REPO / "station" / "demo" / "magnetic-tile" / "model" / "model.onnx"
#: the magnetic-tile set, beside the checkout (``<repo>/../shared/datasets/magnetic-tile``)
MAGNETIC_TILE = REPO.parent / "shared" / "datasets" / "magnetic-tile"
#: the training modules whose code is the exported graphs
GRAPH_SOURCES = ("anomaly_draem.py", "anomaly_patch.py", "anomaly_onnx.py")
#: the defect folder the benchmark's image comes from
IMAGE_FOLDER = "MT_Blowhole"


def _training_dir() -> Path:
    """Where ``kanjian.training`` is imported from (the checkout the child will export)."""
    spec = importlib.util.find_spec("kanjian.training")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kanjian.training is not importable: install kanjian[training]")
    return Path(next(iter(spec.submodule_search_locations)))


def source_hash() -> str:
    """16 hex digits over the graph-defining sources, the export script and torch's version."""
    h = hashlib.sha256()
    training = _training_dir()
    for name in GRAPH_SOURCES:
        h.update(name.encode() + b"\0" + (training / name).read_bytes())
    h.update(Path(__file__).with_name("anomaly_export.py").read_bytes())
    try:
        h.update(metadata.version("torch").encode())
    except metadata.PackageNotFoundError:
        h.update(b"no torch")
    return h.hexdigest()[:16]


def torch_available() -> bool:
    """Whether torch is installed (the untrained exports need it; the runtime never does)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ModuleNotFoundError:  # an import blocker (tests/support/no_extras) raises instead
        return False


def untrained_models(
    methods: Sequence[str] = METHODS, imgsz: int = 256, cache: Path = CACHE
) -> dict[str, Path]:
    """ONNX files of the untrained ``methods`` at ``imgsz`` x ``imgsz`` (exported once, cached).

    Raises:
        ValueError: an unknown method.
        RuntimeError: torch is missing, or the export failed (its output in the message).
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(
            f"unknown anomaly method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}"
        )
    folder = cache / "models" / f"anomaly-{imgsz}-untrained-{source_hash()}"
    out = {m: folder / f"{m}.onnx" for m in methods}
    missing = [m for m, p in out.items() if not p.is_file()]
    if not missing:
        return out
    if not torch_available():
        raise RuntimeError(
            f"exporting the untrained {', '.join(missing)} graph(s) needs torch "
            "(pip install 'kanjian[training]'), or pass a trained bundle with --anomaly-model"
        )
    work = folder.with_name(folder.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.anomaly_export", str(work), str(imgsz), *missing],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=dict(os.environ),
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("EXPORTED ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"exporting untrained {', '.join(missing)} at {imgsz} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for m, p in zip(missing, json.loads(line[len("EXPORTED ") :]), strict=True):
        Path(p).replace(out[m])  # whole files only: a killed export leaves no half file
    shutil.rmtree(work, ignore_errors=True)
    return out


def magnetic_tile_image(root: Path | None = None) -> Path:
    """The first ``MT_Blowhole/*.jpg`` (by name) of the magnetic-tile set.

    Looks in ``root``, else beside the checkout, else inside it
    (``<repo>/shared/datasets/magnetic-tile``, what travels to a lent GPU machine),
    else in the anomaly demo's images (``station/demo/magnetic-tile/images``).

    Raises:
        FileNotFoundError: naming the folders when none holds an image.
    """
    demo = DEMO_ANOMALY_MODEL.parents[1] / "images"
    if root is not None:
        folders = [root / IMAGE_FOLDER]
    else:
        shared = REPO / "shared" / "datasets" / "magnetic-tile"
        folders = [MAGNETIC_TILE / IMAGE_FOLDER, shared / IMAGE_FOLDER, demo]
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))
        if files:
            return files[0]
    raise FileNotFoundError(
        "no magnetic-tile image in " + " or ".join(str(f) for f in folders)
        + ": shared/datasets/magnetic-tile must sit beside the checkout"
    )  # fmt: skip
