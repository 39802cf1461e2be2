"""The sync with a whole station: process SIGKILLed, images to a real S3, model rollout.

Real peers: Mosquitto, SeaweedFS (``weed mini``), the receiver process, the
``kanjian run`` station process, a model trained and exported by our own code.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.messages import StationTopics, deploy_message
from kanjian.station.sync.worker import Identity, SyncWorker
from tests.peers import mosquitto as mosq
from tests.peers import seaweed as weed
from tests.support import sync as sup
from tests.support.station_config import parse, station_config, write_config

HERE = Path(__file__).parent

SITE, LINE, STATION = "site-a", "line-1", "st-1"
TOPICS = StationTopics("kanjian/v1", SITE, LINE, STATION)


def _sync(port: int, server: Any = None, s3: dict[str, Any] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "enabled": True,
        "mqtt": {"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1, "keepalive_s": 5},
        "confirm_timeout_s": 2.0,
        "confirm_timeout_max_s": 4.0,
        "close_drain_s": 0.0,
    }
    if server is not None:
        d["s3"] = {
            "enabled": True,
            "endpoint_url": server.endpoint,
            "bucket": server.bucket,
            "access_key_id": weed.ACCESS_KEY,
            "secret_access_key": weed.SECRET_KEY,
            "timeout_s": 2.0,
            **(s3 or {}),
        }
    return d


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    b = mosq.Mosquitto(tmp_path / "broker", autosave_s=60).start()
    yield b
    b.stop()


@pytest.fixture
def receiver(tmp_path: Path, broker: Any) -> Iterator[Any]:
    r = sup.ReceiverProcess(broker.port, tmp_path / "platform.db", tmp_path / "receiver.log")
    yield r.start()
    r.stop()


class StationProcess:
    """``kanjian run --config`` as a real process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: Any = None

    def start(self) -> StationProcess:
        import subprocess

        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kanjian.appliance_api.cli.main",
                    "run",
                    "-c",
                    str(self.config),
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def _rows(data_dir: Path) -> int:
    db = data_dir / DB_NAME
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_station_process_sigkilled_delivers_all_it_committed(
    tmp_path: Path, broker: Any, receiver: Any, detect_model: Any, neu_det_dir: Path
) -> None:
    data = tmp_path / "station"
    config = tmp_path / "station.yaml"
    write_config(config, station_config(
        data, bundle=detect_model.onnx, images=neu_det_dir / "images", camera={"loop": True},
        model={"conf": None},  # the ONNX's own (0.25)
        station={"id": STATION, "site": SITE, "line": LINE},
        # a clean stop (SIGTERM, at the end) drains what is left before exiting
        sync={**_sync(broker.port), "close_drain_s": 20.0},
    ))  # fmt: skip
    rec = sup.Recorder(broker.port)
    st = StationProcess(config, tmp_path / "station.log").start()
    try:
        # 1: killed while connected: the broker publishes its last will, retained
        sup.wait_for(lambda: len(receiver.ids()) >= 100, 90, "first deliveries")
        st.kill()
        sup.wait_for(lambda: [p for _t, p, _r in rec.leaf("availability")][-1:] == [b"offline"],
                     10, "the last will")  # fmt: skip
        # 2: killed with a backlog the broker never saw (broker dead meanwhile)
        st.start()
        n0 = _rows(data)
        sup.wait_for(lambda: _rows(data) >= n0 + 50, 90, "the restarted station inspecting")
        broker.kill()
        sup.wait_for(lambda: _rows(data) >= n0 + 150, 60, "a backlog while the broker is down")
        st.kill()
        committed = sup.station_ids(data)
        undelivered = set(committed) - set(receiver.ids())
        assert len(undelivered) >= 50
        # 3: everything committed before the kill arrives after the restart
        broker.start()
        st.start()
        sup.wait_for(lambda: set(committed) <= set(receiver.ids()), 90, "the old backlog")
        sup.wait_for(lambda: [p for _t, p, _r in rec.leaf("availability")][-1:] == [b"online"],
                     10, "online again")  # fmt: skip
    finally:
        st.stop()
        rec.close()
    assert st.proc.returncode == 0
    # the clean stop drained the last run too: every committed row, each exactly once
    got = receiver.ids()
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(sup.station_ids(data))
    assert "Traceback" not in (tmp_path / "station.log").read_text()


def test_images_wait_for_s3_and_messages_are_not_lost(
    tmp_path: Path, broker: Any, receiver: Any, request: pytest.FixtureRequest
) -> None:
    s3 = weed.SeaweedS3(tmp_path / "s3")  # ports chosen, server not started yet: S3 is down
    request.addfinalizer(s3.stop)
    cfg = SyncConfig.model_validate(
        _sync(broker.port, s3, s3={"upload_verdicts": ["FAIL"], "pass_sample": 0.25})
    )
    store = ResultStore(tmp_path / "station", save_verdicts=("FAIL", "PASS"))
    w = SyncWorker(store.db_path, store.data_dir, cfg, Identity(SITE, LINE, STATION))
    store.add_listener(w.wake)
    w.start()
    try:
        prod = sup.Producer(store, 400, rate=2000).start()
        prod.join()
        assert store.flush()
        # every message arrives while S3 is down, naming its future object
        sup.wait_for(lambda: len(receiver.ids()) == 400, 60, "messages")
        sup.wait_for(lambda: w.status().s3_state == "failing", 120, "the upload failing")
        assert w.status().images_uploaded == 0
        pending = w.status().images_pending
        assert pending > 400 // 7  # all FAILs and a quarter of the PASSes
        s3.start()
        sup.wait_for(lambda: w.status().images_pending == 0, 60, "images uploaded")
        assert w.status().s3_state == "ok" and w.status().images_uploaded == pending
    finally:
        w.stop(0)
        store.close()
    con = sqlite3.connect(receiver.db)
    named = con.execute(
        "SELECT inspection_id, verdict, image_bucket, image_key FROM inspections "
        "WHERE image_key IS NOT NULL"
    ).fetchall()
    con.close()
    assert len(named) == pending
    assert {v for _i, v, _b, _k in named} == {"FAIL", "PASS"}
    client = s3.client()
    local = sqlite3.connect(store.db_path)
    try:
        for iid, _v, bucket, key in named:
            assert key.startswith(f"{SITE}/{STATION}/") and key.endswith(f"/{iid}.jpg")
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            (path,) = local.execute(
                "SELECT image_path FROM inspections WHERE id = ?", [iid]
            ).fetchone()
            assert body == (store.data_dir / path).read_bytes()
    finally:
        local.close()
        s3.stop()


@pytest.fixture(scope="module")
def s3_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    s = weed.SeaweedS3(tmp_path_factory.mktemp("s3")).start()
    yield s
    s.stop()


def _upload(s3: Any, archive: bytes, key: str) -> str:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=archive)
    return hashlib.sha256(archive).hexdigest()


def test_deploy_model_refuses_bad_bundles_and_activates_a_good_one(
    tmp_path: Path, broker: Any, s3_up: Any, detect_model: Any, neu_det_dir: Path
) -> None:

    from kanjian.station.pipeline import build_station
    from kanjian.station.state.archive import pack_bundle
    from kanjian.station.sync import service as _service  # noqa: F401  registers "sync"
    from tests.support import api as api

    bundles = api.make_bundles(detect_model)
    archives = tmp_path / "archives"
    archives.mkdir()
    sha_b = pack_bundle(bundles.b, archives / "b.tar.gz")
    good = (archives / "b.tar.gz").read_bytes()
    # a tampered bundle: b's manifest with a's weights (the archive hash is right)
    tampered = tmp_path / "tampered"
    shutil.copytree(bundles.b, tampered)
    shutil.copyfile(bundles.a / "model.onnx", tampered / "model.onnx")
    pack_bundle(tampered, archives / "t.tar.gz")
    cfg = parse(station_config(
        tmp_path / "station", bundle=bundles.a, images=neu_det_dir / "images",
        camera={"loop": True}, model={"conf": None},  # the bundle's own
        station={"id": STATION, "site": SITE, "line": LINE},
        sync=_sync(broker.port, s3_up, s3={"enabled": False}),
    ))  # fmt: skip
    rec = sup.Recorder(broker.port)
    station = build_station(cfg)
    runner = threading.Thread(target=station.run, daemon=True)
    runner.start()

    def send(cid: str, key: str, sha: str) -> dict[str, Any]:
        publish.single(TOPICS.command("deploy_model"), deploy_message(cid, key, sha), qos=1,
                       hostname="127.0.0.1", port=broker.port)  # fmt: skip
        sup.wait_for(lambda: any(e["data"].get("command_id") == cid for e in rec.events()), 120,
                     f"the outcome of {cid}")  # fmt: skip
        return next(e for e in rec.events() if e["data"].get("command_id") == cid)

    try:
        old = station.inspector.model.ref
        assert old.sha256 == bundles.sha_a
        k_good = "bundles/neu-detect/1.1.tar.gz"
        _upload(s3_up, good, k_good)
        ev = send("c-wrong-sha", k_good, "0" * 64)
        assert ev["event"] == "model_rejected" and "sha256" in ev["data"]["reason"]
        k_t = "bundles/tampered.tar.gz"
        ev = send("c-tampered", k_t, _upload(s3_up, (archives / "t.tar.gz").read_bytes(), k_t))
        assert ev["event"] == "model_rejected" and "golden check failed" in ev["data"]["reason"]
        ev = send("c-missing", "bundles/nothing-here.tar.gz", sha_b)
        assert ev["event"] == "model_rejected" and "cannot download" in ev["data"]["reason"]
        # nothing changed: the old model still judges every frame
        assert station.inspector.model.ref == old
        frames = station.stats.frames
        sup.wait_for(lambda: station.stats.frames > frames + 10, 120, "inspections going on")
        ev = send("c-good", k_good, sha_b)
        assert ev["event"] == "model_activated", ev
        assert ev["data"]["model"]["sha256"] == bundles.sha_b
        assert ev["data"]["previous"]["sha256"] == bundles.sha_a
        assert station.inspector.model.ref.sha256 == bundles.sha_b
        frames = station.stats.frames
        sup.wait_for(
            lambda: station.stats.frames > frames + 10, 120, "inspections by the new model"
        )
        # the sync's state in /metrics: connected, and when the broker last acknowledged
        from prometheus_client import generate_latest

        from kanjian.appliance_api.http.metrics import StationMetrics

        text = generate_latest(StationMetrics(station, lambda: True).registry).decode()
        assert "kanjian_sync_connected 1.0" in text
        [acked] = [float(line.split()[1]) for line in text.splitlines()
                   if line.startswith("kanjian_sync_last_ack_timestamp_seconds ")]  # fmt: skip
        assert 0 <= time.time() - acked < 120
        # the same command again is answered from the record, not run again
        n_before = len(rec.events())
        publish.single(TOPICS.command("deploy_model"), deploy_message("c-good", k_good, sha_b),
                       qos=1, hostname="127.0.0.1", port=broker.port)  # fmt: skip
        # (other events may come meanwhile: the answer is looked for, not assumed last)
        sup.wait_for(lambda: any(e["data"].get("command_id") == "c-good"
                                 and e["data"].get("repeated") is True
                                 for e in rec.events()[n_before:]), 120,
                     "the repeated answer")  # fmt: skip
        # the same archive under a new command: it already judges, so nothing is swapped,
        # the registered copy stays and the activation stack does not grow
        con = sqlite3.connect(station.store.db_path)
        stack = con.execute("SELECT COUNT(*) FROM model_activations").fetchone()[0]
        [(folder,)] = con.execute(
            "SELECT path FROM models WHERE sha256 = ?", [bundles.sha_b]
        ).fetchall()
        con.close()
        ev = send("c-good-again", k_good, sha_b)
        assert ev["event"] == "model_activated", ev
        assert station.inspector.model.ref.sha256 == bundles.sha_b
        con = sqlite3.connect(station.store.db_path)
        assert con.execute("SELECT COUNT(*) FROM model_activations").fetchone()[0] == stack
        con.close()
        assert (tmp_path / "station" / folder / "model.onnx").is_file()
        # a malformed command is refused with a reason
        publish.single(TOPICS.command("deploy_model"), b'{"type": "deploy_model"}', qos=1,
                       hostname="127.0.0.1", port=broker.port)  # fmt: skip
        sup.wait_for(lambda: any(e["data"].get("command_id") == "?" for e in rec.events()), 120,
                     "the refusal of a malformed command")  # fmt: skip
    finally:
        station.stop()
        runner.join(30)
        station.close()
        rec.close()
    v = sup.schema_validator("event")
    for e in rec.events():
        v.validate(e)
    con = sqlite3.connect(tmp_path / "station" / DB_NAME)
    audit = con.execute("SELECT actor, action, target FROM audit ORDER BY id").fetchall()
    acts = con.execute("SELECT sha256, action, actor FROM model_activations").fetchall()
    models = con.execute("SELECT DISTINCT model_sha256 FROM inspections ORDER BY seq").fetchall()
    outcomes = dict(con.execute("SELECT command_id, outcome FROM sync_commands").fetchall())
    con.close()
    assert [a[1] for a in audit if a[0] != "platform:?"] == [
        "model.deploy_refused", "model.deploy_refused", "model.deploy_refused", "model.deploy",
        "model.deploy",  # c-good-again: audited, though nothing was swapped
    ]  # fmt: skip
    assert ("platform:?", "model.deploy_refused") in {(a[0], a[1]) for a in audit}
    assert (bundles.sha_b, "activate", "platform:c-good") in acts
    assert {m[0] for m in models} == {bundles.sha_a, bundles.sha_b}  # rows name their model
    assert outcomes == {"c-wrong-sha": "refused", "c-tampered": "refused",
                        "c-missing": "refused", "c-good": "activated",
                        "c-good-again": "activated"}  # fmt: skip
    # the registry the API uses keeps the bundle, by its model's sha256; nothing half-done
    models_dir = tmp_path / "station" / "models"
    assert not [p for p in (models_dir / ".incoming").iterdir()]
    assert [p.name for p in models_dir.iterdir() if p.name != ".incoming"] == [bundles.sha_b]


class MjpegCamera:
    """``tests/peers/mjpeg_server.py`` as a process: a live camera that can die."""

    def __init__(self, log: Path) -> None:
        self.log, self.port, self.proc = log, 0, None

    def start(self) -> int:
        import select
        import subprocess

        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "peers" / "mjpeg_server.py"), "--port", str(self.port)],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("READY "), f"mjpeg server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self.port

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None


def test_camera_and_model_changes_become_events(
    tmp_path: Path, broker: Any, detect_model: Any
) -> None:
    from kanjian.inference.model import load_model
    from kanjian.station.pipeline import build_station
    from kanjian.station.sync import service as _service  # noqa: F401  registers "sync"
    from tests.support import api as api

    bundles = api.make_bundles(detect_model)
    cam = MjpegCamera(tmp_path / "mjpeg.log")
    port = cam.start()
    cfg = parse(station_config(
        tmp_path / "station", bundle=bundles.a, model={"conf": None},  # the bundle's own
        camera={"kind": "stream", "url": f"http://127.0.0.1:{port}/stream.mjpg",
                "open_timeout_s": 1.0, "read_timeout_s": 1.0, "max_frame_age_s": 0.6,
                "backoff_initial_s": 0.1, "backoff_max_s": 0.4},
        policy="latest",
        station={"id": STATION, "site": SITE, "line": LINE},
        sync=_sync(broker.port),
    ))  # fmt: skip
    rec = sup.Recorder(broker.port)
    station = build_station(cfg)
    runner = threading.Thread(target=station.run, daemon=True)
    runner.start()

    def names() -> list[str]:
        return [e["event"] for e in rec.events()]

    try:
        sup.wait_for(lambda: station.stats.frames > 5, 120, "live frames")
        cam.kill()
        sup.wait_for(lambda: "camera_lost" in names(), 120, "camera_lost")
        cam.start()
        sup.wait_for(lambda: "camera_back" in names(), 120, "camera_back")
        # a swap made elsewhere (the API, say) is seen and reported by the sync
        station.inspector.swap_model(load_model(bundles.b, ("cpu",)))
        sup.wait_for(lambda: "model_activated" in names(), 120, "model_activated")
    finally:
        station.stop()
        runner.join(30)
        station.close()
        cam.kill()
        rec.close()
    events = rec.events()
    v = sup.schema_validator("event")
    for e in events:
        v.validate(e)
    act = next(e for e in events if e["event"] == "model_activated")
    assert act["data"]["source"] == "station"
    assert (act["data"]["previous"]["sha256"], act["data"]["model"]["sha256"]) == (
        bundles.sha_a, bundles.sha_b
    )  # fmt: skip
    order = names()
    assert order.index("camera_lost") < order.index("camera_back")
