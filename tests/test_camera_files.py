"""File sources on real files written by the test: image folders and MJPG videos."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from kanjian.camera import (
    FolderSource,
    FolderSourceConfig,
    Frame,
    FrameFailure,
    SourceError,
    VideoSource,
    VideoSourceConfig,
    open_source,
)
from tests.peers import pattern


def write_video(path: Path, n: int, tag: int = 0, fps: float = 10.0) -> Path:
    """An MJPG AVI of ``n`` pattern frames carrying their index (opencv has no H.264 encoder)."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (pattern.WIDTH, pattern.HEIGHT)
    )
    assert writer.isOpened()
    for i in range(n):
        writer.write(pattern.draw(i, tag))
    writer.release()
    return path


def read_all(source: FolderSource | VideoSource, limit: int = 1000) -> list[Frame | FrameFailure]:
    out: list[Frame | FrameFailure] = []
    for _ in range(limit):
        record = source.read()
        if record is None:
            return out
        out.append(record)
    raise AssertionError(f"source did not end within {limit} records")


# -- video ------------------------------------------------------------------------


def test_video_replays_every_frame_in_order(tmp_path: Path) -> None:
    n = 37
    video = write_video(tmp_path / "line.avi", n, tag=5)
    source = open_source(VideoSourceConfig(path=video), source_id="vid")
    records = read_all(source)  # type: ignore[arg-type]
    assert all(isinstance(r, Frame) for r in records)
    frames = [r for r in records if isinstance(r, Frame)]
    assert len(frames) == n
    assert [pattern.read(f.image) for f in frames] == [(i, 5) for i in range(n)]
    assert [f.frame_id for f in frames] == list(range(n))
    assert frames[12].uri == f"{video}#frame=12"
    assert frames[0].source_id == "vid" and frames[0].image.shape == (240, 320, 3)
    status = source.status()
    assert (status.state, status.frames_read, status.failures) == ("ended", n, 0)
    assert source.read() is None  # stays ended


def test_video_loop_starts_again(tmp_path: Path) -> None:
    video = write_video(tmp_path / "short.avi", 4)
    source = VideoSource(VideoSourceConfig(path=video, loop=True))
    frames = [source.read() for _ in range(10)]
    assert all(isinstance(f, Frame) for f in frames)
    indices = [pattern.read(f.image)[0] for f in frames if isinstance(f, Frame)]
    assert indices == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [f.frame_id for f in frames if isinstance(f, Frame)] == list(range(10))
    assert frames[5] is not None and frames[5].uri == f"{video}#frame=1"
    source.close()
    assert source.read() is None and source.status().state == "ended"


def test_cut_short_video_gives_one_failure_naming_the_file(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.avi", 30).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full[: len(full) // 2])
    source = VideoSource(VideoSourceConfig(path=cut))
    records = read_all(source)
    frames = [r for r in records if isinstance(r, Frame)]
    assert 0 < len(frames) < 30
    # what was there is intact and in order: nothing lost silently
    assert [pattern.read(f.image)[0] for f in frames] == list(range(len(frames)))
    last = records[-1]
    assert isinstance(last, FrameFailure) and not last.missed
    assert str(cut) in last.reason and f"after {len(frames)} of 30" in last.reason
    assert last.frame_id == len(frames)
    status = source.status()
    assert status.state == "error" and status.last_error == last.reason


def test_video_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        VideoSource(VideoSourceConfig(path=tmp_path / "missing.avi"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match=r"cannot open video .*junk\.avi"):
        VideoSource(VideoSourceConfig(path=junk))


# -- image folder --------------------------------------------------------------------


def _write_jpeg(path: Path, index: int) -> bytes:
    ok, data = cv2.imencode(".jpg", pattern.draw(index, 9))
    assert ok
    path.write_bytes(data.tobytes())
    return data.tobytes()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Seven files in name order: good, good, garbage, good, cut JPEG, good PNG, cut PNG."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    _write_jpeg(folder / "00.jpg", 0)
    _write_jpeg(folder / "01.jpg", 1)
    (folder / "02_garbage.jpg").write_bytes(os.urandom(2000))
    _write_jpeg(folder / "03.jpg", 3)
    whole = _write_jpeg(folder / "04_cut.jpg", 4)
    (folder / "04_cut.jpg").write_bytes(whole[: len(whole) // 2])
    ok, png = cv2.imencode(".png", pattern.draw(5, 9))
    assert ok
    (folder / "05.png").write_bytes(png.tobytes())
    (folder / "06_cut.png").write_bytes(png.tobytes()[:-30])
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def _check_pass(records: list[Frame | FrameFailure], folder: Path) -> None:
    good = {0: "00.jpg", 1: "01.jpg", 3: "03.jpg", 5: "05.png"}
    bad = {2: ("02_garbage.jpg", "not an image"), 4: ("04_cut.jpg", "truncated JPEG")}
    bad[6] = ("06_cut.png", "truncated PNG")
    assert len(records) == 7
    for slot, record in enumerate(records):
        if slot in good:
            assert isinstance(record, Frame), record
            assert record.uri == str(folder / good[slot])
            assert pattern.read(record.image) == (slot, 9)
        else:
            name, cause = bad[slot]
            assert isinstance(record, FrameFailure), record
            assert not record.missed
            assert record.uri == str(folder / name)
            assert name in record.reason and cause in record.reason


def test_folder_reports_bad_files_and_goes_on(mixed_folder: Path) -> None:
    source = open_source(FolderSourceConfig(path=mixed_folder), source_id="dir")
    records = read_all(source)  # type: ignore[arg-type]
    _check_pass(records, mixed_folder)
    assert [r.frame_id for r in records] == list(range(7))
    status = source.status()
    assert (status.state, status.frames_read, status.failures) == ("ended", 4, 3)
    assert status.last_error is not None and "06_cut.png" in status.last_error


def test_folder_loop_repeats_the_same_sequence(mixed_folder: Path) -> None:
    source = FolderSource(FolderSourceConfig(path=mixed_folder, loop=True))
    first = [source.read() for _ in range(7)]
    second = [source.read() for _ in range(7)]
    _check_pass(first, mixed_folder)  # type: ignore[arg-type]
    _check_pass(second, mixed_folder)  # type: ignore[arg-type]
    assert [r.frame_id for r in second if r is not None] == list(range(7, 14))
    assert source.status().state == "connected"


def test_folder_order_pattern_and_extensions(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        _write_jpeg(tmp_path / f"img{i}.JPG", i)
    _write_jpeg(tmp_path / "other3.jpg", 3)
    natural = FolderSource(FolderSourceConfig(path=tmp_path, pattern="img*", order="natural"))
    assert [p.name for p in natural.files] == ["img1.JPG", "img2.JPG", "img10.JPG"]
    by_name = FolderSource(FolderSourceConfig(path=tmp_path, pattern="img*"))
    assert [p.name for p in by_name.files] == ["img1.JPG", "img10.JPG", "img2.JPG"]
    frames = read_all(natural)
    assert [pattern.read(f.image)[0] for f in frames if isinstance(f, Frame)] == [1, 2, 10]


def test_folder_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(FolderSourceConfig(path=tmp_path / "nope"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match=r"no file in .* matches pattern '\*'"):
        FolderSource(FolderSourceConfig(path=tmp_path))


def test_file_removed_after_listing_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    _write_jpeg(tmp_path / "a.jpg", 1)
    _write_jpeg(tmp_path / "b.jpg", 2)
    source = FolderSource(FolderSourceConfig(path=tmp_path))
    (tmp_path / "a.jpg").unlink()
    first, second = source.read(), source.read()
    assert isinstance(first, FrameFailure) and "a.jpg" in first.reason
    assert "cannot read file" in first.reason
    assert isinstance(second, Frame) and pattern.read(second.image) == (2, 9)
    assert np.asarray(second.image).flags.c_contiguous
