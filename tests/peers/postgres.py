"""A real PostgreSQL server for tests: ``initdb`` + ``postgres`` in a temp folder, 127.0.0.1 only.

Uses the Debian ``postgresql`` binaries (``apt-get install postgresql``). The
server refuses to run as root, so as root the folder is given to the
``postgres`` user and the commands run through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: apt-get install postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One throwaway cluster; :attr:`url` is a ``postgresql://`` URL for database ``kanjian``.

    ``fsync`` off by default (tests); on for a benchmark that means durable commits.
    """

    def __init__(self, workdir: Path, fsync: bool = False) -> None:
        # the postgres user must reach the folder: pytest's tmp_path sits in a root-only
        # folder, so as root the cluster lives in a folder of its own under /tmp
        self.owned = os.geteuid() == 0
        self.workdir = Path(tempfile.mkdtemp(prefix="kanjian-pg-")) if self.owned else workdir
        self.data = self.workdir / "pgdata"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # tests need no durability (fsync off is faster); benchmarks measure with it on
        self.fsync = fsync
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://kanjian@127.0.0.1:{self.port}/kanjian"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-1000:]}")

    def start(self) -> Postgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._as:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        if not self.data.exists():
            self._run(_bin("initdb"), "-D", str(self.data), "-U", "kanjian", "--auth=trust",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
        log = (self.workdir / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [*self._as, _bin("postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
             "-c", f"fsync={'on' if self.fsync else 'off'}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                import psycopg

                with psycopg.connect(
                    f"postgresql://kanjian@127.0.0.1:{self.port}/postgres", autocommit=True
                ) as c:
                    if not c.execute(
                        "SELECT 1 FROM pg_database WHERE datname='kanjian'"
                    ).fetchone():
                        c.execute("CREATE DATABASE kanjian")
                return self
            except Exception as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not start: {e}") from e
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown; runuser passes the signal on
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.owned:
            shutil.rmtree(self.workdir, ignore_errors=True)
