"""Export a trained checkpoint to ONNX, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

from kanjian.training._env import ultralytics_module


def export_onnx(weights: Path, output: Path, imgsz: int, opset: int | None = None) -> Path:
    """Export ``weights`` (``.pt``) to a static-shape ONNX file at ``output``.

    The graph takes ``(1, 3, imgsz, imgsz)`` float32 RGB in [0, 1] and keeps
    Ultralytics' metadata (task, names, imgsz, stride); NMS stays outside the
    graph so the station decodes the raw head the same way for every model.

    Returns:
        ``output``.
    """
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights not found")
    ultralytics = ultralytics_module()
    model = ultralytics.YOLO(str(weights))
    kwargs: dict[str, object] = {
        "format": "onnx",
        "imgsz": imgsz,
        "dynamic": False,
        "simplify": True,
        "nms": False,
        "device": "cpu",
    }
    if opset is not None:
        kwargs["opset"] = opset
    exported = Path(str(model.export(**kwargs)))
    output.parent.mkdir(parents=True, exist_ok=True)
    if exported.resolve() != output.resolve():
        shutil.move(str(exported), output)
    return output
