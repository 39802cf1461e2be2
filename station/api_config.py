"""Configuration of the station's HTTP faces: address, access, limits, the screen.

Embedded in :class:`kanjian.station.config.StationConfig` as ``api:``. It
lives in ``station`` rather than ``appliance_api`` because imports run one way
(station → appliance_api), and it imports nothing but pydantic so loading a
config never pulls FastAPI in.
"""

from __future__ import annotations

import re
from typing import Literal

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
    language: Literal["zh", "en"] = Field(
        "zh",
        description="the station's language: labels drawn into pictures use the model's "
        "display names in it (the class name where it has none); the screen starts in it",
    )
    shift_starts: list[str] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        min_length=1,
        max_length=24,
        description="local times (HH:MM) at which a shift begins; the screen counts per shift",
    )
    health_live_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="GET /api/health says live while the inspection loop advanced within "
        "this many seconds (at least 2 x runtime.queue_timeout_s + 1 is used)",
    )
    trigger_timeout_s: float = Field(
        10.0, gt=0, le=600, description="how long POST /api/trigger waits for the committed result"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Host names (or addresses) the API answers to besides localhost, "
        "127.0.0.1, ::1, the bound address and this machine's name; any other Host header "
        "gets 400, so a DNS-rebinding page cannot reach the API. '*' answers every Host",
    )
    session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="lifetime of the screen's session cookie (POST /api/session), hours",
    )
    auth_failures_max: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="failed authentications from one client address within auth_window_s "
        "after which that address gets 429 for auth_window_s",
    )
    auth_window_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="window counting failed authentications, and how long a throttled "
        "address waits, seconds",
    )
    auth_log_every_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="at most one log line per client address about failed authentications "
        "this often (the line counts the ones not logged), seconds",
    )
    # -- the operator's screen: one part at a time (GET /api/screen hands these over) --
    screen_hold_s: float = Field(
        3.0,
        ge=0.5,
        le=120,
        description="each FAIL / REVIEW stays large on the screen at least this long, seconds; "
        "newer ones wait in the strip",
    )
    screen_min_show_s: float = Field(
        1.0,
        ge=0.2,
        le=60,
        description="any other part (PASS, ERROR) stays large at least this long, so the big "
        "verdict does not flicker at the line's rate, seconds (a defect replaces it at once)",
    )
    screen_strip: int = Field(
        8, ge=1, le=32, description="defects in the screen's strip of thumbnails (newest first)"
    )
    screen_sound: bool = Field(
        False,
        description="beep when a FAIL comes up large (default for each screen; ?sound=0/1 in "
        "the screen's address overrides it and is remembered by that screen)",
    )
    screen_flash: bool = Field(
        False,
        description="flash the whole screen red when a FAIL comes up large (default for each "
        "screen; ?flash=0/1 overrides it and is remembered by that screen)",
    )
    screen_pictures: int = Field(
        32,
        ge=1,
        le=1024,
        description="recent FAIL / REVIEW pictures kept in memory for the screen by id (besides "
        "the 16 newest other parts), so a part whose image is not saved still shows",
    )
    screen_pictures_mb: float = Field(
        256.0,
        gt=0,
        le=16384,
        description="memory bound of those pictures (frames not yet drawn count in full), MiB",
    )
    feedback_undo_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="how long after an answer its giver may undo it (DELETE "
        "/api/inspections/{id}/feedback/{fid}, audited); later, a new answer changes it",
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

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for h in value:
            if not h or len(h) > 255 or any(c.isspace() or c in "/@" for c in h):
                raise ValueError(f"allowed host {h!r} must be a host name or address, or '*'")
        return [h.lower().rstrip(".") if h != "*" else h for h in value]
