"""What store retention did: one pass's counts, and its status for the API and ``/metrics``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from kanjian.station.retention_config import StoreRetentionConfig


@dataclass
class PassResult:
    """What one pass did (or, summed, all passes since start).

    Attributes:
        images_deleted: image files deleted (with their row or alone).
        image_bytes_freed: their bytes.
        rows_deleted: inspection rows deleted.
        rows_archived: rows written to the archive before deletion.
        undelivered_dropped: rows deleted before the platform confirmed them (sync on,
            ``delete_undelivered``), reported with a ``sync_dropped`` event.
        unsynced_deleted: rows deleted while sync is off that were never sent.
        rows_held: rows past their age held because the platform has not confirmed them.
        archive_files_deleted: archive files deleted to keep ``archive_max_mb``.
        pages_vacuumed: database pages given back to the file system.
    """

    images_deleted: int = 0
    image_bytes_freed: int = 0
    rows_deleted: int = 0
    rows_archived: int = 0
    undelivered_dropped: int = 0
    unsynced_deleted: int = 0
    rows_held: int = 0
    archive_files_deleted: int = 0
    pages_vacuumed: int = 0

    def add(self, other: PassResult) -> None:
        for f in dataclasses.fields(self):
            if f.name != "rows_held":  # a state, not a count
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class RetentionStatus:
    """Retention's state for ``/metrics`` and ``GET /api/settings/retention``.

    Attributes:
        config: the bounds in force.
        source: ``config`` (station.yaml) or ``api`` (set through the API, kept).
        set_at, set_by: when and by whom the API set it.
        passes, errors: passes run and failed since start.
        totals: everything deleted since start.
        last: the last pass's result; ``last_at`` its UTC time; ``last_seconds`` its duration.
        last_error: the last pass's error, if it failed.
        images_bytes: bytes of saved images after the last pass.
        db_bytes: bytes of the database file and its WAL after the last pass.
        incremental_vacuum: whether the file can shrink (else run ``kanjian store vacuum``).
    """

    config: StoreRetentionConfig
    source: Literal["config", "api"]
    set_at: str | None
    set_by: str | None
    passes: int
    errors: int
    totals: PassResult
    last: PassResult | None
    last_at: str | None
    last_seconds: float | None
    last_error: str | None
    images_bytes: int
    db_bytes: int
    incremental_vacuum: bool

    def metrics(self) -> dict[str, float]:
        """Prometheus samples: ``*_total`` are counters, the others gauges."""
        t = self.totals
        out: dict[str, float] = {
            f"kanjian_retention_{f.name}_total": float(getattr(t, f.name))
            for f in dataclasses.fields(t)
            if f.name != "rows_held"
        }
        out["kanjian_retention_passes_total"] = float(self.passes)
        out["kanjian_retention_errors_total"] = float(self.errors)
        out["kanjian_retention_rows_held"] = float(self.last.rows_held if self.last else 0)
        out["kanjian_retention_last_pass_seconds"] = float(self.last_seconds or 0.0)
        out["kanjian_retention_images_bytes"] = float(self.images_bytes)
        out["kanjian_retention_db_bytes"] = float(self.db_bytes)
        return out
