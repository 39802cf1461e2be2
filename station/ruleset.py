"""What judges a frame besides the model: one frozen :class:`RuleSet`.

A value type of the station core (the inspector holds one and swaps it whole);
:mod:`kanjian.station.state.rules` keeps and restores the engineer's override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kanjian.inference.verdict import VerdictRules

__all__ = ["Origin", "RuleSet", "RulesError", "StoredRules"]

Origin = Literal["station.yaml", "api"]


@dataclass(frozen=True)
class RuleSet:
    """Everything that turns a model's output into a verdict, as one immutable value.

    Attributes:
        rules: verdict rules; ``None``: the judging model bundle's default rules.
        conf, iou: decoding confidence and NMS IoU in [0, 1]; ``None``: the bundle's.
        max_det: most detections per frame; ``None``: the bundle's.
        origin: ``station.yaml`` (the config) or ``api`` (a stored override).
        set_at, set_by: when (UTC ISO 8601) and by whom an override was set.
    """

    rules: VerdictRules | None = None
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    origin: Origin = "station.yaml"
    set_at: str | None = None
    set_by: str | None = None

    def values(self) -> dict[str, Any]:
        """The four settable values as JSON-ready data (audit rows, the stored override)."""
        return StoredRules(
            conf=self.conf, iou=self.iou, max_det=self.max_det, rules=self.rules
        ).model_dump(mode="json")


class StoredRules(BaseModel):
    """The override as stored in ``settings`` (and checked again when read back)."""

    model_config = ConfigDict(extra="forbid")
    conf: float | None = Field(None, ge=0, le=1)
    iou: float | None = Field(None, ge=0, le=1)
    max_det: int | None = Field(None, ge=1, le=10000)
    rules: VerdictRules | None = None


class RulesError(ValueError):
    """The verdict rules name classes the model does not have (a typo would be ignored)."""
