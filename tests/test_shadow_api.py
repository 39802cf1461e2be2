"""The shadow through the HTTP API and the CLI of a real served station (uvicorn thread,
``kanjian`` subprocesses): loading (refusals: unknown, active, failed golden check),
status, the promotion gate refusing with its numbers (frames seen, worse on operator
feedback), a promotion that activates the shadow through the registry with its audit
rows, the rollback that brings the old model back, and stopping the shadow.

The line is triggered one part at a time from the test, each waiting for the shadow's
result, so the gate's numbers are known exactly; the oracle for them is SQL over the
same database, with the feedback rule written out here again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as S
from tests.support import shadow as H

MIN_FRAMES = 6


@dataclass
class Line:
    url: str
    state: Any
    db: Path
    data: Path
    bundles: Any
    eng: str
    eng_name: str
    op: str
    n: int = 0

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.eng}"}, timeout=300
        )

    def run(self, k: int) -> list[str]:
        """``k`` triggers, one at a time; with a shadow loaded, each waits for its result."""
        svc = H.service(self.state.station)
        ids = []
        for _ in range(k):
            before = svc.status()
            insp = self.state.station.trigger(f"line-{self.n}").result(60)
            self.n += 1
            ids.append(str(insp.inspection_id))
            if before is not None:
                S.wait_for(lambda b=before.counters.judged: svc.status().counters.judged > b, 120)
        return ids

    def cli(self, *args: str, token: str | None = None) -> Any:
        return S.kanjian(*args, "--url", self.url, "--token", token or self.eng)

    def sql(self, q: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return S.sql(self.db, q, args)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Iterator[Line]:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("shadow-api")
    station, state, _ = S.start_station(
        tmp,
        12,
        bundles,
        camera={"loop": True},
        trigger={"mode": "triggered"},
        shadow={"promote_min_frames": MIN_FRAMES, "promote_min_agreement": 0.0},
    )
    server = S.ServerThread(state)
    ts = TokenStore(state.pool.get())
    eng = ts.create("shadow-engineer", Role.ENGINEER, "tests")
    op = ts.create("shadow-operator", Role.OPERATOR, "tests").secret
    try:
        yield Line(
            server.url, state, station.store.db_path, tmp / "data", bundles, eng.secret,
            eng.info.name, op,
        )  # fmt: skip
    finally:
        server.stop()
        station.close()
        state.pool.close_all()


def _demo_sha() -> str:
    from kanjian.inference.bundle import read_manifest

    return str(read_manifest(H.SHADOW_BUNDLE).onnx_sha256)


def test_loading_a_shadow_refusals_and_status(line: Line, tmp_path: Path) -> None:
    eng = line.client()
    sha = _demo_sha()
    r = eng.put("/api/shadow", json={"sha256": "0" * 64})
    assert r.status_code == 404 and "no registered model" in r.json()["detail"]
    r = eng.put("/api/shadow", json={"sha256": line.bundles.sha_a})
    assert r.status_code == 409 and "is the active model" in r.json()["detail"]
    assert eng.put("/api/shadow", json={"sha256": "nope"}).status_code == 422
    assert line.client(line.op).put("/api/shadow", json={"sha256": sha}).status_code == 403
    up = eng.post(
        "/api/models", content=H.zip_bundle(H.SHADOW_BUNDLE, tmp_path / "b.zip").read_bytes()
    )
    assert up.status_code == 201 and up.json()["model"]["sha256"] == sha
    # the registered bundle changed on disk: its golden check fails, nothing is loaded
    expected = line.data / "models" / sha / "golden" / "expected.json"
    original = expected.read_bytes()
    golden = json.loads(original)
    for img in golden["images"]:
        img["detections"].append({"xyxy": [1, 1, 50, 50], "confidence": 0.9, "class_id": 0})
    expected.write_text(json.dumps(golden))
    try:
        out = line.cli("model", "shadow", "set", sha)
    finally:
        expected.write_bytes(original)
    assert out.returncode == 1 and "409" in out.stderr and "golden check failed" in out.stderr
    assert line.sql("SELECT COUNT(*) FROM shadow_sessions") == [(0,)]
    # the CLI uploads the folder (already registered) and loads it
    out = line.cli("model", "shadow", "set", "--bundle", str(H.SHADOW_BUNDLE))
    assert out.returncode == 0, out.stderr
    assert f"already registered: neu-det-s4 v1.2 ({sha[:12]})" in out.stdout
    assert f"shadow neu-det-s4 v1.2 ({sha[:12]}) loaded by {line.eng_name}" in out.stdout
    got = eng.get("/api/shadow").json()
    assert got["shadow"]["sha256"] == sha and got["shadow"]["started_by"] == line.eng_name
    assert got["gate"]["min_frames"] == MIN_FRAMES
    (audit,) = line.sql("SELECT actor, target, detail_json FROM audit WHERE action = 'shadow.set'")
    assert audit[:2] == (line.eng_name, sha) and json.loads(audit[2])["replaced"] is None
    S.wait_for(lambda: eng.get("/api/shadow").json()["shadow"]["child"] == "running", 300)
    line.run(3)
    s = eng.get("/api/status").json()["shadow"]
    assert (s["sha256"], s["offered"], s["judged"], s["skipped"], s["errors"]) == (sha, 3, 3, 0, 0)
    assert s["mode"] == "every frame" and s["latency_p95_ms"] >= s["latency_mean_ms"] * 0.5
    out = line.cli("model", "shadow", "status", token=line.op)  # reading needs no engineer
    assert out.returncode == 0, out.stderr
    assert "offered 3, judged 3, skipped 0, errors 0" in out.stdout
    assert f"frames seen 3 < {MIN_FRAMES}" in out.stdout


def _tally(line: Line, shadow: str, active: str) -> tuple[int, int, int, int, int]:
    """(frames, agreed, answered, active wrong, shadow wrong) from the database itself."""
    rows = line.sql(
        "SELECT i.verdict, r.verdict, f.kind FROM shadow_results r "
        "JOIN inspections i ON i.seq = r.seq LEFT JOIN feedback_latest f ON f.seq = i.seq "
        "WHERE r.model_sha256 = ? AND i.model_sha256 = ?",
        (shadow, active),
    )

    def wrong(verdict: str, kind: str) -> bool:  # the rule, as docs/learning-loop.md says it
        defect = kind in ("confirm_defect", "wrong_class")
        return verdict == "ERROR" or (verdict == "PASS") == defect

    answered = [(a, s, k) for a, s, k in rows if k is not None]
    return (
        len(rows),
        sum(a == s for a, s, _ in rows),
        len(answered),
        sum(wrong(a, k) for a, _, k in answered),
        sum(wrong(s, k) for _, s, k in answered),
    )


def test_the_gate_refuses_with_its_numbers_then_promotes_and_rollback_returns(line: Line) -> None:
    eng, op = line.client(), line.client(line.op)
    sha, old = _demo_sha(), line.bundles.sha_a
    eng.get("/api/shadow")  # the shadow's results are written at the latest when read
    frames = _tally(line, sha, old)[0]
    assert frames < MIN_FRAMES
    out = line.cli("model", "promote")
    assert out.returncode == 1 and f"frames seen {frames} < {MIN_FRAMES}" in out.stderr
    # a frame where one model says defect and the other does not, and an answer that
    # proves the shadow wrong
    pick = None
    for _ in range(24):
        line.run(1)
        eng.get("/api/shadow")
        pick = line.sql(
            "SELECT i.id, i.verdict, r.verdict FROM shadow_results r JOIN inspections i "
            "ON i.seq = r.seq WHERE r.model_sha256 = ? AND (i.verdict = 'PASS') != "
            "(r.verdict = 'PASS') AND r.verdict != 'ERROR' LIMIT 1",
            (sha,),
        )
        if pick and _tally(line, sha, old)[0] >= MIN_FRAMES:
            break
    assert pick, "the two models never disagreed on defect / no defect"
    iid, _, shadow_verdict = pick[0]
    kind = "confirm_defect" if shadow_verdict == "PASS" else "not_defect"
    assert op.post(f"/api/inspections/{iid}/feedback", json={"kind": kind}).status_code == 201
    eng.get("/api/shadow")
    frames, agreed, answered, a_wrong, s_wrong = _tally(line, sha, old)
    assert (answered, a_wrong, s_wrong) == (1, 0, 1)
    r = eng.post("/api/shadow/promote", json={"force": False})
    assert r.status_code == 409, r.text
    assert r.json()["detail"].endswith(
        f"refused: wrong on operator feedback {s_wrong} > active model's {a_wrong} "
        f"(of {answered} answered frames)"
    )
    gate = eng.get("/api/shadow").json()["gate"]
    assert (gate["frames"], gate["agreed"], gate["passed"]) == (frames, agreed, False)
    assert gate["agreement"] == pytest.approx(agreed / frames)
    assert line.state.station.inspector.model.info.sha256 == old  # nothing changed
    # the operator changes the answer: now the active model was the wrong one
    other = "not_defect" if kind == "confirm_defect" else "confirm_defect"
    assert op.post(f"/api/inspections/{iid}/feedback", json={"kind": other}).status_code == 201
    assert _tally(line, sha, old)[3:] == (1, 0)
    r = eng.post("/api/shadow/promote")
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["sha256"], done["replaced"], done["forced"]) == (sha, old, False)
    assert done["gate"]["passed"] and done["gate"]["failed"] == []
    assert line.state.station.inspector.model.info.sha256 == sha
    (row,) = line.sql("SELECT actor, target, detail_json FROM audit WHERE action = 'model.promote'")
    detail = json.loads(row[2])
    assert row[:2] == (line.eng_name, sha) and detail["replaced"] == old
    assert detail["gate"]["frames"] == done["gate"]["frames"] and detail["forced"] is False
    refused = line.sql("SELECT COUNT(*) FROM audit WHERE action = 'shadow.promote_refused'")
    assert refused == [(2,)]
    assert line.sql("SELECT end_reason, ended_by FROM shadow_sessions") == [
        ("promoted", line.eng_name)
    ]
    assert eng.get("/api/shadow").json()["shadow"] is None
    assert eng.get("/api/status").json()["shadow"] is None
    models = {m["sha256"]: m for m in eng.get("/api/models").json()["models"]}
    assert models[sha]["active"] and models[old]["previous"]
    (new_iid,) = line.run(1)
    assert line.sql("SELECT model_sha256 FROM inspections WHERE id = ?", (new_iid,)) == [(sha,)]
    # rollback: the model before the promotion judges again
    r = eng.post("/api/models/rollback")
    assert r.status_code == 200 and r.json()["sha256"] == old
    (back,) = line.run(1)
    assert line.sql("SELECT model_sha256 FROM inspections WHERE id = ?", (back,)) == [(old,)]


def test_the_cli_stops_a_shadow_and_says_when_there_is_none(line: Line) -> None:
    sha = _demo_sha()
    out = line.cli("model", "shadow", "set", sha)
    assert out.returncode == 0, out.stderr
    out = line.cli("model", "shadow", "clear")
    assert out.returncode == 0 and "no shadow model is loaded" in out.stdout
    (last,) = line.sql("SELECT end_reason, ended_by FROM shadow_sessions ORDER BY id DESC LIMIT 1")
    assert last == ("stopped", line.eng_name)
    assert line.sql("SELECT target FROM audit WHERE action = 'shadow.clear'") == [(sha,)]
    out = line.cli("model", "shadow", "clear")
    assert out.returncode == 1 and "409 no shadow model is loaded" in out.stderr
    out = line.cli("model", "promote")
    assert out.returncode == 1 and "nothing to promote" in out.stderr
    out = S.kanjian("model", "shadow", "status", "--url", "http://127.0.0.1:9", "--token", "x")
    assert out.returncode == 2 and "cannot reach the station" in out.stderr
