"""Numba caches each kernel keyed on its own file alone (the letterbox's ``cpu_kernel.py``,
the quality gate's ``quality_kernel.py``): the hashes of the helper modules it calls must
be recorded there, so that editing a helper also edits the kernel's file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType

import pytest

from kanjian.kernels import cpu_kernel, quality_kernel

KERNELS = [cpu_kernel, quality_kernel]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_kernel_records_its_helpers_hashes(kernel: ModuleType) -> None:
    folder = Path(kernel.__file__ or "").resolve().parent
    now = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in kernel._DEPENDS_SHA256
    }
    assert now == kernel._DEPENDS_SHA256, (
        "a helper of the cached Numba kernel changed: set "
        f"kernels/{Path(kernel.__file__ or '').name} _DEPENDS_SHA256 = {now!r} "
        "(this also invalidates the kernel's on-disk cache)"
    )


def _imported(path: Path) -> set[str]:
    return {
        line.split()[1].rsplit(".", 1)[1] + ".py"
        for line in path.read_text().splitlines()
        if line.startswith("from kanjian.kernels.")
    }


def test_every_numba_helper_module_is_guarded() -> None:
    # a new module imported by a kernel must be hashed too
    folder = Path(cpu_kernel.__file__).resolve().parent
    imported = _imported(folder / "cpu_kernel.py") | _imported(folder / "cpu_rows.py")
    assert imported <= set(cpu_kernel._DEPENDS_SHA256)
    # the quality kernel takes only a plain-Python helper (_named_copy) from cpu_kernel.py
    assert _imported(folder / "quality_kernel.py") - {"cpu_kernel.py"} <= set(
        quality_kernel._DEPENDS_SHA256
    )
