"""What a station running an anomaly bundle must have stored, computed without the station.

For every row of a store: the image's raw score from ONNX Runtime on the slow
reference letterbox (:func:`tests.support.reference.letterbox_reference`, no kernel
of the station's), normalised by the bundle's calibration
(:mod:`kanjian.inference.calibration`); the verdict that score implies under the
bundle's rules; and defect regions (detections of the one class) where it fails.
Nothing here depends on one bundle's numbers, so the checks hold for any calibrated
anomaly bundle (the demo's stand-in and the trained one alike).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kanjian.inference.bundle import MODEL_NAME, BundleManifest, read_manifest
from kanjian.inference.calibration import AnomalyCalibration, normalise
from kanjian.inference.verdict import VerdictRules
from tests.support.reference import letterbox_reference

#: how far the station's raw score may lie from ONNX Runtime's on the reference input
RAW_RTOL = 1e-5


@dataclass(frozen=True)
class Row:
    """One stored inspection, as the oracle reads it (plain SQL on the store)."""

    id: str
    seq: int
    uri: str
    verdict: str
    score: float | None
    model_sha256: str
    num_detections: int
    top_confidence: float | None
    #: the detections rows: (class_name, confidence)
    detections: tuple[tuple[str, float], ...]


def read_rows(db: Path) -> list[Row]:
    """Every inspection of the store at ``db`` with its detections, in ``seq`` order."""
    con = sqlite3.connect(db)
    try:
        dets: dict[str, list[tuple[str, float]]] = {}
        for iid, name, conf in con.execute(
            "SELECT inspection_id, class_name, confidence FROM detections ORDER BY idx"
        ):
            dets.setdefault(iid, []).append((name, conf))
        return [
            Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(dets.get(r[0], ())))
            for r in con.execute(
                "SELECT id, seq, uri, verdict, score, model_sha256, num_detections, "
                "top_confidence FROM inspections ORDER BY seq"
            )
        ]
    finally:
        con.close()


class AnomalyOracle:
    """The expected score and verdict of images under an anomaly bundle."""

    def __init__(self, bundle: Path) -> None:
        import onnxruntime as ort

        self.manifest: BundleManifest = read_manifest(bundle)
        assert self.manifest.task == "anomaly", self.manifest.task
        assert self.manifest.calibration is not None, "an anomaly bundle without calibration"
        self.calibration: AnomalyCalibration = self.manifest.calibration
        self.rules: VerdictRules = self.manifest.rules or VerdictRules()
        self.session = ort.InferenceSession(
            str(bundle / MODEL_NAME), providers=["CPUExecutionProvider"]
        )
        self._cache: dict[str, float] = {}

    @property
    def class_name(self) -> str:
        """The one class defect regions are stored as."""
        return self.manifest.class_names[0]

    def raw_score(self, image: Path) -> float:
        """The model's raw image score for ``image`` (cached by path)."""
        key = str(image)
        if key not in self._cache:
            bgr = cv2.imread(key, cv2.IMREAD_COLOR)
            assert bgr is not None, image
            tensor, _ = letterbox_reference(bgr, tuple(self.manifest.imgsz))
            name = self.session.get_inputs()[0].name
            outputs = self.session.run(None, {name: tensor[None]})
            scores = [np.asarray(o) for o in outputs if np.ndim(o) <= 2]
            assert len(scores) == 1 and scores[0].size == 1, [np.shape(o) for o in outputs]
            self._cache[key] = float(scores[0].reshape(()))
        return self._cache[key]

    def score(self, image: Path) -> tuple[float, float]:
        """``(normalised score, allowed difference)``. The station runs the same ONNX file
        on the same ONNX Runtime, so only the order of float sums (its thread count) may
        move the raw score: 1e-5 relative, carried through the calibration."""
        raw = self.raw_score(image)
        tol = RAW_RTOL * max(1.0, abs(raw))
        lo, mid, hi = (float(normalise(v, self.calibration)) for v in (raw - tol, raw, raw + tol))
        return mid, max(mid - lo, hi - mid) + 1e-6

    def verdict(self, score: float) -> str:
        """The verdict the rules give a part with normalised image ``score`` (the rules
        must not limit where defects count: then the image score alone judges)."""
        rule = self.rules.rule_for(self.class_name)
        limited = self.rules.roi_xyxy is not None or bool(self.rules.zones) or rule.min_area_px
        assert not limited and not rule.ignore, "the oracle judges by the image score alone"
        if score >= rule.fail_confidence:
            return "FAIL"
        return "PASS" if score < rule.review_confidence else "REVIEW"

    def check(self, rows: list[Row]) -> list[str]:
        """Every way ``rows`` differ from what the bundle implies (empty: none)."""
        problems: list[str] = []
        cal_pixel = float(normalise(self.calibration.pixel_threshold, self.calibration))
        for r in rows:
            where = f"row {r.seq} ({Path(r.uri).name})"
            if r.model_sha256 != self.manifest.onnx_sha256:
                problems.append(f"{where}: judged by {r.model_sha256}")
            if r.score is None or not 0.0 <= r.score <= 1.0:
                problems.append(f"{where}: score {r.score} is not in [0, 1]")
                continue
            want, tol = self.score(Path(r.uri))
            if abs(r.score - want) > tol:
                problems.append(f"{where}: score {r.score:.6f}, reference {want:.6f} ± {tol:.2g}")
            if r.verdict != self.verdict(r.score):
                problems.append(f"{where}: {r.verdict} at score {r.score:.4f}")
            if len(r.detections) != r.num_detections:
                problems.append(f"{where}: {r.num_detections} detections, {len(r.detections)} rows")
            if r.verdict == "FAIL" and not r.detections:
                problems.append(f"{where}: FAIL without a defect region")
            for name, conf in r.detections:
                # a region holds pixels at or above the pixel threshold: its peak is too
                if name != self.class_name or not cal_pixel - 1e-6 <= conf <= 1.0:
                    problems.append(f"{where}: region {name} {conf}")
            if r.detections and r.top_confidence != max(c for _, c in r.detections):
                problems.append(f"{where}: top_confidence {r.top_confidence}")
        return problems
