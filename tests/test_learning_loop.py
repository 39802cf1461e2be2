"""The learning loop in four commands, end to end, as docs/learning-loop.md walks it.

A real ``kanjian serve`` judges NEU-DET frames (a folder camera looping over 24 images,
triggered one at a time through the API, every frame's picture saved) with a first
model whose bundle carries its training weights. Then, each step through the real CLI
in a subprocess, as a person types it:

1. an operator answers some inspections (``POST /api/inspections/{id}/feedback``), and
   ``kanjian dataset export --min-conf R --max-conf F --include-reviewed`` takes the
   uncertain band (the REVIEW band of the station's rules) and every answered part;
2. the labelling: a person would correct the boxes in Label Studio and export "YOLO";
   here the person is stood in for by NEU-DET's ground truth: every exported image is
   traced back to its source file (the task's inspection id, then the inspection's
   ``uri``) and its VOC boxes are written in Label Studio's YOLO export layout, which
   ``kanjian dataset import`` reads;
3. ``kanjian train DATA.yaml --model <the active bundle's folder>``: a real, tiny
   Ultralytics run (two epochs, 256 px) continuing from the bundle's ``weights.pt``;
4. ``kanjian model shadow set --bundle RUN/bundle``, more parts judged by both models
   and answered, ``GET /api/shadow/report`` (every number recounted in SQL on the
   station's database), ``kanjian model promote`` refused by the gate (too few frames:
   exit 1 naming the condition), then accepted once the frames are there; the new
   model judges, the audit says so, the promoted bundle can start the next round, and
   ``POST /api/models/rollback`` brings the old model back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as S
from tests.support import loop as L
from tests.support.station_config import station_config, write_config

pytestmark = pytest.mark.slow

N_IMAGES = 24  # NEU-DET images the folder camera loops over (every 60th: all six classes)
FIRST = 24  # frames judged before the loop starts (one pass over the images)
SHADOW_FRAMES = 12  # frames both models judged when the report is read
MIN_FRAMES = 16  # the promotion gate's promote_min_frames
ANSWER_EVERY = 3  # the operator answers every third part


@dataclass
class Site:
    """The served station and what the test knows about it."""

    root: Path
    data: Path
    served: S.Served
    client: httpx.Client  # with an engineer's token
    token: str
    bundle: Path  # the first model's bundle (station.yaml's model.path)
    rules: dict[str, Any]
    neu: Path

    @property
    def db(self) -> Path:
        return self.data / "kanjian.db"

    def kanjian(self, *args: str, timeout: float = 600) -> Any:
        """A ``kanjian`` command that talks to this station, as its user would call it."""
        return S.kanjian(*args, "--url", self.served.url, "--token", self.token, timeout=timeout)

    def trigger(self) -> dict[str, Any]:
        r = self.client.post("/api/trigger", json={})
        assert r.status_code == 200, r.text
        row: dict[str, Any] = r.json()
        return row

    def shadow(self) -> dict[str, Any] | None:
        state: dict[str, Any] | None = self.client.get("/api/shadow").json()["shadow"]
        return state

    def judge_with_shadow(self, n: int) -> list[str]:
        """Trigger ``n`` frames, each once the shadow judged the one before (so it judges
        every frame, as on a line whose parts come slower than it judges); their ids."""
        ids = []
        for _ in range(n):
            before = (self.shadow() or {})["judged"]
            row = self.trigger()
            assert row["verdict"] in ("PASS", "FAIL", "REVIEW"), row
            ids.append(row["id"])
            S.wait_for(lambda b=before: (self.shadow() or {})["judged"] > b, 120, 0.1,
                       what="the shadow to judge the frame")  # fmt: skip
        return ids

    def answer(self, inspection_id: str) -> None:
        body = L.true_answer(self.db, self.neu, inspection_id)
        r = self.client.post(f"/api/inspections/{inspection_id}/feedback", json=body)
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, detect_model: Any, neu_det_dir: Path
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("loop")
    bundles = S.make_bundles(detect_model)  # for the scores its rules are made from
    images = S.copy_images(root / "images", N_IMAGES, step=60)
    rules = bundles.rules_for(images)  # a third each PASS, REVIEW, FAIL
    bundle = L.first_bundle(detect_model, root / "bundles" / "line-v1", "neu-det-line", "1")
    port = S.free_port()
    cfg = station_config(
        root / "data",
        bundle=bundle,
        images=images,
        rules=rules,
        camera={"loop": True},
        trigger={"mode": "triggered"},
        store={"save_images": ["PASS", "FAIL", "REVIEW"]},
        shadow={"promote_min_frames": MIN_FRAMES, "promote_min_agreement": 0,
                "promote_no_worse_on_feedback": False},
        api={"port": port},
    )  # fmt: skip
    served = S.start_serve(write_config(root / "station.yaml", cfg), port, root)
    try:
        token = S.make_token(root / "data", "engineer", "loop-engineer")
        with httpx.Client(
            base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:
            yield Site(root, root / "data", served, client, token, bundle, rules, neu_det_dir)
    finally:
        print(served.stop())


def test_the_loop_in_four_commands(site: Site) -> None:
    s = site
    old = s.client.get("/api/status").json()["model"]["sha256"]

    # -- the line runs; an operator answers some parts --------------------------------
    first = [s.trigger()["id"] for _ in range(FIRST)]
    for iid in first[::ANSWER_EVERY]:
        s.answer(iid)
    review = s.rules["default"]["review_confidence"]
    fail = s.rules["default"]["fail_confidence"]

    # -- 1. export the uncertain band and the answers -----------------------------------
    export = s.root / "review"
    run = S.kanjian("dataset", "export", str(s.data), str(export), "--min-conf", str(review),
                    "--max-conf", str(fail), "--include-reviewed", "--label-conf", "0.03",
                    "--no-split", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    tasks = json.loads((export / "label_studio.json").read_text())
    # what the export should hold, counted in SQL: band or answered, less the answered
    # "defect" parts where the model drew nothing (no box to say where: left out)
    want = {
        r[0]
        for r in L.sql(
            s.db,
            "SELECT id FROM inspections i WHERE (COALESCE(top_confidence, 0) BETWEEN ? AND ? "
            "OR EXISTS (SELECT 1 FROM feedback f WHERE f.inspection_id = i.id)) "
            "AND NOT (top_confidence IS NULL AND EXISTS (SELECT 1 FROM feedback f "
            "WHERE f.inspection_id = i.id AND f.kind != 'not_defect'))",
            (review, fail),
        )
    }
    assert {t["data"]["inspection_id"] for t in tasks} == want
    assert summary["images"]["train"] == len(want) >= 8
    assert any(t["data"]["verdict"] == "REVIEW" for t in tasks)
    assert any(t["data"]["verdict"] != "REVIEW" and t["data"]["feedback"] != "none" for t in tasks)

    # -- 2. label (Label Studio: here NEU-DET's ground truth), import its YOLO export --
    labelled = s.root / "label-studio-yolo"
    true_boxes = L.label_as_a_person(export, s.db, s.neu, labelled)
    dataset = s.root / "dataset"
    run = S.kanjian("dataset", "import", str(labelled), str(dataset), "--val-fraction", "0.25")
    assert run.returncode == 0, run.stdout + run.stderr
    imported = json.loads((dataset / "summary.json").read_text())
    assert sum(imported["images"].values()) == len(want) and imported["images"]["val"] > 0
    assert {k: n for k, n in imported["boxes_per_class"].items() if n} == true_boxes

    # -- 3. train from the active bundle's weights --------------------------------------
    ((start,),) = L.sql(s.db, "SELECT path FROM models WHERE sha256 = ?", (old,))
    assert Path(start) == s.bundle.resolve()  # station.yaml's model.path
    runs = s.root / "runs"
    run = S.kanjian(
        "train", str(dataset / "data.yaml"), "--model", str(start), "--epochs", "2",
        "--imgsz", "256", "--batch", "8", "--nbs", "8", "--workers", "0",
        "--no-val-each-epoch", "--warmup-epochs", "0", "--close-mosaic", "0",
        "--optimizer", "AdamW", "--lr0", "0.002", "--project", str(runs),
        "--name", "neu-det-line", "--version", "2", "--conf", "0.03",
        "--parity-conf", "0.03", "--parity-images", "4", "--golden-images", "2",
        "--min-map50", "0", "--allow-weak", timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"continuing from {start}" in run.stderr
    candidate = runs / "neu-det-line" / "bundle"
    assert run.stdout.strip().splitlines()[-1] == str(candidate)
    manifest = json.loads((candidate / "manifest.json").read_text())
    assert manifest["training"]["started_from"]["onnx_sha256"] == old
    new = manifest["onnx_sha256"]

    # -- 4. load as shadow, report, promote --------------------------------------------
    run = s.kanjian("model", "shadow", "set", "--bundle", str(candidate))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"uploaded: neu-det-line v2 ({new[:12]})" in run.stdout
    S.wait_for(lambda: (s.shadow() or {}).get("child") == "running", 120, 0.2,
               what="the shadow's child to start")  # fmt: skip
    judged = s.judge_with_shadow(SHADOW_FRAMES)
    for iid in judged[::ANSWER_EVERY]:
        s.answer(iid)

    r = s.client.get("/api/shadow/report")
    assert r.status_code == 200, r.text
    rep = r.json()
    sq = L.recount(s.db, new, old)
    assert (rep["shadow_sha256"], rep["active_sha256"]) == (new, old)
    assert sq["frames"] == SHADOW_FRAMES  # every frame judged, each by both
    assert (rep["frames"], rep["first_seq"], rep["last_seq"]) == (
        sq["frames"], sq["first_seq"], sq["last_seq"])  # fmt: skip
    assert rep["verdicts"]["matrix"] == sq["matrix"]
    assert rep["verdicts"]["agreed"] == sum(sq["matrix"][i][i] for i in range(4))
    assert rep["verdict_disagreements"] == sq["verdict_disagreements"] > 0  # not all diagonal
    differ = [r[0] for r in L.sql(s.db, "SELECT i.id FROM shadow_results r JOIN inspections i "
              "ON i.seq = r.seq WHERE r.model_sha256 = ? AND i.model_sha256 = ? "
              "AND i.verdict != r.verdict ORDER BY r.seq DESC", (new, old))]  # fmt: skip
    assert [d["inspection_id"] for d in rep["listed"] if d["verdict_differs"]] == differ
    per_class = {c["class_name"]: c for c in rep["detections"]["classes"]}
    assert {k: c["a_boxes"] for k, c in per_class.items() if c["a_boxes"]} == sq["a_boxes"]
    assert {k: c["b_boxes"] for k, c in per_class.items() if c["b_boxes"]} == sq["b_boxes"]
    fb = rep["feedback"]
    assert fb["n"] == sq["answered"] == len(judged[::ANSWER_EVERY])
    for key in ("a", "b"):
        got = {k: fb[key][k] for k in ("tp", "fp", "fn", "tn")}
        assert got == sq["feedback"][key], key

    run = s.kanjian("model", "shadow", "status")
    assert run.returncode == 0, run.stderr
    assert f"judged {SHADOW_FRAMES}" in run.stdout
    assert f"refuses: frames seen {SHADOW_FRAMES} < {MIN_FRAMES}" in run.stdout
    refused = s.kanjian("model", "promote")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"frames seen {SHADOW_FRAMES} < {MIN_FRAMES}" in said
    assert "agreement" not in said and "wrong on operator feedback" not in said  # not asked
    assert s.client.get("/api/status").json()["model"]["sha256"] == old
    audit = s.client.get("/api/audit", params={"action": "shadow.promote_refused"}).json()
    assert audit["items"][0]["detail"]["gate"]["frames"] == SHADOW_FRAMES

    s.judge_with_shadow(MIN_FRAMES - SHADOW_FRAMES)
    run = s.kanjian("model", "promote")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"promoted neu-det-line v2 ({new[:12]}), replacing {old[:12]}" in run.stdout
    status = s.client.get("/api/status").json()
    assert (status["model"]["sha256"], status["model"]["version"]) == (new, "2")
    assert status["shadow"] is None  # the session ended: promoted
    audit = s.client.get("/api/audit", params={"action": "model.promote"}).json()
    row = audit["items"][0]
    assert row["target"] == new and row["detail"]["replaced"] == old, row
    assert row["detail"]["forced"] is False
    assert row["detail"]["gate"]["frames"] == L.recount(s.db, new, old)["frames"] == MIN_FRAMES
    assert s.trigger()["model"]["sha256"] == new  # the promoted model judges

    # the next round starts from the promoted bundle: the station keeps it, weights and all
    from kanjian.training.bundle_weights import weights_from_bundle

    ((kept,),) = L.sql(s.db, "SELECT path FROM models WHERE sha256 = ?", (new,))
    assert weights_from_bundle(s.data / kept, "detect").manifest.onnx_sha256 == new

    # rollback brings the old model back
    r = s.client.post("/api/models/rollback")
    assert r.status_code == 200, r.text
    assert s.client.get("/api/status").json()["model"]["sha256"] == old
    assert s.trigger()["model"]["sha256"] == old
