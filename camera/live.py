"""Live sources that reconnect on their own: network streams and V4L2 devices.

Both share one loop (:class:`_ReconnectingSource`): open lazily, read, and on
any sign of trouble release the capture and reopen it with exponential
backoff. Trouble is:

- ``cap.read()`` returns no frame: the peer closed, or nothing arrived within
  ``read_timeout_s`` (FFmpeg's interrupt callback ends the wait);
- a read blocked longer than ``max_frame_age_s`` and then returned a frame:
  the frame was sitting in a buffer while the peer stalled, so it is stale. A
  hung H.264 RTSP peer does exactly this (decoder drain) before reads fail;
- the same frame over and over (same timestamp and same pixels) for longer than
  ``max_frame_age_s``: some MJPEG relays resend the last JPEG when their camera
  stalls. A perfectly static synthetic picture without timestamps looks the same
  and is reopened every ``max_frame_age_s``; real sensors have noise.

``read()`` never blocks without bound. While disconnected, one call makes at
most one reopen attempt: if the next attempt is due more than
``read_timeout_s`` away, the call waits ``read_timeout_s`` and returns
``FrameFailure(missed=True)``; otherwise it waits for the attempt, tries
(up to ``open_timeout_s``) and returns a missed failure if that fails. So one
call takes at most about ``open_timeout_s + 2 * read_timeout_s +
max_frame_age_s`` and the pipeline always gets a record back.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.camera.config import DeviceSourceConfig, StreamSourceConfig
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.registry import register_source
from kanjian.camera.source import SourceStatus, StatusBook, redact_url

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV takes FFmpeg options only from this process-wide variable, read at each
# open: set it, open, restore, under a lock so two sources never see each other's.
_ffmpeg_env_lock = threading.Lock()
# CAP_PROP_PTS is INT64_MIN (as a double) when the stream carries no timestamps.
_NO_PTS = -(2.0**62)
# Duplicate check on a subsample: cheap, and a resent picture matches it exactly.
_DUP_STRIDE = 4


class _OpenFailed(Exception):
    """A connection attempt failed; the message says why, for status and logs."""


class _ReconnectingSource:
    """The read/reconnect loop shared by streams and devices; see the module docstring."""

    def __init__(
        self,
        config: StreamSourceConfig | DeviceSourceConfig,
        source_id: str,
        name: str,
        *,
        use_pts: bool,
    ) -> None:
        self._cfg = config
        self._name = name
        self._use_pts = use_pts
        self._book = StatusBook(source_id, state="reconnecting")
        self._cap: cv2.VideoCapture | None = None
        self._closed = False
        self._ever_connected = False
        self._next_attempt = time.monotonic()
        self._backoff = config.backoff_initial_s
        self._frames_this_connection = 0
        self._last_new_at = 0.0
        self._prev_pts: float | None = None
        self._prev_sample: NDArray[np.uint8] | None = None
        # Root cause of the current outage, repeated in "still reconnecting" records.
        self._cause = "not connected yet"

    def _open_capture(self) -> cv2.VideoCapture:
        """Open one connection. Raises :class:`_OpenFailed` with the reason."""
        raise NotImplementedError

    @property
    def source_id(self) -> str:
        return self._book.source_id

    def status(self) -> SourceStatus:
        return self._book.snapshot()

    def close(self) -> None:
        self._closed = True
        self._release()
        self._book.set_state("ended")

    def read(self) -> Frame | FrameFailure | None:
        if self._closed:
            return None
        if self._cap is None:
            failure = self._try_connect()
            if failure is not None:
                return failure
        return self._read_frame()

    # -- connection -------------------------------------------------------------

    def _try_connect(self) -> FrameFailure | None:
        early = self._book.wait_for_attempt(
            self._next_attempt, self._cfg.read_timeout_s, self._name, self._cause
        )
        if early is not None:
            return early
        try:
            cap = self._open_capture()
        except _OpenFailed as exc:
            self._schedule_retry()
            self._cause = f"cannot open {self._name}: {exc}"
            return self._book.failure(self._cause, self._name, missed=True)
        self._cap = cap
        self._frames_this_connection = 0
        self._prev_pts = None
        self._prev_sample = None
        self._last_new_at = time.monotonic()
        if self._ever_connected:
            self._book.count_reconnect()
        self._ever_connected = True
        self._book.set_state("connected")
        return None

    def _schedule_retry(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2.0, self._cfg.backoff_max_s)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _lost(self, reason: str) -> FrameFailure:
        self._cause = reason
        self._release()
        self._book.set_state("reconnecting", reason)
        self._schedule_retry()
        return self._book.failure(reason, self._name, missed=True)

    # -- reading ----------------------------------------------------------------

    def _read_frame(self) -> Frame | FrameFailure:
        assert self._cap is not None
        max_age = self._cfg.max_frame_age_s
        while True:
            started = time.monotonic()
            try:
                ok, image = self._cap.read()
            except cv2.error as exc:
                return self._lost(f"{self._name}: read failed: {exc}")
            now = time.monotonic()
            if not ok or image is None:
                return self._lost(
                    f"{self._name}: no frame within read_timeout_s={self._cfg.read_timeout_s:g} "
                    "(peer closed, stalled or unreachable)"
                )
            # The first frame of a connection may wait for a key frame; only
            # later reads are held to the frame-age limit.
            blocked = now - started
            if self._frames_this_connection > 0 and blocked > max_age:
                return self._lost(
                    f"{self._name}: hung: a read blocked {blocked:.2f} s, above "
                    f"max_frame_age_s={max_age:g}; the frame it returned is stale"
                )
            pixels = np.ascontiguousarray(image, dtype=np.uint8)
            if self._is_repeat(pixels):
                if now - self._last_new_at > max_age:
                    return self._lost(
                        f"{self._name}: hung: the same frame repeated for "
                        f"{now - self._last_new_at:.2f} s, above max_frame_age_s={max_age:g}"
                    )
                time.sleep(0.005)
                continue
            self._last_new_at = now
            self._frames_this_connection += 1
            # A connection that delivers has earned a fresh backoff.
            self._backoff = self._cfg.backoff_initial_s
            uri = f"{self._name}#frame={self._frames_this_connection - 1}"
            return self._book.frame(pixels, uri)

    def _is_repeat(self, image: NDArray[np.uint8]) -> bool:
        """Same timestamp (if the stream has them) and same pixels as the previous frame."""
        assert self._cap is not None
        pts: float | None = None
        if self._use_pts:
            value = float(self._cap.get(cv2.CAP_PROP_PTS))
            pts = value if value > _NO_PTS else None
        new_pts = pts is not None and pts != self._prev_pts
        self._prev_pts = pts
        sample = np.array(image[::_DUP_STRIDE, ::_DUP_STRIDE], copy=True)
        prev, self._prev_sample = self._prev_sample, sample
        if new_pts or prev is None:
            return False
        return prev.shape == sample.shape and bool(np.array_equal(prev, sample))


class StreamSource(_ReconnectingSource):
    """An RTSP or HTTP(S) MJPEG camera via OpenCV's FFmpeg backend, reconnecting on its own.

    ``uri`` of a frame is ``<url with password masked>#frame=N``, N counting
    frames since the current connection opened.
    """

    def __init__(self, config: StreamSourceConfig, source_id: str = "cam0") -> None:
        super().__init__(config, source_id, redact_url(config.url), use_pts=True)
        self._stream_cfg = config

    def _ffmpeg_options(self) -> str:
        cfg = self._stream_cfg
        options = [f"analyzeduration;{int(cfg.analyze_duration_s * 1e6)}"]
        if cfg.url.startswith(("rtsp://", "rtsps://")):
            options.append(f"rtsp_transport;{cfg.rtsp_transport}")
        return "|".join(options)

    def _open_capture(self) -> cv2.VideoCapture:
        cfg = self._stream_cfg
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            max(1, int(cfg.open_timeout_s * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            max(1, int(cfg.read_timeout_s * 1000)),
        ]
        with _ffmpeg_env_lock:
            before = os.environ.get(_FFMPEG_OPTIONS_ENV)
            # Options the operator set for the whole process come last and win.
            ours = self._ffmpeg_options()
            os.environ[_FFMPEG_OPTIONS_ENV] = f"{ours}|{before}" if before else ours
            try:
                cap = cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, params)
            except cv2.error as exc:
                raise _OpenFailed(str(exc)) from exc
            finally:
                if before is None:
                    del os.environ[_FFMPEG_OPTIONS_ENV]
                else:
                    os.environ[_FFMPEG_OPTIONS_ENV] = before
        if not cap.isOpened():
            cap.release()
            raise _OpenFailed(
                f"FFmpeg could not open it within open_timeout_s={cfg.open_timeout_s:g} "
                "(refused, unreachable, wrong path or credentials, or not a video stream)"
            )
        return cap


_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")
_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"


class DeviceSource(_ReconnectingSource):
    """A V4L2 camera (``/dev/videoN`` or a stable ``/dev/v4l/by-id/...`` link), reconnecting.

    A missing node, a node that is not a character device, or one the process
    may not open gives a missed :class:`FrameFailure` whose reason says which,
    and the source keeps retrying with backoff (the camera may be replugged).

    OpenCV's V4L2 backend has no per-capture read timeout: it waits up to
    ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` seconds per frame (default 10), read
    once per process. The first DeviceSource sets it to ``ceil(read_timeout_s)``
    unless the operator already set it.
    """

    def __init__(self, config: DeviceSourceConfig, source_id: str = "cam0") -> None:
        node = config.path if config.path is not None else Path(f"/dev/video{config.index}")
        super().__init__(config, source_id, str(node), use_pts=False)
        self._device_cfg = config
        self._node = node
        os.environ.setdefault(_SELECT_TIMEOUT_ENV, str(max(1, math.ceil(config.read_timeout_s))))

    def _check_node(self) -> str:
        """The node's real path; raises :class:`_OpenFailed` if it cannot be a camera."""
        node = self._node
        try:
            mode = node.stat().st_mode
        except FileNotFoundError:
            raise _OpenFailed(
                f"{node} does not exist (camera unplugged, or wrong index/path)"
            ) from None
        except OSError as exc:
            raise _OpenFailed(f"cannot stat {node}: {exc.strerror or exc}") from exc
        if not stat.S_ISCHR(mode):
            raise _OpenFailed(f"{node} is not a character device, so not a V4L2 camera")
        if not os.access(node, os.R_OK | os.W_OK):
            raise _OpenFailed(f"no permission to open {node} (is the user in group 'video'?)")
        return os.path.realpath(node)

    def _open_capture(self) -> cv2.VideoCapture:
        real = self._check_node()
        match = _VIDEO_NODE.match(real)
        try:
            if match:
                cap = cv2.VideoCapture(int(match.group(1)), cv2.CAP_V4L2)
            else:
                cap = cv2.VideoCapture(real, cv2.CAP_V4L2)
        except cv2.error as exc:
            raise _OpenFailed(str(exc)) from exc
        if not cap.isOpened():
            cap.release()
            raise _OpenFailed(
                f"OpenCV's V4L2 backend could not open {real} (busy, or not a camera)"
            )
        cfg = self._device_cfg
        # FOURCC first: it decides which sizes and rates the driver offers.
        if cfg.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
        if cfg.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps is not None:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        return cap


register_source("device", DeviceSourceConfig, DeviceSource)
register_source("stream", StreamSourceConfig, StreamSource)
