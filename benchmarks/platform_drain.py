"""Drain rate of N receivers sharing the stations' traffic into PostgreSQL, and its insert rate.

Run: ``python -m benchmarks.platform_drain [--stations 10] [--per-station 2000]
[--receivers 1 2 3] [--insert-rows 100000] [--out benchmarks/results/platform-drain.md]``.

Real peers only: Mosquitto (Debian package), PostgreSQL (``initdb``, **fsync on**:
the receivers confirm durable commits), ``kanjian platform receive --share`` as
processes, and the station's own store, outbox and sync worker (one per station, all
in this process). Three parts:

1. **message sizes**: the ``inspection`` messages the station's code makes, PASS and
   FAIL (two boxes, an image key), in bytes.
2. **drain**: every station starts with a committed backlog of ``--per-station``
   inspections (every 7th FAIL with two boxes); with N receivers in one share group
   we time from the stations' start until every entry is confirmed, and count the
   CPU seconds each side spent (receivers, PostgreSQL's processes, Mosquitto, the
   stations) per 1000 inspections: on a machine this small every part competes for
   the same cores, so the CPU cost says more about where a bigger one stops.
3. **insert rate**: ``ReceiverDB.store`` alone, batches of 1000 messages from 50
   stations over 20 sites into the typed schema with all its indexes; then the table
   sizes per inspection and the fleet page's queries' times at that size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, system_info

sys.path.insert(0, str(REPO))

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class DrainRow:
    """One drain run (times in s; CPU in s per 1000 inspections)."""

    receivers: int
    inspections: int
    seconds: float
    rate: float
    cpu_receivers: float
    cpu_postgres: float
    cpu_mosquitto: float
    cpu_stations: float


@dataclass
class Report:
    system: list[str]
    message_bytes: dict[str, int]
    drain: list[DrainRow] = field(default_factory=list)
    insert_rows: int = 0
    insert_rate: float = 0.0
    insert_batch_ms: float = 0.0
    bytes_per_inspection: dict[str, float] = field(default_factory=dict)
    queries_ms: dict[str, tuple[float, str]] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = ["# Platform: shared receivers into PostgreSQL", "",
                 *[f"- {s}" for s in self.system], "",
                 "## Message sizes (the station's own code)", "",
                 "| message | bytes |", "|---|---:|",
                 *[f"| {k} | {v} |" for k, v in self.message_bytes.items()], "",
                 "## Drain: N receivers in one share group, 2 cores for everything", "",
                 "| receivers | inspections | seconds | inspections/s | CPU s per 1000: "
                 "receivers | PostgreSQL | Mosquitto | stations |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in self.drain:
            lines.append(f"| {r.receivers} | {r.inspections} | {r.seconds:.1f} | {r.rate:.0f} | "
                         f"{r.cpu_receivers:.2f} | {r.cpu_postgres:.2f} | {r.cpu_mosquitto:.2f} "
                         f"| {r.cpu_stations:.2f} |")  # fmt: skip
        lines += ["", "## PostgreSQL alone: `ReceiverDB.store`, batches of 1000, typed schema", "",
                  f"{self.insert_rows} inspections (5% FAIL, 1.5% REVIEW with 1-3 boxes) at "
                  f"**{self.insert_rate:.0f} inspections/s** (median batch "
                  f"{self.insert_batch_ms:.0f} ms), one writer, fsync on.", "",
                  "| table (with its indexes) | bytes per inspection |", "|---|---:|",
                  *[f"| {k} | {v:.0f} |" for k, v in self.bytes_per_inspection.items()], "",
                  "| fleet query (`platform/fleet_sql.py`) | median ms | index |", "|---|---:|---|",
                  *[f"| {k} | {ms:.1f} | {ix} |" for k, (ms, ix) in self.queries_ms.items()]]  # fmt: skip
        return "\n".join(lines) + "\n"


def _cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (and of its reaped children), 0 if it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / TICKS


def _pg_cpu(data: Path) -> float:
    """CPU seconds of the postmaster, its reaped children and its live ones."""
    master = int((data / "postmaster.pid").read_text().split()[0])
    total = _cpu(master, children=True)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                total += _cpu(int(p.name))
    return total


def message_sizes() -> dict[str, int]:
    from kanjian.station.store import DB_NAME, ResultStore
    from kanjian.station.sync.messages import inspection_message
    from kanjian.station.sync.outbox import Outbox
    from tests.support.sync import synthetic

    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(Path(d), save_verdicts=())
        for i in range(14):
            store.put(synthetic(i))
        store.flush()
        store.close()
        ob = Outbox(Path(d) / DB_NAME)
        sizes: dict[str, int] = {}
        for e in ob.fetch_fresh(0, 100):
            fail = e.inspection.verdict.value == "FAIL"
            key = f"plant-a/press-7/2026-05-04/{e.inspection.id}.jpg" if fail else None
            m = inspection_message(e, site="plant-a", line="line-2", station="press-7",
                                   stream=ob.stream_id, bucket="kanjian" if fail else None,
                                   key=key)  # fmt: skip
            sizes["FAIL, 2 boxes, image key" if fail else "PASS, no boxes"] = len(m)
        ob.close()
    return sizes


def _fill(template: Path, stations: int, per: int) -> None:
    from kanjian.station.store import ResultStore
    from tests.support.sync import synthetic

    for k in range(stations):
        store = ResultStore(template / f"st-{k}", save_verdicts=())
        for i in range(per):
            store.put(synthetic(i))
        store.flush(600)
        store.close()


def drain_once(
    tmp: Path, pg: Any, broker: Any, template: Path, n: int, stations: int, per: int
) -> DrainRow:
    import subprocess

    import psycopg

    from kanjian.platform.schema import migrate
    from kanjian.station.sync.config import SyncConfig
    from kanjian.station.sync.worker import Identity, SyncWorker
    from tests.support.sync import wait_for

    name = f"drain_{n}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    url = pg.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url) as c:
        migrate(c)  # not part of the timed drain
    logs = [tmp / f"r{n}-{k}.log" for k in range(n)]
    recs = []
    for k in range(n):
        with logs[k].open("ab") as f:
            recs.append(subprocess.Popen(
                [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "receive",
                 "--port", str(broker.port), "--db", url, "--share", "bench",
                 "--client-id", f"bench-{n}-{k}", "--batch", "1000"],
                stdout=f, stderr=subprocess.STDOUT, cwd=REPO))  # fmt: skip
    workers = []
    try:
        wait_for(lambda: all("$share/bench/" in p.read_text() for p in logs), 60, "receivers")
        cfg = SyncConfig.model_validate({"enabled": True, "close_drain_s": 0.0,
                                         "mqtt": {"port": broker.port}})  # fmt: skip
        for k in range(stations):
            data = tmp / f"run{n}" / f"st-{k}"
            shutil.copytree(template / f"st-{k}", data)
            ident = Identity(f"site-{k % 20}", f"line-{k % 3}", f"st-{k}")
            workers.append(SyncWorker(data / "kanjian.db", data, cfg, ident))
        before = ([_cpu(p.pid) for p in recs], _pg_cpu(pg.data), _cpu(broker.proc.pid),
                  sum(os.times()[:2]))  # fmt: skip
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        total = stations * per
        # last_seq: the worker has read its backlog (its status says 0 before it has)
        while not all(w.status().last_seq == per and w.status().backlog == 0 for w in workers):
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        after = ([_cpu(p.pid) for p in recs], _pg_cpu(pg.data), _cpu(broker.proc.pid),
                 sum(os.times()[:2]))  # fmt: skip
        with psycopg.connect(url) as c:
            stored = c.execute("SELECT count(*) FROM inspections").fetchone()[0]
        assert stored == total, f"{stored} stored of {total}"
    finally:
        for w in workers:
            w.stop(0)
        for p in recs:
            p.terminate()
            p.wait(15)
    per_k = 1000 / total
    return DrainRow(n, total, seconds, total / seconds,
                    (sum(after[0]) - sum(before[0])) * per_k, (after[1] - before[1]) * per_k,
                    (after[2] - before[2]) * per_k, (after[3] - before[3]) * per_k)  # fmt: skip


def _messages(rows: int, rng: random.Random) -> list[dict[str, Any]]:
    """Inspection messages of 50 stations over 20 sites, a day apart at the end."""
    t0 = datetime(2026, 5, 4, tzinfo=timezone.utc)
    out = []
    for k in range(rows):
        s = k % 50
        u = rng.random()
        verdict = "FAIL" if u < 0.05 else "REVIEW" if u < 0.065 else "PASS"
        n = rng.randint(1, 3) if verdict != "PASS" else 0
        t = t0 + timedelta(seconds=k * 86_400 / rows)
        iid = str(uuid.uuid4())
        out.append({"type": "inspection", "version": 1, "inspection_id": iid,
                    "site": f"site-{s % 20}", "line": f"line-{s % 3}", "station": f"st-{s}",
                    "stream": f"stream-{s}", "seq": k // 50 + 1, "attempt": 1,
                    "captured_at": t.isoformat(), "judged_at": t.isoformat(),
                    "verdict": verdict, "reason": "", "source_id": "cam0", "frame_id": k,
                    "model": {"name": "neu-det", "version": "3", "sha256": "a" * 64},
                    "detections": [{"class_id": c, "class_name": f"class-{c}",
                                    "confidence": round(rng.uniform(0.3, 0.99), 6),
                                    "xyxy": [10.5, 20.25, 130.0, 90.75]}
                                   for c in (rng.randrange(6) for _ in range(n))],
                    "timings_ms": {"pre": 0.8, "infer": 42.0, "post": 0.7},
                    "image": {"bucket": "kanjian", "key": f"site-{s % 20}/st-{s}/2026-05-04/"
                              f"{iid}.jpg"} if verdict != "PASS" else None})  # fmt: skip
    return out


def insert_rate(pg: Any, rows: int, report: Report) -> None:
    import psycopg

    from kanjian.platform import fleet_sql
    from kanjian.platform.receiver_db import ReceiverDB

    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute("CREATE DATABASE inserts")
    url = pg.url.rsplit("/", 1)[0] + "/inserts"
    msgs = _messages(rows, random.Random(6))
    db = ReceiverDB(url)
    batch_s = []
    try:
        for i in range(0, rows, 1000):
            t = time.perf_counter()
            db.store(msgs[i : i + 1000])
            batch_s.append(time.perf_counter() - t)
        for k, m in enumerate(msgs[:: max(1, rows // 1000)]):  # ~1000 station events
            db.record_event({"type": "event", "version": 1, "event_id": str(uuid.uuid4()),
                             "event": "camera_lost" if k % 2 else "camera_back",
                             "at": m["captured_at"], "site": m["site"], "line": m["line"],
                             "station": m["station"], "data": {"state": "reconnecting"}})  # fmt: skip
    finally:
        db.close()
    report.insert_rows, report.insert_rate = rows, rows / sum(batch_s)
    report.insert_batch_ms = statistics.median(batch_s) * 1000
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE")
        for t in ("inspections", "detections", "station_hours", "streams"):
            size = c.execute("SELECT pg_total_relation_size(%s)", [t]).fetchone()[0]
            report.bytes_per_inspection[t] = size / rows
        site, line = msgs[3]["site"], msgs[3]["line"]
        t1 = datetime(2026, 5, 5, tzinfo=timezone.utc)
        params = {"t0": t1 - timedelta(hours=24), "t1": t1, "firm": None, "site": site,
                  "line": line, "station": msgs[3]["station"], "limit": 50}  # fmt: skip
        for q in fleet_sql.QUERIES:
            times = []
            for _ in range(7):
                t = time.perf_counter()
                c.execute(q.sql, params).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            plan = json.dumps(c.execute("EXPLAIN (FORMAT JSON) " + q.sql, params).fetchone()[0])
            report.queries_ms[q.name] = (statistics.median(times[2:]),
                                         q.index if q.index in plan else "NOT " + q.index)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stations", type=int, default=10)
    parser.add_argument("--per-station", type=int, default=2000, help="backlog of each station")
    parser.add_argument("--receivers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--insert-rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers as JSON")
    args = parser.parse_args(argv)
    from tests.peers.mosquitto import Mosquitto
    from tests.peers.postgres import Postgres

    info = system_info()
    report = Report([], message_sizes())
    with tempfile.TemporaryDirectory(prefix="kanjian-platform-bench-") as d:
        tmp = Path(d)
        _fill(tmp / "template", args.stations, args.per_station)
        pg = Postgres(tmp / "pg", fsync=True).start()
        broker = Mosquitto(tmp / "broker").start()
        try:
            for n in args.receivers:
                report.drain.append(drain_once(tmp, pg, broker, tmp / "template", n,
                                               args.stations, args.per_station))  # fmt: skip
            insert_rate(pg, args.insert_rows, report)
        finally:
            broker.stop()
            pg.stop()
    report.system = replace(info, loadavg_end=os.getloadavg()).lines()
    text = report.markdown()
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
