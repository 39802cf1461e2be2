"""GigE Vision cameras through Aravis (PyGObject + gir1.2-aravis-0.8).

The camera is opened by IP address with ``Aravis.GvDevice.new(interface, camera)``:
no discovery, so nothing is broadcast on the plant's networks (``Camera.new(name)``
falls back to a discovery broadcast on every interface when the camera does not
answer). Exposure, gain, pixel format, frame rate and the trigger mode are set
from the config on every (re)connect, so a camera that rebooted comes back
configured.

Trigger modes (``GigESourceConfig.trigger``):

- ``free_run``: the camera streams; ``read()`` first drops frames that queued up
  while nobody read (so a frame returned was received after the read began), then
  waits for the next one.
- ``software``: ``read()`` drops queued frames, sends one software trigger and
  waits for its frame, so every frame is exposed after the read began (a
  station trigger then always gets a picture taken after it).
- ``hardware``: frames come when the camera's input line fires; ``read()``
  returns them in order and a missed record after ``read_timeout_s`` without one.

Reconnect: a lost camera never recovers its old ``Camera`` object, so on any
sign of loss (a register access or software trigger that fails, no
frame within ``read_timeout_s`` in free-run or software mode) the Camera,
Device and Stream are dropped and made anew, with exponential backoff. While
disconnected each ``read()`` makes at most one attempt (an attempt to an absent
camera takes Aravis' GVCP timeout, about 2.5 s) and returns
``FrameFailure(missed=True)`` naming the cause. So one ``read()`` takes at most
about ``2.5 s + read_timeout_s``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.camera.config import GigESourceConfig
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.registry import register_source
from kanjian.camera.source import SourceError, SourceStatus, StatusBook

log = logging.getLogger(__name__)

#: longest close() waits for Aravis to let go of a camera, seconds
_CLOSE_WAIT_S = 10.0
#: GVCP control channel privilege register: 0 once nobody (us included) controls the camera
_GVCP_CCP = 0x0A00

# GenICam Bayer names give the first row's first two pixels; OpenCV names the 2x2
# block that starts at the second row, second column, so the letters swap.
_BAYER_TO_BGR = {
    "BayerRG8": cv2.COLOR_BayerBG2BGR,
    "BayerGB8": cv2.COLOR_BayerGR2BGR,
    "BayerGR8": cv2.COLOR_BayerGB2BGR,
    "BayerBG8": cv2.COLOR_BayerRG2BGR,
}
_BYTES_PER_PIXEL = {
    "Mono8": 1,
    "Mono16": 2,
    "RGB8": 3,
    "BGR8": 3,
    **dict.fromkeys(_BAYER_TO_BGR, 1),
}


def load_aravis() -> tuple[Any, Any]:
    """``(Aravis, Gio)`` from PyGObject, or :class:`SourceError` saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, Gio
    except (ImportError, ValueError) as e:
        raise SourceError(
            "GigE Vision needs PyGObject ('pip install kanjian[gige]') and Aravis 0.8 "
            f"introspection data (Debian: apt install gir1.2-aravis-0.8): {e}"
        ) from e
    return Aravis, Gio


def convert_image(data: bytes, width: int, height: int, pixel_format: str) -> NDArray[np.uint8]:
    """One GenICam image as :attr:`Frame.image`.

    Args:
        data: the buffer's image bytes, rows packed without padding.
        width, height: image size in pixels.
        pixel_format: a :data:`~kanjian.camera.config.GigEPixelFormat` name.

    Returns:
        ``(H, W)`` uint8 for Mono8 / Mono16 (the 8 most significant bits), else
        ``(H, W, 3)`` uint8 BGR (Bayer patterns demosaiced bilinearly). C-contiguous.

    Raises:
        ValueError: an unsupported format, or fewer bytes than the size needs.
    """
    bpp = _BYTES_PER_PIXEL.get(pixel_format)
    if bpp is None:
        raise ValueError(f"pixel format {pixel_format} is not supported")
    need = width * height * bpp
    if len(data) < need:
        raise ValueError(f"{pixel_format} {width}x{height} needs {need} bytes, got {len(data)}")
    raw = np.frombuffer(data, np.uint8, count=need)
    if pixel_format == "Mono8":
        return raw.reshape(height, width).copy()
    if pixel_format == "Mono16":
        return (raw.view("<u2").reshape(height, width) >> 8).astype(np.uint8)
    if pixel_format in ("RGB8", "BGR8"):
        img = raw.reshape(height, width, 3)
        return np.ascontiguousarray(img[:, :, ::-1] if pixel_format == "RGB8" else img.copy())
    bgr = cv2.cvtColor(raw.reshape(height, width), _BAYER_TO_BGR[pixel_format])
    return np.asarray(bgr, dtype=np.uint8)


def _route_address(camera: str) -> str:
    """The local IPv4 address the OS would send to ``camera`` from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((camera, 3956))  # GVCP port; a UDP connect only picks the route
        return str(s.getsockname()[0])


def _drop(objs: list[Any], stop: Any, name: str) -> None:
    """Reaper thread: stop acquisition (on close) and unref the Aravis objects here."""
    if stop is not None:
        try:
            stop.stop_acquisition()
        except Exception as e:  # closing anyway
            log.debug("%s: stop_acquisition failed: %s", name, e)
    del stop
    while objs:
        objs.pop()  # the finalizer runs now, on this thread


class _Lost(Exception):
    """The connection is gone; the message says why."""


class GigESource:
    """A :class:`~kanjian.camera.source.FrameSource` over one GigE Vision camera.

    Raises:
        SourceError: at construction, when PyGObject or Aravis is not installed.
    """

    def __init__(self, config: GigESourceConfig, source_id: str) -> None:
        self._aravis, self._gio = load_aravis()
        self._cfg = config
        self._name = f"gige://{config.address}"
        self._book = StatusBook(source_id, state="reconnecting")
        self._dev: Any = None
        self._cam: Any = None
        self._stream: Any = None
        self._pixel_format = ""
        self._closed = False
        self._ever_connected = False
        self._next_attempt = time.monotonic()
        self._backoff = config.backoff_initial_s
        self._cause = "not connected yet"
        self._reaper: threading.Thread | None = None

    @property
    def source_id(self) -> str:
        return self._book.source_id

    def status(self) -> SourceStatus:
        return self._book.snapshot()

    def close(self) -> None:
        self._closed = True
        self._release(stop=True)
        self._book.set_state("ended")

    def settings(self) -> dict[str, Any]:
        """What the connected camera reports now (pixel format, exposure, gain, trigger).

        Empty while disconnected. Read from the camera, not from the config.
        """
        cam = self._cam
        if cam is None:
            return {}
        dev = cam.get_device()
        return {
            "pixel_format": cam.get_pixel_format_as_string(),
            "exposure_us": cam.get_exposure_time(),
            "gain": cam.get_gain(),
            "trigger_mode": dev.get_string_feature_value("TriggerMode"),
            "trigger_source": cam.get_trigger_source(),
            "width": cam.get_region()[2],
            "height": cam.get_region()[3],
        }

    # -- reading ------------------------------------------------------------------------
    def read(self) -> Frame | FrameFailure | None:
        if self._closed:
            return None
        if self._cam is None:
            failure = self._try_connect()
            if failure is not None:
                return failure
        try:
            return self._read_frame()
        except _Lost as e:
            return self._lost(str(e))

    def _read_frame(self) -> Frame | FrameFailure:
        ar = self._aravis
        mode = self._cfg.trigger
        if mode != "hardware":
            self._drop_queued()
        if mode == "software":
            try:
                self._cam.software_trigger()
            except Exception as e:
                raise _Lost(f"software trigger failed: {e}") from e
        buf = self._stream.timeout_pop_buffer(int(self._cfg.read_timeout_s * 1e6))
        if buf is None:
            wait = f"no frame within {self._cfg.read_timeout_s:g} s"
            if mode != "hardware":
                raise _Lost(wait)
            self._probe()  # raises _Lost if the camera is gone
            return self._book.failure(
                f"{self._name}: {wait} (waiting for a hardware trigger on "
                f"{self._cfg.trigger_source})",
                self._name,
                missed=True,
            )
        try:
            status = buf.get_status()
            if status != ar.BufferStatus.SUCCESS:
                return self._book.failure(
                    f"{self._name}: incomplete frame {buf.get_frame_id()} ({status.value_nick})",
                    self._name,
                    missed=False,
                )
            image = convert_image(
                buf.get_image_data() if hasattr(buf, "get_image_data") else buf.get_data(),
                buf.get_image_width(),
                buf.get_image_height(),
                self._pixel_format,
            )
        except ValueError as e:
            return self._book.failure(f"{self._name}: {e}", self._name, missed=False)
        finally:
            self._stream.push_buffer(buf)
        self._backoff = self._cfg.backoff_initial_s
        return self._book.frame(image, f"{self._name}#{buf.get_frame_id()}")

    def _drop_queued(self) -> None:
        # frames that waited in the stream were received before this read began
        while True:
            old = self._stream.try_pop_buffer()
            if old is None:
                return
            self._stream.push_buffer(old)

    def _probe(self) -> None:
        try:
            ccp = int(self._dev.read_register(_GVCP_CCP))
        except Exception as e:
            raise _Lost(f"camera does not answer: {e}") from e
        if ccp == 0:
            raise _Lost("camera no longer under our control (restarted?)")

    # -- connection -----------------------------------------------------------------------
    def _try_connect(self) -> FrameFailure | None:
        reaper = self._reaper
        if reaper is not None:
            # never open a new connection while the old one is still letting go
            reaper.join(self._cfg.read_timeout_s)
            if reaper.is_alive():
                return self._book.failure(
                    f"{self._name}: reconnecting, releasing the lost connection; "
                    f"last error: {self._cause}",
                    self._name,
                    missed=True,
                )
            self._reaper = None
        early = self._book.wait_for_attempt(
            self._next_attempt, self._cfg.read_timeout_s, self._name, self._cause
        )
        if early is not None:
            return early
        try:
            self._open()
        except Exception as e:
            self._release(stop=False)
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2.0, self._cfg.backoff_max_s)
            self._cause = f"{self._name}: cannot open: {e}"
            return self._book.failure(self._cause, self._name, missed=True)
        if self._ever_connected:
            self._book.count_reconnect()
        self._ever_connected = True
        self._book.set_state("connected")
        log.info("%s connected (%s)", self._name, self.settings())
        return None

    def _open(self) -> None:
        ar, gio, cfg = self._aravis, self._gio, self._cfg
        camera = str(cfg.address)
        local = str(cfg.interface_address) if cfg.interface_address else _route_address(camera)
        dev = ar.GvDevice.new(
            gio.InetAddress.new_from_string(local), gio.InetAddress.new_from_string(camera)
        )
        # No Python handler on Aravis' "control-lost" signal: it runs on the device's
        # heartbeat thread, and a handler's temporary reference there can be the last
        # one when the reaper lets the device go; the device is then finalized on that
        # thread, joins it, and GLib aborts the process ("Resource deadlock avoided",
        # seen about once in ten restarts). A lost camera shows as a failed read anyway.
        self._dev = dev
        cam = ar.Camera.new_with_device(dev)
        self._cam = cam
        cam.stop_acquisition()
        if cfg.pixel_format is not None:
            cam.set_pixel_format_from_string(cfg.pixel_format)
        self._pixel_format = cam.get_pixel_format_as_string()
        if self._pixel_format not in _BYTES_PER_PIXEL:
            raise RuntimeError(f"camera pixel format {self._pixel_format} is not supported")
        if cfg.exposure_us is not None:
            if cam.is_exposure_auto_available():
                cam.set_exposure_time_auto(ar.Auto.OFF)
            cam.set_exposure_time(cfg.exposure_us)
        if cfg.gain is not None:
            if cam.is_gain_auto_available():
                cam.set_gain_auto(ar.Auto.OFF)
            cam.set_gain(cfg.gain)
        cam.set_acquisition_mode(ar.AcquisitionMode.CONTINUOUS)
        cam.clear_triggers()
        if cfg.frame_rate is not None:
            cam.set_frame_rate(cfg.frame_rate)  # Aravis turns frame triggers off here
        if cfg.trigger == "software":
            cam.set_trigger("Software")
        elif cfg.trigger == "hardware":
            cam.set_trigger(cfg.trigger_source)
        if cfg.packet_size is not None:
            cam.gv_set_packet_size(cfg.packet_size)
        stream = cam.create_stream(None, None)
        if stream is None:
            raise RuntimeError("the camera refused to open a stream")
        self._stream = stream
        payload = cam.get_payload()
        for _ in range(cfg.buffers):
            stream.push_buffer(ar.Buffer.new_allocate(payload))
        cam.start_acquisition()

    def _lost(self, reason: str) -> FrameFailure:
        log.warning("%s lost: %s; reconnecting", self._name, reason)
        self._cause = reason
        self._release(stop=False)
        self._book.set_state("reconnecting", reason)
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2.0, self._cfg.backoff_max_s)
        return self._book.failure(f"{self._name}: {reason}", self._name, missed=True)

    def _release(self, *, stop: bool) -> None:
        """Drop Stream, Camera and Device; a lost camera is never talked to again.

        Aravis' finalizers talk to the camera (stop the stream channel, leave
        control): with the camera gone that takes about 7.5 s of GVCP timeouts,
        so the objects are dropped on a reaper thread (PyGObject releases the
        GIL meanwhile) and the next connection attempt waits for it.
        """
        objs = [o for o in (self._stream, self._cam, self._dev) if o is not None]
        cam = self._cam
        self._stream = self._cam = self._dev = None
        if not objs:
            return
        reaper = threading.Thread(
            target=_drop,
            args=(objs, cam if stop else None, self._name),
            daemon=True,
            name=f"gige-release-{self.source_id}",
        )
        del objs, cam  # the reaper holds the last references
        reaper.start()
        self._reaper = reaper
        if stop:
            reaper.join(_CLOSE_WAIT_S)


# PyGObject is imported on the first open (load_aravis), not with this module
register_source("gige", GigESourceConfig, GigESource)
