"""Smoke test of ``benchmarks/platform_drain.py``: it runs end to end and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from benchmarks.platform_drain import _pg_cpu
from kanjian.platform import fleet_sql
from tests.peers import postgres as pgpeer

REPO = Path(__file__).resolve().parents[1]


def test_platform_drain_benchmark_runs(tmp_path: Path) -> None:
    out, md = tmp_path / "report.json", tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.platform_drain", "--stations", "3", "--per-station",
         "200", "--receivers", "2", "--insert-rows", "1500", "--json", str(out), "--out", str(md)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    [drain] = r["drain"]
    assert (drain["receivers"], drain["inspections"]) == (2, 600)
    # 600 messages cost the receivers ~0.1 s of CPU, ~10 ticks of the 10 ms clock; their
    # inserts may cost PostgreSQL less than a tick, so zero is a true reading there
    assert drain["rate"] > 0 and drain["cpu_receivers"] > 0
    # (test_pg_cpu_counts_backends_that_ran_and_ended checks the counter itself)
    assert drain["cpu_postgres"] >= 0 and drain["cpu_mosquitto"] >= 0
    # the station's own messages: a FAIL with two boxes and an image key is the larger
    sizes = r["message_bytes"]
    assert sizes["FAIL, 2 boxes, image key"] > sizes["PASS, no boxes"] > 300
    assert r["insert_rows"] == 1500 and r["insert_rate"] > 0
    assert r["bytes_per_inspection"]["inspections"] > sizes["PASS, no boxes"]  # payload kept
    assert set(r["queries_ms"]) == {q.name for q in fleet_sql.QUERIES}
    assert md.read_text() == done.stdout[:-1]  # print() adds a newline


def test_pg_cpu_counts_backends_that_ran_and_ended(tmp_path: Path) -> None:
    """The drain's PostgreSQL CPU figure sees a backend's work, live and after it has ended."""
    pg = pgpeer.Postgres(tmp_path / "pg").start()
    try:
        before = _pg_cpu(pg.data)
        with psycopg.connect(pg.url) as c:  # this backend burns ~0.4 s of CPU
            backend = Path(f"/proc/{c.execute('SELECT pg_backend_pid()').fetchone()[0]}")
            c.execute("SELECT sum(x::float8 * x) FROM generate_series(1, 3000000) x").fetchone()
            live = _pg_cpu(pg.data)
        # the backend exits with its connection and the postmaster reaps it: its ticks must
        # move to the postmaster's count of reaped children, not vanish
        deadline = time.monotonic() + 30
        while backend.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = _pg_cpu(pg.data)
    finally:
        pg.stop()
    assert live - before > 0.05, (before, live)
    assert not backend.exists(), f"{backend} was not reaped in 30 s"
    assert ended >= live - 0.02, (live, ended)
