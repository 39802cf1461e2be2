"""Source configs refuse bad input with a clear message; image files are checked for completeness."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from kanjian.camera import (
    DeviceSourceConfig,
    FolderSourceConfig,
    SourceConfig,
    StreamSourceConfig,
    VideoSourceConfig,
)
from kanjian.camera.config import FramePolicy
from kanjian.camera.imagefile import container_problem
from kanjian.camera.source import redact_url

SOURCE = TypeAdapter(SourceConfig)
POLICY = TypeAdapter(FramePolicy)


def test_kind_picks_the_model() -> None:
    cases = {
        "folder": ({"kind": "folder", "path": "/data/imgs"}, FolderSourceConfig),
        "video": ({"kind": "video", "path": "/data/a.avi", "loop": True}, VideoSourceConfig),
        "device": ({"kind": "device", "index": 2, "fourcc": "MJPG"}, DeviceSourceConfig),
        "stream": ({"kind": "stream", "url": "rtsp://10.0.0.5/main"}, StreamSourceConfig),
    }
    for data, model in cases.values():
        assert type(SOURCE.validate_python(data)) is model


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"kind": "gige", "path": "x"}, "gige"),
        ({"kind": "folder", "path": "/d", "lopo": True}, "lopo"),  # typo is an error
        ({"kind": "folder", "path": "/d", "extensions": ["jpg"]}, ".jpg"),
        ({"kind": "folder", "path": "/d", "extensions": []}, "extensions"),
        ({"kind": "device", "index": -1}, "index"),
        ({"kind": "device", "fourcc": "MJPEG"}, "fourcc"),
        ({"kind": "device", "width": 0}, "width"),
        ({"kind": "stream", "url": "ftp://cam.local/x"}, "rtsp://"),
        ({"kind": "stream", "url": "rtsp:///nohost"}, "no host"),
        ({"kind": "stream", "url": "rtsp://h/x", "read_timeout_s": 0}, "read_timeout_s"),
        ({"kind": "stream", "url": "rtsp://h/x", "open_timeout_s": 1e6}, "open_timeout_s"),
        (
            {"kind": "stream", "url": "rtsp://h/x", "backoff_initial_s": 5, "backoff_max_s": 1},
            "backoff_max_s",
        ),
    ],
)
def test_bad_config_is_refused_and_named(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        SOURCE.validate_python(data)
    assert needle in str(info.value)


def test_configs_are_frozen_and_extensions_normalised() -> None:
    cfg = SOURCE.validate_python({"kind": "folder", "path": "/d", "extensions": [".JPG", ".Png"]})
    assert isinstance(cfg, FolderSourceConfig)
    assert cfg.extensions == (".jpg", ".png")
    with pytest.raises(ValidationError):
        cfg.loop = True  # type: ignore[misc]


def test_every_field_is_described() -> None:
    models: list[type[BaseModel]] = [
        FolderSourceConfig,
        VideoSourceConfig,
        DeviceSourceConfig,
        StreamSourceConfig,
    ]
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_policy_literal() -> None:
    assert POLICY.validate_python("latest") == "latest"
    with pytest.raises(ValidationError):
        POLICY.validate_python("newest")


def test_redact_url_hides_the_password_only() -> None:
    assert (
        redact_url("rtsp://admin:s3cret@10.0.0.5:554/main") == "rtsp://admin:***@10.0.0.5:554/main"
    )
    assert redact_url("http://cam.local/video.mjpg") == "http://cam.local/video.mjpg"
    assert "s3cret" not in redact_url("https://u:s3cret@h/x?y=1")


def _encoded(ext: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_complete_files_pass_the_container_check(ext: str) -> None:
    assert container_problem(_encoded(ext, 0)) is None
    # trailing zero padding some writers add is not truncation
    assert container_problem(_encoded(ext, 1) + b"\x00\x00") is None


@settings(max_examples=60, deadline=None)
@given(ext=st.sampled_from([".jpg", ".png", ".bmp", ".webp"]), cut=st.floats(0.0, 0.999))
def test_every_cut_short_file_is_caught(ext: str, cut: float) -> None:
    data = _encoded(ext, 2)
    prefix = data[: int(len(data) * cut)]
    problem = container_problem(prefix)
    assert problem is not None
    assert "empty" in problem or "truncated" in problem
