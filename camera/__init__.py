"""Frame sources: image folders, video files, USB/V4L2 devices, RTSP/HTTP streams, GigE Vision.

``open_source(config)`` makes a :class:`FrameSource` through the registry keyed
by the config's ``kind`` (:mod:`kanjian.camera.registry`); a :class:`FramePump`
reads it on a background thread under a :data:`FramePolicy`. Importing this
package imports every built-in source module, and each registers its kind.
"""

from kanjian.camera import gige as _gige  # noqa: F401  registers "gige" (PyGObject loads on open)
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
from kanjian.camera.registry import SourceKindError, register_source, source_kinds
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
    "SourceKindError",
    "SourceState",
    "SourceStatus",
    "StreamSource",
    "StreamSourceConfig",
    "VideoSource",
    "VideoSourceConfig",
    "open_source",
    "register_source",
    "source_kinds",
]
