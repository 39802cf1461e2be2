"""Configuration of the station's HTTP faces: address, access, limits, the screen.

Embedded in :class:`kanjian.station.config.StationConfig` as ``api:``. It
lives in ``station`` rather than ``appliance_api`` because imports run one way
(station → appliance_api), and it imports nothing but pydantic so loading a
config never pulls FastAPI in.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ApiConfig(BaseModel):
    """``api:`` section of ``station.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="address to listen on; 0.0.0.0 exposes the station to the network",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port")
    open_reads: bool = Field(
        False,
        description="let anyone who reaches the port read status, results, images and the "
        "live view without a token (mutations always need one)",
    )
    metrics_public: bool = Field(
        True, description="serve /metrics without a token (Prometheus scrapers rarely have one)"
    )
    max_upload_mb: float = Field(
        200.0, gt=0, le=4096, description="largest model bundle archive accepted, MiB"
    )
    max_unpacked_mb: float = Field(
        1024.0,
        gt=0,
        le=16384,
        description="largest total size of an unpacked bundle (guards against archive bombs), MiB",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="origins allowed to call the API from other sites' pages (none by default)",
    )
    live_fps: float = Field(
        5.0, gt=0, le=60, description="most annotated frames per second sent to each live viewer"
    )
    live_max_side: int = Field(
        960, ge=64, le=8192, description="live view frames are shrunk to this longest side, px"
    )
    shift_starts: list[str] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        min_length=1,
        max_length=24,
        description="local times (HH:MM) at which a shift begins; the screen counts per shift",
    )
    trigger_timeout_s: float = Field(
        10.0, gt=0, le=600, description="how long POST /api/trigger waits for the committed result"
    )

    @field_validator("shift_starts")
    @classmethod
    def _check_shifts(cls, value: list[str]) -> list[str]:
        for s in value:
            if not _HHMM.match(s):
                raise ValueError(f"shift start {s!r} must look like '06:00'")
        if len(set(value)) != len(value):
            raise ValueError("shift starts must be distinct")
        return sorted(value)
