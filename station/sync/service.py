"""Wiring the platform sync into a built :class:`~kanjian.station.pipeline.Station`.

``build_station`` calls :func:`start_sync` when ``sync.enabled``; ``Station.close``
calls :meth:`SyncService.stop` after the store has committed everything.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from kanjian.inference.model import OnnxModel
from kanjian.station.sync.deploy import ModelDeployer
from kanjian.station.sync.status import SyncStatus
from kanjian.station.sync.worker import Identity, SyncWorker

if TYPE_CHECKING:
    from kanjian.station.pipeline import Station


class SyncService:
    """The sync worker and the model deployer of one station."""

    def __init__(self, worker: SyncWorker, deployer: ModelDeployer | None) -> None:
        self.worker = worker
        self.deployer = deployer

    def status(self) -> SyncStatus:
        """Backlog, last delivery, connection: for ``/status``, ``/metrics`` and the CLI."""
        return self.worker.status()

    def stop(self, drain_s: float | None = None) -> None:
        """Stop taking commands, drain the backlog for a while, say offline, disconnect."""
        if self.deployer is not None:
            self.deployer.stop()
        self.worker.stop(drain_s)


def _ref(model: OnnxModel) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(model.ref).items()}


def start_sync(station: Station) -> SyncService:
    """Start the sync worker (and deployer) for a station whose store is open."""
    cfg = station.config
    ident = Identity(cfg.station.site, cfg.station.line, cfg.station.id)
    worker = SyncWorker(
        station.store.db_path,
        station.store.data_dir,
        cfg.sync,
        ident,
        camera_state=lambda: str(station.pump.stats().source.state),
        model_ref=lambda: _ref(station.inspector.model),
    )
    deployer = None
    if cfg.sync.deploy_enabled:
        deployer = ModelDeployer(
            station.state,  # the registry the API uses: one unpacker, check and history
            cfg.sync.s3,
            worker.emit,
            int(cfg.sync.deploy_max_mb * 2**20),
            # the probe must not report the platform's swap a second time: the swap
            # happens under its lock and the new model is noted at once
            swap_lock=worker.model_lock,
            on_swapped=lambda model: worker.note_model(_ref(model)),
        )

    def on_command(name: str, payload: bytes) -> None:
        if name == "deploy_model" and deployer is not None:
            deployer.submit(payload)
        else:
            worker.emit("command_rejected", {"command": name, "reason": "unknown or disabled"})

    worker.on_command = on_command
    station.store.add_listener(worker.wake)
    worker.start()
    return SyncService(worker, deployer)
