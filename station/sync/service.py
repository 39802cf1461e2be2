"""The platform sync as an outward channel of a built :class:`~kanjian.station.pipeline.Station`.

Importing this module registers the ``sync`` channel kind: ``build_station``
calls :func:`start_sync`, which makes a :class:`SyncService` when
``sync.enabled``. Each commit wakes the worker (it reads what the store
committed from the outbox); ``Station.close`` closes the channel after the
store has committed everything, so the last rows can still be sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from kanjian.inference.model import OnnxModel
from kanjian.inference.types import Inspection
from kanjian.station.pipeline import Station, register_channel
from kanjian.station.sync.deploy import ModelDeployer
from kanjian.station.sync.feedback_feed import shadow_probe
from kanjian.station.sync.status import SyncStatus
from kanjian.station.sync.worker import Identity, SyncWorker


class SyncService:
    """The sync worker and the model deployer of one station: its ``sync`` channel."""

    name = "sync"

    def __init__(self, worker: SyncWorker, deployer: ModelDeployer | None) -> None:
        self.worker = worker
        self.deployer = deployer

    def start(self) -> None:
        """Start the worker's thread; raises what stopped it (e.g. an unusable database)."""
        try:
            self.worker.start()
        except BaseException:
            if self.deployer is not None:  # its thread started with it: not left behind
                self.deployer.stop()
            raise

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        """Rows were committed: the worker looks at the outbox now (cheap)."""
        self.worker.wake()

    def close(self) -> None:
        """After the store's last commit: drain for a while, say offline, disconnect."""
        self.stop()

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


def fallback_data(model: OnnxModel) -> dict[str, Any] | None:
    """The ``provider_fallback`` event's data while ``model`` runs on another provider
    than the first of ``model.providers`` (``model.allow_fallback``), else ``None``."""
    si = model.session_info
    if not si.fell_back:
        return None
    return {
        "model": _ref(model),
        "requested": si.requested[0],
        "provider": si.provider,
        "providers_requested": list(si.requested),
        "providers_active": list(si.active),
        "cause": si.fallback_cause,
    }


def start_sync(station: Station) -> SyncService | None:
    """The sync channel (worker and deployer, unstarted) for a station whose store is open,
    or ``None`` when ``sync.enabled`` is off."""
    cfg = station.config
    if not cfg.sync.enabled:
        return None
    # an unreadable password file stops the start here, named, not the sync's thread later
    cfg.sync.mqtt.secret()
    ident = Identity(cfg.station.site, cfg.station.line, cfg.station.id)
    worker = SyncWorker(
        station.store.db_path,
        station.store.data_dir,
        cfg.sync,
        ident,
        camera_state=lambda: str(station.pump.stats().source.state),
        model_ref=lambda: _ref(station.inspector.model),
        fallback=lambda: fallback_data(station.inspector.model),
        shadow=shadow_probe(station),
        # an answer that can still be undone never leaves the station (1 s margin)
        feedback_delay_s=cfg.api.feedback_undo_s + 1.0 if cfg.sync.feedback else None,
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
    return SyncService(worker, deployer)


register_channel("sync", start_sync, order=20)
