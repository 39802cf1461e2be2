"""An anomaly model's image score leaves the station: in sync messages, at the platform's
receiver (SQLite and a real PostgreSQL, old databases upgraded) and in dataset exports.

The inspections are real: the tiny anomaly ONNX model of ``tests/support/anomaly_model.py``
judges frames through the station's :class:`Inspector`, the real store keeps them beside
detect inspections, and every expected score is read back from the store with SQL.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.camera.frame import Frame
from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.model import load_model
from kanjian.platform.receiver_db import ReceiverDB
from kanjian.station.inspector import Inspector
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.messages import inspection_message
from kanjian.station.sync.outbox import Outbox
from kanjian.station.sync.worker import Identity, SyncWorker
from kanjian.training.export_filter import ExportFilter
from kanjian.training.export_index import INDEX_COLUMNS, INDEX_CSV
from kanjian.training.station_export import export_station_log
from tests.peers import mosquitto as mosq
from tests.peers import postgres as pgpeer
from tests.support import sync as sup
from tests.support.anomaly_model import paste_patch, template, write_anomaly_bundle

DEMO = Path(__file__).resolve().parents[1] / "station" / "demo" / "images"
CAL = AnomalyCalibration(
    review_threshold=0.1, image_threshold=0.2, pixel_threshold=0.2, min_region_px=4
)
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
#: the receiver's inspections table as the first release made it (before ``score``)
OLD_RECEIVER_DDL = """CREATE TABLE inspections (
    inspection_id TEXT PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL,
    station TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    captured_at TEXT, judged_at TEXT, verdict TEXT NOT NULL, reason TEXT,
    model_name TEXT, model_version TEXT, model_sha256 TEXT, num_detections INTEGER,
    image_bucket TEXT, image_key TEXT, received_at TEXT NOT NULL, payload_json TEXT)"""
OLD_ROW = (
    "INSERT INTO inspections (inspection_id, site, line, station, stream, seq, verdict, "
    "received_at) VALUES ('00000000-0000-4000-8000-000000000000', 's', 'l', 'old', 'old', 1, "
    "'PASS', '2026-01-01T00:00:00.000000+00:00')"
)


@dataclass(frozen=True)
class Log:
    """A station data folder holding anomaly and detect inspections (every frame saved)."""

    data: Path
    anomaly_sha: str
    anomaly_ids: tuple[str, ...]
    detect_ids: tuple[str, ...]

    def scores(self) -> dict[str, float | None]:
        """Every inspection's ``score`` column, by id: the oracle."""
        con = sqlite3.connect(self.data / DB_NAME)
        try:
            return {str(i): s for i, s in con.execute("SELECT id, score FROM inspections")}
        finally:
            con.close()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    img = cv2.imread(str(sorted(DEMO.glob("*.jpg"))[0]), cv2.IMREAD_COLOR)
    assert img is not None
    good = np.ascontiguousarray(img[:300, :416])
    root = tmp_path_factory.mktemp("anomaly-log")
    model = load_model(write_anomaly_bundle(root / "bundle", template(good), CAL), ("cpu",))
    ins = Inspector(model)
    rng = np.random.default_rng(7)
    # good parts under camera noise, and patches from faint (review band) to strong (fail)
    frames = [np.clip(good.astype(np.int16) + rng.integers(-3, 4, good.shape), 0, 255)
              .astype(np.uint8) for _ in range(3)]  # fmt: skip
    frames += [paste_patch(good, (220, 120, 280, 170), v) for v in (150, 160, 200, 255)]
    frames += [paste_patch(good, (40, 40, 90, 80), 255)]
    store = ResultStore(root / "data", save_verdicts=("PASS", "FAIL", "REVIEW"))
    anomaly, detect, verdicts = [], [], set()
    for i, image in enumerate(frames):
        insp = ins.inspect(Frame(image, i, "cam0", T0 + timedelta(seconds=i), uri=f"f{i}.png"))
        assert insp.score is not None
        verdicts.add(insp.verdict.value)
        store.put(insp)
        anomaly.append(str(insp.inspection_id))
        d = sup.synthetic(i)  # a detect model's inspection in the same log
        store.put(d)
        detect.append(str(d.inspection_id))
    assert store.flush()
    store.close()
    assert model.manifest is not None
    made = Log(root / "data", model.manifest.onnx_sha256, tuple(anomaly), tuple(detect))
    scores = made.scores()
    assert {"PASS", "FAIL"} <= verdicts  # the log covers both sides of the fail point
    assert all(scores[i] is not None for i in anomaly) and all(scores[i] is None for i in detect)
    return made


def _messages(data: Path) -> Iterator[dict[str, Any]]:
    ob = Outbox(data / DB_NAME)
    try:
        for entry in ob.fetch_fresh(0, 1000):
            yield json.loads(inspection_message(entry, site="s", line="l", station="st",
                                                stream=ob.stream_id, bucket=None, key=None))  # fmt: skip
    finally:
        ob.close()


def test_messages_carry_the_score_and_validate(log: Log) -> None:
    v = sup.schema_validator("inspection")
    # the schema as it was before `score`: additionalProperties false, no such property
    old_schema = json.loads((sup.SCHEMAS / "inspection.v1.json").read_text())
    del old_schema["properties"]["score"]
    old = type(v)(old_schema, format_checker=v.FORMAT_CHECKER)
    scores = log.scores()
    msgs = list(_messages(log.data))
    assert len(msgs) == len(scores) == 2 * len(log.anomaly_ids)
    for m in msgs:
        v.validate(m)  # jsonschema: not our code
        want = scores[m["inspection_id"]]
        if want is None:  # a detect model's: no score key at all, as before
            assert "score" not in m and m["inspection_id"] in log.detect_ids
            assert old.is_valid(m)  # a receiver on the older schema still takes it
        else:
            assert m["score"] == round(want, 6) and m["inspection_id"] in log.anomaly_ids
            assert m["detections"] == [] or {d["class_name"] for d in m["detections"]} == {
                "anomaly"
            }
            assert not old.is_valid(m)  # what docs/sync.md warns older validators about
            # the schema is not vacuous about the new field
            assert v.is_valid({**m, "score": None})
            for bad in (1.5, -0.1, "0.7", [0.5]):
                assert not v.is_valid({**m, "score": bad}), bad
    assert len({m["score"] for m in msgs if "score" in m}) > 2  # not all alike


def _sync_config(port: int) -> SyncConfig:
    return SyncConfig.model_validate(
        {
            "enabled": True,
            "mqtt": {"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1},
            "confirm_timeout_s": 2.0,
            "confirm_timeout_max_s": 4.0,
        }
    )


def _receiver_scores(db: ReceiverDB) -> dict[str, float | None]:
    return {str(i): s for i, s in db.query("SELECT inspection_id, score FROM inspections")}


def test_receiver_sqlite_upgrades_and_keeps_the_score(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    con = sqlite3.connect(path)
    con.execute(OLD_RECEIVER_DDL)
    con.execute(OLD_ROW)
    con.commit()
    con.close()
    db = ReceiverDB(str(path))  # an older release's database: upgraded on open
    msgs = list(_messages(log.data))
    res = db.store(msgs)
    assert res.new == len(msgs)
    got = _receiver_scores(db)
    want = {m["inspection_id"]: m.get("score") for m in msgs}
    assert {k: got[k] for k in want} == want and got["00000000-0000-4000-8000-000000000000"] is None
    payloads = dict(db.query("SELECT inspection_id, payload_json FROM inspections"))
    assert all(json.loads(payloads[k]).get("score") == s for k, s in want.items())
    # a malformed score does not sink the batch (it would be retried forever): kept as sent
    bads: list[Any] = ["high", 10**400, True, None]
    odd = [copy.deepcopy(msgs[0]) for _ in bads]
    for k, (m, bad) in enumerate(zip(odd, bads, strict=True)):
        m.update(inspection_id=f"00000000-0000-4000-8000-00000000000{k + 1}", seq=10_000 + k,
                 score=bad)  # fmt: skip
    assert db.store(odd).new == 4
    after = _receiver_scores(db)
    assert all(after[m["inspection_id"]] is None for m in odd)
    kept = dict(db.query("SELECT inspection_id, payload_json FROM inspections"))
    assert [json.loads(kept[m["inspection_id"]])["score"] for m in odd] == bads
    db.close()
    ReceiverDB(str(path)).close()  # opening an upgraded database again changes nothing
    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute("PRAGMA table_info(inspections)")]
    con.close()
    assert cols.count("score") == 1


def _pg_scores(url: str) -> dict[str, float | None]:
    import psycopg

    try:
        with psycopg.connect(url) as c:
            return {str(i): s for i, s in c.execute("SELECT inspection_id, score FROM inspections")}
    except psycopg.errors.UndefinedColumn:
        return {}  # not upgraded yet


def test_station_to_postgres_receiver_keeps_the_score(log: Log, tmp_path: Path) -> None:
    """Station store -> sync worker -> Mosquitto -> ``kanjian platform receive`` ->
    PostgreSQL made by an older release: upgraded, and every score lands in its column."""
    import psycopg

    data = tmp_path / "station"
    shutil.copytree(log.data, data)
    pg = pgpeer.Postgres(tmp_path / "pg").start()
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    with psycopg.connect(pg.url) as c:
        c.execute(OLD_RECEIVER_DDL)
        c.execute(OLD_ROW)
    rec = sup.ReceiverProcess(broker.port, tmp_path / "unused.db", tmp_path / "receiver.log")
    rec.args[rec.args.index("--db") + 1] = pg.url
    rec.start()
    store = ResultStore(data)
    w = SyncWorker(
        store.db_path, store.data_dir, _sync_config(broker.port), Identity("s", "l", "st")
    )
    w.start()
    try:
        want = log.scores()
        sup.wait_for(lambda: set(_pg_scores(pg.url)) >= set(want), 120, "all rows in PostgreSQL")
        got = _pg_scores(pg.url)
        for iid, s in want.items():
            assert (got[iid] is None) == (s is None), iid
            if s is not None:  # the message's 6 decimals, as a double
                assert got[iid] == round(s, 6)
        assert got["00000000-0000-4000-8000-000000000000"] is None  # the old row stays
        sup.wait_for(lambda: w.status().backlog == 0, 120, "confirmations")
    finally:
        w.stop(0)
        store.close()
        rec.stop()
        broker.stop()
        pg.stop()


def _index(out: Path) -> list[dict[str, str]]:
    with (out / INDEX_CSV).open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == INDEX_COLUMNS
        return list(reader)


def _f32(x: float) -> float:
    return float(np.float32(x))


def test_export_carries_the_score(log: Log, tmp_path: Path) -> None:
    scores = log.scores()
    mine = ExportFilter(model_sha256=log.anomaly_sha)
    summary = export_station_log(log.data, tmp_path / "all", flt=mine, class_names=("anomaly",))
    rows = _index(tmp_path / "all")
    assert len(rows) == sum(summary.images.values()) > 0
    exported = {r["inspection_id"] for r in rows}
    assert exported <= set(log.anomaly_ids)
    for r in rows:
        s = scores[r["inspection_id"]]
        assert s is not None and float(r["score"]) == round(s, 6)
        assert (tmp_path / "all" / r["image"]).is_file() and r["split"] in ("train", "val")
    tasks = json.loads((tmp_path / "all" / "label_studio.json").read_text())
    assert {t["data"]["inspection_id"]: t["data"]["score"] for t in tasks} == {
        r["inspection_id"]: float(r["score"]) for r in rows
    }
    # the score bounds select by the score column (float32, inclusive), and with the other
    # filters; the oracle is the unfiltered export cut by the stored scores
    cut = sorted(scores[i] or 0.0 for i in exported)[len(exported) // 2]
    for k, (lo, hi) in enumerate([(cut, None), (None, cut), (0.1, 0.9)]):
        flt = ExportFilter(model_sha256=log.anomaly_sha, min_score=lo, max_score=hi)
        export_station_log(log.data, tmp_path / f"cut{k}", flt=flt, class_names=("anomaly",))
        want = {
            i
            for i in exported
            if (lo is None or (scores[i] or 0.0) >= _f32(lo))
            and (hi is None or (scores[i] or 0.0) <= _f32(hi))
        }
        assert {r["inspection_id"] for r in _index(tmp_path / f"cut{k}")} == want, (lo, hi)
    # inspections without a score fail any bound; the detect model's export has none
    none = export_station_log(log.data, tmp_path / "d0", class_names=sup.NAMES,
                              flt=ExportFilter(model_sha256=sup.MODEL.sha256, min_score=0.0))  # fmt: skip
    assert sum(none.images.values()) == 0
    det = export_station_log(log.data, tmp_path / "d1", class_names=sup.NAMES,
                             flt=ExportFilter(model_sha256=sup.MODEL.sha256), task="segment")  # fmt: skip
    det_rows = _index(tmp_path / "d1")
    assert len(det_rows) == sum(det.images.values()) > 0
    assert {r["score"] for r in det_rows} == {""}
    assert {r["inspection_id"] for r in det_rows} <= set(log.detect_ids)
    # every layout has the index: segment of the anomaly model too
    export_station_log(log.data, tmp_path / "seg", flt=mine, class_names=("anomaly",),
                       task="segment", split=False)  # fmt: skip
    seg = _index(tmp_path / "seg")
    assert {r["inspection_id"]: r["score"] for r in seg} == {
        r["inspection_id"]: r["score"] for r in rows
    }
    assert {r["split"] for r in seg} == {""}  # no split
    assert not (tmp_path / "seg" / "label_studio.json").exists()  # detect only


def test_export_of_a_store_without_the_score_column(log: Log, tmp_path: Path) -> None:
    """A store last opened by a release before the anomaly head: no ``score`` column."""
    data = tmp_path / "old"
    shutil.copytree(log.data, data)
    con = sqlite3.connect(data / DB_NAME)
    con.execute("ALTER TABLE inspections DROP COLUMN score")
    con.commit()
    con.close()
    flt = ExportFilter(model_sha256=log.anomaly_sha)
    summary = export_station_log(data, tmp_path / "out", flt=flt, class_names=("anomaly",))
    rows = _index(tmp_path / "out")
    assert len(rows) == sum(summary.images.values()) > 0 and {r["score"] for r in rows} == {""}
    banded = ExportFilter(model_sha256=log.anomaly_sha, max_score=1.0)
    assert sum(export_station_log(data, tmp_path / "o2", flt=banded,
                                  class_names=("anomaly",)).images.values()) == 0  # fmt: skip


def test_cli_score_bounds(log: Log, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "kanjian"
    scores = log.scores()
    run = subprocess.run(
        [str(exe), "dataset", "export", str(log.data), str(tmp_path / "out"), "--json",
         "--classes", "anomaly", "--model-sha256", log.anomaly_sha, "--min-score", "0.5"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = _index(tmp_path / "out")
    assert rows and all((scores[r["inspection_id"]] or 0.0) >= 0.5 for r in rows)
    bad = subprocess.run(
        [str(exe), "dataset", "export", str(log.data), str(tmp_path / "o2"),
         "--min-score", "0.6", "--max-score", "0.4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "min_score (0.6) must not be above max_score (0.4)" in bad.stderr
