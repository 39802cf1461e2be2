"""Receivers that scale out: three ``kanjian platform receive --share`` processes, ten stations.

Real peers: Mosquitto (MQTT 5 shared subscription), PostgreSQL (``initdb``), three
receiver processes, and ten stations made of the station's own store, outbox and
sync worker over small synthetic sources. One receiver is SIGKILLed mid-run and not
restarted: the other two take the whole load, the messages the dead one held come
back from the stations, and in the end every inspection each station committed is
in PostgreSQL exactly once, every outbox entry is confirmed, and every event is
stored. The oracle is SQL on both sides: the stations' SQLite stores and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.worker import Identity, SyncWorker
from tests.peers import mosquitto as mosq
from tests.peers import postgres as pgpeer
from tests.support import sync as sup

N_STATIONS, PER_STATION = 10, 100


def _receiver(
    port: int, db: str, k: int, log: Path, gap_check_s: float = 1.0
) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "receive",
             "--host", "127.0.0.1", "--port", str(port), "--db", db, "--share", "fleet",
             "--client-id", f"receiver-{k}", "--gap-check-s", str(gap_check_s), "--batch", "200"],
            stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _sqlite(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path, timeout=10)
    try:
        return list(con.execute(sql))
    finally:
        con.close()


def _pg(url: str, sql: str) -> list[tuple[object, ...]]:
    try:
        with psycopg.connect(url) as c:
            return list(c.execute(sql))
    except psycopg.errors.UndefinedTable:
        return []  # not migrated yet


def test_three_receivers_one_killed_ten_stations(tmp_path: Path) -> None:
    pg = pgpeer.Postgres(tmp_path / "pg").start()
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    logs = [tmp_path / f"receiver-{k}.log" for k in range(3)]
    receivers = [_receiver(broker.port, pg.url, k, logs[k]) for k in range(3)]
    stations: list[tuple[ResultStore, SyncWorker, sup.Producer]] = []
    try:
        # all three in the share group before a station speaks (a message published to
        # a share with no member is dropped by the broker, and only re-sent later)
        sup.wait_for(lambda: all("$share/fleet/" in p.read_text() for p in logs), 60,
                     "three receivers subscribed")  # fmt: skip
        cfg = SyncConfig.model_validate({
            "enabled": True, "confirm_timeout_s": 2.0, "confirm_timeout_max_s": 4.0,
            "mqtt": {"port": broker.port, "reconnect_min_s": 1, "reconnect_max_s": 1}})  # fmt: skip
        for k in range(N_STATIONS):
            store = ResultStore(tmp_path / f"station-{k}", save_verdicts=())
            ident = Identity(f"site-{k % 4}", f"line-{k % 2}", f"st-{k}")
            w = SyncWorker(store.db_path, store.data_dir, cfg, ident)
            store.add_listener(w.wake)
            w.start()
            w.emit("camera_lost", {"state": "reconnecting", "k": k})
            stations.append((store, w, sup.Producer(store, PER_STATION, rate=25).start()))
        total = N_STATIONS * PER_STATION

        def stored() -> int:
            return int(_pg(pg.url, "SELECT count(*) FROM inspections")[0][0] or 0)

        sup.wait_for(lambda: stored() >= total // 3, 120, "a third of the rows in PostgreSQL")
        receivers[0].kill()  # SIGKILL mid-run; not restarted
        receivers[0].wait(10)
        confirmed_at_kill = sum(w.status().confirmed for _s, w, _p in stations)
        for store, w, prod in stations:
            w.emit("camera_back", {"state": "connected"})
            prod.join()
            assert store.flush()
        sup.wait_for(lambda: all(w.status().backlog == 0 for _s, w, _p in stations), 120,
                     "every station's outbox confirmed by the two receivers left")  # fmt: skip
        sent = {uuid.UUID(str(e)) for k in range(N_STATIONS) for (e,) in _sqlite(
            tmp_path / f"station-{k}" / DB_NAME, "SELECT event_id FROM sync_events")}  # fmt: skip
        assert len(sent) == 2 * N_STATIONS
        sup.wait_for(lambda: {r[0] for r in _pg(pg.url, "SELECT event_id FROM events")} == sent,
                     60, "every event stored")  # fmt: skip
        assert _pg(pg.url, "SELECT count(*) FROM stations WHERE availability = 'online'") == [
            (N_STATIONS,)]  # fmt: skip
    finally:
        for store, w, _p in stations:
            w.stop(0)
            store.close()
        for p in receivers:
            p.terminate()
            p.wait(15)
        broker.stop()
    try:
        assert confirmed_at_kill < total  # confirmations went on flowing after the kill
        made: dict[str, str] = {}  # inspection id -> station, from the stations' own stores
        for k in range(N_STATIONS):
            db = tmp_path / f"station-{k}" / DB_NAME
            for (iid,) in _sqlite(db, "SELECT id FROM inspections"):
                made[str(iid)] = f"st-{k}"
            assert _sqlite(db, "SELECT count(*) FROM outbox WHERE confirmed_at IS NULL") == [(0,)]
        assert len(made) == total
        rows = _pg(pg.url, "SELECT inspection_id::text, station FROM inspections")
        assert len(rows) == total and dict(rows) == made  # each exactly once, where it belongs
        assert _pg(pg.url, "SELECT sum(pass + fail + review + error + missed) FROM station_hours"
                   ) == [(total,)]  # fmt: skip
        assert _pg(pg.url, "SELECT through, max_seq FROM streams") == [
            (PER_STATION, PER_STATION)] * N_STATIONS  # fmt: skip
    finally:
        pg.stop()


def test_a_receiver_stopped_hands_over_without_resends(tmp_path: Path) -> None:
    """SIGTERM (a rolling restart): the receiver leaves the share, stores what it holds,
    then goes; the stations never have to send anything twice."""
    pg = pgpeer.Postgres(tmp_path / "pg").start()
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    logs = [tmp_path / f"receiver-{k}.log" for k in range(2)]
    # no gap requests and a long confirm timeout: a lost message would stall the test
    receivers = [_receiver(broker.port, pg.url, k, logs[k], gap_check_s=600) for k in range(2)]
    stations: list[tuple[ResultStore, SyncWorker, sup.Producer]] = []
    try:
        sup.wait_for(lambda: all("$share/fleet/" in p.read_text() for p in logs), 60,
                     "two receivers subscribed")  # fmt: skip
        cfg = SyncConfig.model_validate({
            "enabled": True, "confirm_timeout_s": 600.0, "confirm_timeout_max_s": 600.0,
            "mqtt": {"port": broker.port}})  # fmt: skip
        for k in range(3):
            store = ResultStore(tmp_path / f"station-{k}", save_verdicts=())
            w = SyncWorker(store.db_path, store.data_dir, cfg, Identity("s", "l", f"st-{k}"))
            store.add_listener(w.wake)
            w.start()
            stations.append((store, w, sup.Producer(store, 150, rate=50).start()))
        sup.wait_for(lambda: int(_pg(pg.url, "SELECT count(*) FROM inspections")[0][0]) > 100,
                     60, "first rows")  # fmt: skip
        receivers[0].terminate()
        assert receivers[0].wait(30) == 0
        for store, _w, prod in stations:
            prod.join()
            assert store.flush()
        sup.wait_for(lambda: all(w.status().backlog == 0 for _s, w, _p in stations), 60,
                     "every entry confirmed, none re-sent")  # fmt: skip
        assert [w.status().resent for _s, w, _p in stations] == [0, 0, 0]
        assert _pg(pg.url, "SELECT count(*) FROM inspections") == [(450,)]
        assert "stopped: ReceiverStats(" in logs[0].read_text()
    finally:
        for store, w, _p in stations:
            w.stop(0)
            store.close()
        for p in receivers:
            p.terminate()
            p.wait(15)
        broker.stop()
        pg.stop()


def test_two_receivers_with_one_client_id_are_told(tmp_path: Path) -> None:
    """Two receivers started with the same --client-id take the session from each other:
    the one thrown out says so, naming the fix."""
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    logs = [tmp_path / f"r{k}.log" for k in range(2)]
    procs = []
    try:
        for k in range(2):
            with logs[k].open("ab") as f:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform",
                     "receive", "--port", str(broker.port), "--db", str(tmp_path / f"p{k}.db"),
                     "--client-id", "same", "--share", "fleet"],
                    stdout=f, stderr=subprocess.STDOUT))  # fmt: skip
        sup.wait_for(lambda: any("give every receiver its own --client-id" in p.read_text()
                                 for p in logs), 60, "the warning")  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        broker.stop()
