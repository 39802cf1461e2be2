"""The runtime path never imports torch, Ultralytics or the training package."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "kanjian.camera",
    "kanjian.kernels",
    "kanjian.inference.model",
    "kanjian.inference.golden",
    "kanjian.station.pipeline",
    "kanjian.station.sync.service",
    "kanjian.station.plc.service",
    "kanjian.appliance_api.http.server",
    "kanjian.appliance_api.cli.main",
]


def test_runtime_never_imports_torch_or_ultralytics() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
        + "from kanjian.appliance_api.cli.main import _register_commands\n"
        + "_register_commands()\n"  # mounting the training commands must stay light too
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'torchvision'))\n"
        + "bad += [m for m in sys.modules if m.startswith('kanjian.training.') and m != 'kanjian.appliance_api.cli.training']\n"
        + "print(bad)\n"
        + "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
