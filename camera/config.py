"""Typed configuration of frame sources and frame policies.

The station's config embeds ``camera: SourceConfig`` (a union discriminated on
``kind``) and ``policy: FramePolicy``. Every model is frozen and refuses
unknown keys, so a typo in the YAML is an error, not a silently ignored line.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FramePolicy = Literal["latest", "lossless"]
"""How a :class:`~kanjian.camera.pump.FramePump` hands frames on.

``lossless``: bounded queue; the reader waits when it is full and never drops
(file replay, hardware-triggered capture). ``latest``: only the newest frame is
kept, older unread ones are dropped and counted (free-running live inspection).
"""

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceModel(_Model):
    """What every frame source's config has."""

    mm_per_px: float | None = Field(
        None,
        gt=0.0,
        le=1000.0,
        description="the scale of the camera's view on the part, millimetres per pixel "
        "(calibrate with a ruler in the picture); when set, a defect's reason says its "
        "size in mm. Null: sizes are not given",
    )


class FolderSourceConfig(_SourceModel):
    """Replay the image files of one folder (not its subfolders), in a fixed order."""

    kind: Literal["folder"] = Field("folder", description="source type tag")
    path: Path = Field(description="folder holding the images")
    pattern: str = Field(
        "*",
        min_length=1,
        max_length=256,
        description="glob matched against file names (not paths), e.g. 'line1_*'",
    )
    extensions: tuple[str, ...] = Field(
        IMAGE_EXTENSIONS,
        min_length=1,
        max_length=32,
        description="file suffixes to take, with the dot; compared case-insensitively",
    )
    order: Literal["name", "natural", "mtime"] = Field(
        "name",
        description="'name': plain sort by file name; 'natural': digits compare as numbers "
        "(img2 before img10); 'mtime': oldest modification time first",
    )
    loop: bool = Field(False, description="start again at the first file after the last one")

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ext in value:
            if not ext.startswith(".") or len(ext) < 2 or "/" in ext:
                raise ValueError(f"extension {ext!r} must look like '.jpg'")
        return tuple(ext.lower() for ext in value)


class VideoSourceConfig(_SourceModel):
    """Replay every frame of a video file, in order (lossless)."""

    kind: Literal["video"] = Field("video", description="source type tag")
    path: Path = Field(description="video file readable by OpenCV's FFmpeg backend")
    loop: bool = Field(False, description="start again at the first frame after the last one")


class _LiveConfig(_SourceModel):
    """Timeouts and reconnect backoff shared by live sources (device, stream)."""

    read_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="longest one read may wait for data before the connection is "
        "declared lost and reopened, seconds",
    )
    max_frame_age_s: float = Field(
        2.0,
        gt=0.0,
        le=120.0,
        description="a read that blocked longer than this, or no new frame (same "
        "timestamp or same content) for longer than this, means the source hung: "
        "it is released and reopened; keep it above the frame interval, seconds",
    )
    backoff_initial_s: float = Field(
        0.5, gt=0.0, le=60.0, description="wait before the first reopen attempt, seconds"
    )
    backoff_max_s: float = Field(
        30.0,
        gt=0.0,
        le=600.0,
        description="the wait doubles after each failed reopen, up to this, seconds",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> _LiveConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= "
                f"backoff_initial_s ({self.backoff_initial_s})"
            )
        return self


class DeviceSourceConfig(_LiveConfig):
    """A V4L2 (USB/CSI) camera, opened with OpenCV's V4L2 backend."""

    kind: Literal["device"] = Field("device", description="source type tag")
    index: int = Field(0, ge=0, le=255, description="N of /dev/videoN")
    path: Path | None = Field(
        None,
        description="device node to open instead of the index, e.g. a stable "
        "/dev/v4l/by-id/... link",
    )
    width: int | None = Field(None, ge=1, le=16384, description="requested width, pixels")
    height: int | None = Field(None, ge=1, le=16384, description="requested height, pixels")
    fps: float | None = Field(None, gt=0.0, le=1000.0, description="requested frame rate, 1/s")
    fourcc: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9 ]{4}$",
        description="requested pixel format, e.g. 'MJPG' or 'YUYV'",
    )


class StreamSourceConfig(_LiveConfig):
    """A network camera: RTSP (H.264/H.265/MJPEG) or HTTP(S) MJPEG, via OpenCV's FFmpeg backend."""

    kind: Literal["stream"] = Field("stream", description="source type tag")
    url: str = Field(
        min_length=8,
        max_length=2048,
        description="rtsp://, rtsps://, http:// or https:// URL; credentials in the URL "
        "are masked in logs and status",
    )
    open_timeout_s: float = Field(
        5.0, gt=0.0, le=120.0, description="longest one connection attempt may take, seconds"
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP lower transport; TCP survives packet loss without smearing"
    )
    analyze_duration_s: float = Field(
        0.5,
        gt=0.0,
        le=30.0,
        description="how much of the stream FFmpeg reads to identify it on open; "
        "FFmpeg's default (5 s) makes opens slow and hands back seconds-old "
        "buffered frames first, seconds",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("rtsp", "rtsps", "http", "https"):
            raise ValueError(
                f"stream url must start with rtsp://, rtsps://, http:// or https://, "
                f"got scheme {parts.scheme!r}"
            )
        if not parts.hostname:
            raise ValueError("stream url has no host")
        return value


GigEPixelFormat = Literal[
    "Mono8", "Mono16", "RGB8", "BGR8", "BayerRG8", "BayerGB8", "BayerGR8", "BayerBG8"
]


class GigESourceConfig(_LiveConfig):
    """A GigE Vision camera through Aravis, opened by IP address (no discovery broadcast).

    ``trigger``: ``free_run`` streams at ``frame_rate``; ``software`` sends one
    software trigger per frame the station asks for; ``hardware`` waits for
    frames exposed on ``trigger_source`` (a camera input line). Issue 6.
    """

    kind: Literal["gige"] = Field("gige", description="source type tag")
    address: IPv4Address = Field(description="the camera's IPv4 address")
    interface_address: IPv4Address | None = Field(
        None,
        description="local address to reach the camera from (default: the one the OS "
        "routes to the camera by)",
    )
    pixel_format: GigEPixelFormat | None = Field(
        None, description="GenICam pixel format to set (default: the camera's current one)"
    )
    exposure_us: float | None = Field(
        None, gt=0.0, le=1e8, description="exposure time, microseconds (auto exposure off)"
    )
    gain: float | None = Field(
        None, ge=0.0, le=1000.0, description="gain in the camera's unit, usually dB (auto off)"
    )
    frame_rate: float | None = Field(
        None, gt=0.0, le=10000.0, description="free-run frame rate, frames per second"
    )
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "free_run", description="free_run, software (one trigger per frame) or hardware"
    )
    trigger_source: str = Field(
        "Line0",
        pattern=r"^[A-Za-z0-9_]{1,32}$",
        description="hardware trigger input (GenICam TriggerSource), e.g. Line0",
    )
    packet_size: int | None = Field(
        None, ge=576, le=16384, description="GVSP packet size, bytes (default: the camera's)"
    )
    buffers: int = Field(8, ge=2, le=256, description="frame buffers queued to the stream")


SourceConfig = Annotated[
    FolderSourceConfig
    | VideoSourceConfig
    | DeviceSourceConfig
    | StreamSourceConfig
    | GigESourceConfig,
    Field(discriminator="kind"),
]
"""Any frame source's config; the ``kind`` key picks the model."""
