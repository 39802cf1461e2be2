"""Frame sources: image folders, video files, USB/V4L2 devices, RTSP/HTTP streams."""

from kanjian.camera.frame import Frame, FrameFailure

__all__ = ["Frame", "FrameFailure"]
