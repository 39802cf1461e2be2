"""The shadow report (``GET /api/shadow/report``, its pictures and the ``/shadow`` page) on a
running ``kanjian serve`` of the demo, with the test detect model (another trained model)
as its shadow and operator feedback on some of the frames both judged. Every number
the report gives is recounted here in SQL on the same database, once the shadow has
stopped (so the rows hold still); the page is read back in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.support import api as S
from tests.support import web as W

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)

FRAMES = 30  # shadow results to wait for
LABELS = ("PASS", "FAIL", "REVIEW", "ERROR")
#: the feedback given, in turn, to the frames both models judged (oldest first)
KINDS = ("not_defect", "confirm_defect", "wrong_class", "not_defect", "confirm_defect")

# the pairs the report counts: the shadow's rows on frames the active model judged
PAIRS = (
    "FROM shadow_results r JOIN inspections i ON i.seq = r.seq "
    "WHERE r.model_sha256 = ? AND i.model_sha256 = ?"
)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, detect_model: Any
) -> Iterator[tuple[W.Screen, str, str, str]]:
    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("shadow-report")
    # the store keeps FAIL pictures only: the report's other pictures are the shadow's own
    with W.screen_station(tmp, sections={"store": {"save_images": ["FAIL"]}}) as scr:
        eng = S.make_token(tmp / "data", "engineer", "report-engineer")
        with httpx.Client(
            base_url=scr.served.url, headers={"Authorization": f"Bearer {eng}"}, timeout=300
        ) as c:
            assert c.post("/api/models", content=S.pack(bundles.a)).status_code == 201
            r = c.put("/api/shadow", json={"sha256": bundles.sha_a})
            assert r.status_code == 200, r.text
            S.wait_for(lambda: (c.get("/api/shadow").json()["shadow"] or {}).get("judged", 0) >= FRAMES,
                       300, 0.5, what="the shadow's results")  # fmt: skip
            active = c.get("/api/status").json()["model"]["sha256"]
            rows = scr.sql(
                f"SELECT i.id, i.top_class {PAIRS} ORDER BY r.seq LIMIT ?",
                (bundles.sha_a, active, len(KINDS)),
            )
            for (iid, top), kind in zip(rows, KINDS, strict=True):
                body: dict[str, Any] = {"kind": kind}
                if kind == "wrong_class":
                    body["class_name"] = "scratches" if top != "scratches" else "crazing"
                r = c.post(f"/api/inspections/{iid}/feedback", json=body)
                assert r.status_code in (200, 201), r.text
            assert c.delete("/api/shadow").status_code == 200  # the rows hold still now
        yield scr, eng, bundles.sha_a, active


def _report(scr: W.Screen, token: str, query: str = "") -> Any:
    r = httpx.get(
        f"{scr.served.url}/api/shadow/report{query}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_the_report_equals_a_count_made_in_sql(served: tuple[W.Screen, str, str, str]) -> None:
    scr, eng, shadow, active = served
    rep = _report(scr, eng)  # the newest shadow that ran, against the model judging now
    assert (rep["shadow_sha256"], rep["active_sha256"]) == (shadow, active)
    ((name, version),) = scr.sql("SELECT name, version FROM models WHERE sha256 = ?", (shadow,))
    assert rep["shadow_model"] == f"{name} v{version}" and rep["active_model"] == "neu-det-s4 v1.2"
    ((n, first, last),) = scr.sql(f"SELECT COUNT(*), MIN(r.seq), MAX(r.seq) {PAIRS}",
                                  (shadow, active))  # fmt: skip
    assert n >= FRAMES and (rep["frames"], rep["first_seq"], rep["last_seq"]) == (n, first, last)

    # the verdict matrix, active rows x shadow columns
    want = [[0] * 4 for _ in LABELS]
    for a, s, k in scr.sql(f"SELECT i.verdict, r.verdict, COUNT(*) {PAIRS} GROUP BY 1, 2",
                           (shadow, active)):  # fmt: skip
        want[LABELS.index(a)][LABELS.index(s)] = k
    v = rep["verdicts"]
    assert v["matrix"] == want and v["n"] == n
    assert v["agreed"] == sum(want[i][i] for i in range(4))

    # the boxes each model drew, per class
    a_boxes = dict(scr.sql(
        f"SELECT d.class_name, COUNT(*) {PAIRS.replace('WHERE', 'JOIN detections d ON d.inspection_id = i.id WHERE')} "
        "GROUP BY 1", (shadow, active)))  # fmt: skip
    s_boxes = dict(scr.sql(
        f"SELECT json_extract(j.value, '$[1]'), COUNT(*) "
        f"{PAIRS.replace('WHERE', ', json_each(r.detections_json) j WHERE')} GROUP BY 1",
        (shadow, active)))  # fmt: skip
    per_class = {c["class_name"]: c for c in rep["detections"]["classes"]}
    assert {k: c["a_boxes"] for k, c in per_class.items() if c["a_boxes"]} == a_boxes
    assert {k: c["b_boxes"] for k, c in per_class.items() if c["b_boxes"]} == s_boxes
    assert sum(s_boxes.values()) > 0 and sum(a_boxes.values()) > 0
    for c in per_class.values():  # every box is matched, alone, or matched to another class
        assert c["matched"] + c["only_a"] + c["swapped_a"] == c["a_boxes"]
        assert c["matched"] + c["only_b"] + c["swapped_b"] == c["b_boxes"]

    # against the operators' answers: a defect call is FAIL or REVIEW; not_defect says good
    fb = rep["feedback"]
    answered = scr.sql(
        f"SELECT i.verdict, r.verdict, fl.kind {PAIRS.replace('WHERE', 'JOIN feedback_latest fl ON fl.seq = r.seq WHERE')}",
        (shadow, active))  # fmt: skip
    assert fb["n"] == len(answered) == len(KINDS)
    for key, col in (("a", 0), ("b", 1)):
        got = fb[key]
        calls = [(row[col] in ("FAIL", "REVIEW"), row[2] != "not_defect") for row in answered
                 if row[col] != "ERROR"]  # fmt: skip
        assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (
            sum(c and d for c, d in calls),
            sum(c and not d for c, d in calls),
            sum(not c and d for c, d in calls),
            sum(not c and not d for c, d in calls),
        )

    # the disagreements: every frame whose verdicts differ, newest first
    differ = scr.sql(f"SELECT i.id, i.image_path, r.seq {PAIRS} AND i.verdict != r.verdict "
                     "ORDER BY r.seq DESC", (shadow, active))  # fmt: skip
    assert rep["verdict_disagreements"] == len(differ) > 0
    listed = [d for d in rep["listed"] if d["verdict_differs"]]
    assert [d["inspection_id"] for d in listed] == [row[0] for row in differ][: len(listed)]
    kept = scr.site / "data" / "shadow" / shadow[:16]
    for (iid, image_path, seq), d in zip(differ, listed, strict=False):
        # a picture for each: the store's (a FAIL) or the one the shadow kept
        assert d["picture"] == f"/api/shadow/picture/{iid}?model={shadow}"
        assert image_path is not None or (kept / f"{seq}.jpg").is_file(), iid
    assert any(row[1] is None for row in differ), (
        "no disagreement on a frame the store kept no picture of"
    )


def test_a_disagreement_shows_both_models_boxes_on_one_picture(
    served: tuple[W.Screen, str, str, str],
) -> None:
    scr, eng, shadow, _ = served
    rep = _report(scr, eng, f"?model={shadow[:12]}")
    # a disagreement where the shadow drew a box the rules count (the picture draws only those)
    review = W.RULES["default"]["review_confidence"]
    counted = {
        iid
        for (iid,) in scr.sql(
            "SELECT r.inspection_id FROM shadow_results r, json_each(r.detections_json) j "
            "WHERE r.model_sha256 = ? AND json_extract(j.value, '$[2]') >= ?",
            (shadow, review),
        )
    }
    d = next(d for d in rep["listed"] if d["verdict_differs"] and d["inspection_id"] in counted)
    r = httpx.get(f"{scr.served.url}{d['picture']}", headers={"Authorization": f"Bearer {eng}"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) >= 480  # NEU-DET's 200 px frames are enlarged
    # the shadow's boxes are magenta (B and R high, G low): on a grey steel frame only they are
    b, g, rr = (img[..., i].astype(int) for i in range(3))
    assert ((b > 140) & (rr > 140) & (g < 90)).sum() > 100
    # an unknown inspection, or a model that never ran as shadow: 404 with words
    r = httpx.get(f"{scr.served.url}/api/shadow/picture/{'0' * 8}-0000-0000-0000-{'0' * 12}",
                  headers={"Authorization": f"Bearer {eng}"})  # fmt: skip
    assert r.status_code == 404 and "no inspection" in r.json()["detail"]
    r = httpx.get(f"{scr.served.url}/api/shadow/report?model=abcdef0123",
                  headers={"Authorization": f"Bearer {eng}"})  # fmt: skip
    assert r.status_code == 404 and "no model has that sha256 prefix" in r.json()["detail"]


def test_the_page_shows_the_report(served: tuple[W.Screen, str, str, str]) -> None:
    scr, eng, _, _ = served
    rep = _report(scr, eng)
    page = scr.page
    page.goto("about:blank")
    page.goto(f"{scr.served.url}/shadow#token={scr.token}")  # an operator may read it
    page.wait_for_selector("body[data-loaded='1']")
    assert page.text_content("h1") == "影子模型报告"
    for i, a in enumerate(LABELS):
        for j, s in enumerate(LABELS):
            cell = page.text_content(f"#matrix td[data-a='{a}'][data-s='{s}']")
            assert cell == str(rep["verdicts"]["matrix"][i][j]), (a, s)
    shown = page.eval_on_selector_all("#disagreements figure", "fs => fs.map(f => f.dataset.id)")
    assert shown == [d["inspection_id"] for d in rep["listed"]]
    # the pictures arrive (fetched with the page's token)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#disagreements img')].some(i => i.naturalWidth > 0)"
    )
    # docs/shadow-report.png is this, copied by hand (the suite never changes tracked files)
    page.screenshot(path=str(scr.site / "shadow-report.png"))
    tp = page.text_content("#feedback tr[data-model='shadow'] td:nth-child(3)")
    assert tp == str(rep["feedback"]["b"]["tp"])
