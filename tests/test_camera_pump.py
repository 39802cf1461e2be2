"""FramePump policies on real sources: MJPG video files, image folders, an unreachable stream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest

from kanjian.camera import (
    FolderSourceConfig,
    Frame,
    FrameFailure,
    FramePump,
    StreamSourceConfig,
    VideoSourceConfig,
    open_source,
)
from tests.peers import pattern

N = 30


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "replay.avi"
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (pattern.WIDTH, pattern.HEIGHT)
    )
    for i in range(N):
        writer.write(pattern.draw(i, 1))
    writer.release()
    return path


@pytest.fixture
def pumps() -> Iterator[list[FramePump]]:
    """Pumps made by a test are closed by it, pass or fail."""
    made: list[FramePump] = []
    try:
        yield made
    finally:
        for pump in made:
            pump.close()


def wait_until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def pump_threads(source_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"frame-pump-{source_id}"]


def test_lossless_blocks_the_reader_and_drops_nothing(video: Path, pumps: list[FramePump]) -> None:
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v1"), "lossless", queue_size=3)
    pumps.append(pump)
    wait_until(lambda: pump.stats().queued == 3)
    time.sleep(0.1)  # give a reader that would not block time to run ahead
    # 3 queued + at most the one the reader holds while it waits for room
    assert pump.stats().source.frames_read <= 4
    records = []
    while (record := pump.get(timeout_s=60.0)) is not None:
        records.append(record)
    assert all(isinstance(r, Frame) for r in records)
    assert [pattern.read(r.image)[0] for r in records if isinstance(r, Frame)] == list(range(N))
    stats = pump.stats()
    assert (stats.delivered, stats.dropped, stats.ended) == (N, 0, True)
    assert pump.get(timeout_s=0.1) is None  # stays ended


def test_latest_keeps_only_the_newest_and_counts_drops(video: Path, pumps: list[FramePump]) -> None:
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v2"), "latest")
    pumps.append(pump)
    wait_until(lambda: pump.stats().ended)
    newest = pump.get(timeout_s=60.0)
    assert isinstance(newest, Frame) and pattern.read(newest.image)[0] == N - 1
    assert pump.get(timeout_s=0.1) is None
    stats = pump.stats()
    assert (stats.delivered, stats.dropped) == (1, N - 1)


def test_latest_hands_out_frames_in_increasing_order(video: Path, pumps: list[FramePump]) -> None:
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v3"), "latest")
    pumps.append(pump)
    seen = []
    while (record := pump.get(timeout_s=60.0)) is not None:
        assert isinstance(record, Frame)
        seen.append(pattern.read(record.image)[0])
        time.sleep(0.01)  # a consumer slower than the reader
    assert seen == sorted(set(seen)) and seen[-1] == N - 1
    stats = pump.stats()
    assert stats.delivered == len(seen) and stats.delivered + stats.dropped == N


def test_lossless_passes_failures_through_in_order(tmp_path: Path, pumps: list[FramePump]) -> None:
    for i in range(4):
        ok, data = cv2.imencode(".jpg", pattern.draw(i, 2))
        assert ok
        (tmp_path / f"{i}.jpg").write_bytes(data.tobytes() if i != 2 else data.tobytes()[:500])
    pump = FramePump(open_source(FolderSourceConfig(path=tmp_path), "dir"), "lossless", 2)
    pumps.append(pump)
    records = [pump.get(timeout_s=60.0) for _ in range(5)]
    assert [type(r).__name__ for r in records] == [
        "Frame",
        "Frame",
        "FrameFailure",
        "Frame",
        "NoneType",
    ]
    failure = records[2]
    assert isinstance(failure, FrameFailure) and "2.jpg" in failure.reason


@pytest.mark.parametrize("hardware", [False, True], ids=["read-after", "arrived-in-window"])
def test_grab_fresh_skips_what_came_before_the_trigger(
    video: Path, pumps: list[FramePump], hardware: bool
) -> None:
    """Software trigger: frames whose read began before the call are stale. A camera fired
    by the trigger's own pulse (``arrived_after``): frames that arrived before the window."""
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v4"), "lossless", queue_size=3)
    pumps.append(pump)
    wait_until(lambda: pump.stats().queued == 3)
    # all three queued (and the one the reader holds, waiting for room) came before the call
    after = time.monotonic() if hardware else None
    frame = pump.grab_fresh("T-17", timeout_s=60.0, arrived_after=after)
    assert isinstance(frame, Frame) and frame.trigger_id == "T-17"
    index = pattern.read(frame.image)[0]
    assert index >= 3 and pump.stats().stale_skipped == index
    if not hardware:
        following = pump.get(timeout_s=60.0)
        assert isinstance(following, Frame) and pattern.read(following.image)[0] == index + 1
        assert following.trigger_id is None
        return
    wait_until(lambda: pump.stats().queued == 3)
    # a window that opened a minute ago takes the oldest queued frame, though read before
    frame = pump.grab_fresh("T-3", timeout_s=60.0, arrived_after=time.monotonic() - 60)
    assert isinstance(frame, Frame) and frame.trigger_id == "T-3"
    assert pattern.read(frame.image)[0] == index + 1 and pump.stats().stale_skipped == index


def test_grab_fresh_on_an_ended_source_is_missed(video: Path, pumps: list[FramePump]) -> None:
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v5"), "latest")
    pumps.append(pump)
    wait_until(lambda: pump.stats().ended)
    result = pump.grab_fresh("T-1", timeout_s=1.0)
    assert isinstance(result, FrameFailure) and result.missed
    assert result.trigger_id == "T-1" and result.frame_id == -1
    assert "T-1" in result.reason and "ended" in result.reason


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_camera_gives_missed_records_never_a_hang(pumps: list[FramePump]) -> None:
    port = _closed_port()  # nothing listens there: every connect is refused
    config = StreamSourceConfig(
        url=f"http://127.0.0.1:{port}/stream.mjpg",
        open_timeout_s=1.0,
        read_timeout_s=0.5,
        backoff_initial_s=0.2,
        backoff_max_s=0.4,
    )
    pump = FramePump(open_source(config, "dead"), "latest")
    pumps.append(pump)
    first = pump.get(timeout_s=60.0)
    assert isinstance(first, FrameFailure) and first.missed
    assert f"127.0.0.1:{port}" in first.reason and "cannot open" in first.reason
    grabbed = pump.grab_fresh("T-9", timeout_s=1.0)
    assert isinstance(grabbed, FrameFailure) and grabbed.missed
    assert grabbed.trigger_id == "T-9"
    assert "no fresh frame within 1 s" in grabbed.reason
    assert "; camera: " in grabbed.reason and "cannot open" in grabbed.reason
    status = pump.stats().source
    assert status.state == "reconnecting" and status.frames_read == 0 and status.failures >= 2


def test_get_times_out_with_a_missed_record(pumps: list[FramePump]) -> None:
    config = StreamSourceConfig(
        url=f"http://127.0.0.1:{_closed_port()}/x",
        read_timeout_s=1.0,
        backoff_initial_s=30.0,
        backoff_max_s=30.0,
    )
    pump = FramePump(open_source(config, "slow"), "lossless")
    pumps.append(pump)
    assert isinstance(pump.get(timeout_s=60.0), FrameFailure)  # the refused first attempt
    # the next attempt is 30 s away: the reader waits read_timeout_s per record
    timed_out = pump.get(timeout_s=0.2)
    assert isinstance(timed_out, FrameFailure) and timed_out.missed
    assert timed_out.frame_id == -1 and "no frame from slow within 0.2 s" in timed_out.reason


def test_close_joins_the_reader_even_when_it_waits_for_room(
    video: Path, pumps: list[FramePump]
) -> None:
    pump = FramePump(open_source(VideoSourceConfig(path=video), "v6"), "lossless", queue_size=2)
    wait_until(lambda: pump.stats().queued == 2)
    assert len(pump_threads("v6")) == 1
    pump.close()
    assert pump_threads("v6") == []
    assert pump.get(timeout_s=0.1) is None
    stats = pump.stats()
    assert stats.ended and stats.source.state == "ended"
    pump.close()  # idempotent
