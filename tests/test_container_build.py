"""Build the CPU image and run ``kanjian run --frames 3`` in it, where a rootless
builder (podman, else docker) is on PATH and can build; otherwise skip, saying why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TAG = "localhost/kanjian-test:cpu"


def _builder() -> tuple[str | None, str]:
    """(the builder's path, or None) and why not."""
    for name in ("podman", "docker"):
        exe = shutil.which(name)
        if exe is None:
            continue
        r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return exe, ""
        return None, f"{name} is on PATH but `{name} info` fails: {r.stderr.strip()[:300]}"
    return None, "no container builder (podman or docker) on PATH"


def test_cpu_image_builds_and_runs_the_station(tmp_path: Path) -> None:
    exe, why = _builder()
    if exe is None:
        pytest.skip(why)
    env_vfs = ["--storage-driver", "vfs"] if exe.endswith("podman") else []
    b = subprocess.run(
        [exe, *env_vfs, "build", "-f", "deploy/containers/Dockerfile.cpu", "-t", TAG, "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    r = subprocess.run(
        [exe, *env_vfs, "run", "--rm", TAG, "run", "--frames", "3", "--data-dir", "/data/t"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
