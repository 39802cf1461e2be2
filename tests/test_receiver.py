"""The reference receiver on PostgreSQL, and the CLI faces of the sync.

Real peers: Mosquitto, a PostgreSQL server made by ``initdb`` in a temp folder,
``kanjian platform receive`` and ``kanjian sync status`` as processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kanjian.station.store import ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.worker import Identity, SyncWorker
from tests.peers import mosquitto as mosq
from tests.peers import postgres as pgpeer
from tests.support import sync as sup
from tests.support.station_config import station_config, write_config

CLI = [sys.executable, "-m", "kanjian.appliance_api.cli.main"]


def _cfg(port: int) -> SyncConfig:
    return SyncConfig.model_validate(
        {
            "enabled": True,
            "mqtt": {"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1},
            "confirm_timeout_s": 2.0,
            "confirm_timeout_max_s": 4.0,
        }
    )


def _pg_ids(url: str) -> list[str]:
    import psycopg

    try:
        with psycopg.connect(url) as c:
            return [r[0] for r in c.execute("SELECT inspection_id::text FROM inspections")]
    except psycopg.errors.UndefinedTable:
        return []


def test_receiver_on_postgres_killed_mid_run(tmp_path: Path) -> None:
    pg = pgpeer.Postgres(tmp_path / "pg").start()
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    rec = sup.ReceiverProcess(broker.port, tmp_path / "unused.db", tmp_path / "receiver.log")
    rec.args[rec.args.index("--db") + 1] = pg.url
    rec.start()
    store = ResultStore(tmp_path / "station")
    w = SyncWorker(store.db_path, store.data_dir, _cfg(broker.port), Identity("s", "l", "st"))
    store.add_listener(w.wake)
    w.start()
    try:
        prod = sup.Producer(store, 1000, rate=500).start()
        sup.wait_for(lambda: len(_pg_ids(pg.url)) > 200, 120, "first rows in PostgreSQL")
        rec.kill()
        time.sleep(1.0)
        rec.start()
        prod.join()
        assert store.flush()
        sup.wait_for(lambda: len(set(_pg_ids(pg.url))) == 1000, 60, "all rows in PostgreSQL")
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
        ids = _pg_ids(pg.url)
        assert len(ids) == 1000 and sorted(ids) == sorted(prod.made)
        out = subprocess.run([*CLI, "platform", "report", "--db", pg.url, "--json"],
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        [rep] = json.loads(out.stdout)
        assert (rep["inspections"], rep["through"], rep["missing"]) == (1000, 1000, 0)
        n_fail = sum(1 for i in range(1000) if i % 7 == 0)
        assert rep["verdicts"] == {"PASS": 1000 - n_fail, "FAIL": n_fail}
    finally:
        w.stop(0)
        store.close()
        rec.stop()
        broker.stop()
        pg.stop()


def test_cli_status_and_report(tmp_path: Path) -> None:
    broker = mosq.Mosquitto(tmp_path / "broker")  # not started: the backlog stays
    data = tmp_path / "station"
    config = tmp_path / "station.yaml"
    write_config(config, station_config(
        data,
        station={"id": "st", "site": "s", "line": "l"},
        sync={"enabled": True, "mqtt": {"port": broker.port}, "confirm_timeout_s": 2.0},
    ))  # fmt: skip
    store = ResultStore(data)
    prod = sup.Producer(store, 120, rate=10_000).start()
    prod.join()
    store.close()
    out = subprocess.run([*CLI, "sync", "status", "-c", str(config), "--json"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    s = json.loads(out.stdout)
    assert (s["backlog"], s["unacked"], s["last_seq"], s["connected"]) == (120, 120, 120, False)
    assert s["oldest_backlog_age_s"] >= 0
    human = subprocess.run([*CLI, "sync", "status", "-c", str(config)], capture_output=True,
                           text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "120 unconfirmed" in human and "not connected" in human
    # drain with the broker up and a receiver: then status says so
    broker.start()
    rec = sup.ReceiverProcess(broker.port, tmp_path / "p.db", tmp_path / "r.log").start()
    try:
        done = subprocess.run([*CLI, "sync", "drain", "-c", str(config), "--timeout", "60"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        s = json.loads(
            subprocess.run(
                [*CLI, "sync", "status", "-c", str(config), "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
        assert s["backlog"] == 0 and s["last_ack_at"] is not None
        assert s["connected"] is False  # the drain worker said goodbye when it stopped
        # a worker killed while connected leaves connected=1 behind: too old to believe
        con = sqlite3.connect(data / "kanjian.db")
        con.execute("UPDATE sync_state SET value = '1' WHERE key = 'connected'")
        con.execute("UPDATE sync_state SET value = '2026-01-01T00:00:00+00:00' "
                    "WHERE key = 'updated_at'")  # fmt: skip
        con.commit()
        con.close()
        human = subprocess.run([*CLI, "sync", "status", "-c", str(config)], capture_output=True,
                               text=True, timeout=60, check=True,
                               env={**os.environ, "COLUMNS": "300"}).stdout  # fmt: skip
        assert "not connected" in human and "not running?" in human
        report = subprocess.run([*CLI, "platform", "report", "--db", str(rec.db)],
                                capture_output=True, text=True, timeout=60, check=True,
                                env={**os.environ, "COLUMNS": "200"}).stdout  # fmt: skip
        row = next(line for line in report.splitlines() if "s/l/st" in line)
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        # inspections, PASS, FAIL, ..., through/max, missing, lost, dups, availability
        n_fail = sum(1 for i in range(120) if i % 7 == 0)
        assert cells[1:4] == ["120", str(120 - n_fail), str(n_fail)]
        assert cells[7:10] == ["120/120", "0", "0"] and cells[-1] == "offline"
    finally:
        rec.stop()
        broker.stop()
    missing = subprocess.run([*CLI, "platform", "report", "--db", str(tmp_path / "nope.db")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "no receiver database" in missing.stderr


def test_receiver_reconnects_when_postgres_drops_it(tmp_path: Path) -> None:
    """PostgreSQL ends the receiver's session mid-run (a restart, a fail-over): the
    receiver opens a new one and goes on; nothing is lost, nothing is stored twice."""
    import psycopg

    pg = pgpeer.Postgres(tmp_path / "pg").start()
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    rec = sup.ReceiverProcess(broker.port, tmp_path / "unused.db", tmp_path / "receiver.log")
    rec.args[rec.args.index("--db") + 1] = pg.url
    rec.start()
    store = ResultStore(tmp_path / "station")
    w = SyncWorker(store.db_path, store.data_dir, _cfg(broker.port), Identity("s", "l", "st"))
    store.add_listener(w.wake)
    w.start()

    def drop_receivers() -> int:
        with psycopg.connect(pg.url, autocommit=True) as c:
            return len(c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'kanjian' AND pid <> pg_backend_pid()").fetchall())  # fmt: skip

    try:
        prod = sup.Producer(store, 600, rate=200).start()
        sup.wait_for(lambda: len(_pg_ids(pg.url)) > 100, 120, "first rows in PostgreSQL")
        assert drop_receivers() >= 1
        sup.wait_for(lambda: len(_pg_ids(pg.url)) > 300, 120, "rows after the first drop")
        assert drop_receivers() >= 1
        prod.join()
        assert store.flush()
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
        ids = _pg_ids(pg.url)
        assert len(ids) == 600 and sorted(ids) == sorted(prod.made)
        assert rec.log.read_text().count("reconnected to the database") >= 2
    finally:
        w.stop(0)
        store.close()
        rec.stop()
        broker.stop()
        pg.stop()
