"""``shadow`` in station.yaml: the promotion gate and how long the child may take.

Which model is the shadow is not configured here: an engineer loads one at run time
(``PUT /api/shadow``, ``kanjian model shadow set``), and the choice outlives restarts
in the station's database (``shadow_sessions``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ShadowConfig"]


class ShadowConfig(BaseModel):
    """The promotion gate of a shadow model, and its child's time limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    promote_min_frames: int = Field(
        200,
        ge=0,
        le=100_000_000,
        description="a promotion needs at least this many frames judged by the shadow "
        "(stored shadow results of that model on inspections the active model judged)",
    )
    promote_min_agreement: float = Field(
        0.95,
        ge=0,
        le=1,
        description="a promotion needs the shadow's verdict to equal the active model's on "
        "at least this fraction of those frames (0: not checked)",
    )
    promote_no_worse_on_feedback: bool = Field(
        True,
        description="a promotion needs the shadow to be wrong no more often than the active "
        "model on the frames an operator gave feedback on (a FAIL or REVIEW answered "
        "not_defect is wrong; a PASS answered confirm_defect or wrong_class is wrong)",
    )
    keep_pictures: int = Field(
        500,
        ge=0,
        le=100_000,
        description="pictures of frames the shadow judged differently from the active model "
        "that the store kept no picture of (a PASS, by default), kept for the report: the "
        "newest this many per shadow model, under <data_dir>/shadow/ (0: none)",
    )
    judge_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="a shadow child that has not answered a frame within this many seconds "
        "is taken for hung: killed, counted as an error and restarted",
    )
