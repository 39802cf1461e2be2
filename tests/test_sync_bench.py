"""Smoke test of ``benchmarks/sync_drain.py``: it runs end to end and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def test_sync_drain_benchmark_runs(tmp_path: Path, detect_model: Any) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sync_drain", "--backlog", "300", "--window-s", "1",
         "--model", str(detect_model.onnx), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["backlog"] == 300
    for k in ("alone_ack_rate", "alone_confirm_rate", "inspect_drain_rate", "fps_during_drain",
              "fps_after_drain", "fps_sync_disabled"):  # fmt: skip
        assert r[k] > 0, k
    # acknowledged before confirmed, never after
    assert r["alone_ack_s"] <= r["alone_confirm_s"]
    assert "| backlog alone: receiver confirmed | 300 |" in done.stdout
