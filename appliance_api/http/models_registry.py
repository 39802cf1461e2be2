"""The station's model registry: accepted bundles, which one judges, and its history.

Bundles live under ``data_dir/models/<sha256>/`` (``sha256`` of ``model.onnx``,
the same value every inspection row records). The active model is the top of a
stack kept as append-only rows in ``model_activations``: ``start`` (the
config's model took effect) and ``activate`` push, ``rollback`` pops, ``boot``
only records which model the config named at each start. An activation made
through the API survives a restart unless the config names a different model
than it did at the previous start.

A swap goes through :meth:`Inspector.swap_model`, which the loop reads once per
frame: no frame is lost or judged twice, and each row names its model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from kanjian.appliance_api.http.audit import Actor, write_audit
from kanjian.appliance_api.http.auth import now_iso
from kanjian.appliance_api.http.bundle_archive import ArchiveRejected, extract_bundle, scratch_dir
from kanjian.appliance_api.http.db import ConnectionPool, write_tx
from kanjian.inference.bundle import BundleError, read_manifest
from kanjian.inference.golden import GoldenReport
from kanjian.inference.model import OnnxModel, load_model
from kanjian.inference.session import ModelLoadError
from kanjian.station.pipeline import Station

log = logging.getLogger(__name__)

MODELS_DIR = "models"
INCOMING_DIR = ".incoming"


_GOLDEN_SCRIPT = (
    "import json, sys; from pathlib import Path; "
    "from kanjian.inference.golden import check_bundle; "
    "r = check_bundle(Path(sys.argv[1])); "
    "print(json.dumps({'ok': r.ok, 'images': r.images, 'problems': r.problems}))"
)


def golden_check_isolated(bundle_dir: Path, timeout_s: float = 900.0) -> GoldenReport:
    """Run :func:`check_bundle` in a child process, on one thread.

    Not in the server process: the check runs the preprocessing kernels, and
    Numba's workqueue layer aborts the whole process when a second thread
    launches a kernel while the inspection loop runs one. One thread also
    leaves the cores to the running station.
    """
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run(
            [sys.executable, "-c", _GOLDEN_SCRIPT, str(bundle_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return GoldenReport(False, 0, [f"golden check took longer than {timeout_s:.0f} s"])
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return GoldenReport(False, 0, [f"golden check failed to run: {tail}"])
    out = json.loads(lines[-1])
    return GoldenReport(bool(out["ok"]), int(out["images"]), list(out["problems"]))


class RegistryError(Exception):
    """A registry request that cannot be done; ``status`` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelEntry:
    """One registered model bundle.

    Attributes:
        sha256: of its ``model.onnx``.
        name, version, task: from its manifest (or the ONNX metadata).
        path: bundle folder (or bare ONNX file for a config model without bundle).
        origin: ``config`` (named by station.yaml), ``upload`` (API) or ``platform`` (sync).
        size_bytes: size of the ONNX file (the whole bundle for platform deploys).
        golden_images: golden images it passed when accepted (0 / None: not recorded).
        added_at, added_by: when and by whom it was registered.
    """

    sha256: str
    name: str
    version: str
    task: str
    path: str
    origin: str
    size_bytes: int | None
    golden_images: int | None
    added_at: str
    added_by: str | None


class ModelRegistry:
    """Accepts bundles, activates them on the running station, rolls back.

    Args:
        pool: connections to the station database.
        station: the running station (its inspector swaps models; its config
            gives the data folder and execution providers).
    """

    def __init__(self, pool: ConnectionPool, station: Station) -> None:
        self.pool = pool
        self.station = station
        self.data_dir = station.config.store.data_dir
        self.models_dir = self.data_dir / MODELS_DIR
        self._lock = threading.Lock()  # one upload / activation / rollback at a time

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection."""
        return self.pool.get()

    # -- queries -------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        return [ModelEntry(**r) for r in self.db.query("SELECT * FROM models ORDER BY added_at")]

    def get(self, sha: str) -> ModelEntry | None:
        rows = list(self.db.query("SELECT * FROM models WHERE sha256 = ?", [sha]))
        return ModelEntry(**rows[0]) if rows else None

    def stack(self) -> list[str]:
        """Model shas from the oldest activation still in force to the active one."""
        st: list[str] = []
        for action, sha in self.db.execute(
            "SELECT action, sha256 FROM model_activations ORDER BY id"
        ).fetchall():
            if action in ("start", "activate"):
                st.append(sha)
            elif action == "rollback" and len(st) > 1:
                st.pop()
        return st

    def active_sha(self) -> str:
        return self.station.inspector.model.info.sha256

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(
            self.db.query("SELECT * FROM model_activations ORDER BY id DESC LIMIT ?", [limit])
        )

    # -- start-up ------------------------------------------------------------------
    def startup(self) -> str | None:
        """Register the config's model; restore an API activation that outlived a restart.

        Returns the sha of a restored model, or ``None`` when the config's model stays.
        """
        model = self.station.inspector.model
        cur = model.info.sha256
        self._ensure_entry(model, "config", "station")
        prev_boot = self.db.execute(
            "SELECT sha256 FROM model_activations WHERE action = 'boot' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        self._record(cur, "boot", "station")
        st = self.stack()
        top = st[-1] if st else None
        if top is not None and top != cur and prev_boot is not None and prev_boot[0] == cur:
            entry = self.get(top)
            if entry is not None:
                try:
                    self._swap_to(entry)
                    log.info(
                        "restored model %s v%s (%s…) activated before the restart",
                        entry.name,
                        entry.version,
                        top[:12],
                    )
                    return top
                except RegistryError as e:
                    log.error("could not restore the activated model %s…: %s", top[:12], e)
        if top != cur:
            self._record(cur, "start", "station")
        return None

    # -- upload --------------------------------------------------------------------
    def ingest(self, archive: Path, actor: Actor) -> tuple[ModelEntry, bool]:
        """Unpack, verify (manifest sha256 + golden check) and register an uploaded archive.

        Returns the entry and whether it is new. The archive file is left to the caller.

        Raises:
            ArchiveRejected / RegistryError: with a message naming the problem.
        """
        cfg = self.station.config.api
        incoming = self.models_dir / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        with self._lock, scratch_dir(incoming, uuid.uuid4().hex) as work:
            root = extract_bundle(archive, work, int(cfg.max_unpacked_mb * 2**20))
            report = golden_check_isolated(root)
            if not report.ok:
                raise RegistryError(
                    "bundle refused, golden check failed: "
                    + "; ".join(p.replace(str(root), "<bundle>") for p in report.problems),
                    422,
                )
            manifest = read_manifest(root)
            sha = manifest.onnx_sha256
            existing = self.get(sha)
            if existing is not None:
                return existing, False
            final = self.models_dir / sha
            if final.exists():  # left over from a crash between move and insert
                shutil.rmtree(final)
            os.replace(root, final)
            size = (final / "model.onnx").stat().st_size
            entry = ModelEntry(
                sha256=sha,
                name=manifest.name,
                version=manifest.version,
                task=manifest.task,
                path=str(final.relative_to(self.data_dir)),
                origin="upload",
                size_bytes=size,
                golden_images=report.images,
                added_at=now_iso(),
                added_by=actor.name,
            )
            row = asdict(entry)
            with write_tx(self.db):
                self.db["models"].insert(row)  # type: ignore[union-attr]
                write_audit(
                    self.db,
                    actor,
                    "model.upload",
                    sha,
                    {"name": manifest.name, "version": manifest.version, "bytes": size},
                )
            return entry, True

    # -- activation ----------------------------------------------------------------
    def activate(self, sha: str, actor: Actor) -> ModelEntry:
        """Make a registered model judge the next frames (the loop keeps running)."""
        with self._lock:
            entry = self.get(sha)
            if entry is None:
                raise RegistryError(f"no registered model with sha256 {sha}", 404)
            cur = self.active_sha()
            if sha == cur:
                raise RegistryError(f"model {entry.name} v{entry.version} is already active")
            self._swap_to(entry)
            with write_tx(self.db):
                self._record(sha, "activate", actor.name)
                write_audit(
                    self.db,
                    actor,
                    "model.activate",
                    sha,
                    {"name": entry.name, "version": entry.version, "replaced": cur},
                )
            return entry

    def rollback(self, actor: Actor) -> ModelEntry:
        """Go back to the model that was active before the current one."""
        with self._lock:
            st = self.stack()
            if len(st) < 2:
                raise RegistryError("nothing to roll back to: no earlier model in the history")
            target = self.get(st[-2])
            if target is None:
                raise RegistryError(f"the previous model {st[-2]} is no longer registered")
            cur = self.active_sha()
            self._swap_to(target)
            with write_tx(self.db):
                self._record(target.sha256, "rollback", actor.name)
                write_audit(
                    self.db,
                    actor,
                    "model.rollback",
                    target.sha256,
                    {"name": target.name, "version": target.version, "replaced": cur},
                )
            return target

    # -- internals -----------------------------------------------------------------
    def _abs(self, entry: ModelEntry) -> Path:
        p = Path(entry.path)
        return p if p.is_absolute() else self.data_dir / p

    def _swap_to(self, entry: ModelEntry) -> None:
        mc = self.station.config.model
        path = self._abs(entry)
        try:
            model = load_model(path, mc.providers, mc.intra_op_threads)
        except (ModelLoadError, BundleError) as e:
            raise RegistryError(f"model {entry.sha256[:12]}… cannot be loaded: {e}", 422) from e
        if model.info.sha256 != entry.sha256:
            raise RegistryError(
                f"{path}: the file on disk (sha256 {model.info.sha256[:12]}…) is not the "
                f"registered model {entry.sha256[:12]}…; refusing to run it",
                422,
            )
        # Warm ONNX Runtime up before the swap so the first frame it judges is not slow.
        # Only the session runs here: the preprocessing kernels must stay on the loop's
        # thread (Numba's workqueue layer aborts the process on concurrent launches).
        h, w = model.info.imgsz
        model.run(np.zeros((1, 3, h, w), np.float32))
        self.station.inspector.swap_model(model)
        log.info("model %s v%s (%s…) now judges", entry.name, entry.version, entry.sha256[:12])

    def _ensure_entry(self, model: OnnxModel, origin: str, by: str) -> None:
        if self.get(model.info.sha256) is not None:
            return
        path = model.path.parent if model.manifest is not None else model.path
        self.db["models"].insert(  # type: ignore[union-attr]
            {
                "sha256": model.info.sha256,
                "name": model.info.name,
                "version": model.info.version,
                "task": model.info.task,
                "path": str(path.resolve()),
                "origin": origin,
                "size_bytes": model.path.stat().st_size,
                "golden_images": 0,
                "added_at": now_iso(),
                "added_by": by,
            }
        )

    def _record(self, sha: str, action: str, actor: str) -> None:
        self.db.execute(
            "INSERT INTO model_activations (sha256, action, at, actor) VALUES (?, ?, ?, ?)",
            [sha, action, now_iso(), actor],
        )


__all__ = ["ArchiveRejected", "ModelEntry", "ModelRegistry", "RegistryError"]
