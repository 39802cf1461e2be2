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


class GoldenSet(BaseModel):
    """``golden/expected.json``: what the bundle must reproduce, and how closely."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conf: float = Field(..., ge=0, le=1, description="conf threshold used to make it")
    iou: float = Field(..., ge=0, le=1, description="NMS IoU used to make it")
    min_box_iou: float = Field(0.99, ge=0, le=1, description="a match needs IoU at least this")
    max_conf_diff: float = Field(1e-3, ge=0, le=1, description="a match needs |dconf| at most this")
    images: list[GoldenImage] = Field(default_factory=list)
