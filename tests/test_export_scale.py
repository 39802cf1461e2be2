"""``kanjian dataset export`` reads a long log in bounded memory, and says how far it got.

Stores built by ``benchmarks/big_store.py`` (real migrations; frames not on disk):
the export walks every selected row, but decodes and keeps only the inspections
it can export, so reading ten times the rows must not take ten times the memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from benchmarks.big_store import CLASSES, build
from kanjian.training.export_filter import ExportFilter
from kanjian.training.station_log import CHUNK, read_station_log_items

SMALL, LARGE = 2_000, 20_000


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("big")
    return {n: build(root / str(n), n, seed=5).path.parent for n in (SMALL, LARGE)}


def _peak_bytes(data: Path) -> tuple[int, dict[str, int]]:
    # the rows selected are all read; the frames (not on disk) are never reached, so
    # what is kept does not grow with the log: only not_defect rows are taken
    flt = ExportFilter(feedback=("not_defect",))
    tracemalloc.start()
    try:
        log = read_station_log_items(data, flt, CLASSES)
        return tracemalloc.get_traced_memory()[1], log.counts
    finally:
        tracemalloc.stop()


def test_reading_ten_times_the_rows_takes_about_the_same_memory(stores: dict[int, Path]) -> None:
    small, counts_small = _peak_bytes(stores[SMALL])
    large, counts_large = _peak_bytes(stores[LARGE])
    assert sum(counts_large.values()) > 9 * SMALL  # every row was read and counted
    assert counts_small["feedback_not_selected"] > 0.9 * SMALL
    # 18,000 more rows held as decoded inspections would add well over 10 MB
    assert large - small < 4 * 2**20, (small, large)


def test_the_cli_reports_progress_as_lines_when_not_on_a_terminal(
    stores: dict[int, Path], tmp_path: Path
) -> None:
    exe = Path(sys.executable).parent / "kanjian"
    run = subprocess.run(
        [str(exe), "dataset", "export", str(stores[LARGE]), str(tmp_path / "out"), "--json",
         "--classes", ",".join(CLASSES), "--no-split"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("exporting the station log:")]
    assert len(lines) >= 2 * LARGE // CHUNK // 2, run.stderr  # one a tenth, not one a chunk
    # both passes over the rows: the class list, then the images written
    steps = 2 * LARGE
    assert lines[-1] == f"exporting the station log: {steps:,} of {steps:,} row reads (100 %)"
    assert run.stdout.lstrip().startswith("{")  # --json's stdout stays the summary alone
