"""Smoke test of ``benchmarks/platform_drain.py``: it runs end to end and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kanjian.platform import fleet_sql

REPO = Path(__file__).resolve().parents[1]


def test_platform_drain_benchmark_runs(tmp_path: Path) -> None:
    out, md = tmp_path / "report.json", tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.platform_drain", "--stations", "3", "--per-station",
         "20", "--receivers", "2", "--insert-rows", "1500", "--json", str(out), "--out", str(md)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    [drain] = r["drain"]
    assert (drain["receivers"], drain["inspections"]) == (2, 60)
    assert drain["rate"] > 0 and drain["cpu_receivers"] > 0 and drain["cpu_postgres"] > 0
    # the station's own messages: a FAIL with two boxes and an image key is the larger
    sizes = r["message_bytes"]
    assert sizes["FAIL, 2 boxes, image key"] > sizes["PASS, no boxes"] > 300
    assert r["insert_rows"] == 1500 and r["insert_rate"] > 0
    assert r["bytes_per_inspection"]["inspections"] > sizes["PASS, no boxes"]  # payload kept
    assert set(r["queries_ms"]) == {q.name for q in fleet_sql.QUERIES}
    assert md.read_text() == done.stdout[:-1]  # print() adds a newline
