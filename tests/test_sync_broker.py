"""Nothing lost on the way to the platform: real Mosquitto, real receiver process, real SQLite.

The broker is SIGKILLed and restarted (its snapshot persistence loses what it
acknowledged since the last save), the receiver is SIGKILLed, the broker is
down for a whole run: each time the receiver's database ends with every
inspection the station committed, exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kanjian.station.store import ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.worker import Identity, SyncWorker
from tests.peers import mosquitto as mosq
from tests.support import sync as sup

IDENT = Identity("site-a", "line-1", "st-1")


def sync_cfg(port: int, **over: Any) -> SyncConfig:
    """Short timeouts so a test sees several re-send rounds."""
    base: dict[str, Any] = {
        "enabled": True,
        "mqtt": {"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1, "keepalive_s": 5},
        "confirm_timeout_s": 2.0,
        "confirm_timeout_max_s": 4.0,
        "close_drain_s": 0.0,
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return SyncConfig.model_validate(base)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    b = mosq.Mosquitto(tmp_path / "broker", autosave_s=60)
    yield b
    b.stop()


@pytest.fixture
def receiver(tmp_path: Path, broker: Any) -> Iterator[Any]:
    r = sup.ReceiverProcess(broker.port, tmp_path / "platform.db", tmp_path / "receiver.log")
    yield r
    r.stop()


def _all_delivered(rec: Any, expected: list[str], timeout_s: float) -> None:
    sup.wait_for(lambda: len(set(rec.ids())) >= len(expected), timeout_s,
                 f"{len(expected)} inspections at the receiver (has {len(set(rec.ids()))})")  # fmt: skip
    got = rec.ids()
    assert len(got) == len(set(got)), "an inspection was stored twice"
    assert sorted(got) == sorted(expected)


def test_broker_killed_repeatedly_while_a_real_station_inspects(
    tmp_path: Path, broker: Any, receiver: Any, detect_model: Any, neu_det_dir: Path
) -> None:
    from kanjian.station.pipeline import build_station
    from kanjian.station.sync.service import SyncService  # (importing it registers "sync")
    from tests.support.station_config import parse, station_config

    broker.start()
    receiver.start()
    cfg = parse(
        station_config(
            tmp_path / "station",
            bundle=detect_model.onnx,
            images=neu_det_dir / "images",
            camera={"loop": True},
            model={"conf": None},  # the ONNX's own (0.25): few boxes, the load is sync's
            station={"id": IDENT.station, "site": IDENT.site, "line": IDENT.line},
            sync=sync_cfg(broker.port).model_dump(mode="json"),
        )
    )
    n = 2000
    station = build_station(cfg)
    sync = station.channels.get(SyncService)
    assert sync is not None
    runner = threading.Thread(target=station.run, kwargs={"max_frames": n}, daemon=True)
    runner.start()
    during_outage = []
    try:
        for at in (300, 800, 1300):
            sup.wait_for(lambda at=at: station.stats.frames >= at, 120, f"frame {at}")
            before = station.stats.frames
            broker.kill()
            # the loop goes on judging while the broker is dead (counted, not timed: a
            # loaded machine may judge slowly, but a blocked put would judge nothing)
            sup.wait_for(lambda b=before: station.stats.frames >= b + 20, 120,
                         "20 frames judged while the broker is dead")  # fmt: skip
            during_outage.append(station.stats.frames - before)
            broker.start()
        runner.join(180)
        assert not runner.is_alive()
        assert station.stats.frames == n
        assert station.store.flush()
        expected = sup.station_ids(tmp_path / "station")
        assert len(expected) == n
        _all_delivered(receiver, expected, timeout_s=90)
        sup.wait_for(lambda: sync.status().backlog == 0, 120, "confirmations")
        status = sync.status()
    finally:
        station.stop()
        station.close()
    # the loop never waited: it judged frames while the broker was dead, no put blocked
    assert all(k > 0 for k in during_outage), during_outage
    assert station.store.stats().blocked_puts == 0
    assert broker.starts == 4
    assert status.connected and status.acked >= n and status.confirmed >= n


def _worker(tmp_path: Path, cfg: SyncConfig) -> tuple[ResultStore, SyncWorker]:
    store = ResultStore(tmp_path / "station", save_verdicts=("FAIL",))
    w = SyncWorker(store.db_path, store.data_dir, cfg, IDENT)
    store.add_listener(w.wake)
    return store, w.start()


def test_receiver_killed_mid_run(tmp_path: Path, broker: Any, receiver: Any) -> None:
    broker.start()
    receiver.start()
    store, w = _worker(tmp_path, sync_cfg(broker.port))
    try:
        prod = sup.Producer(store, 2000, rate=400).start()
        sup.wait_for(lambda: len(receiver.ids()) > 300, 120, "first deliveries")
        receiver.kill()
        time.sleep(1.5)
        receiver.start()
        prod.join()
        assert store.flush()
        _all_delivered(receiver, prod.made, timeout_s=60)
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
    finally:
        w.stop(0)
        store.close()
    assert store.stats().blocked_puts == 0


def test_broker_down_for_the_whole_run_then_up(tmp_path: Path, broker: Any, receiver: Any) -> None:
    cfg = sync_cfg(broker.port, backlog_high=500)
    store, w = _worker(tmp_path, cfg)
    try:
        prod = sup.Producer(store, 2000, rate=5000).start()
        prod.join()
        assert store.flush()
        sup.wait_for(lambda: w.status().backlog == 2000, 120, "the whole backlog")
        s = w.status()
        assert not s.connected and s.unacked == 2000 and s.oldest_backlog_age_s is not None
        broker.start()
        rec = sup.Recorder(broker.port)
        receiver.start()
        _all_delivered(receiver, prod.made, timeout_s=60)
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
        sup.wait_for(lambda: {"sync_backlog_high", "sync_backlog_normal"}
                     <= {e["event"] for e in rec.events()}, 10, "backlog events")  # fmt: skip
    finally:
        w.stop(0)
        store.close()
    # every message seen on the wire matches its JSON Schema
    # (the receiver may also ask for a resend, when a gap check runs mid-delivery)
    kinds = ("inspection", "event", "confirm", "availability", "resend")
    v = {k: sup.schema_validator(k) for k in kinds}
    seen = {"inspections": 0, "events": 0, "confirm": 0, "availability": 0, "resend": 0}
    for topic, payload, _retain in rec.messages:
        leaf = topic.rsplit("/", 1)[1]
        if leaf == "availability":
            v["availability"].validate(payload.decode())
        else:
            v[{"inspections": "inspection", "events": "event"}.get(leaf, leaf)].validate(
                json.loads(payload)
            )
        seen[leaf] += 1
    rec.close()
    assert seen["inspections"] >= 2000 and seen["confirm"] > 0 and seen["events"] >= 2
    assert seen["availability"] >= 1


def test_gap_is_asked_for_and_filled(tmp_path: Path, broker: Any, receiver: Any) -> None:
    broker.start()
    store = ResultStore(tmp_path / "station")
    prod = sup.Producer(store, 300, rate=10_000).start()
    prod.join()
    assert store.flush()
    # as if confirmations for 100..104 had come from a platform that then lost them
    con = sqlite3.connect(store.db_path)
    con.execute("UPDATE outbox SET confirmed_at = '2026-01-01' WHERE seq BETWEEN 100 AND 104")
    con.commit()
    con.close()
    rec = sup.Recorder(broker.port)
    receiver.start()
    time.sleep(0.5)
    w = SyncWorker(store.db_path, store.data_dir, sync_cfg(broker.port), IDENT).start()
    try:
        _all_delivered(receiver, prod.made, timeout_s=60)
    finally:
        w.stop(0)
        store.close()
    asks = [json.loads(p) for t, p, _ in rec.messages if t.endswith("/cmd/resend")]
    rec.close()
    # (other, transient gaps may be asked for too when deliveries are slow)
    assert any(a <= 100 and b >= 104 for ask in asks for a, b in ask["ranges"]), asks


@pytest.mark.parametrize("event_lost", [False, True], ids=["reported", "report-lost"])
def test_retention_drops_are_counted_and_reported(
    tmp_path: Path, broker: Any, receiver: Any, event_lost: bool
) -> None:
    cfg = sync_cfg(broker.port, retention={"max_backlog": 100, "check_interval_s": 0.2})
    store, w = _worker(tmp_path, cfg)
    try:
        prod = sup.Producer(store, 250, rate=10_000).start()
        prod.join()
        assert store.flush()
        sup.wait_for(lambda: w.status().dropped_messages == 150, 120, "retention")
        if event_lost:  # as if a broker had lost the sync_dropped events after their PUBACK
            # (a retention pass may run while the producer still writes: one event or more;
            # each commits with its drop, so all are there once the count is 150)
            con = sqlite3.connect(store.db_path)
            n = con.execute(
                "UPDATE sync_events SET sent_at = 'x' WHERE event = 'sync_dropped'"
            ).rowcount
            con.commit()
            con.close()
            assert n >= 1
        broker.start()
        receiver.start()
        _all_delivered(receiver, prod.made[150:], timeout_s=60)
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
        # if the event was lost, the receiver asks for the gap and is told again
        sup.wait_for(lambda: _lost(receiver.db) == 150, 120, "the drop reported to the platform")
    finally:
        w.stop(0)
        store.close()
    from kanjian.platform.receiver_db import ReceiverDB

    db = ReceiverDB(str(receiver.db))
    [rep] = db.report()
    db.close()
    assert (rep.inspections, rep.lost, rep.missing, rep.through) == (100, 150, 0, 250)
    con = sqlite3.connect(receiver.db)
    reports = [json.loads(p)["data"] for (p,) in con.execute(
        "SELECT payload_json FROM events WHERE event = 'sync_dropped'")]  # fmt: skip
    con.close()
    if event_lost:  # told again, on the platform's request for the gap
        assert [r.get("repeated") for r in reports] == [True]
        assert reports[0]["ranges"] == [[1, 150]]


def _lost(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(
            con.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM lost").fetchone()[0]
        )
    finally:
        con.close()


def _certs(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made by openssl."""
    import subprocess

    d.mkdir()
    ca_key, ca, key, csr, crt, ext = (d / n for n in
                                      ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt", "ext"))  # fmt: skip
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=kanjian test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
         "-days", "1", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, crt, key


def test_tls_and_password(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from kanjian.platform.receiver import Receiver

    ca, crt, key = _certs(tmp_path / "certs")
    b = mosq.Mosquitto(tmp_path / "broker", tls=(ca, crt, key),
                       users={"station": "s-secret", "platform": "p-secret"}).start()  # fmt: skip
    request.addfinalizer(b.stop)
    mqtt = {"port": b.port, "tls": True, "ca_file": str(ca), "reconnect_min_s": 1,
            "reconnect_max_s": 1}  # fmt: skip
    store = ResultStore(tmp_path / "station")
    prod = sup.Producer(store, 50, rate=10_000).start()
    prod.join()
    assert store.flush()
    rec = Receiver(
        SyncConfig.model_validate({"mqtt": {**mqtt, "username": "platform",
                                            "password": "p-secret"}}).mqtt,
        str(tmp_path / "platform.db"),
    ).start()  # fmt: skip
    request.addfinalizer(rec.stop)
    wrong = SyncWorker(store.db_path, store.data_dir,
                       sync_cfg(0, mqtt={**mqtt, "username": "station", "password": "nope"}),
                       IDENT).start()  # fmt: skip
    try:
        sup.wait_for(lambda: "refused" in (wrong.status().last_error or ""), 120, "a refusal")
        assert not wrong.status().connected and wrong.status().acked == 0
    finally:
        wrong.stop(0)
    w = SyncWorker(store.db_path, store.data_dir,
                   sync_cfg(0, mqtt={**mqtt, "username": "station", "password": "s-secret"}),
                   IDENT).start()  # fmt: skip
    try:
        sup.wait_for(lambda: w.status().backlog == 0, 120, "delivery over TLS")
        assert w.status().confirmed == 50
    finally:
        w.stop(0)
        rec.stop()
        store.close()
    con = sqlite3.connect(tmp_path / "platform.db")
    assert sorted(r[0] for r in con.execute("SELECT inspection_id FROM inspections")) == sorted(
        prod.made
    )
    con.close()
