"""A tiny anomaly model made in the test itself, and its NumPy twin.

The model remembers one good part (``mu``: that part's letterboxed input tensor) and
says how far a frame is from it: ``anomaly_map`` = the channel-mean of ``|x - mu|``,
2x2 average-pooled to half the input size; ``score`` = the map's maximum. Exported
with torch (tests only: the runtime never imports torch) to the model contract of
``docs/anomaly.md``, packed into a bundle with a calibration in its manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from kanjian.inference import bundle as b
from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.preprocess import letterbox_tensor

#: model input (height, width): not square, so frames get letterbox padding
IMGSZ = (128, 160)
#: how many input pixels one map pixel covers per side
POOL = 2


def template(good: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``(1, 3, H, W)`` float32: the good part as the model's input (its ``mu``)."""
    out = np.empty((1, 3, *IMGSZ), np.float32)
    letterbox_tensor(good, IMGSZ, out=out[0])
    return out


def reference(x: NDArray[np.float32], mu: NDArray[np.float32]) -> tuple[float, NDArray[np.float32]]:
    """NumPy twin of the model: raw ``score`` and ``(h, w)`` map for input ``x``."""
    d = np.abs(x[0].astype(np.float64) - mu[0]).mean(axis=0)
    h, w = d.shape
    amap = d.reshape(h // POOL, POOL, w // POOL, POOL).mean(axis=(1, 3))
    return float(amap.max()), amap.astype(np.float32)


def export_onnx(mu: NDArray[np.float32], path: Path) -> Path:
    """Write the model as ONNX (opset 17) with the metadata kanjian reads."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mu", torch.from_numpy(mu))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d = (x - self.mu).abs().mean(dim=1, keepdim=True)
            amap = F.avg_pool2d(d, POOL, POOL)
            return amap.amax(dim=(1, 2, 3)), amap

    from kanjian.training.anomaly_onnx import export_anomaly

    return export_anomaly(Tiny(), path, IMGSZ, {"method": "template"}, stride=POOL)


def write_anomaly_bundle(
    folder: Path, mu: NDArray[np.float32], calibration: AnomalyCalibration | None
) -> Path:
    """A bundle folder (model.onnx + manifest.json with ``calibration``); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(mu, folder / b.MODEL_NAME)
    b.write_manifest(
        folder,
        b.BundleManifest(
            name="tiny-anomaly",
            version="1",
            task="anomaly",
            class_names=["anomaly"],
            imgsz=IMGSZ,
            stride=POOL,
            calibration=calibration,
            onnx_sha256=b.sha256_file(onnx_path),
        ),
    )
    return folder


def paste_patch(
    image: NDArray[np.uint8], xyxy: tuple[int, int, int, int], value: int = 255
) -> NDArray[np.uint8]:
    """A copy of ``image`` with the rectangle ``x1, y1, x2, y2`` (exclusive) set to ``value``."""
    out = image.copy()
    x1, y1, x2, y2 = xyxy
    out[y1:y2, x1:x2] = value
    return out
