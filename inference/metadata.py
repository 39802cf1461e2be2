"""What a model is, read from the metadata Ultralytics writes into the ONNX file."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kanjian.inference.heads import find_head, unknown_task_message
from kanjian.inference.session import ModelLoadError

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model's identity and input geometry.

    Attributes:
        name, version: from the bundle manifest (file stem / ``"0"`` for a bare ONNX).
        task: a registered task head's name (:func:`kanjian.inference.heads.known_tasks`).
        class_names: index = class id.
        imgsz: model input ``(height, width)`` in pixels.
        stride: model stride in pixels.
        sha256: hex digest of the ONNX file's bytes.
    """

    name: str
    version: str
    task: str
    class_names: tuple[str, ...]
    imgsz: tuple[int, int]
    stride: int
    sha256: str


def _literal(text: str, key: str, path: Path) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ModelLoadError(f"{path}: metadata '{key}' is not readable: {text!r}") from e


def read_ultralytics_metadata(session: ort.InferenceSession, path: Path) -> dict[str, Any]:
    """Task, class names, imgsz and stride from an Ultralytics-exported ONNX file.

    Ultralytics stores every value as a string (``names`` as a dict literal).

    Raises:
        ModelLoadError: when a required key is missing, naming the key and file, or
            the task has no registered head, naming the known tasks.
    """
    meta = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ("task", "names", "imgsz") if k not in meta]
    if missing:
        raise ModelLoadError(
            f"{path}: ONNX metadata lacks {', '.join(missing)}; export it with Ultralytics "
            "or use a bundle whose manifest gives task, class_names and imgsz"
        )
    names = _literal(meta["names"], "names", path)
    if isinstance(names, dict):
        class_names = tuple(str(names[k]) for k in sorted(names))
    else:
        class_names = tuple(str(n) for n in names)
    imgsz = _literal(meta["imgsz"], "imgsz", path)
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    task = meta["task"]
    if find_head(task) is None:
        raise ModelLoadError(f"{path}: {unknown_task_message(task)}")
    return {
        "task": task,
        "class_names": class_names,
        "imgsz": (int(imgsz[0]), int(imgsz[1])),
        "stride": int(meta.get("stride", "32")),
        "end2end": meta.get("end2end", "False") == "True",
    }
