"""The one owner of what the station keeps beyond inspections: models, rules, audit.

``build_station`` makes one :class:`StationState` and calls :meth:`~StationState.startup`
before the loop runs, so ``kanjian run`` and ``kanjian serve`` judge with the
same model and rules: whatever was activated or set through the API, the
platform or the PLC before the restart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kanjian.station.ruleset import RuleSet
from kanjian.station.state.audit import Actor, write_audit
from kanjian.station.state.db import ConnectionPool, write_tx
from kanjian.station.state.display_names import DisplayNamesKeeper
from kanjian.station.state.models import ModelRegistry
from kanjian.station.state.quality import QualityKeeper
from kanjian.station.state.rules import RulesKeeper

if TYPE_CHECKING:
    from kanjian.station.config import StationConfig
    from kanjian.station.inspector import Inspector

log = logging.getLogger(__name__)


class StationState:
    """The model registry, the rules keeper, the quality gate's keeper, the display names
    and the audit writer of one station.

    Args:
        cfg: the station config (data folder, providers, station.yaml's rules,
            the unpacked-bundle limit).
        inspector: the station's inspector; models and rules are swapped into it.
        db_path: the station's database (the store's file).
    """

    def __init__(self, cfg: StationConfig, inspector: Inspector, db_path: Path) -> None:
        self.pool = ConnectionPool(db_path)
        self.inspector = inspector
        self.models = ModelRegistry(
            self.pool,
            inspector,
            cfg.store.data_dir,
            cfg.model,
            int(cfg.api.max_unpacked_mb * 2**20),
        )
        m = cfg.model
        self.rules = RulesKeeper(self.pool, inspector, RuleSet(cfg.rules, m.conf, m.iou, m.max_det))
        self.quality = QualityKeeper(self.pool, inspector, cfg.quality)  # issue 15
        # display names per model: the bundles', with the ones set on this station over them
        self.names = DisplayNamesKeeper(self.pool, cfg.store.data_dir, lambda: inspector.model)

    def startup(self) -> None:
        """Register the config's model, restore an activation and a rules override that
        outlived a restart (the model first: the rules are checked against it), then the
        quality gate (station.yaml's reference image read, an API override put back)."""
        self.models.startup()
        self.rules.restore()
        self.quality.restore()

    def audit(
        self,
        actor: Actor,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Write one audit row on its own (a change with its own rows uses
        :func:`~kanjian.station.state.audit.write_audit` in the change's transaction)."""
        db = self.pool.get()
        with write_tx(db):
            return write_audit(db, actor, action, target, detail)

    def close(self) -> None:
        """Close every thread's connection (after the last change)."""
        self.pool.close_all()
