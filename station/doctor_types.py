"""What ``kanjian doctor`` reports: one :class:`Check` per thing looked at.

The checks themselves live by what they look at: the machine and its libraries in
:mod:`kanjian.station.doctor_system`, a station config in
:mod:`kanjian.station.doctor`, the screen's font beside the screen
(:mod:`kanjian.appliance_api.http.font_check`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: ``fail``: the configured station cannot run as configured (``kanjian doctor`` exits
#: 1); ``warn``: it runs, with something worth fixing; ``info``: a fact; ``not checked``:
#: too costly or intrusive to find out here (the detail says why)
Status = Literal["ok", "warn", "fail", "info", "not checked"]


@dataclass(frozen=True)
class Check:
    """One thing looked at.

    Attributes:
        section: what it belongs to: ``system``, ``onnxruntime``, ``gpu``, ``screen``,
            ``clock`` or ``station``.
        name: what was looked at, e.g. ``numpy`` or ``camera``.
        status: see :data:`Status`.
        detail: what was found, one line.
        fix: what to do about a ``fail`` or ``warn`` ("" when nothing).
    """

    section: str
    name: str
    status: Status
    detail: str
    fix: str = ""


@contextmanager
def native_output_captured() -> Iterator[list[str]]:
    """Send what native code (and ``print``) writes to stdout and stderr to a temporary
    file while the block runs; the list it yields gets those lines afterwards.

    ONNX Runtime prints its provider errors there, ahead of (and through) a ``--json``
    report on stdout. Only for a single-threaded command: another thread's output in the
    meantime is captured too.
    """
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines += [ln.strip() for ln in text.splitlines() if ln.strip()]


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (where a new folder would be made)."""
    p = path.absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


__all__ = ["Check", "Status", "native_output_captured", "nearest_existing"]
