"""The frame-source registry: one entry per config ``kind``.

Each source module registers its kind next to its class (``register_source("folder",
FolderSourceConfig, FolderSource)``); :func:`~kanjian.camera.factory.open_source`
looks the config's ``kind`` up here. A new camera kind is one new module (a
config model with a ``kind`` literal, a class that implements
:class:`~kanjian.camera.source.FrameSource`) plus its registration line, and a
line importing the module in ``camera/__init__.py`` so the kind is registered
whenever the camera package is loaded. For the station's YAML to accept it, its
config model also joins :data:`~kanjian.camera.config.SourceConfig` (a test holds
that union and this registry to the same kinds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast, get_args

from pydantic import BaseModel

from kanjian.camera.source import FrameSource

C = TypeVar("C", bound=BaseModel)

SourceOpener = Callable[[Any, str], FrameSource]
"""Makes a source from its config and its ``source_id``; usually the source class itself."""


class SourceKindError(TypeError):
    """A config whose ``kind`` no registered source takes, or a clashing registration."""


@dataclass(frozen=True)
class SourceKind:
    """One registered kind: its config model and what opens it."""

    kind: str
    config_type: type[BaseModel]
    opener: SourceOpener


_KINDS: dict[str, SourceKind] = {}
_LOCK = threading.Lock()


def register_source(
    kind: str, config_type: type[C], opener: Callable[[C, str], FrameSource]
) -> None:
    """Make configs of ``config_type`` (whose ``kind`` field is ``kind``) open with ``opener``.

    Registering the same kind again with the same config model replaces the
    opener (a module reloaded in a test); another model under a taken kind is
    refused.

    Raises:
        SourceKindError: ``config_type`` has no ``kind`` field defaulting to ``kind``,
            or ``kind`` is already taken by another config model.
    """
    field = config_type.model_fields.get("kind")
    if field is None or field.default != kind:
        raise SourceKindError(
            f"{config_type.__name__} must have a field kind: Literal[{kind!r}] = {kind!r}"
        )
    with _LOCK:
        known = _KINDS.get(kind)
        if known is not None and known.config_type is not config_type:
            raise SourceKindError(
                f"source kind {kind!r} is already registered for {known.config_type.__name__}"
            )
        _KINDS[kind] = SourceKind(kind, config_type, cast(SourceOpener, opener))


def unregister_source(kind: str) -> None:
    """Forget ``kind`` (tests that register a kind of their own clean up with this)."""
    with _LOCK:
        _KINDS.pop(kind, None)


def source_kinds() -> tuple[str, ...]:
    """The registered kinds, sorted."""
    with _LOCK:
        return tuple(sorted(_KINDS))


def lookup(config: BaseModel) -> SourceKind:
    """The registered entry for ``config``'s ``kind``.

    Raises:
        SourceKindError: no source is registered for that kind, or it is
            registered for another config model; the message names the known kinds.
    """
    kind = getattr(config, "kind", None)
    with _LOCK:
        entry = _KINDS.get(kind) if isinstance(kind, str) else None
        known = ", ".join(sorted(_KINDS)) or "none"
    if entry is None:
        raise SourceKindError(
            f"no frame source is registered for kind {kind!r} "
            f"({type(config).__name__}); known kinds: {known}"
        )
    if not isinstance(config, entry.config_type):
        raise SourceKindError(
            f"kind {kind!r} is registered for {entry.config_type.__name__}, "
            f"not {type(config).__name__}"
        )
    return entry


def union_kinds(union: object) -> dict[str, type[BaseModel]]:
    """``kind`` -> config model of every member of a discriminated union such as
    :data:`~kanjian.camera.config.SourceConfig` (``Annotated[A | B, Field(...)]``)."""
    members = get_args(union)
    if members and not isinstance(members[0], type):  # Annotated: the union comes first
        members = get_args(members[0])
    out: dict[str, type[BaseModel]] = {}
    for m in members:
        if isinstance(m, type) and issubclass(m, BaseModel) and "kind" in m.model_fields:
            out[str(m.model_fields["kind"].default)] = m
    return out
