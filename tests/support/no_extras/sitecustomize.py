"""Put on ``PYTHONPATH`` of a child process, this makes the optional extras unimportable,
as in a runtime-only install (``scripts/start.sh``: ``pip install -e .``, no extras).

``KANJIAN_BLOCK`` (comma-separated top-level names) overrides the default list.
This folder holds no test: it is a stand-in for a venv, cheaper than building one.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder

# training (torch, Ultralytics, onnx...), plc (asyncua, pymodbus), gige (gi), and the
# benchmarks' chart (matplotlib): none is installed by the README's first command
DEFAULT = (
    "torch,torchvision,ultralytics,onnx,onnxslim,pi_heif,asyncua,pymodbus,cryptography,"
    "gi,matplotlib"
)
BLOCKED = frozenset(n for n in os.environ.get("KANJIAN_BLOCK", DEFAULT).split(",") if n)


class _Blocker(MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, _Blocker())
