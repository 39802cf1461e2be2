"""Numba caches the letterbox kernel keyed on ``cpu_kernel.py`` alone: its helpers' hashes
must be recorded there, so that editing a helper also edits the kernel's file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kanjian.kernels import cpu_kernel


def test_kernel_records_its_helpers_hashes() -> None:
    folder = Path(cpu_kernel.__file__).resolve().parent
    now = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in cpu_kernel._DEPENDS_SHA256
    }
    assert now == cpu_kernel._DEPENDS_SHA256, (
        "a helper of the cached Numba kernel changed: set kernels/cpu_kernel.py "
        f"_DEPENDS_SHA256 = {now!r} (this also invalidates the kernel's on-disk cache)"
    )


def test_every_numba_helper_module_is_guarded() -> None:
    # a new module imported by the kernel must be hashed too
    src = Path(cpu_kernel.__file__).resolve().read_text()
    imported = {
        line.split()[1].rsplit(".", 1)[1] + ".py"
        for line in src.splitlines()
        if line.startswith("from kanjian.kernels.")
    }
    rows = (Path(cpu_kernel.__file__).resolve().parent / "cpu_rows.py").read_text()
    imported |= {
        line.split()[1].rsplit(".", 1)[1] + ".py"
        for line in rows.splitlines()
        if line.startswith("from kanjian.kernels.")
    }
    assert imported <= set(cpu_kernel._DEPENDS_SHA256)
