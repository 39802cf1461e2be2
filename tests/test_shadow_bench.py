"""``python -m benchmarks.shadow`` end to end at its smallest: both stations, the shadow
loaded and stopped around its blocks, the table written (no number is judged here)."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import shadow


def test_the_shadow_benchmark_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "shadow.md"
    args = ["--rounds", "1", "--frames", "12", "--triggers", "3", "--out", str(out)]
    assert shadow.main(args) == 0
    text = out.read_text()
    for row in (
        "free-run FPS, median of blocks",
        "trigger → verdict, median (ms)",
        "trigger → verdict, p95 (ms)",
    ):
        assert re.search(rf"^\| {re.escape(row)} \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", text, re.M), (
            row
        )
    assert re.search(r"^- shadow, free run: offered \d+, judged \d+", text, re.M)
    assert re.search(r"^- shadow, triggered: offered \d+, judged \d+", text, re.M)
    assert "Machine: host " in text
