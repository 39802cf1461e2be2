"""An anomaly model's calibration: raw scores -> thresholds and a normalised score.

An anomaly model's raw outputs (a distance, a probability ...) mean nothing across
models. The bundle manifest's ``calibration`` says, in the model's raw units, where
its review band starts, where it fails a part and where a pixel belongs to a defect
region; :func:`normalise` maps raw values piecewise-linearly so that

* ``floor`` -> 0, ``review`` -> 0.25, ``image`` -> 0.5, ``top`` -> 1.0 (clipped to ``[0, 1]``),

which are kanjian's default verdict confidences (review 0.25, fail 0.5): a calibrated
model judged by the default rules fails a part at its image threshold, and the stored
``score`` of any two anomaly models is comparable (0.5 = "this model's fail point").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: normalised values of the knots ``floor, review, image, top``
NORMALISED_KNOTS: tuple[float, float, float, float] = (0.0, 0.25, 0.5, 1.0)


class AnomalyCalibration(BaseModel):
    """Thresholds of an anomaly model, in its raw score units (higher = more anomalous).

    Set by training from held-back good (and defective) images; see ``docs/anomaly.md``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_threshold: float = Field(
        ..., description="raw image score at which a part fails (normalised to 0.5)"
    )
    review_threshold: float = Field(
        ...,
        description="raw image score at which a part goes to review, below image_threshold "
        "(normalised to 0.25)",
    )
    pixel_threshold: float = Field(
        ...,
        description="raw anomaly-map value from which a pixel belongs to a defect region "
        "(usually <= image_threshold, so a failed part has a region)",
    )
    floor: float = Field(0.0, description="raw value normalised to 0 (below review_threshold)")
    top: float | None = Field(
        None,
        description="raw value normalised to 1.0 (above image_threshold); "
        "null: 2 x image_threshold - floor",
    )
    min_region_px: float = Field(
        16.0,
        ge=0,
        description="regions smaller than this many model-input pixels are dropped "
        "(scaled to the frame's pixels through the letterbox)",
    )
    method: str = Field(
        "", description="how the thresholds were set, for people (e.g. 'good FRR 1 %')"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyCalibration:
        if not self.floor < self.review_threshold < self.image_threshold < self.top_value:
            raise ValueError(
                "calibration must have floor < review_threshold < image_threshold < top, got "
                f"{self.floor} / {self.review_threshold} / {self.image_threshold} / "
                f"{self.top_value}"
            )
        return self

    @property
    def top_value(self) -> float:
        """The raw value normalised to 1.0."""
        if self.top is not None:
            return self.top
        return 2 * self.image_threshold - self.floor

    @property
    def knots(self) -> tuple[float, float, float, float]:
        """Raw ``floor, review, image, top``: the x of :data:`NORMALISED_KNOTS`."""
        return (self.floor, self.review_threshold, self.image_threshold, self.top_value)


def normalise(
    raw: NDArray[np.float32] | float, calibration: AnomalyCalibration | None
) -> NDArray[np.float32]:
    """Raw scores or map values -> normalised ``[0, 1]`` float32 (same shape).

    Without a calibration the model's raw outputs are taken as normalised already
    (e.g. a probability map whose 0.5 means "defect"), clipped to ``[0, 1]``.
    """
    x = np.asarray(raw, np.float32)
    if calibration is None:
        return np.clip(x, 0.0, 1.0).astype(np.float32)
    return np.interp(x, calibration.knots, NORMALISED_KNOTS).astype(np.float32)


def pixel_threshold_raw(calibration: AnomalyCalibration | None) -> float:
    """The raw map value that starts a region (uncalibrated: 0.5, the fail point)."""
    return 0.5 if calibration is None else calibration.pixel_threshold
