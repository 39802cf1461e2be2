"""GigE Vision through Aravis against a real GigE Vision peer: Aravis' fake camera
(``arv-fake-gv-camera-0.8 -i 127.0.0.1``, Debian aravis-tools), started, killed,
restarted and SIGSTOPped by the tests. Settings are checked by a second, independent
GVCP client (Debian's /usr/bin/python3 with python3-gi) reading the camera.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.camera.config import GigESourceConfig
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.gige import GigESource, convert_image, load_aravis

FAKE = shutil.which("arv-fake-gv-camera-0.8")
SYSTEM_PYTHON = "/usr/bin/python3"
GVCP_PORT = 3956

OBSERVER = """
import json, sys, gi
gi.require_version("Aravis", "0.8")
from gi.repository import Aravis, Gio
a = Gio.InetAddress.new_from_string(sys.argv[1])
dev = Aravis.GvDevice.new(a, a)  # control is ours already: this one only reads
cam = Aravis.Camera.new_with_device(dev)
print(json.dumps({"exposure_us": cam.get_exposure_time(), "gain": cam.get_gain(),
    "pixel_format": cam.get_pixel_format_as_string(),
    "trigger_mode": dev.get_string_feature_value("TriggerMode"),
    "trigger_source": cam.get_trigger_source()}))
"""


def _gvcp_answers(address: str, timeout_s: float = 0.2) -> bool:
    """Whether a GigE Vision device answers a READREG of its version register."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(struct.pack(">BBHHHI", 0x42, 0x01, 0x0080, 4, 1, 0), (address, GVCP_PORT))
        try:
            data, _ = s.recvfrom(64)
        except OSError:
            return False
    return data[2:4] == b"\x00\x81"


class FakeCamera:
    """One arv-fake-gv-camera-0.8 process on 127.0.0.1."""

    def __init__(self, log: Path, serial: str = "KANJIAN1") -> None:
        if FAKE is None:
            pytest.fail("arv-fake-gv-camera-0.8 not found (apt install aravis-tools)")
        self.log, self.serial = log, serial
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert FAKE is not None and self.proc is None
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [FAKE, "-i", "127.0.0.1", "-s", self.serial], stdout=err, stderr=err
            )
        deadline = time.monotonic() + 10
        while not _gvcp_answers("127.0.0.1"):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "fake camera did not answer GVCP"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[FakeCamera]:
    cam = FakeCamera(tmp_path / "fake-camera.log")
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


@pytest.fixture
def closing() -> Iterator[list[GigESource]]:
    opened: list[GigESource] = []
    try:
        yield opened
    finally:
        for src in opened:
            src.close()


def _config(**kw: Any) -> GigESourceConfig:
    values: dict[str, Any] = {
        "address": "127.0.0.1",
        "read_timeout_s": 1.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
    }
    values.update(kw)
    return GigESourceConfig(**values)


def _frame_number(f: Frame) -> int:
    assert f.uri is not None and "#" in f.uri
    return int(f.uri.rsplit("#", 1)[1])


def _next_frame(src: GigESource, timeout_s: float) -> tuple[Frame, list[FrameFailure]]:
    failures: list[FrameFailure] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = src.read()
        if isinstance(r, Frame):
            return r, failures
        assert isinstance(r, FrameFailure), r
        failures.append(r)
    raise AssertionError(f"no frame in {timeout_s} s: {[f.reason for f in failures[-3:]]}")


# -- pixel formats against a NumPy reference -----------------------------------------------


def _mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """The reference: sample a BGR image through a GenICam Bayer pattern (first row's
    first two pixels are ``pattern[5:7]``, e.g. BayerRG8 -> R G / G B)."""
    chan = {"B": 0, "G": 1, "R": 2}
    first, second = pattern[5], pattern[6]
    other = {"RG": "GB", "GB": "RG", "GR": "BG", "BG": "GR"}[first + second]
    layout = [[first, second], [other[0], other[1]]]
    out = np.zeros(bgr.shape[:2], np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = bgr[dy::2, dx::2, chan[layout[dy][dx]]]
    return out


def test_convert_image_matches_reference() -> None:
    rng = np.random.default_rng(0)
    # flat 16x16 colour tiles: bilinear demosaicing is exact inside a flat tile
    tiles = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    bgr = np.kron(tiles, np.ones((16, 16, 1), np.uint8))
    h, w = bgr.shape[:2]
    inner = np.zeros((h, w), bool)
    for ty in range(4):
        for tx in range(6):
            inner[ty * 16 + 2 : ty * 16 + 14, tx * 16 + 2 : tx * 16 + 14] = True
    for fmt in ("BayerRG8", "BayerGB8", "BayerGR8", "BayerBG8"):
        got = convert_image(_mosaic(bgr, fmt).tobytes(), w, h, fmt)
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        assert np.array_equal(got[inner], bgr[inner]), fmt
    assert np.array_equal(convert_image(bgr[:, :, ::-1].tobytes(), w, h, "RGB8"), bgr)
    assert np.array_equal(convert_image(bgr.tobytes(), w, h, "BGR8"), bgr)
    grey = bgr[:, :, 1].copy()
    assert np.array_equal(convert_image(grey.tobytes(), w, h, "Mono8"), grey)
    mono16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    got16 = convert_image(mono16.astype("<u2").tobytes(), w, h, "Mono16")
    assert np.array_equal(got16, (mono16 >> 8).astype(np.uint8))
    assert got16.flags.c_contiguous and got16.dtype == np.uint8
    with pytest.raises(ValueError, match="needs 6144 bytes, got 100"):
        convert_image(b"\0" * 100, 64, 32, "RGB8")
    with pytest.raises(ValueError, match="YUV422 is not supported"):
        convert_image(b"", 1, 1, "YUV422")
    assert cv2.COLOR_BayerBG2BGR != cv2.COLOR_BayerRG2BGR  # the swap above is not a no-op


# -- the fake camera -------------------------------------------------------------------------


def test_free_run_frames(camera: FakeCamera, closing: list[GigESource]) -> None:
    src = GigESource(_config(trigger="free_run", frame_rate=20.0), "gige")
    closing.append(src)
    first, _ = _next_frame(src, 60)
    frames = [first] + [_next_frame(src, 30)[0] for _ in range(4)]
    ids = [_frame_number(f) for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(f.image.shape == (512, 512) and f.image.dtype == np.uint8 for f in frames)
    assert any(not np.array_equal(frames[0].image, f.image) for f in frames[1:])
    # the camera keeps streaming (20 fps, ~40 frames in 2 s; >= 5 even if a loaded machine
    # slows it 8 times): what queued meanwhile is dropped
    time.sleep(2.0)
    later, _ = _next_frame(src, 30)
    assert _frame_number(later) - ids[-1] >= 5
    assert src.status().state == "connected" and src.status().reconnects == 0


def test_software_trigger_settings_from_config(
    camera: FakeCamera, closing: list[GigESource]
) -> None:
    cfg = _config(trigger="software", exposure_us=2500.0, gain=3.0, pixel_format="RGB8")
    src = GigESource(cfg, "gige")
    closing.append(src)
    first, _ = _next_frame(src, 60)
    assert first.image.shape == (512, 512, 3)
    observed = subprocess.run(
        [SYSTEM_PYTHON, "-c", OBSERVER, "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert observed.returncode == 0, observed.stderr
    assert json.loads(observed.stdout) == {
        "exposure_us": 2500.0,
        "gain": 3.0,
        "pixel_format": "RGB8",
        "trigger_mode": "On",
        "trigger_source": "Software",
    }
    # one frame per software trigger: nothing is exposed between reads
    ids = [_frame_number(first)]
    for _ in range(3):
        time.sleep(0.3)
        ids.append(_frame_number(_next_frame(src, 30)[0]))
    assert ids == list(range(ids[0], ids[0] + 4))


@pytest.mark.parametrize("mode", ["free_run", "software"])
def test_killed_and_restarted_camera_recovers(
    mode: str, camera: FakeCamera, closing: list[GigESource]
) -> None:
    src = GigESource(_config(trigger=mode, frame_rate=20.0 if mode == "free_run" else None), "g")
    closing.append(src)
    _next_frame(src, 60)
    camera.kill()
    # frames already on their way may still arrive (free run at 20 fps); then only
    # failures, each a MISSED one naming the camera
    reads = [src.read() for _ in range(2)]
    for _ in range(40):
        if isinstance(reads[-2], FrameFailure):
            break
        reads.append(src.read())
    down = reads[-2:]
    assert all(isinstance(r, FrameFailure) and r.missed for r in down), reads
    assert all(r.reason.startswith("gige://127.0.0.1") for r in down if isinstance(r, FrameFailure))
    assert src.status().state == "reconnecting"
    camera.start()
    frame, failures = _next_frame(src, 90)
    assert frame.image.shape == (512, 512)
    # while it comes back: missed records (or, under load, an incomplete frame), all named
    assert all(f.reason.startswith("gige://127.0.0.1") for f in failures)
    status = src.status()
    assert status.state == "connected" and status.reconnects >= 1, status


def test_hardware_trigger_waits_and_checks_the_camera(
    camera: FakeCamera, closing: list[GigESource]
) -> None:
    """No pulse on Line0: a read returns a missed record after read_timeout_s, the
    camera is still answering and still ours, so no reconnect; killed, it is lost."""
    src = GigESource(_config(trigger="hardware", read_timeout_s=0.5), "g")
    closing.append(src)
    idle = [src.read() for _ in range(2)]
    for r in idle:
        assert isinstance(r, FrameFailure) and r.missed
        assert "waiting for a hardware trigger on Line0" in r.reason
    assert src.settings()["trigger_source"] == "Line0"
    assert src.settings()["trigger_mode"] == "On"
    assert src.status().state == "connected" and src.status().reconnects == 0
    camera.kill()
    gone = src.read()
    assert isinstance(gone, FrameFailure) and "camera does not answer" in gone.reason
    assert src.status().state == "reconnecting"


def test_opened_by_address_without_discovery_broadcast(closing: list[GigESource]) -> None:
    """Nobody answers at 127.0.0.2: the source retries by unicast to that address only.
    A socket on the GVCP port sees its packets and no DISCOVERY command among them."""
    seen: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", GVCP_PORT))  # broadcasts reach only wildcard-bound sockets
        listener.settimeout(0.1)
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):  # the 0.1 s timeout
                    seen.append(listener.recv(2048))

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        src = GigESource(_config(address="127.0.0.2", read_timeout_s=0.5), "g")
        closing.append(src)
        failure = src.read()
        stop.set()
        t.join(5)
    assert isinstance(failure, FrameFailure) and failure.missed
    assert failure.reason.startswith("gige://127.0.0.2: cannot open")
    commands = {struct.unpack(">H", p[2:4])[0] for p in seen if len(p) >= 8 and p[0] == 0x42}
    assert commands, "the listener saw no GVCP packet at all"
    assert 0x0002 not in commands  # DISCOVERY_CMD


def test_missing_pygobject_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from kanjian.camera.source import SourceError

    real_import = builtins.__import__

    def no_gi(name: str, *args: Any, **kw: Any) -> Any:
        if name == "gi" or name.startswith("gi."):
            raise ImportError("No module named 'gi'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_gi)
    with pytest.raises(SourceError, match=r"kanjian\[gige\].*gir1.2-aravis-0.8"):
        load_aravis()


# -- the station over GigE, with the PLC -----------------------------------------------------


def test_station_on_gige_software_trigger_survives_stall_and_restart(
    camera: FakeCamera, detect_model: Any, tmp_path: Path
) -> None:
    """A PLC triggers a station that looks through the fake camera (software trigger):
    judged; camera SIGSTOPped -> the PLC reads MISSED and the row says why; camera
    killed and restarted -> judged again, with no restart of the station."""
    from pymodbus.client import ModbusTcpClient

    from kanjian.station.pipeline import build_station
    from kanjian.station.plc import service as _plc  # noqa: F401  registers "plc"
    from tests.support.station_config import parse, station_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # (not named camera: that is the fake camera process the test stops and restarts)
    gige = {"kind": "gige", "address": "127.0.0.1", "trigger": "software", "exposure_us": 2000,
              "read_timeout_s": 1.0, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}  # fmt: skip
    cfg = parse(
        station_config(
            tmp_path / "data",
            bundle=detect_model.onnx,
            camera=gige,
            trigger={"mode": "triggered", "frame_timeout_s": 1.5},
            plc={"enabled": True, "modbus": {"port": port}},
        )
    )
    station = build_station(cfg)
    loop = threading.Thread(target=station.run, daemon=True)
    loop.start()
    plc = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert plc.connect()

    def trigger_and_read() -> tuple[int, int]:
        """(verdict code, result seq) of one handshake."""
        plc.write_coil(0, True)
        plc.write_coil(0, False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            regs = plc.read_holding_registers(0, count=9).registers
            if regs[0] & 4:
                plc.write_coil(1, True)
                plc.write_coil(1, False)
                return regs[1], (regs[5] << 16) | regs[6]
            time.sleep(0.005)
        raise AssertionError("no result")

    def until_judged(limit: int = 40) -> list[int]:
        codes = []
        for _ in range(limit):
            codes.append(trigger_and_read()[0])
            if codes[-1] != 5:
                return codes
        raise AssertionError(f"never judged: {codes}")

    try:
        codes = until_judged()
        camera.signal(signal.SIGSTOP)
        try:
            stalled_code, stalled_seq = trigger_and_read()
        finally:
            camera.signal(signal.SIGCONT)
        camera.kill()
        camera.start()
        codes += [stalled_code, *until_judged()]
    finally:
        plc.close()
        station.stop()
        loop.join(30)
        station.close()
    assert stalled_code == 5
    assert codes[-1] in (1, 2, 3)
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    rows = db.execute(
        "SELECT trigger_id, verdict, reason, uri FROM inspections ORDER BY seq"
    ).fetchall()
    assert len(rows) == len(codes)  # one row per trigger
    by_trigger = {r[0]: r for r in rows}
    _, verdict, reason, _ = by_trigger[f"plc-{stalled_seq}"]
    assert verdict == "MISSED" and "no fresh frame within 1.5 s" in reason
    judged = [r for r in rows if r[1] != "MISSED"]
    assert judged and all(r[3].startswith("gige://127.0.0.1#") for r in judged)


def test_gige_config_errors_name_key_and_line() -> None:
    from kanjian.station.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as e:
        parse_config("camera:\n  kind: gige\n  address: 300.1.2.3\n  trigger: sometimes\n")
    text = str(e.value)
    assert "line 3: camera.address: Input is not a valid IPv4 address" in text
    assert "line 4: camera.trigger: Input should be 'free_run', 'software' or 'hardware'" in text
    cfg = parse_config("camera: {kind: gige, address: 10.0.0.7, trigger: hardware}")
    assert isinstance(cfg.camera, GigESourceConfig) and cfg.camera.trigger_source == "Line0"
