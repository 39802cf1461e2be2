"""The class list of a ``kanjian dataset export``, settled from the station's model registry.

Class ids in the station's log are the ids of the model that judged each
inspection, so the export's list is read from that model's bundle in the
station's registry (``models`` table of ``kanjian.db``), checked against the
``class_id -> class_name`` pairs the logged detections show. Used by
:mod:`kanjian.training.station_log`; the rules are in
:mod:`kanjian.training.station_export`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kanjian.station.records import StoredInspection

# per model, keyed by sha256: (label as model_label() gives it, inspections it judged)
ModelCounts = dict[str, tuple[str, int]]
_Models = ModelCounts


def model_label(rec: StoredInspection) -> str:
    """``name version (sha256 prefix)`` of the model that judged a stored inspection."""
    return f"{rec.model_name} {rec.model_version} ({str(rec.model_sha256)[:12]})"


def bundle_classes(path: Path) -> tuple[str, ...]:
    """Class names of a registered model: a bundle's manifest, or a bare ONNX file's metadata.

    Raises:
        OSError / ValueError: naming the file when it is missing or unreadable.
    """
    from kanjian.inference.bundle import BundleError, read_manifest

    if path.is_dir():
        try:
            return tuple(read_manifest(path).class_names)
        except BundleError as e:
            raise ValueError(str(e)) from e
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not there")
    # a model started from a bare .onnx is registered by its file; Ultralytics
    # writes the class names into the file's metadata (imported here: slow)
    import onnxruntime as ort

    from kanjian.inference.metadata import read_ultralytics_metadata

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return tuple(read_ultralytics_metadata(session, path)["class_names"])
    except Exception as e:  # ONNX Runtime raises its own types; the message names the file
        raise ValueError(f"{path}: cannot read its class names: {e}") from e


def resolve_classes(
    conn: sqlite3.Connection,
    root: Path,
    models: ModelCounts,
    seen: dict[str, dict[int, str]],
    given: tuple[str, ...] | None,
) -> tuple[tuple[str, ...], list[str]]:
    """The export's class list (index = class id) and notes on where it came from.

    ``seen`` maps each model's sha256 to the ``class_id -> class_name`` pairs its
    logged detections show. Without ``given``, each model's list is read from its
    bundle in the registry and checked against ``seen``; models with different
    lists cannot share ids, so that is an error.

    Args:
        conn: the station's store, open (read-only is enough).
        root: the folder relative registry paths are relative to (the store's).
        models: the models that judged the selected inspections, as :func:`count_model`
            adds them up.
        seen: as above.
        given: the class list given by the user (``--classes``), or None.

    Raises:
        ValueError: without ``given``, when the list cannot be settled.
    """
    registry = _registry(conn, models)
    lists, unknown, mismatches = _bundle_lists(models, registry, root, seen)
    if given is not None:
        notes = [f"classes: as given (--classes): {list(given)}", *mismatches]
        for sha, names in lists.items():
            if names != given:
                notes.append(
                    f"classes: model {models[sha][0]} has {list(names)}; "
                    "its boxes are mapped to the given list by class name"
                )
        return given, notes
    return _one_class_list(models, registry, lists, unknown, mismatches)


def count_model(models: ModelCounts, row: StoredInspection) -> None:
    """Add ``row`` to ``models`` (``sha256 -> (label, inspections judged)``, first-seen order).

    Inspections without a model are not counted.
    """
    sha = row.model_sha256
    if sha:
        label, n = models.get(sha, (model_label(row), 0))
        models[sha] = (label, n + 1)


def _registry(conn: sqlite3.Connection, models: ModelCounts) -> dict[str, str]:
    """``sha256 -> path`` as registered (maybe relative) for those of ``models`` in the registry."""
    try:
        return {
            r["sha256"]: str(r["path"])
            for r in conn.execute("SELECT sha256, path FROM models").fetchall()
            if r["sha256"] in models
        }
    except sqlite3.OperationalError:  # a store from before the registry existed
        return {}


def _bundle_lists(
    models: _Models,
    registry: dict[str, str],
    root: Path,
    seen: dict[str, dict[int, str]],
) -> tuple[dict[str, tuple[str, ...]], list[str], list[str]]:
    """Read each model's class list from its bundle, and check it against the log.

    Returns ``sha256 -> class list`` for the models whose bundle was read and agrees
    with ``seen``; one line per model whose list is not known (not registered,
    bundle unreadable); and one line per model whose bundle disagrees with the log.
    """
    lists: dict[str, tuple[str, ...]] = {}
    unknown: list[str] = []
    mismatches: list[str] = []
    for sha, (label, n) in models.items():
        ids = ", ".join(f"{i} {name}" for i, name in sorted(seen.get(sha, {}).items()))
        shown = f"the log shows ids {ids}" if ids else "the log shows no detection"
        if sha not in registry:
            unknown.append(
                f"{label}, {n} inspections: not in the station's model registry; {shown}"
            )
            continue
        path = Path(registry[sha])
        path = path if path.is_absolute() else root / path
        try:
            names = bundle_classes(path)
        except (OSError, ValueError) as e:
            unknown.append(f"{label}, {n} inspections: its bundle is unreadable ({e}); {shown}")
            continue
        bad = [
            (cid, logged)
            for cid, logged in sorted(seen.get(sha, {}).items())
            if cid >= len(names) or names[cid] != logged
        ]
        if bad:
            # the registry's bundle is not what judged these inspections: its ids are no guide
            mismatches.append(
                f"model {label}: its bundle {path} does not match the log: the log has "
                + ", ".join(f"class {cid} = {logged!r}" for cid, logged in bad)
                + f", the bundle's class list is {list(names)}"
            )
            continue
        lists[sha] = names
    return lists, unknown, mismatches


def _one_class_list(
    models: _Models,
    registry: dict[str, str],
    lists: dict[str, tuple[str, ...]],
    unknown: list[str],
    mismatches: list[str],
) -> tuple[tuple[str, ...], list[str]]:
    """The one class list the bundles agree on, with a note naming them (no ``--classes``).

    Arguments are what :func:`count_model`, :func:`_registry` and :func:`_bundle_lists` return; no
    model at all gives an empty list.

    Raises:
        ValueError: a bundle disagrees with the log, a model's list is not known, or
            the models' lists differ.
    """
    if mismatches:
        raise ValueError("; ".join(mismatches) + ". Give --classes in the model's order")
    if unknown:
        raise ValueError(
            "the class list of the model(s) that judged these inspections is not known: "
            + "; ".join(unknown)
            + ". Give --classes in the model's order (index = class id)"
        )
    distinct = set(lists.values())
    if len(distinct) > 1:
        described = "; ".join(
            f"{models[sha][0]}, {models[sha][1]} inspections: {list(names)}"
            for sha, names in lists.items()
        )
        raise ValueError(
            f"these inspections come from {len(lists)} models with different class lists "
            f"({described}). Export one model with --model-sha256, or give --classes: "
            "every box is then mapped to that list by its class name"
        )
    if not distinct:
        return (), ["classes: no model judged these inspections; the class list is empty"]
    names = distinct.pop()
    where = ", ".join(f"{models[sha][0]} ({registry[sha]})" for sha in lists)
    return names, [f"classes: the model's, from its bundle: {where}"]
