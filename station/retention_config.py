"""``store.retention``: how long images and rows are kept, and the disk's free-space floor.

The defaults are chosen so that the embedded default (``kanjian run`` with no
station.yaml) never fills a disk: images are bounded by total size and by the
free-space floor, rows by age and by the same floor (docs/deploy.md, "Retention").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kanjian.inference.types import Verdict
from kanjian.station.records import verdict_names

_STRICT = ConfigDict(extra="forbid", frozen=True)
if TYPE_CHECKING:
    VerdictName = str
else:  # a MISSED inspection has no frame, hence no image
    VerdictName = verdict_names(Verdict.MISSED)

#: the default deletion order of images: the least interesting first
DEFAULT_ORDER = (Verdict.PASS.value, Verdict.REVIEW.value, Verdict.ERROR.value, Verdict.FAIL.value)


class ImageRetention(BaseModel):
    """Bounds of the saved JPEGs under ``data_dir/images``."""

    model_config = _STRICT

    max_total_mb: float = Field(
        10_240.0,
        ge=0,
        le=1e9,
        description="most MB of saved images; over it the first verdict of `order` loses its "
        "oldest images first (0: no size bound; the free-space floor still holds)",
    )
    max_age_days: float = Field(
        0.0, ge=0, le=36_500, description="images older than this are deleted, days (0: no age)"
    )
    order: list[VerdictName] = Field(
        default_factory=lambda: list(DEFAULT_ORDER),
        min_length=1,
        description="deletion order under the size bound and the floor: all images of the "
        "first verdict go (oldest first) before any of the next; verdicts left out come last",
    )

    @field_validator("order")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"order names a verdict twice: {v}")
        return v

    def full_order(self) -> list[str]:
        """``order`` followed by the verdicts it leaves out (so the floor always holds)."""
        rest = [x.value for x in Verdict if x is not Verdict.MISSED and x.value not in self.order]
        return [*self.order, *rest]


class RowRetention(BaseModel):
    """Bounds of the inspection rows (with their detections, feedback and outbox entries)."""

    model_config = _STRICT

    max_age_days: float = Field(
        90.0,
        ge=0,
        le=36_500,
        description="rows older than this are deleted with their image, days (0: kept until "
        "the free-space floor needs their room)",
    )
    delete_undelivered: bool = Field(
        False,
        description="with sync on, also delete rows the platform has not confirmed (counted "
        "as dropped and reported with a sync_dropped event); off: such rows are held until "
        "sync.retention drops them",
    )
    floor_keeps_hours: float = Field(
        24.0,
        ge=0,
        le=24.0 * 36_500,
        description="the free-space floor never deletes rows younger than this, hours: a "
        "disk that other files filled costs the oldest history, never the last shift's "
        "(the store's own disk-full handling takes over then; 0: the floor may delete any "
        "deletable row)",
    )
    archive: bool = Field(
        False,
        description="write the rows (with detections and feedback) to data_dir/archive/"
        "*.jsonl.gz before deleting them",
    )
    archive_max_mb: float = Field(
        1024.0, ge=1, le=1e9, description="most MB of archive files; the oldest go first"
    )


class StoreRetentionConfig(BaseModel):
    """``store.retention``: what the background retention pass deletes, and when."""

    model_config = _STRICT

    enabled: bool = Field(True, description="run retention passes in the background")
    interval_s: float = Field(60.0, ge=1, le=86_400, description="seconds between passes")
    min_free_mb: float = Field(
        2048.0,
        ge=0,
        le=1e9,
        description="free-space floor of data_dir's disk, MB: below it images go (in `order`), "
        "then the oldest deletable rows, until it is free again (0: no floor)",
    )
    images: ImageRetention = Field(default_factory=ImageRetention)
    rows: RowRetention = Field(default_factory=RowRetention)
    chunk_rows: int = Field(
        2000,
        ge=10,
        le=100_000,
        description="rows deleted per transaction (short, so the store's writer never waits long)",
    )
