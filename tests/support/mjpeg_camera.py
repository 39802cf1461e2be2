"""``tests/peers/mjpeg_server.py`` as a live network camera a test can kill and start again."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().parents[1] / "peers"


class MjpegCamera:
    """One MJPEG camera process on 127.0.0.1; it comes back on the same port after a kill.

    Args:
        log: file its stderr is appended to.
        args: more ``mjpeg_server.py`` arguments (e.g. ``"--fps", "20"``).
    """

    def __init__(self, log: Path, *args: str) -> None:
        self.log, self.args = log, args
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> int:
        """Start it (on the port it had, if it ran before); returns the port."""
        assert self.proc is None, "camera already running"
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(PEERS / "mjpeg_server.py"), "--port", str(self.port),
                 *self.args],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("READY "), f"mjpeg server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def kill(self) -> None:
        """SIGKILL and reap (no goodbye: the reader sees the connection die)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> MjpegCamera:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
