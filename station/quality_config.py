"""``quality``: the image quality gate before the model (issue 15).

Off by default: a station.yaml without this section judges exactly as before, and
measures nothing. ``enabled: true`` with no thresholds measures every frame (the
numbers are stored with each inspection and shown by ``GET /api/quality``) and rejects
none: watch good and bad parts, then set the thresholds here or through
``PUT /api/quality``. Definitions of the numbers: :mod:`kanjian.kernels.quality`;
the checks and their reasons: :mod:`kanjian.inference.quality_gate`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from kanjian.inference.quality_gate import QualityLimits

__all__ = ["QualityConfig", "QualitySettings"]


class QualitySettings(QualityLimits):
    """What may be changed on a running station (``PUT /api/quality``): on or off, and the
    thresholds."""

    enabled: bool = Field(
        False,
        description="measure every frame before the model, and give a frame that fails a "
        "threshold an ERROR verdict with its quality reason instead of a model verdict",
    )


class QualityConfig(QualitySettings):
    """``quality`` in station.yaml: the settings, and how the numbers are measured."""

    rows: int | None = Field(
        8,
        ge=1,
        le=100_000,
        description="rows of each frame measured, spread evenly (null: every row). 8 keep the "
        "gate under 10 % of the preprocessing at 1080p and 5 MP (docs/benchmarks.md); "
        "more rows cover small parts better",
    )
    low_clip: int = Field(2, ge=0, le=254, description="luma at or below this counts as clipped")
    high_clip: int = Field(253, ge=1, le=255, description="luma at or above this counts as clipped")
    reference: Path | None = Field(
        None,
        description="an image of a good part, well lit, the size of the camera's frames "
        "(relative to station.yaml): max_reference_diff compares each frame with it",
    )

    @model_validator(mode="after")
    def _consistent(self) -> QualityConfig:
        if self.low_clip >= self.high_clip:
            raise ValueError(
                f"low_clip ({self.low_clip}) must be below high_clip ({self.high_clip})"
            )
        if self.max_reference_diff is not None and self.reference is None:
            raise ValueError(
                "max_reference_diff needs a reference image: set quality.reference to an "
                "image of a good part (or remove max_reference_diff)"
            )
        return self

    def settings(self) -> QualitySettings:
        """The part an engineer may override through the API."""
        return QualitySettings.model_validate(
            {k: getattr(self, k) for k in QualitySettings.model_fields}
        )
