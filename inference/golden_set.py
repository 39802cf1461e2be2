"""A bundle's golden set: the expected outputs it must reproduce (``golden/expected.json``).

Its own module (pydantic only) so the task heads, which compare against it, and
the bundle manifest, which validates tasks against the heads, import without a cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GoldenDetection", "GoldenImage", "GoldenSet"]


class GoldenDetection(BaseModel):
    """One expected detection of a golden image, in source pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xyxy: tuple[float, float, float, float]
    confidence: float = Field(..., ge=0, le=1)
    class_id: int = Field(..., ge=0)


class GoldenImage(BaseModel):
    """Expected output for one golden image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(..., description="image file name inside golden/")
    detections: list[GoldenDetection] = Field(default_factory=list)
    top_class: int | None = Field(None, description="classify: expected top-1 class id")
    probs: list[float] | None = Field(None, description="classify: expected probabilities")
    score: float | None = Field(
        None,
        description="anomaly: expected RAW image score (the ONNX output, before the "
        "calibration), compared within score_rtol / score_atol",
    )
    regions: int | None = Field(
        None,
        ge=0,
        description="anomaly: expected number of defect regions at the calibration's pixel "
        "threshold, compared exactly; null: not checked (recorded only where the map is far "
        "from the threshold)",
    )


class GoldenSet(BaseModel):
    """``golden/expected.json``: what the bundle must reproduce, and how closely."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conf: float = Field(..., ge=0, le=1, description="conf threshold used to make it")
    iou: float = Field(..., ge=0, le=1, description="NMS IoU used to make it")
    min_box_iou: float = Field(0.99, ge=0, le=1, description="a match needs IoU at least this")
    max_conf_diff: float = Field(1e-3, ge=0, le=1, description="a match needs |dconf| at most this")
    score_rtol: float = Field(
        1e-2,
        ge=0,
        description="anomaly: a raw score may differ by this share of the expected one",
    )
    score_atol: float = Field(
        0.0,
        ge=0,
        description="anomaly: ... plus this much, in the model's raw units (the golden writer "
        "sets 1e-3 x (image_threshold - floor), so a score near 0 is not held to rounding)",
    )
    images: list[GoldenImage] = Field(default_factory=list)

    def score_tolerance(self, expected: float) -> float:
        """How far a raw anomaly score may lie from ``expected`` and still match."""
        return self.score_atol + self.score_rtol * abs(expected)

    def dump_json(self) -> str:
        """The set as ``golden/expected.json`` holds it: without the anomaly keys
        (``score_rtol``, ``score_atol``, an image's ``score`` and ``regions``) when no
        image records a score or region count, so a detect / segment / classify
        bundle stays readable by older stations (their golden set forbids unknown keys);
        an anomaly set leaves out what is null (``top_class``, ``probs``, a ``regions``
        not checked)."""
        if any(i.score is not None or i.regions is not None for i in self.images):
            return self.model_dump_json(indent=2, exclude_none=True)
        return self.model_dump_json(
            indent=2,
            exclude={
                "score_rtol": True,
                "score_atol": True,
                "images": {"__all__": {"score", "regions"}},
            },
        )
