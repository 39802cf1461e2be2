"""Gates an exported model must pass before it becomes a bundle.

1. Parity: on validation images, the ONNX file run by :mod:`kanjian.inference`
   (the station's own code) gives the same detections as the PyTorch checkpoint
   run by Ultralytics. Two detections match when they have the same class,
   box IoU >= ``min_iou`` and |confidence difference| <= ``max_conf_diff`` (and,
   for segment models, mask IoU >= ``PARITY_MIN_MASK_IOU``);
   the match rate is matched / max(reference count, ONNX count), over all images.
2. Accuracy: Ultralytics' own validator on the ONNX file and the val split
   (mAP50, mAP50-95 for boxes, and for masks; top-1/top-5 for classify).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kanjian.training._env import ultralytics_module
from kanjian.training.checks import read_bgr

#: float32 ONNX vs PyTorch differ by ~1e-5 in scores; these bounds leave room and still
#: catch a wrong preprocessing (shifted boxes) or a wrong decoder (other classes)
PARITY_MIN_IOU = 0.95
PARITY_MAX_CONF_DIFF = 0.01
#: segment: masks are upsampled from 1/4 resolution on both sides; a wrong mask decoder
#: (prototypes, crop, scale) gives IoU far below this
PARITY_MIN_MASK_IOU = 0.9


@dataclass(frozen=True)
class ParityReport:
    """ONNX (kanjian.inference) vs PyTorch (Ultralytics) on the same images.

    Attributes:
        images: images compared.
        conf, iou: the decoding thresholds both sides used.
        reference: detections (or classify images) from the PyTorch model.
        onnx: detections from the ONNX model.
        matched: pairs that agree.
        match_rate: matched / max(reference, onnx) (1.0 when both are 0).
        min_rate: the gate.
        mismatches: one line per image that differs (first 20).
    """

    images: int
    conf: float
    iou: float
    reference: int
    onnx: int
    matched: int
    match_rate: float
    min_rate: float
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """The gate holds."""
        return self.match_rate >= self.min_rate

    def line(self) -> str:
        """One-line summary."""
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"parity {verdict}: {self.matched}/{max(self.reference, self.onnx)} match "
            f"({self.match_rate:.2%}, gate {self.min_rate:.0%}) on {self.images} images at "
            f"conf={self.conf} (reference {self.reference}, onnx {self.onnx})"
        )


def _torch_detections(result: Any, shape: tuple[int, int]) -> Any:
    """Ultralytics' result as :class:`Detections`; masks at source size ``(H, W)``."""
    from ultralytics.utils.ops import scale_masks

    from kanjian.inference.types import Detections

    boxes = result.boxes
    masks = None
    if result.masks is not None and len(boxes):
        # Ultralytics' own way to bring its mask-resolution masks to the source frame
        masks = scale_masks(result.masks.data[None].float().cpu(), shape)[0].numpy() > 0.5
    return Detections(
        xyxy=boxes.xyxy.cpu().numpy().astype(np.float32),
        confidence=boxes.conf.cpu().numpy().astype(np.float32),
        class_id=boxes.cls.cpu().numpy().astype(np.int32),
        masks=masks,
    )


def parity_gate(
    weights: Path,
    onnx: Path,
    images: Sequence[Path],
    *,
    imgsz: int,
    conf: float = 0.1,
    iou: float = 0.7,
    min_rate: float = 0.99,
    min_iou: float = PARITY_MIN_IOU,
    max_conf_diff: float = PARITY_MAX_CONF_DIFF,
) -> ParityReport:
    """Compare the checkpoint (Ultralytics, PyTorch, CPU) with the ONNX file (kanjian).

    Args:
        weights: the ``.pt`` checkpoint that was exported.
        onnx: the exported file.
        images: validation images (any size; both sides letterbox them).
        imgsz: the export size in pixels.
        conf, iou: decoding thresholds for both sides.
        min_rate: the gate on the match rate.
    """
    from kanjian.inference.matching import match_detections
    from kanjian.inference.model import load_model

    ultralytics = ultralytics_module()
    reference = ultralytics.YOLO(str(weights))
    ours = load_model(onnx, providers=("cpu",))
    task = ours.info.task
    n_ref = n_onnx = n_match = 0
    mismatches: list[str] = []
    for path in images:
        image = read_bgr(path)
        # rect=False: the same full square letterbox the static ONNX input needs
        ref = reference.predict(
            image, imgsz=imgsz, conf=conf, iou=iou, rect=False, device="cpu", verbose=False
        )[0]
        pred = ours.predict(image, conf=conf, iou=iou)
        if task == "classify":
            ref_probs = ref.probs.data.cpu().numpy()
            assert pred.probs is not None
            diff = float(np.max(np.abs(ref_probs - pred.probs)))
            same = int(np.argmax(ref_probs)) == int(np.argmax(pred.probs))
            ok = same and diff <= max_conf_diff
            n_ref, n_onnx, n_match = n_ref + 1, n_onnx + 1, n_match + int(ok)
            if not ok:
                mismatches.append(f"{path.name}: top-1 same={same}, max |dprob|={diff:.4g}")
            continue
        rep = match_detections(
            _torch_detections(ref, image.shape[:2]),
            pred.detections,
            min_iou,
            max_conf_diff,
            min_mask_iou=PARITY_MIN_MASK_IOU if task == "segment" else None,
        )
        n_ref += rep.expected
        n_onnx += rep.actual
        n_match += rep.matched
        if not rep.equal:
            mismatches.append(
                f"{path.name}: reference {rep.expected}, onnx {rep.actual}, matched {rep.matched}"
            )
    total = max(n_ref, n_onnx)
    return ParityReport(
        images=len(images),
        conf=conf,
        iou=iou,
        reference=n_ref,
        onnx=n_onnx,
        matched=n_match,
        match_rate=1.0 if total == 0 else n_match / total,
        min_rate=min_rate,
        mismatches=tuple(mismatches[:20]),
    )


def accuracy_gate(
    onnx: Path, data: Path, *, task: str, imgsz: int, batch: int = 1
) -> dict[str, float]:
    """Ultralytics' validator on the ONNX file and the dataset's val split.

    Returns:
        ``mAP50``, ``mAP50-95`` (boxes), plus ``mask_mAP50``, ``mask_mAP50-95`` for
        segment; ``top1``, ``top5`` for classify.
    """
    ultralytics = ultralytics_module()
    model = ultralytics.YOLO(str(onnx), task=task)
    with tempfile.TemporaryDirectory(prefix="kanjian-val-") as tmp:
        res = model.val(
            data=str(data),
            imgsz=imgsz,
            batch=batch,
            split="val",
            device="cpu",
            plots=False,
            project=tmp,
            name="val",
            verbose=False,
        )
    if task == "classify":
        return {"top1": float(res.top1), "top5": float(res.top5)}
    out = {"mAP50": float(res.box.map50), "mAP50-95": float(res.box.map)}
    if task == "segment":
        out |= {"mask_mAP50": float(res.seg.map50), "mask_mAP50-95": float(res.seg.map)}
    return out
