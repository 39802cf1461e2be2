"""Make a frame source from its config."""

from __future__ import annotations

from kanjian.camera.config import (
    DeviceSourceConfig,
    FolderSourceConfig,
    GigESourceConfig,
    SourceConfig,
    StreamSourceConfig,
    VideoSourceConfig,
)
from kanjian.camera.files import FolderSource, VideoSource
from kanjian.camera.live import DeviceSource, StreamSource
from kanjian.camera.source import FrameSource


def open_source(config: SourceConfig, source_id: str = "cam0") -> FrameSource:
    """The source ``config`` describes, named ``source_id``.

    File sources check their input at once; live sources (device, stream)
    connect on the first ``read()`` and keep retrying, so a camera that is off
    at start-up does not stop the station.

    Raises:
        SourceError: a folder or video file that cannot be used at all.
    """
    if isinstance(config, FolderSourceConfig):
        return FolderSource(config, source_id)
    if isinstance(config, VideoSourceConfig):
        return VideoSource(config, source_id)
    if isinstance(config, DeviceSourceConfig):
        return DeviceSource(config, source_id)
    if isinstance(config, StreamSourceConfig):
        return StreamSource(config, source_id)
    if isinstance(config, GigESourceConfig):  # issue 6; PyGObject is imported only here
        from kanjian.camera.gige import GigESource

        return GigESource(config, source_id)
    raise TypeError(f"not a source config: {type(config).__name__}")
