"""The golden check: a bundle must reproduce its own expected answers before use.

A station runs it before activating an uploaded or deployed bundle, and
``kanjian model check`` runs it anywhere. It catches a wrong or altered file
(hash), and weights that no longer give the recorded answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference import bundle as b
from kanjian.inference.golden_set import GoldenSet
from kanjian.inference.model import load_model
from kanjian.inference.session import ModelLoadError


@dataclass(frozen=True)
class GoldenReport:
    """Outcome of a golden check.

    Attributes:
        ok: everything passed.
        images: golden images checked.
        problems: one line per failure, naming the file.
        provider: the execution provider the golden set was replayed on ("" when the
            check stopped before loading the model).
    """

    ok: bool
    images: int
    problems: list[str] = field(default_factory=list)
    provider: str = ""


def check_bundle(
    bundle_dir: Path, providers: tuple[str, ...] = ("cpu",), allow_fallback: bool = False
) -> GoldenReport:
    """Verify the ONNX hash against the manifest, then replay the golden set.

    ``allow_fallback``: replay on the next provider when the first does not load (else
    that is a problem of the report, naming the provider and the cause).
    """
    problems: list[str] = []
    try:
        manifest = b.read_manifest(bundle_dir)
    except b.BundleError as e:
        return GoldenReport(False, 0, [str(e)])
    onnx = bundle_dir / b.MODEL_NAME
    if not onnx.is_file():
        return GoldenReport(False, 0, [f"{onnx}: model file missing"])
    sha = b.sha256_file(onnx)
    if sha != manifest.onnx_sha256:
        return GoldenReport(False, 0, [f"{onnx}: sha256 {sha} != manifest {manifest.onnx_sha256}"])
    try:
        model = load_model(bundle_dir, providers, allow_fallback=allow_fallback)
    except (ModelLoadError, b.BundleError) as e:
        return GoldenReport(False, 0, [str(e)])
    gdir = bundle_dir / b.GOLDEN_DIR
    exp_path = gdir / b.GOLDEN_EXPECTED
    if not exp_path.is_file():
        return GoldenReport(False, 0, [f"{exp_path}: golden set missing"])
    try:
        golden = GoldenSet.model_validate(json.loads(exp_path.read_text(encoding="utf-8")))
    except (ValueError, OSError) as e:
        return GoldenReport(False, 0, [f"{exp_path}: invalid golden set: {e}"])
    if not golden.images:
        return GoldenReport(False, 0, [f"{exp_path}: golden set has no images"])
    for gi in golden.images:
        path = gdir / gi.file
        image: NDArray[np.uint8] | None = cv2.imread(str(path), cv2.IMREAD_COLOR)  # type: ignore[assignment]
        if image is None:
            problems.append(f"{path}: unreadable golden image")
            continue
        pred = model.predict(image, conf=golden.conf, iou=golden.iou)
        # the model's task head knows what its answer is and how close is close enough
        problems += model.head.golden_decoded(gi, pred.decoded(), golden)
    provider = model.session_info.provider
    return GoldenReport(not problems, len(golden.images), problems, provider)
