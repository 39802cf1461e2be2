"""Staged rollouts with real station processes, end to end.

Real peers: three ``kanjian serve`` stations (each reading a looping MJPEG camera of
demo images at 4 frames/s, judging with the demo model; operators answer through the
station's own HTTP API, an engineer loads a shadow there), Mosquitto with the ACL and
password files ``kanjian platform acl`` wrote (each station logs in with its own
``sync.mqtt.password_file``), SeaweedFS S3, PostgreSQL, ``kanjian platform receive``
(the receivers' user) and ``kanjian platform rollout watch`` (the deployer's user).
Rollouts are started with ``kanjian platform rollout start``.

The camera shows two parts the demo model passes and two it sends to review, so
the FAIL rate is exactly 0 under the demo rules. Bundle ``good`` is the demo model
with another ONNX (a metadata entry: another sha256, the same outputs); bundle
``bad`` is that model with rules that fail what was reviewed: its FAIL rate jumps
to about half, and its verdicts agree with the others' on about half of the parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kanjian.platform.rollout import rollout_status
from kanjian.platform.schema import migrate
from kanjian.station.store import DB_NAME
from tests.peers import mosquitto as mosq
from tests.peers import postgres as pgpeer
from tests.peers import seaweed as weed
from tests.support import api as S
from tests.support.image_stream import ImageStream
from tests.support.station_config import station_config, write_config
from tests.support.sync import wait_for

DEMO = Path(__file__).resolve().parents[1] / "station" / "demo"
#: two parts the demo model passes, two it sends to review (none above 0.5)
FRAMES = ("crazing_10.jpg", "patches_14.jpg", "crazing_7.jpg", "scratches_13.jpg")
STATIONS = [("site-a", "line-1", f"st-{i}") for i in (1, 2, 3)]
CLI = [sys.executable, "-m", "kanjian.appliance_api.cli.main"]


def _variant(dst: Path, version: str, fail_confidence: float | None = None) -> Path:
    """The demo bundle with a metadata entry in its ONNX (a new sha256, the same
    outputs, so its golden set still holds) and, optionally, stricter rules."""
    import onnx

    shutil.copytree(DEMO / "model", dst)
    model = onnx.load(str(dst / "model.onnx"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "kanjian_test_variant", version
    onnx.save(model, str(dst / "model.onnx"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    manifest["onnx_sha256"] = hashlib.sha256((dst / "model.onnx").read_bytes()).hexdigest()
    if fail_confidence is not None:
        manifest["rules"]["default"]["fail_confidence"] = fail_confidence
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def _sha(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["onnx_sha256"])


@dataclass
class Fleet:
    url: str
    work: Path
    env: dict[str, str]
    s3: Any
    bundles: dict[str, Path]
    procs: list[subprocess.Popen[bytes]]
    watcher_args: list[str] | None = None
    watcher: subprocess.Popen[bytes] | None = None
    api: dict[str, tuple[str, dict[str, str]]] | None = None  # station -> (url, tokens)

    def http(self, key: tuple[str, str, str], role: str) -> Any:
        """An HTTP client of a station's API with its ``operator`` / ``engineer`` token."""
        import httpx

        assert self.api is not None
        url, tokens = self.api[key[2]]
        return httpx.Client(base_url=url, timeout=60,
                            headers={"Authorization": f"Bearer {tokens[role]}"})  # fmt: skip

    def start_watcher(self) -> None:
        assert self.watcher_args is not None
        self.watcher = _spawn(self.watcher_args, self.work / "watch.log", self.env)
        self.procs.append(self.watcher)

    def sql(self, q: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as c:
            return c.execute(q, args or []).fetchall()

    def status(self, rid: str) -> dict[str, Any]:
        with psycopg.connect(self.url, autocommit=True) as c:
            [s] = rollout_status(c, rid, audit_rows=1000)
        return s

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                              env=self.env)  # fmt: skip

    def start(self, *more: str) -> str:
        done = self.cli("platform", "rollout", "start", "--db", self.url, "--stations",
                        ",".join("/".join(k) for k in STATIONS), "--s3-endpoint",
                        self.s3.endpoint, "--bucket", self.s3.bucket, "--by", "test-operator",
                        *more)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[1].rstrip(":")

    def finished(self, rid: str) -> dict[str, Any]:
        wait_for(lambda: not self.status(rid)["active"], 180, f"rollout {rid} to finish", 0.5)
        return self.status(rid)

    def station_db(self, key: tuple[str, str, str], q: str) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.work / key[2] / DB_NAME, timeout=10)
        try:
            return con.execute(q).fetchall()
        finally:
            con.close()


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("rollout")
    bundles = {"demo": DEMO / "model", "good": _variant(work / "good", "1.3"),
               "bad": _variant(work / "bad", "1.4-strict", fail_confidence=0.25)}  # fmt: skip
    (work / "stations.txt").write_text("".join("/".join(k) + "\n" for k in STATIONS))
    env = {**os.environ, "COLUMNS": "300", "AWS_ACCESS_KEY_ID": weed.ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": weed.SECRET_KEY}  # fmt: skip
    done = subprocess.run([*CLI, "platform", "acl", "--stations", str(work / "stations.txt"),
                           "--out", str(work / "acl")], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    creds = work / "acl" / "credentials"
    procs: list[subprocess.Popen[bytes]] = []
    stoppers: list[Any] = []
    api: dict[str, tuple[str, dict[str, str]]] = {}
    try:
        pg = pgpeer.Postgres(work / "pg").start()
        stoppers.append(pg.stop)
        with psycopg.connect(pg.url) as c:  # before the processes that read it start
            migrate(c)
        s3 = weed.SeaweedS3(work / "s3").start()
        stoppers.append(s3.kill)
        broker = mosq.Mosquitto(work / "broker", extra=tuple(
            (work / "acl" / "mosquitto.conf").read_text().splitlines())).start()  # fmt: skip
        stoppers.append(broker.stop)
        camera = ImageStream([DEMO / "images" / n for n in FRAMES], fps=4.0).start()
        stoppers.append(camera.stop)
        rec_env = {**env, "KANJIAN_MQTT_PASSWORD":
                   (creds / "kanjian-receiver.password").read_text().strip()}  # fmt: skip
        procs.append(_spawn([*CLI, "platform", "receive", "--db", pg.url, "--port",
                             str(broker.port), "--username", "kanjian-receiver", "--client-id",
                             "rollout-receiver", "--gap-check-s", "2"],
                            work / "receiver.log", rec_env))  # fmt: skip
        for key in STATIONS:
            port = mosq.free_port()
            tokens = {r: S.make_token(work / key[2], r, f"{r}-{key[2]}")
                      for r in ("operator", "engineer")}  # fmt: skip
            api[key[2]] = (f"http://127.0.0.1:{port}", tokens)
            cfg = station_config(
                work / key[2], bundle=DEMO / "model", model={"conf": None},  # the bundle's own
                # an answer leaves the station 1 s after it can no longer be undone
                api={"port": port, "feedback_undo_s": 1.0},
                camera={"kind": "stream", "url": camera.url}, policy="latest",
                station={"site": key[0], "line": key[1], "id": key[2]},
                sync={"enabled": True, "confirm_timeout_s": 2.0, "close_drain_s": 0.0,
                      "shadow_report_s": 1.0,
                      "mqtt": {"port": broker.port, "username": "/".join(key),
                               "password_file": str(creds.joinpath(*key[:2], key[2] + ".password")),
                               "reconnect_min_s": 1, "reconnect_max_s": 1, "keepalive_s": 5},
                      "s3": {"enabled": False, "endpoint_url": s3.endpoint, "bucket": s3.bucket,
                             "access_key_id": weed.ACCESS_KEY,
                             "secret_access_key": weed.SECRET_KEY}},
            )  # fmt: skip
            write_config(work / f"{key[2]}.yaml", cfg)
            procs.append(_spawn([*CLI, "serve", "-c", str(work / f"{key[2]}.yaml")],
                                work / f"{key[2]}.log", env))  # fmt: skip
        f = Fleet(pg.url, work, env, s3, bundles, procs, api=api)
        f.watcher_args = [*CLI, "platform", "rollout", "watch", "--db", pg.url, "--port",
                          str(broker.port), "--username", "kanjian-deployer", "--password-file",
                          str(creds / "kanjian-deployer.password"), "--interval", "0.5s",
                          "--actor", "test-watch"]  # fmt: skip
        f.start_watcher()

        def judged() -> bool:
            rows = dict(f.sql("SELECT station, count(*) FROM inspections "
                              "WHERE verdict IN ('PASS', 'FAIL', 'REVIEW') GROUP BY 1"))  # fmt: skip
            return all(rows.get(k[2], 0) >= 8 for k in STATIONS)

        wait_for(judged, 120, "every station's first inspections on the platform", 0.5)
        yield f
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for stop in reversed(stoppers):
            stop()


def _models_on_the_platform(f: Fleet, key: tuple[str, str, str]) -> set[str]:
    return {r[0] for r in f.sql("SELECT DISTINCT model_sha256 FROM inspections WHERE station = %s",
                                [key[2]])}  # fmt: skip


def test_a_good_bundle_goes_to_the_canary_then_to_the_rest(fleet: Fleet) -> None:
    rid = fleet.start("--bundle", str(fleet.bundles["good"]), "--rollback-bundle", str(DEMO / "model"), "--canary", "1",
                      "--window", "3s", "--min-inspections", "8", "--baseline-window", "10m",
                      "--answer-timeout", "120s", "--resend", "30s")  # fmt: skip
    # the watcher dies while it watches the canary; a new one carries on from the rows
    wait_for(lambda: any(a["action"] == "canary.watching" for a in fleet.status(rid)["audit"]),
             120, "the canary watched", 0.2)  # fmt: skip
    assert fleet.watcher is not None
    fleet.watcher.kill()
    fleet.watcher.wait(10)
    fleet.start_watcher()
    s = fleet.finished(rid)
    assert s["state"] == "done", s
    assert [x["state"] for x in s["stations"]] == ["active"] * 3
    good, demo = _sha(fleet.bundles["good"]), _sha(DEMO / "model")
    actions = [(a["action"], a["station"]) for a in s["audit"]]
    assert actions[:7] == [
        ("rollout.start", None), ("deploy.sent", "st-1"), ("deploy.activated", "st-1"),
        ("canary.watching", None), ("canary.passed", None),
        ("deploy.sent", "st-2"), ("deploy.sent", "st-3"),
    ]  # fmt: skip
    assert sorted(actions[7:9]) == [("deploy.activated", "st-2"), ("deploy.activated", "st-3")]
    assert actions[9:] == [("rollout.done", None)]
    assert s["audit"][0]["actor"] == "test-operator"
    assert {a["actor"] for a in s["audit"][1:]} == {"test-watch"}
    passed = next(a["detail"] for a in s["audit"] if a["action"] == "canary.passed")
    assert passed["canary_judged"] >= 8 and passed["canary_fail"] == 0
    for a in s["audit"]:
        if a["action"] == "deploy.activated":
            assert a["detail"]["model"]["sha256"] == good
            assert a["detail"]["previous"]["sha256"] == demo
    # every station judges with it now, and said so in its own audit
    for key, st in zip(STATIONS, s["stations"], strict=True):
        wait_for(lambda k=key: fleet.station_db(  # type: ignore[misc]
            k, "SELECT model_sha256 FROM inspections ORDER BY seq DESC LIMIT 1") == [(good,)],
            60, f"{key[2]} judging with the new model")  # fmt: skip
        rows = fleet.station_db(key, "SELECT actor, action, target FROM audit "
                                     "WHERE action LIKE 'model.deploy%'")  # fmt: skip
        assert rows == [(f"platform:{st['deploy_command_id']}", "model.deploy", good)]
    # the same numbers through the CLI
    done = fleet.cli("platform", "rollout", "status", rid, "--db", fleet.url, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)[0]["state"] == "done"


def test_a_bad_bundle_is_caught_on_the_canary_and_rolled_back(fleet: Fleet) -> None:
    good, bad = _sha(fleet.bundles["good"]), _sha(fleet.bundles["bad"])
    # this one is put in the bucket by hand and named by its key
    from kanjian.station.state.archive import pack_bundle

    pack_bundle(fleet.bundles["bad"], fleet.work / "bad.tar.gz")
    fleet.s3.client().upload_file(str(fleet.work / "bad.tar.gz"), fleet.s3.bucket,
                                  "bundles/by-hand/bad.tar.gz")  # fmt: skip
    rid = fleet.start("--s3-key", "bundles/by-hand/bad.tar.gz", "--canary", "1", "--window", "60s", "--min-inspections", "8",
                      "--baseline-window", "10m", "--answer-timeout", "120s", "--resend", "30s")  # fmt: skip
    s = fleet.finished(rid)
    assert s["state"] == "rolled_back", s
    assert [x["state"] for x in s["stations"]] == ["rolled_back", "pending", "pending"]
    actions = [(a["action"], a["station"]) for a in s["audit"]]
    assert actions == [
        ("rollout.start", None), ("deploy.sent", "st-1"), ("deploy.activated", "st-1"),
        ("canary.watching", None), ("canary.failed", None), ("rollout.regression", None),
        ("rollback.sent", "st-1"), ("rollback.done", "st-1"), ("rollout.rolled_back", None),
    ]  # fmt: skip
    failed = next(a for a in s["audit"] if a["action"] == "canary.failed")
    d = failed["detail"]
    assert d["canary_judged"] >= 8 and d["canary_rate"] == d["canary_fail"] / d["canary_judged"]
    assert d["baseline_rate"] == 0.0 and d["canary_rate"] > 0.05
    # caught inside the window, not at its end
    assert datetime.fromisoformat(failed["at"]) < datetime.fromisoformat(s["window_ends"])
    # the decision matches the rows: the bad model failed parts, the good one none
    rates = dict(fleet.sql(
        "SELECT model_sha256, avg((verdict = 'FAIL')::int)::float8 FROM inspections "
        "WHERE verdict IN ('PASS', 'FAIL', 'REVIEW') GROUP BY 1"))  # fmt: skip
    assert rates[good] == 0.0 and rates[bad] > 0.05
    # the canary judges with its model from before again; the others never got the bundle
    assert s["key"] == "bundles/by-hand/bad.tar.gz" and s["model_sha256"] == bad
    rollback = next(a for a in s["audit"] if a["action"] == "rollback.sent")
    assert rollback["detail"]["model"] == good
    wait_for(lambda: fleet.station_db(
        STATIONS[0], "SELECT model_sha256 FROM inspections ORDER BY seq DESC LIMIT 1"
    ) == [(good,)], 60, "the canary judging with its old model")  # fmt: skip
    for key in STATIONS[1:]:
        assert bad not in _models_on_the_platform(fleet, key)
        assert fleet.station_db(key, f"SELECT command_id FROM sync_commands "
                                     f"WHERE command_id LIKE '{rid}%'") == []  # fmt: skip
        assert fleet.station_db(key, f"SELECT sha256 FROM models WHERE sha256 = '{bad}'") == []
    assert bad in _models_on_the_platform(fleet, STATIONS[0])


def test_operators_answers_on_the_canary_roll_it_back(fleet: Fleet) -> None:
    """The demo model's verdicts are the good one's (FAIL rate 0 both), but the canary's
    operator says each part it sends to review is fine: a regression the FAIL rate
    cannot see. The answers go from the station's screen API through its sync."""
    demo, good = _sha(DEMO / "model"), _sha(fleet.bundles["good"])
    rid = fleet.start("--bundle", str(DEMO / "model"), "--canary", "1", "--window", "300s",
                      "--min-inspections", "8", "--baseline-window", "10m",
                      "--answer-timeout", "120s", "--resend", "30s")  # fmt: skip
    wait_for(lambda: fleet.status(rid)["stations"][0]["state"] == "active", 120,
             "the canary running the demo model", 0.2)  # fmt: skip
    answered: list[str] = []
    # only what the canary judged since it runs the demo model again (it ran it before the
    # first test too: those parts are in the baseline's window, and stay unanswered)
    since = fleet.status(rid)["stations"][0]["answered_at"]

    def answer_reviews() -> bool:
        with fleet.http(STATIONS[0], "operator") as c:
            page = c.get("/api/inspections", params={"verdict": "REVIEW", "feedback": "none",
                                                     "model_sha256": demo, "limit": 50,
                                                     "since": since})  # fmt: skip
            assert page.status_code == 200, page.text
            for item in page.json()["items"]:
                r = c.post(f"/api/inspections/{item['id']}/feedback", json={"kind": "not_defect"})
                assert r.status_code == 201, r.text
                answered.append(item["id"])
        return not fleet.status(rid)["active"] or fleet.status(rid)["state"] != "canary"

    wait_for(answer_reviews, 180, "the operators' answers to stop the canary", 1.0)
    s = fleet.finished(rid)
    assert s["state"] == "rolled_back" and "operators said" in s["reason"], s
    failed = next(a["detail"] for a in s["audit"] if a["action"] == "canary.failed")
    assert failed["canary_fail"] == 0 and failed["baseline_wrong_rate"] == 0.0
    assert failed["canary_wrong_rate"] > 0.05
    # what the platform counted is what the operator said, each answer once, with its model
    rows = fleet.sql("SELECT inspection_id::text, kind, verdict::text, model_sha256, wrong "
                     "FROM feedback WHERE station = 'st-1'")  # fmt: skip
    assert {r[0] for r in rows} <= set(answered) and len(rows) == len({r[0] for r in rows})
    assert {r[1:] for r in rows} == {("not_defect", "REVIEW", demo, True)}
    assert failed["canary_wrong"] <= len(rows)
    # and the station queued each answer once (two sends would be two event ids)
    sent = fleet.sql("SELECT data->>'feedback_id', count(*) FROM events WHERE station = 'st-1' "
                     "AND event = 'feedback' GROUP BY 1")  # fmt: skip
    assert len(sent) == len(rows) and {n for _f, n in sent} == {1}
    wait_for(lambda: fleet.station_db(
        STATIONS[0], "SELECT model_sha256 FROM inspections ORDER BY seq DESC LIMIT 1"
    ) == [(good,)], 60, "the canary judging with its old model")  # fmt: skip


def test_a_shadow_that_disagrees_on_the_line_stops_the_rollout(fleet: Fleet) -> None:
    """An engineer runs ``bad`` as the shadow on st-3 (its API); the station reports
    the agreement to the platform; a rollout of ``bad`` stops before any command."""
    good, bad = _sha(fleet.bundles["good"]), _sha(fleet.bundles["bad"])
    key = STATIONS[2]
    with fleet.http(key, "engineer") as c:
        up = c.post("/api/models", content=S.pack(fleet.bundles["bad"]))
        assert up.status_code in (200, 201), up.text
        put = c.put("/api/shadow", json={"sha256": bad})
        assert put.status_code == 200, put.text

    def reported() -> bool:
        rows = fleet.sql("SELECT frames FROM shadow_reports WHERE station = %s AND "
                         "active_sha256 = %s AND shadow_sha256 = %s", [key[2], good, bad])  # fmt: skip
        return bool(rows) and rows[0][0] >= 12

    wait_for(reported, 120, "the shadow's agreement on the platform", 0.5)
    with fleet.http(key, "engineer") as c:
        assert c.delete("/api/shadow").status_code == 200  # the report stays on the platform
    frames, agreed = fleet.sql("SELECT frames, agreed FROM shadow_reports WHERE station = %s",
                               [key[2]])[0]  # fmt: skip
    # the station's own numbers: its shadow results against its inspections
    [(n, same)] = fleet.station_db(key, f"SELECT count(*), sum(r.verdict = i.verdict) FROM "
                                        f"shadow_results r JOIN inspections i ON i.seq = r.seq "
                                        f"WHERE r.model_sha256 = '{bad}'")  # fmt: skip
    assert frames <= n and 0.2 < agreed / frames < 0.8 and 0.2 < same / n < 0.8
    rid = fleet.start("--bundle", str(fleet.bundles["bad"]), "--canary", "1", "--window", "60s",
                      "--min-inspections", "8", "--baseline-window", "10m",
                      "--max-fail-rate-increase", "1", "--max-feedback-increase", "1")  # fmt: skip
    s = fleet.finished(rid)
    assert s["state"] == "rolled_back" and "shadow's verdicts agreed" in s["reason"], s
    assert [x["state"] for x in s["stations"]] == ["pending"] * 3  # no station got a command
    assert [a["action"] for a in s["audit"]] == [
        "rollout.start",
        "canary.failed",
        "rollout.regression",
        "rollout.rolled_back",
    ]
