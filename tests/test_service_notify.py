"""The station under systemd (issue #12, point 9): READY, WATCHDOG, STOPPING.

The test plays systemd's side: it binds a real AF_UNIX datagram socket, hands
its address to ``kanjian run`` / ``kanjian serve`` in ``NOTIFY_SOCKET`` (with
``WATCHDOG_USEC``), and reads what arrives. The watchdog's promise, that it pings
only while the loop advances, is held at unit level with a real station whose
inspection is made to hang.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kanjian.station.notify import Notifier, ServiceNotify, Watchdog, watchdog_interval_s
from tests.support import api as S
from tests.support.station_config import parse, station_config

REPO = Path(__file__).resolve().parents[1]


class Listener:
    """systemd's end of ``NOTIFY_SOCKET``: every datagram received, in order."""

    def __init__(self, address: str) -> None:
        self.address = address  # as the env variable says it ("@name" or a path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def having(self, key: str) -> list[dict[str, str]]:
        return [m for m in list(self.messages) if key in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener(f"@kanjian-test-{uuid.uuid4().hex}")  # abstract: no path length limit
    yield lst
    lst.close()


def _count(data: Path) -> int:
    if not (data / "kanjian.db").is_file():
        return 0
    con = sqlite3.connect(data / "kanjian.db")
    try:
        return int(con.execute("SELECT count(*) FROM inspections").fetchone()[0])
    finally:
        con.close()


def _inspections(status: str) -> int:
    return int(status.split()[0])  # status_line(): "<n> inspections (...), <r>/s"


# -- the protocol, unit level ------------------------------------------------------------


def test_notifier_addresses_and_no_op(tmp_path: Path, listener: Listener) -> None:
    assert not Notifier.from_env({}).enabled and not Notifier(None).send("READY=1")
    assert not Notifier("relative/path").enabled  # neither a path nor @abstract
    assert Notifier.from_env({"NOTIFY_SOCKET": listener.address}).send("STATUS=x", "READY=1")
    S.wait_for(lambda: listener.having("READY"), 10, what="READY over the abstract socket")
    assert listener.messages[0] == {"STATUS": "x", "READY": "1"}

    path = tmp_path / "n.sock"
    if len(str(path)) < 100:  # sun_path holds 108 bytes
        on_path = Listener(str(path))
        try:
            assert Notifier(str(path)).send("WATCHDOG=1")
            S.wait_for(lambda: on_path.having("WATCHDOG"), 10, what="a ping over a path")
        finally:
            on_path.close()
    assert not Notifier(str(tmp_path / "nobody.sock")).send("READY=1")  # never raises

    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(mine) == 1.0
    assert watchdog_interval_s({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}) is None


def test_service_ready_then_stopping_once(listener: Listener) -> None:
    from kanjian.station.pipeline import LoopStats

    stats = LoopStats()
    quiet = ServiceNotify(stats, env={})
    quiet.ready()
    quiet.stopping()
    assert quiet.watchdog is None  # no NOTIFY_SOCKET: nothing sent, no thread

    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "7200000000"}
    svc = ServiceNotify(stats, env=env)
    svc.ready()
    assert svc.watchdog is not None and svc.watchdog.interval_s == 3600
    svc.stopping()
    svc.stopping()  # idempotent: a signal handler and the shutdown path both call it
    S.wait_for(lambda: listener.having("STOPPING"), 10, what="STOPPING")
    assert [next(k for k in m if k != "STATUS") for m in listener.messages] == [
        "READY",
        "STOPPING",
    ]
    assert listener.messages[0]["STATUS"] == "inspecting; 0 inspections (none yet), 0.0/s"


def test_watchdog_pings_only_while_progress_moves(listener: Listener) -> None:
    progress = [0]
    dog = Watchdog(Notifier(listener.address), 3600, lambda: progress[0], lambda: "s")
    assert not dog.tick()  # nothing moved since it was made
    progress[0] += 1
    assert dog.tick()
    assert not dog.tick() and not dog.tick()  # stuck: no pings however often it checks
    progress[0] += 5
    assert dog.tick() and dog.pings == 2
    S.wait_for(lambda: len(listener.having("WATCHDOG")) == 2, 10, what="two pings")
    assert all(m["STATUS"] == "s" for m in listener.having("WATCHDOG"))

    # the thread: pings while the counter moves, none once it stops
    moving = threading.Event()
    moving.set()

    def counter() -> int:  # moves at every check while ``moving`` is set
        if moving.is_set():
            progress[0] += 1
        return progress[0]

    live = Watchdog(Notifier(listener.address), 0.05, counter).start()
    try:
        S.wait_for(lambda: live.pings >= 3, 30, what="pings while moving")
        moving.clear()
        frozen_pings, ticks = live.pings, live.ticks
        S.wait_for(lambda: live.ticks >= ticks + 5, 30, what="five more checks")
        assert live.pings <= frozen_pings + 1  # at most the check that saw the last move
    finally:
        live.stop()


def test_hung_inspection_stops_the_pings(detect_model: Any, tmp_path: Path) -> None:
    """A real triggered station: idle waiting for triggers counts as progress; an
    inspection that hangs does not; once it returns, progress moves again."""
    from kanjian.station.pipeline import build_station

    images = S.copy_images(tmp_path / "images", 3)
    cfg = parse(
        station_config(
            tmp_path / "data",
            bundle=detect_model.onnx,
            camera={"kind": "folder", "path": str(images), "loop": True},
            trigger={"mode": "triggered"},
        )
    )
    station = build_station(cfg)
    release = threading.Event()
    entered = threading.Event()
    real_inspect = station.inspector.inspect

    def hanging(item: Any) -> Any:  # the fault: a model call that does not return
        entered.set()
        release.wait(120)
        return real_inspect(item)

    station.inspector.inspect = hanging  # type: ignore[method-assign]
    loop = threading.Thread(target=station.run, daemon=True)
    loop.start()
    try:
        dog = Watchdog(Notifier(None), 3600, lambda: station.stats.progress)
        S.wait_for(dog.tick, 30, what="idle waits for a trigger count as progress")
        fut = station.trigger("hang-1")
        assert entered.wait(60)
        dog.tick()  # takes in the idle waits made before the hang began
        stuck = [dog.tick() for _ in range(3)]
        assert not any(stuck)  # the loop is inside the hung inspection: no ping
        release.set()
        assert fut.result(60).inspection_id is not None
        S.wait_for(dog.tick, 30, what="progress again after the hang")
    finally:
        release.set()
        station.stop()
        loop.join(60)
        station.close()


# -- the real processes ------------------------------------------------------------------


@pytest.fixture
def looping_config(detect_model: Any, tmp_path: Path) -> tuple[Path, Path, int]:
    return S.looping_station(tmp_path, detect_model.onnx, 10, 13)


def _start(args: list[str], listener: Listener, usec: int = 1_000_000) -> Any:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(usec),
        "COLUMNS": "200",
    }
    return subprocess.Popen(
        [str(S.KANJIAN), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_run_ready_watchdog_stopping(
    looping_config: tuple[Path, Path, int], listener: Listener
) -> None:
    config, data, _ = looping_config
    proc = _start(["run", "-c", str(config)], listener)
    try:
        S.wait_for(lambda: listener.having("READY") or proc.poll() is not None, 180, what="READY")
        assert proc.poll() is None and listener.having("READY")[0]["READY"] == "1"
        S.wait_for(lambda: len(listener.having("WATCHDOG")) >= 4 or proc.poll() is not None, 120,
                   what="four pings")  # fmt: skip
        pings = listener.having("WATCHDOG")
        assert len(pings) >= 4 and all(p["WATCHDOG"] == "1" for p in pings)
        counts = [_inspections(p["STATUS"]) for p in pings]
        assert counts == sorted(counts) and counts[-1] > counts[0]  # frames are being judged
        assert _count(data) > 0
        assert not listener.having("STOPPING")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    S.wait_for(lambda: listener.having("STOPPING"), 10, what="STOPPING")
    assert listener.having("STOPPING")[0]["STOPPING"] == "1"
    keys = [next(iter(k for k in m if k != "STATUS")) for m in listener.messages]
    assert keys[0] == "READY" and "STOPPING" in keys
    assert _inspections(listener.having("STOPPING")[-1]["STATUS"].split("; ", 1)[1]) > 0


def test_serve_ready_once_listening(
    looping_config: tuple[Path, Path, int], listener: Listener, tmp_path: Path
) -> None:
    import httpx

    config, _, port = looping_config
    proc = _start(["serve", "-c", str(config)], listener, usec=2_000_000)
    try:
        S.wait_for(lambda: listener.having("READY") or proc.poll() is not None, 180, what="READY")
        assert proc.poll() is None
        # READY means listening: the API answers without a retry
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        S.wait_for(lambda: len(listener.having("WATCHDOG")) >= 2, 120, what="two pings")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    S.wait_for(lambda: listener.having("STOPPING"), 10, what="STOPPING")


def test_journald_gets_plain_lines(tmp_path: Path) -> None:
    """With JOURNAL_STREAM naming stderr: ``<priority>logger: message`` lines, no
    rich columns, no wrapping."""
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        st = os.fstat(f.fileno())
        code = (
            "import logging, sys\n"
            "from kanjian.appliance_api.cli.logs import setup_logging\n"
            "from rich.console import Console\n"
            "c = Console(stderr=True)\n"
            "assert setup_logging(False, c)\n"
            "logging.getLogger('kanjian.x').warning('w ' + 'x' * 150)\n"
            "logging.getLogger('kanjian.y').info('i')\n"
            "c.print('[red]error:[/] ' + 'y' * 150)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code],
            stderr=f,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "COLUMNS": "80"},
            timeout=120,
        )
    lines = err.read_text().splitlines()
    assert r.returncode == 0, lines
    assert lines == ["<4>kanjian.x: w " + "x" * 150, "<6>kanjian.y: i", "error: " + "y" * 150]


def test_unit_file_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on deploy/kanjian.service (its ExecStart pointed at
    this venv's kanjian, since /opt/kanjian is not installed here)."""
    unit = (REPO / "deploy" / "kanjian.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=30" in unit and "Restart=on-failure" in unit
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed here: the unit file was not verified")
    assert "/opt/kanjian/current/bin/kanjian serve" in unit
    copy = tmp_path / "kanjian.service"
    copy.write_text(unit.replace("/opt/kanjian/current/bin/kanjian", str(S.KANJIAN)))
    r = subprocess.run([exe, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
