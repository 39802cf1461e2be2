"""The station's model registry: accepted bundles, which one judges, and its history.

Bundles live under ``data_dir/models/<sha256>/`` (``sha256`` of ``model.onnx``,
the same value every inspection row records), whether an engineer uploaded
them through the API or the platform deployed them. The active model is the
top of a stack kept as append-only rows in ``model_activations``: ``start``
(the config's model took effect) and ``activate`` push, ``rollback`` pops,
``boot`` only records which model the config named at each start. An
activation (API, platform or PLC recipe) survives a restart, under ``kanjian
run`` as under ``kanjian serve``, unless the config names a different model
than it did at the previous start.

Every swap goes through :meth:`Inspector.swap_model`, which the loop reads once
per frame: no frame is lost or judged twice, and each row names its model.
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
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import sqlite_utils

from kanjian.inference.bundle import BundleError, read_manifest
from kanjian.inference.golden import GoldenReport
from kanjian.inference.model import OnnxModel, load_model
from kanjian.inference.session import ModelLoadError, ProviderUnavailableError
from kanjian.inference.types import ModelRef
from kanjian.station.state.archive import ArchiveRejected, extract_bundle, scratch_dir
from kanjian.station.state.audit import Actor, now_iso, write_audit
from kanjian.station.state.db import ConnectionPool, write_tx

if TYPE_CHECKING:
    from kanjian.station.config import ModelConfig
    from kanjian.station.inspector import Inspector

log = logging.getLogger(__name__)

MODELS_DIR = "models"
INCOMING_DIR = ".incoming"

# The check judges the bundle (its hash, its answers), so it may replay on the next
# provider; whether the station may run it there is the activation's question (_load).
_GOLDEN_SCRIPT = (
    "import json, sys; from pathlib import Path; "
    "from kanjian.inference.golden import check_bundle; "
    "r = check_bundle(Path(sys.argv[1]), tuple(sys.argv[2:]) or ('cpu',), allow_fallback=True); "
    "print(json.dumps({'ok': r.ok, 'images': r.images, 'problems': r.problems}))"
)


def golden_check_isolated(
    bundle_dir: Path, providers: tuple[str, ...] = ("cpu",), timeout_s: float = 900.0
) -> GoldenReport:
    """Run :func:`~kanjian.inference.golden.check_bundle` in a child process, on one thread.

    Not in the station's process: the check runs the preprocessing kernels, and
    Numba's workqueue layer aborts the whole process when a second thread
    launches a kernel while the inspection loop runs one; a crafted ONNX file
    that crashes ONNX Runtime also takes only the child down. One thread
    leaves the cores to the running station.
    """
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run(
            [sys.executable, "-c", _GOLDEN_SCRIPT, str(bundle_dir), *providers],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return GoldenReport(False, 0, [f"golden check took longer than {timeout_s:.0f} s"])
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
        return GoldenReport(False, 0, [f"golden check failed to run: {tail}"])
    out = json.loads(lines[-1])
    return GoldenReport(bool(out["ok"]), int(out["images"]), list(out["problems"]))


#: ``not_found``: no such model; ``conflict``: nothing to do (already active, no
#: history); ``invalid``: the bundle fails its checks or cannot be loaded;
#: ``provider``: the first of ``model.providers`` cannot run it and
#: ``model.allow_fallback`` is off (the running model keeps judging)
RegistryErrorKind = Literal["not_found", "conflict", "invalid", "provider"]


class RegistryError(Exception):
    """A registry request that cannot be done; ``kind`` says which sort (the HTTP
    layer maps it to a status)."""

    def __init__(self, message: str, kind: RegistryErrorKind = "conflict") -> None:
        super().__init__(message)
        self.kind: RegistryErrorKind = kind


@dataclass(frozen=True)
class ModelEntry:
    """One registered model bundle.

    Attributes:
        sha256: of its ``model.onnx``.
        name, version, task: from its manifest (or the ONNX metadata).
        path: bundle folder (or bare ONNX file for a config model without bundle),
            relative to the data folder for bundles the registry keeps.
        origin: ``config`` (station.yaml or plc.recipes), ``upload`` (API) or
            ``platform`` (sync).
        size_bytes: size of the ONNX file.
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


@dataclass(frozen=True)
class Activation:
    """What an activation did: ``previous`` is ``None`` when ``entry`` already judged."""

    entry: ModelEntry
    previous: ModelRef | None


#: writes the audit row(s) of an activation inside its transaction
Recorder = Callable[[sqlite_utils.Database, Activation], None]


class ModelRegistry:
    """Accepts bundles, activates them on the running inspector, rolls back.

    Args:
        pool: connections to the station database.
        inspector: the station's inspector (its model is swapped between frames).
        data_dir: the station's data folder (bundles go under ``models/``).
        model_cfg: execution providers and threads to load models with.
        max_unpacked_bytes: default limit of an unpacked bundle.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        inspector: Inspector,
        data_dir: Path,
        model_cfg: ModelConfig,
        max_unpacked_bytes: int,
    ) -> None:
        self.pool = pool
        self.inspector = inspector
        self.data_dir = data_dir
        self.models_dir = data_dir / MODELS_DIR
        self.providers = tuple(model_cfg.providers)
        self.intra_op_threads = model_cfg.intra_op_threads
        self.allow_fallback = model_cfg.allow_fallback
        self.max_unpacked_bytes = max_unpacked_bytes
        self._lock = threading.RLock()  # one upload / activation / rollback at a time

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
        return self.inspector.model.info.sha256

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(
            self.db.query("SELECT * FROM model_activations ORDER BY id DESC LIMIT ?", [limit])
        )

    def path_of(self, entry: ModelEntry) -> Path:
        """The entry's bundle folder (or ONNX file) on disk."""
        p = Path(entry.path)
        return p if p.is_absolute() else self.data_dir / p

    # -- start-up ------------------------------------------------------------------
    def startup(self) -> str | None:
        """Register the config's model; restore an activation that outlived a restart.

        Also removes half-unpacked archives a crash left in ``models/.incoming``.
        Returns the sha of a restored model, or ``None`` when the config's model stays.
        """
        shutil.rmtree(self.models_dir / INCOMING_DIR, ignore_errors=True)
        model = self.inspector.model
        cur = model.info.sha256
        db = self.db
        with write_tx(db):
            self._ensure_entry(db, model, "config", "station")
            prev_boot = db.execute(
                "SELECT sha256 FROM model_activations WHERE action = 'boot' "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
            self._record(db, cur, "boot", "station")
        st = self.stack()
        top = st[-1] if st else None
        if top is not None and top != cur and prev_boot is not None and prev_boot[0] == cur:
            entry = self.get(top)
            if entry is not None:
                try:
                    self._swap(self._load(entry))
                    log.info("restored model %s v%s (%s…) activated before the restart",
                             entry.name, entry.version, top[:12])  # fmt: skip
                    return top
                except RegistryError as e:
                    log.error("could not restore the activated model %s…: %s", top[:12], e)
        if top != cur:
            with write_tx(db):
                self._record(db, cur, "start", "station")
        return None

    # -- upload / deploy -----------------------------------------------------------
    def ingest(
        self,
        archive: Path,
        actor: Actor,
        *,
        origin: str = "upload",
        max_unpacked_bytes: int | None = None,
        audit: bool = True,
    ) -> tuple[ModelEntry, bool]:
        """Unpack, verify (manifest sha256 + golden check) and register a bundle archive.

        Returns the entry and whether it is new. The archive file is left to the
        caller. ``audit``: write the ``model.upload`` row (a platform deploy
        writes its own outcome row instead).

        Raises:
            ArchiveRejected / RegistryError: with a message naming the problem.
        """
        limit = self.max_unpacked_bytes if max_unpacked_bytes is None else max_unpacked_bytes
        incoming = self.models_dir / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        with self._lock, scratch_dir(incoming, uuid.uuid4().hex) as work:
            root = extract_bundle(archive, work, limit)
            report = golden_check_isolated(root, self.providers)
            if not report.ok:
                raise RegistryError(
                    "bundle refused, golden check failed: "
                    + "; ".join(p.replace(str(root), "<bundle>") for p in report.problems),
                    "invalid",
                )
            try:
                manifest = read_manifest(root)
            except BundleError as e:
                raise RegistryError(str(e).replace(str(root), "<bundle>"), "invalid") from e
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
                origin=origin,
                size_bytes=size,
                golden_images=report.images,
                added_at=now_iso(),
                added_by=actor.name,
            )
            db = self.db
            with write_tx(db):
                db["models"].insert(asdict(entry))  # type: ignore[union-attr]
                if audit:
                    detail = {"name": manifest.name, "version": manifest.version, "bytes": size}
                    write_audit(db, actor, "model.upload", sha, detail)
            return entry, True

    # -- activation ----------------------------------------------------------------
    def activate(
        self,
        sha: str,
        actor: Actor,
        *,
        if_active: Literal["refuse", "accept"] = "refuse",
        record: Recorder | None = None,
        swap_lock: threading.Lock | None = None,
        on_swapped: Callable[[OnnxModel], None] | None = None,
    ) -> Activation:
        """Make a registered model judge the next frames (the loop keeps running).

        Args:
            if_active: ``refuse`` (RegistryError, ``conflict``) or ``accept`` (nothing is
                swapped or pushed; ``record`` still runs) when it already judges.
            record: writes the audit row(s) in the activation's transaction; default:
                a ``model.activate`` row.
            swap_lock, on_swapped: held around the swap / called under it with the new
                model (the sync's model probe, so it does not report this swap again).
        """
        with self._lock:
            entry = self.get(sha)
            if entry is None:
                raise RegistryError(f"no registered model with sha256 {sha}", "not_found")
            cur = self.inspector.model
            if sha == cur.info.sha256:
                if if_active == "refuse":
                    raise RegistryError(f"model {entry.name} v{entry.version} is already active")
                done = Activation(entry, None)
                if record is not None:
                    db = self.db
                    with write_tx(db):
                        record(db, done)
                return done
            model = self._load(entry)
            done = Activation(entry, cur.ref)
            db = self.db
            # the row first: a change is never without its row (and a failed write
            # changes nothing); the swap itself cannot fail
            with write_tx(db):
                self._record(db, sha, "activate", actor.name)
                (record or self._activate_row(actor))(db, done)
            self._swap(model, swap_lock, on_swapped)
            return done

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
            model = self._load(target)
            db = self.db
            with write_tx(db):
                self._record(db, target.sha256, "rollback", actor.name)
                detail = {"name": target.name, "version": target.version, "replaced": cur}
                write_audit(db, actor, "model.rollback", target.sha256, detail)
            self._swap(model)
            return target

    def use_loaded(
        self, model: OnnxModel, actor: Actor, action: str, detail: dict[str, Any]
    ) -> ModelRef | None:
        """Make an already loaded model judge (a PLC recipe); ``None`` if it already does.

        The model is registered (origin ``config``) if it is not yet, its activation
        pushed and ``action`` audited with ``detail`` plus the ``model`` and the
        ``previous`` one, like any other activation.
        """
        with self._lock:
            cur = self.inspector.model
            if cur.info.sha256 == model.info.sha256:
                return None
            refs = {"model": asdict(model.ref), "previous": asdict(cur.ref)}
            db = self.db
            with write_tx(db):
                self._ensure_entry(db, model, "config", actor.name)
                self._record(db, model.info.sha256, "activate", actor.name)
                write_audit(db, actor, action, model.info.sha256, {**detail, **refs})
            self._swap(model)
            return cur.ref

    # -- internals -----------------------------------------------------------------
    @staticmethod
    def _activate_row(actor: Actor) -> Recorder:
        def row(db: sqlite_utils.Database, done: Activation) -> None:
            e, prev = done.entry, done.previous
            detail = {"name": e.name, "version": e.version,
                      "replaced": prev.sha256 if prev else None}  # fmt: skip
            write_audit(db, actor, "model.activate", e.sha256, detail)

        return row

    def _load(self, entry: ModelEntry) -> OnnxModel:
        """Load and warm up ``entry``'s model, checking it is the registered one."""
        path = self.path_of(entry)
        try:
            model = load_model(path, self.providers, self.intra_op_threads, self.allow_fallback)
        except ProviderUnavailableError as e:
            raise RegistryError(
                f"model {entry.sha256[:12]}… not activated, the running model keeps judging: {e}",
                "provider",
            ) from e
        except (ModelLoadError, BundleError) as e:
            raise RegistryError(
                f"model {entry.sha256[:12]}… cannot be loaded: {e}", "invalid"
            ) from e
        if model.info.sha256 != entry.sha256:
            raise RegistryError(
                f"{path}: the file on disk (sha256 {model.info.sha256[:12]}…) is not the "
                f"registered model {entry.sha256[:12]}…; refusing to run it",
                "invalid",
            )
        # Warm ONNX Runtime up before the swap so the first frame it judges is not slow.
        # Only the session runs here: the preprocessing kernels must stay on the loop's
        # thread (Numba's workqueue layer aborts the process on concurrent launches).
        h, w = model.info.imgsz
        model.run(np.zeros((1, 3, h, w), np.float32))
        return model

    def _swap(
        self,
        model: OnnxModel,
        swap_lock: threading.Lock | None = None,
        on_swapped: Callable[[OnnxModel], None] | None = None,
    ) -> None:
        with swap_lock or nullcontext():
            self.inspector.swap_model(model)
            if on_swapped is not None:
                on_swapped(model)
        i = model.info
        log.info("model %s v%s (%s…) now judges", i.name, i.version, i.sha256[:12])

    @staticmethod
    def _ensure_entry(db: sqlite_utils.Database, model: OnnxModel, origin: str, by: str) -> None:
        if db.execute("SELECT 1 FROM models WHERE sha256 = ?", [model.info.sha256]).fetchone():
            return
        path = model.path.parent if model.manifest is not None else model.path
        db["models"].insert(  # type: ignore[union-attr]
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

    @staticmethod
    def _record(db: sqlite_utils.Database, sha: str, action: str, actor: str) -> None:
        db.execute(
            "INSERT INTO model_activations (sha256, action, at, actor) VALUES (?, ?, ?, ?)",
            [sha, action, now_iso(), actor],
        )


__all__ = [
    "Activation",
    "ArchiveRejected",
    "ModelEntry",
    "ModelRegistry",
    "RegistryError",
    "golden_check_isolated",
]
