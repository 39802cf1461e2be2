"""The log at scale: every inspection-list query, the status counters and the store's start-up.

``python -m benchmarks.store_scale --rows 1000000`` builds (once, cached under
``.cache/``) a store of that many inspections with ``benchmarks/big_store.py``,
then times, on one connection opened as the API's pool opens it:

- every filter combination ``GET /api/inspections`` can issue (verdicts, class,
  feedback kinds incl. any / none, model, time windows recent and far back,
  first pages and deep pages via ``before``), run as the route runs it: the
  route's own :func:`plan_page` + :func:`list_query`, the rows through
  :meth:`StoredInspection.from_row`, and the page's latest feedback
  (``_latest_feedback``); no HTTP or JSON (that cost does not grow with the log);
- the status counters: the outbox backlog count (``/api/status``) and a shift's
  verdict counts (``ShiftCounter.load``, at start-up);
- the store's start-up: :class:`ResultStore` opened (migrations checked,
  ``MAX(seq)``) and closed, on the big store and on an empty one; and the
  one-off costs of the first start after an upgrade (the migrations this code
  adds, run on ``--work``'s copy of the cached store; the trigger counter's seed).

The first page measured warms the time-order bound (migration 046 already read
every row, so it carries over nothing). The host is shared: ``--note`` records
its load, and p99 is taken over ``--repeats`` runs.

Each is run ``--repeats`` times after one warm-up; p50 and p99 (ms) go to a
Markdown table in ``benchmarks/results/store-scale-<rows>.md``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from benchmarks.big_store import MODELS, BigStore, cached
from kanjian.appliance_api.http.list_query import ListFilter, list_query, plan_page
from kanjian.appliance_api.http.live import ShiftCounter
from kanjian.appliance_api.http.routes_inspections import _latest_feedback
from kanjian.station.counters import last_numbered
from kanjian.station.records import StoredInspection
from kanjian.station.store import ResultStore, open_db

LIMIT = 50
TARGET_MS = 100.0


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up: the page cache, not the query, is what a first call measures
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99))


def _page(db: sqlite_utils.Database, f: ListFilter) -> int:
    """What the route does for one page (less HTTP and JSON); the row count."""
    f = plan_page(db, f, LIMIT)
    sql, args = list_query(f, LIMIT)
    recs = [StoredInspection.from_row(r) for r in db.execute(sql, args)]
    _latest_feedback(db, [r.id for r in recs])
    return len(recs)


def _filters(big: BigStore) -> list[tuple[str, ListFilter]]:
    first = datetime.fromisoformat(big.first_at)
    last = datetime.fromisoformat(big.last_at)
    span = last - first

    def at(frac: float) -> str:
        return (first + span * frac).isoformat(timespec="microseconds")

    windows: list[tuple[str, str | None, str | None]] = [
        ("", None, None),
        ("last hour", (last - timedelta(hours=1)).isoformat(timespec="microseconds"), None),
        ("an hour far back", at(0.1), (first + span * 0.1 + timedelta(hours=1)).isoformat()),
        ("first half", None, at(0.5)),
    ]
    out = []
    for v, cl, fb, m, (wname, since, until), deep in itertools.product(
        ((), ("FAIL",), ("FAIL", "REVIEW")),
        (None, "scratches", "crazing"),
        (None, "any", "none", "not_defect"),
        (None, MODELS[0][2]),
        windows,
        (False, True),
    ):
        before = big.rows // 10 if deep else None
        parts = [
            f"verdict={','.join(v)}" if v else "",
            f"class={cl}" if cl else "",
            f"feedback={fb}" if fb else "",
            "model=oldest" if m else "",
            wname,
            "deep page" if deep else "",
        ]
        name = ", ".join(p for p in parts if p) or "(no filter)"
        out.append((name, ListFilter(v, cl, since, until, fb, m, before)))
    return out


def _startup_ms(data_dir: Path, repeats: int) -> tuple[float, float]:
    def once() -> None:
        ResultStore(data_dir).close()

    return _time(once, repeats)


def _work_copy(big: BigStore, work: Path | None) -> tuple[BigStore, float]:
    """The store to measure, migrated by this code; the seconds migrating took.

    ``work``: a folder to copy the cached store into first (once), so a migration
    this branch adds does not change the cache other checkouts read.
    """
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        if not (work / big.path.name).exists():
            shutil.copyfile(big.path, work / big.path.name)
        big = replace(big, path=work / big.path.name)
    t0 = time.perf_counter()
    open_db(big.path).conn.close()
    took = time.perf_counter() - t0
    # a later run finds the copy migrated: report the first run's time
    note = big.path.with_name("migrate_s.txt")
    if work is not None and note.is_file():
        return big, float(note.read_text())
    if work is not None:
        note.write_text(f"{took:.3f}")
    return big, took


def _seed_s(path: Path) -> float:
    """Seconds the trigger counter's one-off seed takes (first start after the upgrade)."""
    conn = sqlite3.connect(str(path))
    t0 = time.perf_counter()
    last_numbered(["plc-", "http-"])(conn)
    conn.close()
    return time.perf_counter() - t0


_EXPORT_PROBE = """
import resource, sys, time
from pathlib import Path
from benchmarks.big_store import CLASSES
from kanjian.training.export_filter import ExportFilter
from kanjian.training.station_log import read_station_log_items
t0 = time.perf_counter()
log = read_station_log_items(Path(sys.argv[1]), ExportFilter(until=sys.argv[2]), CLASSES)
s = time.perf_counter() - t0
try:  # this process's own peak: ru_maxrss keeps the forking parent's peak across exec
    peak_kb = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(sum(log.counts.values()) + len(log.problems), s, peak_kb)
"""


def _export_reads(big: BigStore, sizes: tuple[int, ...]) -> list[tuple[int, float, float]]:
    """``dataset export``'s read of the first ``n`` rows, each in a fresh process.

    Returns (rows read, rows/s, peak RSS in MiB) per size. The frames are not on
    disk, so each FAIL / REVIEW row is a missing-image problem (kept for the summary).
    """
    first = datetime.fromisoformat(big.first_at)
    out = []
    for n in sizes:
        until = (first + timedelta(seconds=n)).isoformat()
        run = subprocess.run(
            [sys.executable, "-c", _EXPORT_PROBE, str(big.path.parent), until],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows, secs, rss_kb = run.stdout.split()
        out.append((int(rows), int(rows) / float(secs), int(rss_kb) / 1024))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--work", type=Path, help="copy the cached store here and migrate it")
    ap.add_argument("--note", default="", help="a line on the host's load, for the result")
    a = ap.parse_args()
    big, migrate_s = _work_copy(cached(a.cache, a.rows), a.work)
    conn = sqlite3.connect(str(big.path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    db = sqlite_utils.Database(conn)
    rows: list[tuple[str, float, float, int]] = []
    for name, f in _filters(big):
        n = _page(db, f)
        p50, p99 = _time(lambda f=f: _page(db, f), a.repeats)  # type: ignore[misc]
        rows.append((name, p50, p99, n))
    outbox = _time(
        lambda: conn.execute("SELECT COUNT(*) FROM outbox WHERE confirmed_at IS NULL").fetchone(),
        a.repeats,
    )
    shift = ShiftCounter(["06:00"])
    shift.start = datetime.fromisoformat(big.last_at) - timedelta(hours=8)
    shift_ms = _time(lambda: shift.load(db), a.repeats)
    conn.close()
    with tempfile.TemporaryDirectory() as empty:
        start_empty = _startup_ms(Path(empty), 5)
    start_big = _startup_ms(big.path.parent, 5)
    seed_s = _seed_s(big.path)
    exports = _export_reads(big, tuple(n for n in (10_000, 100_000, 1_000_000) if n <= big.rows))
    worst = max(rows, key=lambda r: r[2])
    over = [r for r in rows if r[2] > TARGET_MS]
    lines = [
        f"# Store at scale: {big.rows:,} inspections",
        "",
        f"{big.detections:,} detections, {big.feedback:,} feedback rows; built in "
        f"{big.build_s:.0f} s by `benchmarks/big_store.py`. Host: {platform.node()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
        f"Page size {LIMIT}; {a.repeats} runs each after a warm-up; times in ms. "
        "Measured: the route's query function and row decoding, no HTTP.",
        "",
        f"- list queries: {len(rows)} combinations; worst p99 {worst[2]:.1f} ms "
        f"({worst[0]}); {len(over)} over the {TARGET_MS:.0f} ms target",
        f"- outbox backlog count (/api/status): p50 {outbox[0]:.2f}, p99 {outbox[1]:.2f}",
        f"- shift verdict counts, 8 h = 28,800 rows (start-up): p50 {shift_ms[0]:.2f}, p99 {shift_ms[1]:.2f}",
        f"- store start-up (ResultStore open + close): empty p50 {start_empty[0]:.1f}, "
        f"{big.rows:,} rows p50 {start_big[0]:.1f}",
        f"- one-off at the first start after an upgrade: migrations {migrate_s:.1f} s "
        f"(046 reads every row once); trigger counter seed {seed_s:.1f} s (only for a "
        "counter the counters table lacks)",
        "- `dataset export`, reading the first N rows (fresh process each; frames not on "
        "disk, so every FAIL / REVIEW row is a missing-image problem it keeps for the "
        "summary): "
        + "; ".join(f"{n:,} rows {r:,.0f} rows/s, peak RSS {m:.0f} MiB" for n, r, m in exports),
        *([f"- host: {a.note}"] if a.note else []),
        "",
        "| query | p50 | p99 | rows |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {p50:.2f} | {p99:.2f} | {k} |" for n, p50, p99, k in rows),
        "",
    ]
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"store-scale-{big.rows}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines[:10]))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
