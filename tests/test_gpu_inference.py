"""The GPU path: CUDA letterbox into device memory + ORT I/O binding, against the host path.

Runs only where ONNX Runtime's CUDA provider really runs (skipped elsewhere);
on a GPU machine: ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest

from kanjian.inference.matching import match_detections
from kanjian.inference.model import load_model
from kanjian.inference.session import cuda_device_present


def _cuda_ort() -> bool:
    if not cuda_device_present():
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ort(), reason="needs a CUDA device and onnxruntime-gpu")
def test_device_input_path_equals_host_path(detect_model: Any, neu_det_dir: Path) -> None:
    gpu = load_model(detect_model.onnx, providers=["cuda"])
    cpu = load_model(detect_model.onnx, providers=["cpu"])
    assert gpu.session_info.provider == "CUDAExecutionProvider", gpu.session_info
    assert gpu._device is not None  # the I/O-binding path is in use
    total = 0
    for p in sorted((neu_det_dir / "images").glob("*.jpg"))[:20]:
        img = cv2.imread(str(p))
        big = cv2.resize(img, (1920, 1080))  # camera-sized frame through the CUDA kernel
        for frame in (img, big):
            a = cpu.predict(frame, conf=0.05).detections
            b = gpu.predict(frame, conf=0.05).detections
            # cuDNN and MLAS sum in different orders: boxes agree closely, not bit for bit
            rep = match_detections(a, b, min_iou=0.98, max_conf_diff=5e-3)
            assert rep.expected == rep.actual and rep.matched >= rep.expected - 1, (p, rep)
            total += len(a)
    assert total > 0
