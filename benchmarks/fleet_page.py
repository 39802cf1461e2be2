"""The fleet page's statements on a grown platform database: time and the indexes used.

Run: ``python -m benchmarks.fleet_page``. A throw-away PostgreSQL (``initdb``) gets 50
stations over 20 sites of 5 firms, (1) a year of hourly counts (438,000
``station_hours`` rows), asked for a day's counts per hour and per station for a
firm's scope, two sites and the whole cluster; (2) 1,000,000 inspections and
1,000,000 events (one in 5,000 a camera event), asked for the station list. Each
statement is the page's own (:mod:`kanjian.platform.web.queries`, filled by
:meth:`Scope.where`), run twice (the second timed) and then ``EXPLAIN``-ed. Prints one
line per question: scope, rows, milliseconds, the indexes (and sequential scans) used.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

from kanjian.platform.schema import migrate
from kanjian.platform.web import queries as Q
from kanjian.platform.web.scope import Scope
from tests.peers import postgres as pgpeer

T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)
SCOPES = (Scope(firm="firm-1"), Scope(sites=("site-03", "site-07")), Scope())


def _used(plan: dict[str, Any]) -> list[str]:
    found: set[str] = set()

    def walk(n: dict[str, Any]) -> None:
        if "Index Name" in n:
            found.add(n["Index Name"])
        if n.get("Node Type") == "Seq Scan":
            found.add("seq scan " + n["Relation Name"])
        for child in n.get("Plans", []):
            walk(child)

    walk(plan)
    return sorted(found)


def _ask(c: Any, what: str, sql: str, args: dict[str, Any]) -> None:
    c.execute(sql, args).fetchall()
    t = time.perf_counter()
    rows = c.execute(sql, args).fetchall()
    ms = 1000 * (time.perf_counter() - t)
    plan = c.execute("EXPLAIN (FORMAT JSON) " + sql, args).fetchone()[0][0]["Plan"]
    print(f"{what:<45} {len(rows):>5} rows {ms:>7.1f} ms  {', '.join(_used(plan))}")


def main() -> None:
    pg = pgpeer.Postgres(Path(tempfile.mkdtemp(prefix="kanjian-fleet-bench-"))).start()
    try:
        with psycopg.connect(pg.url, autocommit=True) as c:
            migrate(c)
            c.execute("INSERT INTO sites SELECT 'site-' || lpad(i::text, 2, '0'), "
                      "'firm-' || (i % 5) FROM generate_series(0, 19) i")  # fmt: skip
            c.execute("INSERT INTO stations (site, line, station, firm, availability) "
                      "SELECT 'site-' || lpad((i % 20)::text, 2, '0'), 'line-' || (i % 3), "
                      "'st-' || i, 'firm-' || ((i % 20) % 5), 'online' "
                      "FROM generate_series(0, 49) i")  # fmt: skip
            c.execute("INSERT INTO station_hours (site, line, station, hour, firm, pass, fail) "
                      "SELECT s.site, s.line, s.station, %s - h * interval '1 hour', s.firm, "
                      "3000, 60 FROM stations s, generate_series(0, 24 * 365) h", [T0])  # fmt: skip
            c.execute("ANALYZE")
            day = {"t0": T0 - timedelta(hours=24), "t1": T0}
            for scope in SCOPES:
                for by in ("hour", "station"):
                    sql, args = Q.scoped(Q.counts_sql(by), scope, "site", **day)
                    _ask(c, f"counts per {by}, {scope.describe()}", sql, args)
            c.execute(
                "INSERT INTO inspections (inspection_id, firm, site, line, station, stream, "
                "seq, captured_at, verdict, received_at, model_name, model_version) "
                "SELECT gen_random_uuid(), s.firm, s.site, s.line, s.station, s.station, g, "
                "%s - g * interval '10 s', 'PASS', now(), 'm', '1' "
                "FROM stations s, generate_series(1, 20000) g", [T0])  # fmt: skip
            c.execute(
                "INSERT INTO events (event_id, firm, site, line, station, event, at, data, "
                "received_at) SELECT gen_random_uuid(), s.firm, s.site, s.line, s.station, "
                "CASE WHEN g %% 5000 = 0 THEN 'camera_lost' ELSE 'model_rejected' END, "
                "%s - g * interval '1 min', '{}'::jsonb, now() "
                "FROM stations s, generate_series(1, 20000) g", [T0])  # fmt: skip
            c.execute("ANALYZE")
            for scope in SCOPES:
                sql, args = Q.scoped(Q.STATIONS, scope, "s.site")
                _ask(c, f"station list, {scope.describe()}", sql, args)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
