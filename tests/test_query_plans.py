"""The inspection list's queries on a big store: indexes drive them, no per-row subquery.

The store is built by ``benchmarks/big_store.py`` (real migrations, skewed so that
FAIL + scratches is rare); the SQL comes from the route's own
:func:`list_query`. Each filter combination is checked two ways: its plan
(``EXPLAIN QUERY PLAN``) and its rows against the filters' definition, evaluated
in Python over every row.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlite_utils

from benchmarks.big_store import MODELS, build
from kanjian.appliance_api.http.list_query import ListFilter, list_query, seq_bounds

ROWS = 20_000
LIMIT = 25
VERDICT_SETS: tuple[tuple[str, ...], ...] = ((), ("FAIL",), ("FAIL", "REVIEW"), ("PASS", "ERROR"))
CLASSES = (None, "scratches", "crazing")
FEEDBACK = (None, "any", "none", "not_defect")
MODEL = (None, MODELS[1][2])


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    big = build(tmp_path_factory.mktemp("big") / "data", ROWS, seed=1)
    c = sqlite3.connect(str(big.path))
    yield c
    c.close()


def _filters(c: sqlite3.Connection) -> list[ListFilter]:
    (mid_at,) = c.execute(
        "SELECT captured_at FROM inspections WHERE seq = ?", [ROWS // 2]
    ).fetchone()
    (old_at,) = c.execute("SELECT captured_at FROM inspections WHERE seq = 500").fetchone()
    windows = ((None, None), (mid_at, None), (old_at, mid_at))
    out = []
    for v, cl, fb, m, (since, until), before in itertools.product(
        VERDICT_SETS, CLASSES, FEEDBACK, MODEL, windows, (None, ROWS // 3)
    ):
        f = ListFilter(v, cl, since, until, fb, m, before)
        out.append(f)
        if since is not None or until is not None:
            out.append(replace(f, by_time=True))
        if since is not None or until is not None or m is not None:
            # as the route plans it: the time window's and the model's seq range
            bounded = seq_bounds(sqlite_utils.Database(c), f)
            out.append(bounded)
            if since is not None or until is not None:
                out.append(replace(bounded, by_time=True))
    return out


def _expected(c: sqlite3.Connection, f: ListFilter) -> list[int]:
    """The newest LIMIT seqs matching ``f``, by the filters' definitions."""
    classes: dict[str, set[str]] = {}
    for iid, name in c.execute(
        "SELECT inspection_id, class_name FROM detections UNION SELECT id, top_class FROM "
        "inspections WHERE top_class IS NOT NULL"
    ):
        classes.setdefault(iid, set()).add(name)
    latest = dict(c.execute("SELECT inspection_id, kind FROM feedback ORDER BY id"))
    seqs = []
    for iid, seq, verdict, at, sha in c.execute(
        "SELECT id, seq, verdict, captured_at, model_sha256 FROM inspections ORDER BY seq DESC"
    ):
        kind = latest.get(iid)
        if (
            (not f.verdicts or verdict in f.verdicts)
            and (f.class_name is None or f.class_name in classes.get(iid, ()))
            and (f.since is None or at >= f.since)
            and (f.until is None or at < f.until)
            and (f.model_sha256 is None or sha == f.model_sha256)
            and (f.before is None or seq < f.before)
            and (
                f.feedback is None
                or (f.feedback == "any" and kind is not None)
                or (f.feedback == "none" and kind is None)
                or kind == f.feedback
            )
        ):
            seqs.append(seq)
            if len(seqs) == LIMIT:
                break
    return seqs


def test_the_rare_combination_is_rare(conn: sqlite3.Connection) -> None:
    n_fail = conn.execute("SELECT COUNT(*) FROM inspections WHERE verdict = 'FAIL'").fetchone()[0]
    n = len(_expected(conn, ListFilter(("FAIL",), "scratches")))
    assert n_fail > 500 and n < n_fail / 50


def test_every_filter_combination_uses_indexes_and_no_per_row_subquery(
    conn: sqlite3.Connection,
) -> None:
    bad = []
    for f in _filters(conn):
        sql, args = list_query(f, LIMIT)
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
        compound = len(set(f.verdicts)) > 1
        detail = list(conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        ranges = Counter(r[1] for r in detail if re.search(r"(seq|rowid)[<>]", r[3]))
        if any(n > 1 for n in ranges.values()):  # only the driver reads a seq range
            bad.append((f, plan))
            continue
        for step in plan:
            if (
                "CORRELATED" in step
                # a table read in full: only the small latest-feedback table, in seq order
                or (
                    step.startswith("SCAN ")
                    and "USING" not in step
                    and step != "SCAN fl"
                    and not step.startswith("SCAN (subquery")
                )
                # a sort: of one window read by time, or of <= LIMIT rows per verdict
                or ("TEMP B-TREE" in step and not (f.by_time or compound))
                # read by time: the window's rows only
                or (
                    f.by_time
                    and step.startswith(("SCAN i", "SEARCH i USING INDEX idx_inspections_seq"))
                )
            ):
                bad.append((f, plan))
                break
    assert not bad, "\n".join(f"{f}\n  {p}" for f, p in bad[:5])


def test_every_filter_combination_gives_the_defined_rows(conn: sqlite3.Connection) -> None:
    fs = _filters(conn)
    for f in [*fs[:: max(1, len(fs) // 150)], ListFilter(("FAIL",), "scratches")]:
        sql, args = list_query(f, LIMIT)
        got = [r[1] for r in conn.execute(sql, args)]
        assert got == _expected(conn, f), f


def test_a_bounded_page_reads_only_its_seq_range(conn: sqlite3.Connection) -> None:
    """The time window's and the model's seq range is the driving index's range, both ends."""
    bounded = [
        f for f in _filters(conn) if f.seq_lo is not None and f.seq_hi is not None and not f.by_time
    ]
    assert len(bounded) > 100
    for f in bounded:
        sql, args = list_query(f, LIMIT)
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
        assert any(re.search(r"(seq|rowid)>\? AND (seq|rowid)<\?", step) for step in plan), (
            f,
            plan,
        )
