"""Export an anomaly model to the station's ONNX contract, and score images both ways.

The contract (docs/extending.md, "Anomaly models"): one ``(1, 3, H, W)`` float32 input,
the letterbox kernel's output; outputs ``score (1,)`` and ``anomaly_map (1, 1, H, W)``,
raw; ``metadata_props`` ``task="anomaly"``, ``names``, ``imgsz``, ``stride`` and
``kanjian_anomaly`` (JSON: method and sizes, for people and ``kanjian model``).

:func:`onnx_scores` runs the exported file in ONNX Runtime on the same letterboxed
planes the station feeds it; the metrics and the calibration in a bundle's manifest
come from it, not from PyTorch, so they are the numbers the station reproduces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

__all__ = ["ANOMALY_OPS", "export_anomaly", "onnx_scores", "torch_scores"]

#: operators an exported anomaly graph may hold: plain convolution networks, the kNN
#: as MatMul + ReduceMin, resizing and pooling. A ``torch.cdist`` expansion, a
#: dynamic-size blur or a loop would bring others, and ``tests/test_anomaly_train.py``
#: fails on them.
ANOMALY_OPS = frozenset(
    [
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "Div",
        "Equal",
        "Expand",
        "Gather",
        "Identity",
        "MatMul",
        "Max",
        "MaxPool",
        "Mul",
        "Pad",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "Shape",
        "Sigmoid",
        "Slice",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Transpose",
        "Unsqueeze",
        "Where",
        "DepthToSpace",
        "SpaceToDepth",
        "Cast",
    ]
)


def export_anomaly(
    model: nn.Module,
    path: Path,
    imgsz: int | tuple[int, int],
    meta: dict[str, Any],
    *,
    stride: int = 8,
) -> Path:
    """Write ``model`` (``(1, 3, H, W)`` -> ``score, anomaly_map``) to ``path`` as ONNX.

    Exported in eval mode with TorchScript tracing (``dynamo=False``: the dynamo exporter
    needs ``onnxscript``, which is not installed) at opset 17, batch 1, fixed size.

    Args:
        imgsz: input side, or ``(height, width)``.
        meta: written as the ``kanjian_anomaly`` metadata entry (JSON).
        stride: the map's coarsest grid in input pixels (metadata ``stride``).
    """
    import onnx

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, h, w),),
            str(path),
            input_names=["images"],
            output_names=["score", "anomaly_map"],
            opset_version=17,
            dynamo=False,
        )
    m = onnx.load(str(path))
    for key, value in {
        "task": "anomaly",
        "names": "{0: 'anomaly'}",
        "imgsz": str([h, w]),
        "stride": str(stride),
        "kanjian_anomaly": json.dumps(meta, sort_keys=True),
        "description": f"kanjian anomaly model ({meta.get('method', '?')})",
    }.items():
        p = m.metadata_props.add()
        p.key, p.value = key, value
    onnx.save(m, str(path))
    return path


def _planes(images: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(N, H, W)`` grey -> ``(N, 3, H, W)``: the letterbox kernel's equal planes."""
    return np.ascontiguousarray(np.repeat(images[:, None], 3, axis=1))


def onnx_scores(
    path: Path, images: NDArray[np.float32], *, threads: int = 2
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Raw scores ``(N,)`` and maps ``(N, H, W)`` of the ONNX file at ``path`` (CPU ORT).

    Args:
        images: ``(N, H, W)`` float32 letterboxed grey planes
            (:func:`kanjian.training.anomaly_images.load_letterboxed`).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    scores = np.empty(len(images), np.float32)
    maps = np.empty(images.shape, np.float32)
    for i in range(len(images)):
        outs = sess.run(None, {name: _planes(images[i : i + 1])})
        for o in outs:  # told apart by rank, as the station does
            if o.ndim == 4:
                maps[i] = o[0, 0]
            else:
                scores[i] = float(np.asarray(o).ravel()[0])
    return scores, maps


def torch_scores(
    model: nn.Module, images: NDArray[np.float32], *, batch: int = 8
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The same as :func:`onnx_scores` from the PyTorch module (eval mode, no grad)."""
    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(_planes(images[i : i + batch]))
            s, m = model(x)
            scores.append(s.reshape(-1).numpy())
            maps.append(m[:, 0].numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)
