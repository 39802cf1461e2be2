"""Make a frame source from its config, through the registry keyed by ``kind``."""

from __future__ import annotations

from pydantic import BaseModel

from kanjian.camera.registry import lookup
from kanjian.camera.source import FrameSource


def open_source(config: BaseModel, source_id: str = "cam0") -> FrameSource:
    """The source ``config`` describes, named ``source_id``.

    ``config`` is any registered kind's config model (the built-in ones are the
    members of :data:`~kanjian.camera.config.SourceConfig`); its ``kind`` picks
    the opener (:mod:`kanjian.camera.registry`). File sources check their input
    at once; live sources (device, stream, GigE) connect on the first ``read()``
    and keep retrying, so a camera that is off at start-up does not stop the
    station.

    Raises:
        SourceKindError: no source is registered for the config's kind (the
            message names the known kinds).
        SourceError: a folder or video file that cannot be used at all.
    """
    entry = lookup(config)
    return entry.opener(config, source_id)
