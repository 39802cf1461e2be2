"""The image quality gate's judgement: a frame too blurred, dark, bright, clipped or unlike
the reference gets an ERROR verdict with its own reason instead of a model verdict.

The numbers come from :func:`kanjian.kernels.frame_quality`; the limits are the
station's (``quality`` in station.yaml, or set through ``PUT /api/quality``). ERROR,
not REVIEW: the part was not judged, so the frame counts in no yield, offers no
operator feedback (an answer on a blurred picture would become a training label), and
the PLC gets the answer it gets for any frame that could not be judged. The reason
codes (``quality_*``) tell it apart from a camera or model error.

Checks, in this order, the first that fails decides (exposure first: a dark or
saturated frame also looks blurred and unlike the reference; then the reference, since
a missing part on a plain background also looks blurred, while blur barely moves the
segment means the reference compares):

====================  ===================  ==========================================
code                  when                 reason (English, stored)
====================  ===================  ==========================================
``quality_dark``      mean < min_mean      ``too dark: mean 12.3 < 30``
``quality_bright``    mean > max_mean      ``too bright: mean 240.5 > 225``
``quality_clipped``   clipped > max        ``clipped: 12.5% > 5%`` (pixels at a clip level)
``quality_reference`` diff > max           ``unlike the reference: difference 41.2 > 25``
``quality_blurred``   focus < min_focus    ``blurred: focus 12 < 40``
====================  ===================  ==========================================

Numbers in a reason are rounded to one decimal, and a whole number is written without
one; the comparison itself uses the exact values.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kanjian.kernels.quality import FrameQuality

__all__ = [
    "QUALITY_CODES",
    "QualityCode",
    "QualityLimits",
    "QualityParams",
    "judge_quality",
    "quality_from_text",
    "quality_text",
]

QualityCode = Literal[
    "quality_dark", "quality_bright", "quality_clipped", "quality_reference", "quality_blurred"
]
QUALITY_CODES: tuple[QualityCode, ...] = (
    "quality_dark",
    "quality_bright",
    "quality_clipped",
    "quality_reference",
    "quality_blurred",
)
#: ``value`` (the frame's number) and ``limit`` (the threshold it broke), each rounded to
#: one decimal as the sentence shows it; percent for ``quality_clipped``
QualityParams = dict[str, float]


class QualityLimits(BaseModel):
    """The gate's thresholds; ``None``: that check is off (the numbers are still kept)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_focus: float | None = Field(
        None,
        ge=0,
        description="a frame whose focus (variance of the Laplacian of the luma, luma levels "
        "squared) is below this is 'blurred'; sharp textured frames score hundreds to "
        "thousands: watch GET /api/quality on good parts before setting it",
    )
    min_mean: float | None = Field(
        None,
        ge=0,
        le=255,
        description="a frame whose mean luma (0-255) is below this is 'too dark'",
    )
    max_mean: float | None = Field(
        None, ge=0, le=255, description="a frame whose mean luma is above this is 'too bright'"
    )
    max_clipped: float | None = Field(
        None,
        ge=0,
        le=1,
        description="a frame with more than this fraction (0-1) of its pixels at or beyond "
        "the clip levels (low_clip, high_clip) is 'clipped'",
    )
    max_reference_diff: float | None = Field(
        None,
        ge=0,
        le=255,
        description="a frame whose mean absolute difference to the reference frame (luma "
        "levels, 0-255, over 32-pixel row segments) is above this is 'unlike the "
        "reference': no part, or the wrong one (needs a reference)",
    )

    @model_validator(mode="after")
    def _order(self) -> QualityLimits:
        if (
            self.min_mean is not None
            and self.max_mean is not None
            and self.min_mean > self.max_mean
        ):
            raise ValueError(
                f"min_mean ({self.min_mean:g}) must not be above max_mean ({self.max_mean:g})"
            )
        return self


def _num(v: float) -> str:
    """One decimal, none for a whole number: ``12``, ``12.3``."""
    r = round(v, 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def _params(value: float, limit: float) -> QualityParams:
    return {"value": round(value, 1), "limit": round(limit, 1)}


def judge_quality(
    q: FrameQuality, limits: QualityLimits
) -> tuple[QualityCode, QualityParams] | None:
    """The first check ``q`` fails (code and parameters, see the module docstring), or
    ``None`` when the frame may be judged by the model."""
    if limits.min_mean is not None and q.mean < limits.min_mean:
        return "quality_dark", _params(q.mean, limits.min_mean)
    if limits.max_mean is not None and q.mean > limits.max_mean:
        return "quality_bright", _params(q.mean, limits.max_mean)
    if limits.max_clipped is not None and q.clipped > limits.max_clipped:
        return "quality_clipped", _params(100 * q.clipped, 100 * limits.max_clipped)
    d = q.reference_diff
    if limits.max_reference_diff is not None and d is not None and d > limits.max_reference_diff:
        return "quality_reference", _params(d, limits.max_reference_diff)
    if limits.min_focus is not None and q.focus < limits.min_focus:
        return "quality_blurred", _params(q.focus, limits.min_focus)
    return None


_TEXT: dict[QualityCode, tuple[str, str, str]] = {  # words before, unit, comparison
    "quality_dark": ("too dark: mean ", "", "<"),
    "quality_bright": ("too bright: mean ", "", ">"),
    "quality_clipped": ("clipped: ", "%", ">"),
    "quality_reference": ("unlike the reference: difference ", "", ">"),
    "quality_blurred": ("blurred: focus ", "", "<"),
}
_NUM = r"(\d+(?:\.\d)?)"
_PATTERNS = {
    code: re.compile(re.escape(head) + _NUM + re.escape(f"{unit} {op} ") + _NUM + re.escape(unit))
    for code, (head, unit, op) in _TEXT.items()
}


def quality_text(code: QualityCode, params: QualityParams) -> str:
    """The English sentence of a quality reason, e.g. ``blurred: focus 12 < 40``."""
    head, unit, op = _TEXT[code]
    return f"{head}{_num(float(params['value']))}{unit} {op} {_num(float(params['limit']))}{unit}"


def quality_from_text(reason: str) -> tuple[QualityCode, QualityParams] | None:
    """Code and parameters of a stored quality sentence (the inverse of
    :func:`quality_text`), or ``None`` when it is not one."""
    for code, pattern in _PATTERNS.items():
        m = pattern.fullmatch(reason)
        if m is not None:
            return code, {"value": float(m[1]), "limit": float(m[2])}
    return None
