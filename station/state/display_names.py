"""Display names of each registered model's classes: the bundle's, with the station's over them.

A bundle's manifest may carry ``display_names`` (:mod:`kanjian.inference.display_names`);
an engineer corrects or adds names on the station itself (``PUT
/api/models/{sha256}/display-names``, ``kanjian model names set``) without rebuilding
the bundle. The station's names are one ``settings`` row per model
(``display_names:<sha256>``), written in the same transaction as its audit row, so
they outlive restarts and read the same from the API process and the CLI. The
effective names are the bundle's with the station's on top, class by class.

The screen asks for them with every picture drawn and every ``/api/status``:
:meth:`DisplayNamesKeeper.effective` and :meth:`~DisplayNamesKeeper.for_language` are
kept in memory, per model and language. A change made here clears them at once; one
made by another process (``kanjian model names set`` on a running station's database)
is seen at the next read, because each read first compares the newest ``audit`` row's
id with the one the memory was filled at (one indexed lookup): every change of names,
set or reset, from whichever process, writes its audit row in the same transaction,
and so does every model activation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import RootModel

from kanjian.inference.bundle import BundleError, read_manifest
from kanjian.inference.display_names import (
    DisplayNames,
    check_display_names,
    label_names,
    merge_names,
)
from kanjian.station.state.audit import Actor, now_iso, write_audit
from kanjian.station.state.db import ConnectionPool, stored_override, write_tx

if TYPE_CHECKING:
    from kanjian.inference.model import OnnxModel

KEY_PREFIX = "display_names:"


class StoredNames(RootModel[DisplayNames]):
    """What the ``settings`` row holds: {lang: {class_name: name}}."""


class UnknownModel(LookupError):
    """No registered model has this sha256."""


@dataclass(frozen=True)
class ModelNames:
    """A model's display names and where they come from.

    Attributes:
        sha256: the model.
        class_names: its classes, in class-id order.
        effective: what the screen and the pictures show (bundle's + station's).
        bundle: the manifest's own.
        station: set on this station (empty: none), with when and by whom.
    """

    sha256: str
    class_names: tuple[str, ...]
    effective: DisplayNames
    bundle: DisplayNames
    station: DisplayNames
    set_at: str | None
    set_by: str | None


class DisplayNamesKeeper:
    """Reads and changes the display names of the station's registered models.

    Args:
        pool: connections to the station database.
        data_dir: the station's data folder (registered bundles' relative paths).
        active: the model judging now, when a station runs (its manifest is already
            loaded; a bare ``.onnx`` has its class names only there).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        data_dir: Path,
        active: Callable[[], OnnxModel] | None = None,
    ) -> None:
        self.pool = pool
        self.data_dir = data_dir
        self.active = active
        self._lock = threading.Lock()
        self._bundles: dict[str, tuple[tuple[str, ...], DisplayNames]] = {}
        # (sha, lang or None) -> names; valid while the newest audit id is _memo_at
        self._memo: dict[tuple[str, str | None], Any] = {}
        self._memo_at: int | None = None
        self._memo_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------
    def _from_bundle(self, sha: str) -> tuple[tuple[str, ...], DisplayNames]:
        """Class names and the manifest's display names of a registered model."""
        got = self._bundles.get(sha)
        if got is not None:
            return got
        model = self.active() if self.active is not None else None
        if model is not None and model.info.sha256 == sha:
            names = model.manifest.display_names if model.manifest else {}
            got = (tuple(model.info.class_names), dict(names))
        else:
            row = (
                self.pool.get()
                .execute("SELECT path FROM models WHERE sha256 = ?", [sha])
                .fetchone()
            )
            if row is None:
                raise UnknownModel(f"no registered model with sha256 {sha}")
            path = Path(row[0]) if Path(row[0]).is_absolute() else self.data_dir / row[0]
            got = _read_bundle(path)
        self._bundles[sha] = got  # a registered bundle's files never change
        return got

    def get(self, sha: str) -> ModelNames:
        """The model's names.

        Raises:
            UnknownModel: no registered model has ``sha``.
        """
        class_names, bundle = self._from_bundle(sha)
        stored = stored_override(self.pool.get(), KEY_PREFIX + sha, StoredNames, "display names")
        station = stored[0].root if stored else {}
        return ModelNames(
            sha256=sha,
            class_names=class_names,
            effective=merge_names(bundle, station),
            bundle=bundle,
            station=station,
            set_at=stored[1] if stored else None,
            set_by=stored[2] if stored else None,
        )

    def _version(self) -> int:
        """The newest audit row's id: it moves with every change of names, whichever
        process made it (set and reset write their audit row in the same transaction)."""
        row = self.pool.get().execute("SELECT max(id) FROM audit").fetchone()
        return int(row[0] or 0)

    def _remembered(self, key: tuple[str, str | None], make: Callable[[], Any]) -> Any:
        """``make()``, kept in memory under ``key`` until the audit moves on."""
        version = self._version()
        with self._memo_lock:
            if version != self._memo_at:  # a change since: whatever was kept is stale
                self._memo.clear()
                self._memo_at = version
            if key in self._memo:
                return self._memo[key]
        value = make()
        with self._memo_lock:
            if self._memo_at == version:  # not when a newer reader cleared it meanwhile
                self._memo[key] = value
        return value

    def forget(self) -> None:
        """Drop the names kept in memory (the next read goes to the database)."""
        with self._memo_lock:
            self._memo.clear()
            self._memo_at = None

    def effective(self, sha: str) -> DisplayNames:
        """{lang: {class_name: name}} shown for the model; empty for an unknown one.
        Kept in memory until the names change (see the module's docstring)."""

        def make() -> DisplayNames:
            try:
                return self.get(sha).effective
            except UnknownModel:
                return {}

        kept: DisplayNames = self._remembered((sha, None), make)
        return {lang: dict(m) for lang, m in kept.items()}  # a copy: callers may change it

    def for_language(self, sha: str | None, lang: str) -> dict[str, str]:
        """{class_name: name} in ``lang`` for the model (empty: show class names).
        Kept in memory until the names change (see the module's docstring)."""
        if sha is None:
            return {}
        kept: dict[str, str] = self._remembered(
            (sha, lang), lambda: label_names(self.effective(sha), lang)
        )
        return dict(kept)

    # -- changing ------------------------------------------------------------------
    def set(self, sha: str, names: Mapping[str, Mapping[str, str]], actor: Actor) -> ModelNames:
        """Make ``names`` the station's names for the model (replacing earlier ones).

        Raises:
            UnknownModel: no registered model has ``sha``.
            NamesError: a bad language tag or name, or a class the model lacks.
        """
        class_names, _ = self._from_bundle(sha)
        clean = check_display_names(names, class_names)
        with self._lock:
            db = self.pool.get()
            with write_tx(db):
                old = self.get(sha).station
                write_audit(db, actor, "model.display_names.set", sha, {"old": old, "new": clean})
                db.execute(
                    "INSERT INTO settings (key, value_json, set_at, set_by) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                    "set_at = excluded.set_at, set_by = excluded.set_by",
                    [
                        KEY_PREFIX + sha,
                        json.dumps(clean, ensure_ascii=False),
                        now_iso(),
                        actor.name,
                    ],
                )
            self.forget()
        return self.get(sha)

    def reset(self, sha: str, actor: Actor) -> ModelNames:
        """Drop the station's names for the model: the bundle's are shown again.

        Raises:
            UnknownModel: no registered model has ``sha``.
        """
        self._from_bundle(sha)
        with self._lock:
            db = self.pool.get()
            with write_tx(db):
                old = self.get(sha).station
                had = db.execute("DELETE FROM settings WHERE key = ?", [KEY_PREFIX + sha]).rowcount
                write_audit(db, actor, "model.display_names.reset", sha,
                            {"old": old, "had_override": had > 0})  # fmt: skip
            self.forget()
        return self.get(sha)


def _read_bundle(path: Path) -> tuple[tuple[str, ...], DisplayNames]:
    """Class names and display names of a bundle folder or a bare ``.onnx`` (its metadata)."""
    if path.is_dir():
        try:
            m = read_manifest(path)
        except BundleError as e:
            raise UnknownModel(f"the registered bundle cannot be read: {e}") from e
        return tuple(m.class_names), dict(m.display_names)
    from kanjian.inference.model import load_model  # a bare ONNX: its metadata has the names
    from kanjian.inference.session import ModelLoadError

    try:
        return tuple(load_model(path, ("cpu",)).info.class_names), {}
    except (ModelLoadError, BundleError, OSError) as e:
        raise UnknownModel(f"the registered model {path} cannot be read: {e}") from e


def last_model_sha(pool: ConnectionPool) -> str | None:
    """The model the station judged with last (its newest activation row), or ``None``."""
    row = (
        pool.get()
        .execute("SELECT sha256 FROM model_activations ORDER BY id DESC LIMIT 1")
        .fetchone()
    )
    return None if row is None else str(row[0])
