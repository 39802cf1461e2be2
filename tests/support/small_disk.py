"""A real small file system for tests where a disk fills: a tmpfs, else a loop-mounted ext4.

Mounting needs root (as in the test containers and CI); without it the fixture
skips, saying why.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(kind: str, where: Path, image: Path, size_mb: int) -> str | None:
    """Mount a ``size_mb`` file system at ``where``; ``None`` on success, else why not."""
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)]
    else:
        try:
            with open(image, "wb") as f:
                f.truncate(size_mb * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as e:
            return f"mkfs.ext4: {e}"
        cmd = ["mount", "-o", "loop", str(image), str(where)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as e:
        return f"{' '.join(cmd)}: {e}"
    return None if r.returncode == 0 else f"{' '.join(cmd)}: {r.stderr.strip()}"


@contextmanager
def small_disk(tmp_path: Path, size_mb: int) -> Iterator[Path]:
    """A real ``size_mb`` file system mounted under ``tmp_path``, unmounted afterwards
    (skips the test when none can be mounted)."""
    where = tmp_path / "disk"
    where.mkdir()
    why = []
    for kind in ("tmpfs", "ext4"):
        err = mount(kind, where, tmp_path / "disk.img", size_mb)
        if err is None:
            break
        why.append(err)
    else:
        pytest.skip("no small file system can be mounted: " + "; ".join(why))
    try:
        yield where
    finally:
        r = subprocess.run(["umount", str(where)], capture_output=True, timeout=60)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=60)
