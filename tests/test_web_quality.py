"""The image quality gate tuned from the engineer's page (``/quality``) in a real browser
(Playwright + Debian's Chromium), against a running ``kanjian serve`` of the demo: the live
readout, the pass / fail marks as a threshold is typed, a save that judges the next frames
and is audited, the rejected frames on the operator's screen in its language, an operator
who may look but not save, and the way back to station.yaml's settings."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kanjian.inference.verdict import explain_reason
from tests.support import api as S
from tests.support import web as W

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[W.Screen, str]]:
    tmp = tmp_path_factory.mktemp("quality")
    with W.screen_station(tmp) as scr:
        yield scr, S.make_token(tmp / "data", "engineer", "q-engineer")


def _api(scr: W.Screen, token: str) -> Any:
    r = httpx.get(
        f"{scr.served.url}/api/quality", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()


def _open(scr: W.Screen, token: str) -> Any:
    page = scr.page
    page.goto("about:blank")  # else a new #token= on the same page would not reload it
    page.goto(f"{scr.served.url}/quality#token={token}")
    page.wait_for_selector("body[data-loaded='1']")
    return page


def test_an_operator_sees_the_readout_but_cannot_save(screen: tuple[W.Screen, str]) -> None:
    scr, _ = screen
    page = _open(scr, scr.token)
    assert page.text_content("h1") == "图像质量"
    assert page.text_content("#latest") == "质量检查未启用：启用并保存后开始测量"  # off by default
    for sel in ("#enabled", "#min_focus", "#max_mean", "#save", "#reset"):
        assert page.is_disabled(sel), sel
    assert page.text_content("#save-msg") == "只读：保存需要工程师令牌"
    assert page.get_attribute("#source", "data-source") == "station.yaml"


def test_an_engineer_tunes_the_gate_and_the_screen_shows_its_reason(
    screen: tuple[W.Screen, str],
) -> None:
    scr, engineer = screen
    page = _open(scr, engineer)
    page.check("#enabled")
    page.fill("#min_focus", "1000000")  # no frame is that sharp: every frame is blurred
    assert page.is_enabled("#save")
    page.click("#save")
    page.wait_for_selector("#source[data-source='api']")
    got = _api(scr, engineer)
    assert got["enabled"] is True and got["min_focus"] == 1e6 and got["set_by"] == "q-engineer"
    assert got["max_mean"] is None and got["rows"] == 8  # a threshold left empty: not checked
    (detail,) = scr.sql("SELECT detail_json FROM audit WHERE action = 'quality.set'")
    assert json.loads(detail[0])["new"]["min_focus"] == 1e6

    # the readout follows the frames: the newest is rejected, the focus row marked failed
    page.wait_for_selector("#latest[data-rejected='1']", timeout=60_000)
    page.wait_for_selector("tr[data-key='min_focus'][data-state='fail']")
    shown = page.evaluate(  # one reading, read at once: the page polls every second
        "() => ({ id: document.getElementById('latest').dataset.inspectionId,"
        " text: document.getElementById('latest').textContent,"
        " focus: document.querySelector(\"tr[data-key='min_focus'] .now\").textContent })"
    )
    (row,) = scr.sql(
        "SELECT verdict, reason, quality_json FROM inspections WHERE id = ?", (shown["id"],)
    )
    assert row[0] == "ERROR" and row[1].startswith("blurred: focus ")
    assert shown["focus"] == f"{json.loads(row[2])['focus']:.1f}"
    assert shown["text"].endswith(
        " · 错误 · " + row[1].replace("blurred: focus", "图像模糊：清晰度")
    )
    # typing a threshold marks the newest frame against it before anything is saved
    page.fill("#min_focus", "0.001")
    page.wait_for_selector("tr[data-key='min_focus'][data-state='pass']")
    page.fill("#max_mean", "1")
    page.wait_for_selector("tr[data-key='max_mean'][data-state='fail']")
    page.fill("#max_mean", "-3")
    page.click("#save")
    assert page.text_content("#save-msg") == "阈值须为不小于 0 的数字"
    assert _api(scr, engineer)["min_focus"] == 1e6  # nothing sent

    # the operator's screen shows a rejected part with its reason in its language
    scr.open()
    scr.page.wait_for_function(
        "() => document.getElementById('verdict-reason').dataset.code === 'quality_blurred'",
        timeout=90_000,
    )
    line = scr.page.evaluate(
        "() => { const r = document.getElementById('verdict-reason');"
        " return { id: r.dataset.inspectionId, text: r.textContent }; }"
    )
    stored = scr.stored(line["id"])
    assert stored["verdict"] == "ERROR" and stored["quality"]["focus"] > 0
    code, params = explain_reason(stored["verdict"], stored["reason"])
    assert code == "quality_blurred" and params["limit"] == 1e6
    m = re.fullmatch(r"blurred: focus (\S+) < (\S+)", stored["reason"])
    assert m and line["text"] == f"图像模糊：清晰度 {m[1]} < {m[2]}"
    assert scr.page.text_content("#verdict-word") == "错误"

    # back to station.yaml's: off again, audited, the model judges again
    page = _open(scr, engineer)
    page.click("#reset")
    page.wait_for_selector("#source[data-source='station.yaml']")
    assert _api(scr, engineer)["enabled"] is False
    assert scr.sql("SELECT COUNT(*) FROM audit WHERE action = 'quality.reset'")[0][0] == 1
    seq = scr.sql("SELECT MAX(seq) FROM inspections")[0][0]
    S.wait_for(
        lambda: scr.sql(
            "SELECT COUNT(*) FROM inspections WHERE seq > ? AND verdict != 'ERROR'", (seq,)
        )[0][0],
        60,
        what="a frame judged by the model again",
    )
