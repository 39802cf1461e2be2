"""The image quality gate's settings: station.yaml's, or an override that outlives restarts.

Tuned on the running station through ``PUT /api/quality`` (engineer), kept as one
``settings`` row written in the same transaction as its audit row (``quality.set``),
and put back in force by :meth:`QualityKeeper.restore` when the station is built,
until ``DELETE /api/quality`` (``quality.reset``) returns to station.yaml's. As with
the verdict rules (:mod:`kanjian.station.state.rules`), station.yaml is never rewritten.

Only the settings (on/off and the thresholds) may be overridden; how the numbers are
measured (rows, clip levels, the reference image) is station.yaml's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import TYPE_CHECKING

from kanjian.kernels.quality import warmup_quality
from kanjian.station.quality import QualityError, QualityGate, gate_from_config
from kanjian.station.quality_config import QualityConfig, QualitySettings
from kanjian.station.state.audit import Actor, now_iso, write_audit
from kanjian.station.state.db import ConnectionPool, stored_override, write_tx

if TYPE_CHECKING:
    from kanjian.station.inspector import Inspector

log = logging.getLogger(__name__)
KEY = "quality"

__all__ = ["KEY", "QualityKeeper"]


class QualityKeeper:
    """Sets, clears and restores the quality gate the inspector measures with.

    Args:
        pool: connections to the station database.
        inspector: the station's inspector.
        config: station.yaml's ``quality`` section (its reference image is read by
            :meth:`restore`).
    """

    def __init__(self, pool: ConnectionPool, inspector: Inspector, config: QualityConfig) -> None:
        self.pool = pool
        self.inspector = inspector
        self.config = config
        self.from_config = QualityGate()  # replaced by restore(), which reads the reference
        self._lock = threading.Lock()  # one change at a time: its row, then its swap

    def in_force(self) -> QualityGate:
        """What measures and judges the next frame."""
        return self.inspector.quality

    def set(self, settings: QualitySettings, actor: Actor) -> QualityGate:
        """Make ``settings`` judge from the next frame on and keep them over restarts.

        Raises:
            QualityError: ``max_reference_diff`` without a reference image.
        """
        self._check(settings)
        at = now_iso()
        with self._lock:
            gate = self._gate(settings, at, actor.name)
            if settings.enabled:
                warmup_quality()  # compile before the swap, not on the next frame
            db = self.pool.get()
            with write_tx(db):
                old = self.inspector.quality
                write_audit(db, actor, "quality.set", None,
                            {"old": _values(old), "new": settings.model_dump(mode="json")})  # fmt: skip
                db.execute(
                    "INSERT INTO settings (key, value_json, set_at, set_by) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                    "set_at = excluded.set_at, set_by = excluded.set_by",
                    [KEY, settings.model_dump_json(), at, actor.name],
                )
            self.inspector.set_quality(gate)
        return gate

    def reset(self, actor: Actor) -> QualityGate:
        """Drop the override: station.yaml's gate judges again from the next frame on."""
        with self._lock:
            if self.from_config.enabled:
                warmup_quality()
            db = self.pool.get()
            with write_tx(db):
                had = db.execute("DELETE FROM settings WHERE key = ?", [KEY]).rowcount > 0
                write_audit(db, actor, "quality.reset", None,
                            {"old": _values(self.inspector.quality),
                             "new": _values(self.from_config), "had_override": had})  # fmt: skip
            self.inspector.set_quality(self.from_config)
        return self.from_config

    def restore(self) -> QualityGate:
        """At start-up: station.yaml's gate (its reference image read now), with a stored
        override over it, saying so in the log; compiled now when it is on.

        Raises:
            QualityError: the reference image cannot be read.
        """
        self.from_config = gate_from_config(self.config)
        gate = self.from_config
        got = stored_override(self.pool.get(), KEY, QualitySettings, "quality gate settings")
        if got is not None:
            settings, at, by = got
            try:
                self._check(settings)
            except QualityError as e:  # station.yaml lost its reference since
                log.error("the quality gate settings set through the API on %s are not "
                          "usable any more, station.yaml's are used: %s", at, e)  # fmt: skip
            else:
                gate = self._gate(settings, at, by)
                log.warning(
                    "quality gate settings set through the API on %s by %s override "
                    "station.yaml's (DELETE /api/quality returns to them): %s",
                    at, by, json.dumps(settings.model_dump(mode="json"), sort_keys=True),
                )  # fmt: skip
        if gate.enabled:
            warmup_quality()
        with self._lock:
            self.inspector.set_quality(gate)
        return gate

    def _check(self, settings: QualitySettings) -> None:
        if settings.max_reference_diff is not None and self.from_config.reference is None:
            raise QualityError(
                "max_reference_diff needs a reference image, and station.yaml sets none: set "
                "quality.reference to an image of a good part and restart (or leave "
                "max_reference_diff null)"
            )

    def _gate(self, settings: QualitySettings, at: str, by: str | None) -> QualityGate:
        return dataclasses.replace(
            self.from_config, settings=settings, origin="api", set_at=at, set_by=by
        )


def _values(gate: QualityGate) -> dict[str, object]:
    """A gate's settings as JSON-ready data (audit rows)."""
    return gate.settings.model_dump(mode="json")
