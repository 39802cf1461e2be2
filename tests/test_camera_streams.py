"""Live sources against real peers on 127.0.0.1: an HTTP MJPEG server and GStreamer's RTSP server.

Each peer runs as a subprocess (tests/peers/), is killed, restarted or
SIGSTOPped by the test, and always stopped by its fixture. The sources must
recover on their own; the tests only wait (with timeouts) for them to do so.

Apt packages: python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base,
gstreamer1.0-plugins-good, gstreamer1.0-plugins-ugly (x264enc).
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from kanjian.camera import (
    DeviceSourceConfig,
    Frame,
    FrameFailure,
    FramePump,
    StreamSource,
    StreamSourceConfig,
    open_source,
)
from kanjian.camera.source import FrameSource
from tests.peers import pattern

PEERS = Path(__file__).resolve().parent / "peers"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi and GstRtspServer


class Peer:
    """One peer server process; ``start`` waits for its ``READY <port>`` line."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *extra: str, port: int = 0) -> int:
        assert self.proc is None, "peer already running"
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [*self.argv, "--port", str(port), *extra],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            pytest.fail(f"peer {self.argv} did not start: {line!r}; log: {self.log.read_text()}")
        self.port = int(line.split()[1])
        return self.port

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGKILL (works on a SIGSTOPped process too) and reap."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


@pytest.fixture
def mjpeg(tmp_path: Path) -> Iterator[Peer]:
    peer = Peer([sys.executable, str(PEERS / "mjpeg_server.py")], tmp_path / "mjpeg.log")
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[Peer]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} is needed for the GStreamer RTSP server (apt python3-gi)")
    peer = Peer([SYSTEM_PYTHON, str(PEERS / "rtsp_server.py")], tmp_path / "rtsp.log")
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def closing() -> Iterator[list[FrameSource | FramePump]]:
    """Sources and pumps a test opens are closed by the fixture, pass or fail."""
    opened: list[FrameSource | FramePump] = []
    try:
        yield opened
    finally:
        for thing in reversed(opened):
            thing.close()


def read_until(
    source: FrameSource,
    want: Callable[[Frame | FrameFailure], bool],
    timeout_s: float = 20.0,
) -> tuple[Frame | FrameFailure, list[Frame | FrameFailure]]:
    """Read until ``want(record)``; returns it and everything read before it."""
    seen: list[Frame | FrameFailure] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = source.read()
        assert record is not None, "a live source never ends by itself"
        if want(record):
            return record, seen
        seen.append(record)
    raise AssertionError(f"not reached in {timeout_s} s; last records: {seen[-3:]}")


def is_frame(record: Frame | FrameFailure) -> bool:
    return isinstance(record, Frame)


def is_missed(record: Frame | FrameFailure) -> bool:
    return isinstance(record, FrameFailure) and record.missed


def mjpeg_config(port: int, **overrides: float) -> StreamSourceConfig:
    values: dict[str, float] = {
        "open_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "max_frame_age_s": 0.6,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.4,
    }
    values.update(overrides)
    return StreamSourceConfig(url=f"http://127.0.0.1:{port}/stream.mjpg", **values)


def rtsp_config(port: int) -> StreamSourceConfig:
    return StreamSourceConfig(
        url=f"rtsp://127.0.0.1:{port}/test",
        open_timeout_s=1.5,
        read_timeout_s=1.5,
        max_frame_age_s=0.8,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        analyze_duration_s=0.1,
    )


BLUE, RED = "0xff0000ff", "0xffff0000"  # ARGB for videotestsrc


def dominant_bgr(frame: Frame) -> tuple[int, int, int]:
    """Median colour: the test pattern's background, whatever the moving ball does."""
    median = np.median(frame.image.reshape(-1, 3), axis=0)
    return int(median[0]), int(median[1]), int(median[2])


def is_blue(frame: Frame) -> bool:
    b, g, r = dominant_bgr(frame)
    return b > 200 and g < 60 and r < 60


def is_red(frame: Frame) -> bool:
    b, g, r = dominant_bgr(frame)
    return r > 200 and g < 60 and b < 60


# -- HTTP MJPEG ------------------------------------------------------------------------


def test_mjpeg_frames_carry_the_servers_content(
    mjpeg: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = mjpeg.start("--fps", "25", "--tag", "7")
    source = open_source(mjpeg_config(port), "mj")
    closing.append(source)
    frames = [read_until(source, is_frame)[0] for _ in range(10)]
    decoded = [pattern.read(f.image) for f in frames if isinstance(f, Frame)]
    assert [tag for _, tag in decoded] == [7] * 10
    indices = [index for index, _ in decoded]
    assert indices == sorted(indices) and len(set(indices)) == 10  # new frames, in order
    status = source.status()
    assert status.state == "connected" and status.frames_read == 10
    assert frames[0].uri == f"http://127.0.0.1:{port}/stream.mjpg#frame=0"


def test_mjpeg_server_killed_and_restarted_source_reconnects(
    mjpeg: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = mjpeg.start("--tag", "1")
    source = open_source(mjpeg_config(port), "mj")
    closing.append(source)
    first, _ = read_until(source, is_frame)
    assert isinstance(first, Frame) and pattern.read(first.image)[1] == 1

    mjpeg.stop()  # SIGKILL: the connection drops at once
    lost, _ = read_until(source, is_missed)
    assert isinstance(lost, FrameFailure) and "127.0.0.1" in lost.reason
    assert source.status().state == "reconnecting"
    # while the server is down every read comes back (refused), none hangs
    down = [source.read() for _ in range(3)]
    assert all(isinstance(r, FrameFailure) and r.missed for r in down)

    mjpeg.start("--tag", "2", port=port)
    back, _ = read_until(source, is_frame)
    assert isinstance(back, Frame) and pattern.read(back.image)[1] == 2  # the new server's
    status = source.status()
    assert status.state == "connected" and status.reconnects >= 1
    assert status.failures >= 4


def test_mjpeg_resending_the_same_frame_counts_as_hung(
    mjpeg: Peer, closing: list[FrameSource | FramePump]
) -> None:
    # the relay's index stops at 0: the same JPEG is resent at 20 fps forever
    port = mjpeg.start("--freeze-at", "0")
    source = open_source(mjpeg_config(port), "relay")
    closing.append(source)
    first, _ = read_until(source, is_frame)
    assert isinstance(first, Frame)
    hung, between = read_until(source, is_missed)
    assert not between  # the repeats themselves are not handed on as new frames
    assert isinstance(hung, FrameFailure) and "same frame repeated" in hung.reason
    read_until(source, is_frame)  # reopened on its own
    assert source.status().reconnects >= 1


def test_grab_fresh_returns_a_frame_taken_after_the_trigger(
    mjpeg: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = mjpeg.start("--fps", "20")
    pump = FramePump(open_source(mjpeg_config(port), "trig"), "latest")
    closing.append(pump)
    before = pump.get(timeout_s=60.0)
    assert isinstance(before, Frame)
    # the slot holds a frame read before the trigger (waited for, not slept: a loaded
    # machine may read late)
    deadline = time.monotonic() + 60
    while pump.stats().queued == 0:
        assert time.monotonic() < deadline, pump.stats()
        time.sleep(0.02)
    called_at = datetime.now(timezone.utc)
    fresh = pump.grab_fresh("T-42", timeout_s=60.0)
    assert isinstance(fresh, Frame) and fresh.trigger_id == "T-42"
    assert fresh.captured_at >= called_at
    assert pattern.read(fresh.image)[0] > pattern.read(before.image)[0]
    assert pump.stats().stale_skipped >= 1


def test_grab_fresh_on_a_stalled_camera_is_missed_then_recovers(
    mjpeg: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = mjpeg.start("--fps", "20")
    pump = FramePump(open_source(mjpeg_config(port, read_timeout_s=2.0), "stall"), "latest")
    closing.append(pump)
    assert isinstance(pump.get(timeout_s=60.0), Frame)
    failures = pump.stats().source.failures
    mjpeg.signal(signal.SIGSTOP)
    try:
        # frames already in the socket are read before the trigger: once a read has timed
        # out (a failure counted), none is left (waited for, not slept)
        deadline = time.monotonic() + 60
        while pump.stats().source.failures == failures:
            assert time.monotonic() < deadline, pump.stats()
            time.sleep(0.05)
        missed = pump.grab_fresh("T-7", timeout_s=0.5)
    finally:
        mjpeg.signal(signal.SIGCONT)
    assert isinstance(missed, FrameFailure) and missed.missed and missed.trigger_id == "T-7"
    assert "no fresh frame within 0.5 s" in missed.reason
    again = pump.grab_fresh("T-8", timeout_s=60.0)
    assert isinstance(again, Frame) and again.trigger_id == "T-8"


# -- RTSP (GStreamer) ------------------------------------------------------------------


def test_rtsp_server_killed_and_restarted_frames_keep_flowing(
    rtsp: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = rtsp.start("--color", BLUE)
    pump = FramePump(open_source(rtsp_config(port), "rtsp"), "latest")
    closing.append(pump)

    def next_frame(want: Callable[[Frame], bool], timeout_s: float = 60.0) -> Frame:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = pump.get(timeout_s=1.0)
            if isinstance(record, Frame) and want(record):
                return record
        raise AssertionError(f"no matching frame in {timeout_s} s: {pump.stats()}")

    first = next_frame(is_blue)
    assert first.resolution_wh == (320, 240)
    rtsp.stop()
    deadline = time.monotonic() + 60.0
    while pump.stats().source.state != "reconnecting":
        assert time.monotonic() < deadline, "the source did not notice the server died"
        time.sleep(0.05)

    rtsp.start("--color", RED, port=port)
    after = next_frame(is_red)  # only the restarted server sends red
    stats = pump.stats()
    assert stats.source.state == "connected" and stats.source.reconnects >= 1
    assert after.frame_id > first.frame_id
    later = next_frame(is_red)
    assert later.frame_id > after.frame_id  # and it keeps going


def test_rtsp_hung_server_is_detected_and_recovered_after_sigcont(
    rtsp: Peer, closing: list[FrameSource | FramePump]
) -> None:
    port = rtsp.start("--color", BLUE)
    source = StreamSource(rtsp_config(port), "rtsp")
    closing.append(source)
    for _ in range(5):
        frame, _ = read_until(source, is_frame)
        assert isinstance(frame, Frame) and is_blue(frame)

    rtsp.signal(signal.SIGSTOP)
    try:
        hung, _ = read_until(source, is_missed)
        assert isinstance(hung, FrameFailure)
        # a stalled H.264 peer either drains stale frames after a long wait or times out
        assert "hung: a read blocked" in hung.reason or "no frame within" in hung.reason
        assert source.status().state == "reconnecting"
        # reopening a stopped server times out (the kernel accepts, nobody answers)
        still, _ = read_until(
            source, lambda r: isinstance(r, FrameFailure) and "cannot open" in r.reason
        )
        assert isinstance(still, FrameFailure) and still.missed
    finally:
        rtsp.signal(signal.SIGCONT)
    resumed = datetime.now(timezone.utc)
    back, _ = read_until(source, is_frame)
    assert isinstance(back, Frame) and is_blue(back) and back.captured_at >= resumed
    status = source.status()
    assert status.state == "connected" and status.reconnects >= 1


# -- V4L2 device (none exists here) ----------------------------------------------------


def test_missing_device_is_named_and_retried(
    tmp_path: Path, closing: list[FrameSource | FramePump]
) -> None:
    index = next(i for i in range(200, 256) if not Path(f"/dev/video{i}").exists())
    config = DeviceSourceConfig(index=index, read_timeout_s=0.2, backoff_initial_s=0.05)
    source = open_source(config, "usb")
    closing.append(source)
    record = source.read()
    assert isinstance(record, FrameFailure) and record.missed
    assert f"/dev/video{index} does not exist" in record.reason
    status = source.status()
    assert status.state == "reconnecting" and status.last_error == record.reason
    assert isinstance(source.read(), FrameFailure)  # keeps trying, never ends by itself

    not_a_device = tmp_path / "video0"
    not_a_device.write_bytes(b"")
    other = open_source(DeviceSourceConfig(path=not_a_device, read_timeout_s=0.2), "usb2")
    closing.append(other)
    record = other.read()
    assert isinstance(record, FrameFailure)
    assert f"{not_a_device} is not a character device" in record.reason


def test_stream_password_never_reaches_records_or_status(
    closing: list[FrameSource | FramePump],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = StreamSourceConfig(
        url=f"rtsp://admin:hunter2@127.0.0.1:{port}/main", open_timeout_s=0.5, read_timeout_s=0.2
    )
    source = open_source(config, "cam")
    closing.append(source)
    record = source.read()
    assert isinstance(record, FrameFailure)
    assert "hunter2" not in record.reason and f"admin:***@127.0.0.1:{port}" in record.reason
    assert "hunter2" not in str(source.status())
