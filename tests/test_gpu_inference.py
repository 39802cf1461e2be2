"""The GPU path: CUDA letterbox into device memory + ORT I/O binding, against the host path.

Runs only where ONNX Runtime's CUDA provider really runs (skipped elsewhere);
on a GPU machine: ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.inference.matching import match_detections
from kanjian.inference.model import load_model
from kanjian.inference.session import cuda_device_present
from tests.support.scores import MEASURE_CONF, conf_with_detections


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
    frames = []
    for p in sorted((neu_det_dir / "images").glob("*.jpg"))[:20]:
        img = cv2.imread(str(p))
        # and a camera-sized frame through the CUDA kernel
        frames += [(p, img), (p, cv2.resize(img, (1920, 1080)))]
    # cuDNN and MLAS sum in different orders: scores agree within 5e-3, not bit for bit.
    # The conf is chosen from the CPU's scores, that far from any of them, and keeps a box.
    measured = [np.sort(cpu.predict(f, conf=MEASURE_CONF).detections.confidence)[::-1]
                for _, f in frames]  # fmt: skip
    conf = conf_with_detections(measured, 1, margin=5e-3)
    total = 0
    for p, frame in frames:
        a = cpu.predict(frame, conf=conf).detections
        b = gpu.predict(frame, conf=conf).detections
        rep = match_detections(a, b, min_iou=0.98, max_conf_diff=5e-3)
        assert rep.expected == rep.actual and rep.matched >= rep.expected - 1, (p, rep)
        total += len(a)
    assert total > 0
