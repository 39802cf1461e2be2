"""The quality gate's benchmark section runs end to end and reports every row (no timing
asserts), and its target reads the right row."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

# benchmarks/ is not installed; `pytest` (unlike `python -m pytest`) leaves the repo off sys.path
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality import (
    BUDGET,
    DEFAULT_ROWS,
    QualityReport,
    QualityTiming,
    run_quality,
)
from benchmarks.targets import TARGET_SIZES, quality_targets
from kanjian.station.quality_config import QualityConfig


def _current_layer() -> str:
    import numba

    try:
        return str(getattr(numba, "threading_layer")())  # noqa: B009 (untyped in numba)
    except ValueError:
        return "workqueue"


def test_section_reports_every_row() -> None:
    timings = run_quality(
        sizes=[(48, 64), (31, 17)],
        dst_hw=(32, 32),
        repeats=3,
        warmup_calls=1,
        layer=_current_layer(),  # the suite may already have started Numba's pool
        rows=(2, None),
    )
    methods = {t.method for t in timings}
    assert {
        "letterbox, 1 thread",
        "quality gate, 2 rows",
        "quality gate, every row",
        "quality gate, 2 rows + reference",
    } <= methods
    assert {t.src_hw for t in timings} == {(48, 64), (31, 17)}
    for t in timings:
        assert isinstance(t, QualityTiming) and t.repeats == 3
        assert t.median_ms > 0 and t.p10_ms <= t.median_ms <= t.p90_ms and t.cpu_ms >= 0
    for hw in ((48, 64), (31, 17)):
        rows = [t for t in timings if t.src_hw == hw]
        base = min(t.median_ms for t in rows if t.method.startswith("letterbox"))
        for t in rows:
            assert t.share_of_preprocess == pytest.approx(t.median_ms / base)
    report = QualityReport(tuple(timings), 1, "cpu", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    md = report.markdown()
    lines = md.splitlines()
    assert sum(line.startswith("| ") for line in lines) == len(timings) + 1  # header + rows
    with pytest.raises(dataclasses.FrozenInstanceError):
        timings[0].median_ms = 0.0  # type: ignore[misc]


def test_target_reads_the_default_rows_at_the_target_sizes() -> None:
    assert QualityConfig().rows == DEFAULT_ROWS  # the benchmark times what stations run

    def row(hw: tuple[int, int], method: str, median: float, share: float) -> QualityTiming:
        return QualityTiming(method, hw, DEFAULT_ROWS, median, median, median, 0.0, 5, share)

    big, small = TARGET_SIZES
    timings = [
        row(big, f"quality gate, {DEFAULT_ROWS} rows", 0.04, 0.08),
        row(big, f"quality gate, {2 * DEFAULT_ROWS} rows", 0.09, 0.18),
        row(small, f"quality gate, {DEFAULT_ROWS} rows", 0.2, 0.2),
    ]
    first, second = quality_targets(timings)
    assert first.measured == 0.08 and first.passed is True and f"<= {BUDGET}" == first.goal
    assert second.measured == 0.2 and second.passed is False
    assert all(t.passed is None for t in quality_targets([]))
