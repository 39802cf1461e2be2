"""The image quality gate's API shapes: its numbers, its settings and the live readout."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kanjian.inference.verdict import ReasonCode, ReasonParams
from kanjian.station.quality_config import QualitySettings

__all__ = ["QualityOut", "QualityPut", "QualityReadingOut", "QualityStateOut"]


class QualityOut(BaseModel):
    """One frame's image-quality numbers (kanjian/kernels/quality.py defines them)."""

    focus: float = Field(description="variance of the Laplacian of the luma, luma levels squared")
    mean: float = Field(description="mean luma, 0-255")
    dark: float = Field(description="fraction of the measured pixels at or below low_clip, 0-1")
    bright: float = Field(description="fraction at or above high_clip, 0-1")
    rows: int = Field(description="rows of the frame measured")
    reference_diff: float | None = Field(
        None,
        description="mean absolute difference to the reference frame, luma levels 0-255; "
        "null without a reference (or one of another size)",
    )


class QualityPut(QualitySettings):
    """New settings of the gate (every field: leaving one out sets it to its default,
    which is off / not checked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityReadingOut(BaseModel):
    """The newest committed inspection the gate measured."""

    inspection_id: str
    captured_at: str
    verdict: str
    reason: str
    reason_code: ReasonCode | None = Field(
        description="quality_* when the gate rejected the frame, else the model's reason code"
    )
    reason_params: ReasonParams
    rejected: bool = Field(description="true when the gate gave this frame its verdict")
    quality: QualityOut


class QualityStateOut(QualitySettings):
    """The gate in force, how it measures, where its settings come from, and its readout."""

    rows: int | None = Field(description="rows measured per frame (null: every row)")
    low_clip: int
    high_clip: int
    reference: str | None = Field(description="the reference image (station.yaml), or null")
    reference_wh: tuple[int, int] | None = Field(
        description="the reference image's width and height, pixels; frames of another "
        "size are not compared with it"
    )
    source: Literal["station.yaml", "api"] = Field(
        description="api: set through PUT /api/quality, kept across restarts until "
        "DELETE /api/quality returns to station.yaml"
    )
    set_at: str | None
    set_by: str | None
    latest: QualityReadingOut | None = Field(
        description="the newest committed inspection with quality numbers (null: none since "
        "the server started, or the gate is off)"
    )
