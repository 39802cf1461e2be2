"""Frame sources: image folders, video files, USB/V4L2 devices, RTSP/HTTP streams.

``open_source(config)`` makes a :class:`FrameSource`; a :class:`FramePump`
reads it on a background thread under a :data:`FramePolicy`.
"""

from kanjian.camera.config import (
    DeviceSourceConfig,
    FolderSourceConfig,
    FramePolicy,
    SourceConfig,
    StreamSourceConfig,
    VideoSourceConfig,
)
from kanjian.camera.factory import open_source
from kanjian.camera.files import FolderSource, VideoSource
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.live import DeviceSource, StreamSource
from kanjian.camera.pump import FramePump, PumpStats
from kanjian.camera.source import FrameSource, SourceError, SourceState, SourceStatus

__all__ = [
    "DeviceSource",
    "DeviceSourceConfig",
    "FolderSource",
    "FolderSourceConfig",
    "Frame",
    "FrameFailure",
    "FramePolicy",
    "FramePump",
    "FrameSource",
    "PumpStats",
    "SourceConfig",
    "SourceError",
    "SourceState",
    "SourceStatus",
    "StreamSource",
    "StreamSourceConfig",
    "VideoSource",
    "VideoSourceConfig",
    "open_source",
]
