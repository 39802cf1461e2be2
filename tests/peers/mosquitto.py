"""A real Mosquitto broker for tests: a plain process on 127.0.0.1, persistence on.

Uses the Debian ``mosquitto`` binary (``apt-get install mosquitto``). The
broker can be SIGKILLed and restarted on the same port and folder, which is
how the sync tests lose it mid-run. Persistence is Mosquitto's periodic
snapshot (``autosave_interval``), so a kill loses what arrived since the last
snapshot, acknowledged or not: exactly what end-to-end confirmation is for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s") from e
            time.sleep(0.02)


class Mosquitto:
    """One broker process with a config file and a persistence folder under ``workdir``.

    Args:
        workdir: folder for ``mosquitto.conf``, the persistence file and the log.
        port: TCP port (default: a free one, kept across restarts).
        autosave_s: seconds between persistence snapshots.
        extra: more config lines.
        tls: ``(ca_file, cert_file, key_file)``: the listener speaks TLS only.
        users: user name -> password; anonymous clients are then refused.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        autosave_s: int = 30,
        extra: tuple[str, ...] = (),
        tls: tuple[Path, Path, Path] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError("mosquitto not installed: apt-get install mosquitto")
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        auth = ["allow_anonymous true"]
        if users:  # a real password file, made by Mosquitto's own tool
            pw = workdir / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
            auth = ["allow_anonymous false", f"password_file {pw}"]
        tls_lines = []
        if tls is not None:  # (CA, server certificate, server key)
            tls_lines = [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        lines = [
            f"listener {self.port} 127.0.0.1",
            *tls_lines,
            *auth,
            "persistence true",
            f"persistence_location {workdir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {autosave_s}",
            # as root Mosquitto drops to user mosquitto, which cannot write workdir
            "user root" if os.geteuid() == 0 else "",
            # the receiver acknowledges only after its commit: let batches be large
            "max_inflight_messages 1000",
            "max_queued_messages 1000000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            *extra,
        ]
        self.conf.write_text("\n".join(x for x in lines if x) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final snapshot."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (Mosquitto saves its snapshot on a clean stop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
