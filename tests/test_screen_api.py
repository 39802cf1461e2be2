"""The screen's API (issue 13) on the API test station (tests/support/api_env.py: a real
station that judged 24 NEU-DET images, a real uvicorn, a token per role): its
settings, every inspection's picture by id (from memory, or from the saved image
once memory has none, checked pixel by pixel against the file the store says it
was), and feedback changed (audited as a change) and undone (audited whole), each
checked against the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import cv2
import numpy as np

from kanjian.appliance_api.http.annotate import encode_jpeg
from kanjian.appliance_api.http.pictures import PictureCache
from kanjian.station.api_config import ApiConfig
from tests.support.api_env import Env

SIDE = 48  # grey thumbnails compared, px


def _thumb(img: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small[2:-2, 2:-2]  # without the verdict's coloured frame


def _nearest(env: Env, jpeg: bytes) -> tuple[str, float, float]:
    """The station's image file ``jpeg`` looks most like, the difference, the runner-up's."""
    shown = _thumb(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    files = {r[0] for r in env.sql("SELECT DISTINCT uri FROM inspections")}
    diffs = sorted(
        (float(np.abs(_thumb(cv2.imread(f, cv2.IMREAD_GRAYSCALE)) - shown).mean()), f)
        for f in files
    )
    return diffs[0][1], diffs[0][0], diffs[1][0]


def test_screen_settings_are_the_config(env: Env) -> None:
    want = ApiConfig.model_validate(env.config.get("api", {}))
    got = env.client("operator").get("/api/screen").json()
    assert got == {
        "hold_s": want.screen_hold_s,
        "min_show_s": want.screen_min_show_s,
        "strip": want.screen_strip,
        "sound": want.screen_sound,
        "flash": want.screen_flash,
        "undo_s": want.feedback_undo_s,
    }


def test_every_inspection_has_its_own_picture(env: Env) -> None:
    c = env.client("operator")
    rows = env.sql("SELECT id, uri, verdict FROM inspections ORDER BY seq")
    assert {v for _, _, v in rows} >= {"PASS", "FAIL"}
    for iid, uri, verdict in rows:
        r = c.get(f"/api/screen/picture/{iid}")
        assert r.status_code == 200, (iid, r.text)
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-picture-source"] == "memory", (iid, verdict)  # PASS too
        best, diff, runner_up = _nearest(env, r.content)
        assert best == uri and diff < 0.5 * runner_up, (iid, uri, best, diff, runner_up)


def test_without_memory_the_saved_image_shows_and_a_missing_one_says_why(env: Env) -> None:
    hub = env.state.hub
    kept = hub.pictures
    hub.pictures = PictureCache(hub.draw, encode_jpeg)  # as after a restart: nothing in memory
    try:
        c = env.client("operator")
        saved = env.sql("SELECT id, uri FROM inspections WHERE image_path IS NOT NULL LIMIT 3")
        for iid, uri in saved:
            r = c.get(f"/api/screen/picture/{iid}")
            assert r.status_code == 200 and r.headers["x-picture-source"] == "saved"
            assert _nearest(env, r.content)[0] == uri
        iid = env.sql("SELECT id FROM inspections WHERE image_path IS NULL LIMIT 1")[0][0]
        r = c.get(f"/api/screen/picture/{iid}")
        assert r.status_code == 404
        assert "api.screen_pictures" in r.json()["detail"]
        assert "store.save_images" in r.json()["detail"]
        r = c.get("/api/screen/picture/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404
    finally:
        hub.pictures = kept


def _fresh_defect(env: Env) -> str:
    """A FAIL / REVIEW no test has answered yet (tests in this module share the station)."""
    return str(
        env.sql(
            "SELECT id FROM inspections WHERE verdict IN ('FAIL', 'REVIEW') AND id NOT IN "
            "(SELECT inspection_id FROM feedback) AND id NOT IN "
            "(SELECT target FROM audit WHERE target IS NOT NULL) ORDER BY seq LIMIT 1"
        )[0][0]
    )


def _audit(env: Env, iid: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = env.sql(
        "SELECT action, actor, detail_json FROM audit WHERE target = ? ORDER BY id", (iid,)
    )
    return [(a, who, json.loads(d)) for a, who, d in rows]


def _rows(env: Env, iid: str) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT id, kind, class_name, note, actor, created_at FROM feedback "
        "WHERE inspection_id = ? ORDER BY id",
        (iid,),
    )


def _listed(env: Env, iid: str, feedback: str) -> bool:
    items = (
        env.client("operator")
        .get("/api/inspections", params={"feedback": feedback, "limit": 500})
        .json()["items"]
    )
    return iid in {i["id"] for i in items}


def test_a_second_answer_is_kept_and_audited_as_a_change(env: Env) -> None:
    c = env.client("operator")
    iid = _fresh_defect(env)
    url = f"/api/inspections/{iid}/feedback"
    first = c.post(url, json={"kind": "confirm_defect"})
    assert first.status_code == 201 and first.json()["replaces"] is None
    second = c.post(url, json={"kind": "wrong_class", "class_name": "scratches"})
    assert second.status_code == 201
    assert second.json()["replaces"]["id"] == first.json()["id"]
    again = c.post(url, json={"kind": "wrong_class", "class_name": "scratches"})  # a double tap
    assert again.status_code == 200 and again.json()["id"] == second.json()["id"]
    rows = _rows(env, iid)
    assert [r[1] for r in rows] == ["confirm_defect", "wrong_class"]  # both kept
    audit = _audit(env, iid)
    assert [a for a, _, _ in audit] == ["feedback.create", "feedback.change"]
    old, new = audit[1][2]["old"], audit[1][2]["new"]
    assert (old["id"], old["kind"], old["class_name"], old["actor"], old["created_at"]) == (
        rows[0][0],
        rows[0][1],
        rows[0][2],
        rows[0][4],
        rows[0][5],
    )
    assert (new["id"], new["kind"], new["class_name"]) == rows[1][:3]
    assert audit[1][1] == "test-operator"
    detail = c.get(f"/api/inspections/{iid}").json()
    assert detail["feedback"]["kind"] == "wrong_class"
    assert [f["id"] for f in detail["feedback_history"]] == [r[0] for r in rows]


def test_an_answer_is_undone_and_the_one_it_changed_stands_again(env: Env) -> None:
    c = env.client("operator")
    iid = _fresh_defect(env)
    url = f"/api/inspections/{iid}/feedback"
    a = c.post(url, json={"kind": "confirm_defect"}).json()
    b = c.post(url, json={"kind": "not_defect", "note": "mis-tap"}).json()
    assert _listed(env, iid, "not_defect")
    before = _rows(env, iid)
    # only the latest answer can be undone
    r = c.delete(f"{url}/{a['id']}")
    assert r.status_code == 409 and "latest" in r.json()["detail"]
    r = c.delete(f"{url}/{b['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["undone"]["id"] == b["id"] and r.json()["latest"]["id"] == a["id"]
    assert _rows(env, iid) == before[:1]
    # what the list filters on follows
    assert _listed(env, iid, "confirm_defect") and not _listed(env, iid, "not_defect")
    assert c.get(f"/api/inspections/{iid}").json()["feedback"]["id"] == a["id"]
    action, actor, detail = _audit(env, iid)[-1]
    assert (action, actor) == ("feedback.undo", "test-operator")
    u = detail["undone"]
    assert (u["id"], u["kind"], u["class_name"], u["note"], u["actor"], u["created_at"]) == before[
        1
    ]
    assert detail["standing"]["id"] == a["id"]
    # undo the first one too: no answer stands, and the list says so
    r = c.delete(f"{url}/{a['id']}")
    assert r.status_code == 200 and r.json()["latest"] is None
    assert _rows(env, iid) == [] and _listed(env, iid, "none")


def test_an_undo_is_refused_when_late_or_not_yours(env: Env) -> None:
    c = env.client("operator")
    iid = _fresh_defect(env)
    url = f"/api/inspections/{iid}/feedback"
    fb = c.post(url, json={"kind": "not_defect"}).json()
    audits = len(_audit(env, iid))
    r = env.client("engineer").delete(f"{url}/{fb['id']}")  # another token
    assert r.status_code == 403 and "give a new answer instead" in r.json()["detail"]
    assert c.delete(f"{url}/{fb['id'] + 100000}").status_code == 404
    other = _fresh_defect(env)
    assert c.delete(f"/api/inspections/{other}/feedback/{fb['id']}").status_code == 404
    # given longer ago than api.feedback_undo_s
    window = ApiConfig.model_validate(env.config.get("api", {})).feedback_undo_s
    late = datetime.now(timezone.utc) - timedelta(seconds=window + 5)
    con = sqlite3.connect(env.db_path)
    with con:  # commits
        con.execute("UPDATE feedback SET created_at = ? WHERE id = ?", (late.isoformat(), fb["id"]))
    con.close()
    r = c.delete(f"{url}/{fb['id']}")
    assert r.status_code == 409 and "api.feedback_undo_s" in r.json()["detail"]
    assert [row[0] for row in _rows(env, iid)] == [fb["id"]]  # nothing changed
    assert len(_audit(env, iid)) == audits


def test_another_token_agreeing_is_recorded_and_undo_is_per_token(env: Env) -> None:
    op, eng = env.client("operator"), env.client("engineer")
    iid = _fresh_defect(env)
    url = f"/api/inspections/{iid}/feedback"
    window = ApiConfig.model_validate(env.config.get("api", {})).feedback_undo_s
    a = op.post(url, json={"kind": "confirm_defect"})
    assert a.status_code == 201 and 0 < a.json()["undo_s_left"] <= window
    # a second person who agrees: their answer is kept and audited, with their own undo
    b = eng.post(url, json={"kind": "confirm_defect"})
    assert b.status_code == 201, b.text
    assert b.json()["id"] != a.json()["id"] and b.json()["replaces"]["id"] == a.json()["id"]
    assert b.json()["undo_until"] is not None and 0 < b.json()["undo_s_left"] <= window
    rows = _rows(env, iid)
    assert [(r[0], r[4]) for r in rows] == [
        (a.json()["id"], "test-operator"),
        (b.json()["id"], b.json()["actor"]),
    ]
    assert b.json()["actor"] != "test-operator"
    assert [x for x, _, _ in _audit(env, iid)] == ["feedback.create", "feedback.change"]
    # the engineer's double tap is a repeat: nothing recorded, its own undo time
    again = eng.post(url, json={"kind": "confirm_defect"})
    assert again.status_code == 200 and again.json()["id"] == b.json()["id"]
    assert again.json()["undo_s_left"] <= b.json()["undo_s_left"]
    # the operator cannot undo the engineer's answer
    assert op.delete(f"{url}/{b.json()['id']}").status_code == 403
    # once the window has passed, a repeat says it can no longer be undone
    late = datetime.now(timezone.utc) - timedelta(seconds=window + 5)
    con = sqlite3.connect(env.db_path)
    with con:
        con.execute(
            "UPDATE feedback SET created_at = ? WHERE id = ?", (late.isoformat(), b.json()["id"])
        )
    con.close()
    late_again = eng.post(url, json={"kind": "confirm_defect"})
    assert late_again.status_code == 200
    assert late_again.json()["undo_until"] is None and late_again.json()["undo_s_left"] is None
    assert len(_rows(env, iid)) == 2


def test_picture_labels_are_in_the_screens_language(env: Env) -> None:
    # the screen asks for its own language (?lang=): the labels are the model's display
    # names in it, from memory or the saved image alike
    iid, sha, cls = env.sql(
        "SELECT i.id, i.model_sha256, d.class_name FROM inspections i "
        "JOIN detections d ON d.inspection_id = i.id "
        "WHERE i.verdict = 'FAIL' AND i.image_path IS NOT NULL LIMIT 1"
    )[0]
    eng = env.client("engineer")
    names = {"zh": {cls: "测试缺陷"}, "en": {cls: "test defect"}}
    r = eng.put(f"/api/models/{sha}/display-names", json={"display_names": names})
    assert r.status_code == 200, r.text
    hub = env.state.hub
    kept = hub.pictures
    hub.pictures = PictureCache(hub.draw, encode_jpeg, variant=hub.label_names)
    try:
        c = env.client("operator")
        side = env.state.cfg.live_max_side
        got = {}
        for lang in ("zh", "en"):
            r = c.get(f"/api/screen/picture/{iid}", params={"lang": lang})
            assert r.status_code == 200 and r.headers["x-picture-source"] == "saved"
            got[lang] = r.content
            want = c.get(
                f"/api/inspections/{iid}/image",
                params={"annotated": True, "max_side": side, "lang": lang},
            )
            assert want.content == r.content
        assert got["zh"] != got["en"]
        default = c.get(f"/api/screen/picture/{iid}").content
        assert default == got[env.state.cfg.language]
        assert c.get(f"/api/screen/picture/{iid}", params={"lang": "de"}).status_code == 422
    finally:
        hub.pictures = kept
        assert eng.delete(f"/api/models/{sha}/display-names").status_code == 200
