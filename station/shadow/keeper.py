"""Loading, stopping and promoting the shadow: each change checked, audited and kept.

The shadow is a bundle already in the model registry (uploaded with ``POST
/api/models`` or deployed by the platform). Loading it runs the same isolated golden
check as an activation, opens a ``shadow_sessions`` row and writes a ``shadow.set``
audit row in one transaction; stopping ends the session (``shadow.clear``). A
promotion passes the gate (:mod:`.gate`; ``force`` skips it, and says so in the
audit), the golden check again, then the registry's own activation
(:meth:`~kanjian.station.state.models.ModelRegistry.activate`): the old model stays
on the activation stack, so ``POST /api/models/rollback`` brings it back. Its audit row
(``model.promote``) and the session's end (``promoted``) are written in the
activation's transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Literal

import sqlite_utils

from kanjian.station.shadow.config import ShadowConfig
from kanjian.station.shadow.gate import GateCheck, check_gate
from kanjian.station.shadow.results import (
    Session,
    end_session,
    open_session,
    start_session,
)
from kanjian.station.shadow.runner import Runner, Target
from kanjian.station.state.audit import Actor, write_audit
from kanjian.station.state.db import ConnectionPool, write_tx
from kanjian.station.state.models import (
    Activation,
    ModelEntry,
    ModelRegistry,
    RegistryError,
    golden_check_isolated,
)

log = logging.getLogger(__name__)

#: ``not_found``: no such model; ``conflict``: nothing to do, or the active model;
#: ``invalid``: its golden check failed or it cannot be loaded; ``refused``: the
#: promotion gate; ``provider``: the station's provider cannot run it
ShadowErrorKind = Literal["not_found", "conflict", "invalid", "refused", "provider"]


class ShadowError(Exception):
    """A shadow request that cannot be done; ``kind`` says which sort (HTTP maps it)."""

    def __init__(self, message: str, kind: ShadowErrorKind = "conflict") -> None:
        super().__init__(message)
        self.kind: ShadowErrorKind = kind


class ShadowKeeper:
    """The current shadow session, and every change to it.

    Args:
        pool: connections to the station database.
        registry: the station's model registry (entries, golden check providers, activation).
        runner: feeds the shadow child.
        cfg: ``shadow`` from station.yaml (the gate).
        mm_per_px: the camera's scale, for the shadow's reasons (as the station's).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        registry: ModelRegistry,
        runner: Runner,
        cfg: ShadowConfig,
        mm_per_px: float | None,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.runner = runner
        self.cfg = cfg
        self.mm_per_px = mm_per_px
        self._lock = threading.RLock()  # one load / stop / promote at a time
        self.session: Session | None = None

    @property
    def db(self) -> sqlite_utils.Database:
        return self.pool.get()

    def _target(self, s: Session, entry: ModelEntry) -> Target:
        r = self.registry
        init = {"path": str(r.path_of(entry)), "sha256": entry.sha256,
                "providers": list(r.providers), "allow_fallback": r.allow_fallback,
                "mm_per_px": self.mm_per_px}  # fmt: skip
        return Target(s.id, entry.sha256, init, s.counters)

    # -- start-up ------------------------------------------------------------------
    def restore(self) -> Session | None:
        """Put back the shadow loaded before a restart (no golden check: it passed when
        loaded; the child still refuses a file whose sha256 changed). A session whose
        model is gone or now active is ended instead."""
        with self._lock:
            s = open_session(self.db)
            if s is None:
                return None
            entry = self.registry.get(s.model_sha256)
            why = None
            if entry is None:
                why = "model no longer registered"
            elif s.model_sha256 == self.registry.active_sha():
                why = "activated"
            if why is not None or entry is None:
                with write_tx(self.db):
                    end_session(self.db, s.id, "station", why or "", s.counters)
                log.warning("shadow session %d of %s… ended at start: %s",
                            s.id, s.model_sha256[:12], why)  # fmt: skip
                return None
            self.session = s
            self.runner.set_target(self._target(s, entry))
            log.info("shadow model %s v%s (%s…) put back, loaded by %s at %s",
                     entry.name, entry.version, s.model_sha256[:12], s.started_by,
                     s.started_at)  # fmt: skip
            return s

    # -- changes -------------------------------------------------------------------
    def _entry(self, sha: str) -> ModelEntry:
        entry = self.registry.get(sha)
        if entry is None:
            raise ShadowError(
                f"no registered model with sha256 {sha}: upload it first (POST /api/models)",
                "not_found",
            )
        return entry

    def _golden(self, entry: ModelEntry, what: str) -> None:
        report = golden_check_isolated(self.registry.path_of(entry), self.registry.providers)
        if not report.ok:
            raise ShadowError(
                f"model {entry.name} v{entry.version} not {what}, golden check failed: "
                + "; ".join(report.problems),
                "invalid",
            )

    def load(self, sha: str, actor: Actor) -> Session:
        """Make ``sha`` the shadow (replacing the current one, which ends as ``replaced``).

        Raises:
            ShadowError: unknown model (``not_found``), the active model or already the
                shadow (``conflict``), golden check failed (``invalid``).
        """
        with self._lock:
            entry = self._entry(sha)
            if sha == self.registry.active_sha():
                raise ShadowError(
                    f"model {entry.name} v{entry.version} is the active model: a shadow is "
                    "another model judging the same frames"
                )
            cur = self.session
            if cur is not None and cur.model_sha256 == sha:
                raise ShadowError(f"model {entry.name} v{entry.version} is already the shadow")
            self._golden(entry, "loaded as shadow")
            db = self.db
            counters = self.runner.set_target(None) if cur is not None else None
            with write_tx(db):
                if cur is not None and counters is not None:
                    end_session(db, cur.id, actor.name, "replaced", counters)
                s = start_session(db, sha, actor.name)
                detail = {"name": entry.name, "version": entry.version, "session": s.id,
                          "replaced": cur.model_sha256 if cur else None}  # fmt: skip
                write_audit(db, actor, "shadow.set", sha, detail)
            self.session = s
            self.runner.set_target(self._target(s, entry))
            return s

    def clear(self, actor: Actor, reason: str = "stopped") -> Session:
        """Stop the shadow; returns its ended session. ``conflict`` when none is loaded."""
        with self._lock:
            cur = self.session
            if cur is None:
                raise ShadowError("no shadow model is loaded")
            counters = self.runner.set_target(None) or cur.counters
            db = self.db
            with write_tx(db):
                end_session(db, cur.id, actor.name, reason, counters)
                detail = {"session": cur.id, "reason": reason, **vars(counters)}
                write_audit(db, actor, "shadow.clear", cur.model_sha256, detail)
            self.session = None
            return cur

    def activated_elsewhere(self) -> None:
        """The shadow model became the active one by another path: its session ends."""
        with contextlib.suppress(ShadowError):  # already stopped
            self.clear(Actor("station"), "activated")

    def gate(self) -> GateCheck | None:
        """The gate measured now for the current shadow (None: no shadow)."""
        cur = self.session
        if cur is None:
            return None
        self.runner.flush()  # what was judged counts
        return check_gate(self.db, cur.model_sha256, self.registry.active_sha(), self.cfg)

    def promote(self, actor: Actor, force: bool = False) -> tuple[Activation, GateCheck]:
        """Make the shadow the active model (the gate first, unless ``force``).

        Raises:
            ShadowError: no shadow (``conflict``); the gate refused, naming every failed
                condition with its numbers (``refused``, audited as
                ``shadow.promote_refused``); golden check failed (``invalid``); the
                registry refused the activation (its kind).
        """
        with self._lock:
            cur = self.session
            if cur is None:
                raise ShadowError("no shadow model is loaded: nothing to promote")
            entry = self._entry(cur.model_sha256)
            check = self.gate()
            assert check is not None
            if check.failed and not force:
                with write_tx(self.db):
                    write_audit(self.db, actor, "shadow.promote_refused", entry.sha256,
                                {"gate": check.as_dict()})  # fmt: skip
                raise ShadowError(
                    f"promotion of {entry.name} v{entry.version} refused: "
                    + "; ".join(check.failed),
                    "refused",
                )
            self._golden(entry, "promoted")

            def record(db: sqlite_utils.Database, done: Activation) -> None:
                prev = done.previous
                # no flush here: this is the activation's transaction on this thread's
                # connection; the feeder writes the last few results
                counters = self.runner.set_target(None, flush=False) or cur.counters
                end_session(db, cur.id, actor.name, "promoted", counters)
                detail = {"name": entry.name, "version": entry.version,
                          "replaced": prev.sha256 if prev else None, "forced": force,
                          "session": cur.id, "gate": check.as_dict()}  # fmt: skip
                write_audit(db, actor, "model.promote", entry.sha256, detail)

            try:
                done = self.registry.activate(entry.sha256, actor, record=record)
            except RegistryError as e:
                kind: ShadowErrorKind = "provider" if e.kind == "provider" else (
                    "not_found" if e.kind == "not_found" else "invalid" if e.kind == "invalid"
                    else "conflict")  # fmt: skip
                raise ShadowError(str(e), kind) from e
            self.session = None
            return done, check
