"""The operator's screen in a real browser (Playwright + Debian's Chromium, headless).

Against a running ``kanjian serve`` on the demo source (``station/demo/images``
looping, the demo bundle): the verdict follows the frames, "not a defect" is
stored, the language switches, and the page says it is disconnected (its buttons
off) when the server stops and recovers by itself when it returns. One part at a
time (hold, select, undo, change) is tests/test_screen_web.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kanjian.inference.verdict import REASON_CODES, explain_reason
from tests.support import api as S  # the servers and bundles tests share
from tests.support.web import Screen, screen_station

ZH_VERDICTS = {"合格", "不合格", "复检", "错误", "漏检"}
EN_VERDICTS = {"PASS", "FAIL", "REVIEW", "ERROR", "MISSED"}

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screen]:
    with screen_station(tmp_path_factory.mktemp("web")) as scr:
        yield scr


def _verdict_ids(page: Any, n: int) -> list[str]:
    """Wait until the big verdict has shown ``n`` different inspections; return them."""
    seen: list[str] = []
    for _ in range(n):
        prev = seen[-1] if seen else ""
        page.wait_for_function(
            "prev => { const v = document.getElementById('verdict');"
            " return v.dataset.inspectionId && v.dataset.inspectionId !== prev; }",
            arg=prev,
        )
        seen.append(page.get_attribute("#verdict", "data-inspection-id"))
    return seen


def test_first_visit_takes_the_token_from_the_link_and_connects(screen: Screen) -> None:
    page = screen.page
    page.goto(f"{screen.served.url}/#token={screen.token}")
    page.wait_for_selector("#badge-conn[data-state=connected]")
    assert "#token" not in page.url  # the secret does not stay in the address bar
    assert page.evaluate("() => localStorage.getItem('kanjian.token')") == screen.token
    assert page.get_attribute("html", "lang") == "zh-CN"  # Chinese first


def test_verdict_changes_as_frames_arrive(screen: Screen) -> None:
    page = screen.page
    ids = _verdict_ids(page, 4)
    assert len(set(ids)) == 4
    assert page.text_content("#verdict-word") in ZH_VERDICTS
    verdict = page.get_attribute("#verdict", "data-verdict")
    assert verdict in EN_VERDICTS
    screen.stored(ids[-1])  # the screen shows what the store holds
    counts = [int(page.text_content(f"#n-{v}") or "0") for v in ("pass", "fail", "review")]
    page.wait_for_function(
        "before => ['pass','fail','review'].reduce("
        "(s, v) => s + +document.getElementById('n-' + v).textContent, 0) > before",
        arg=sum(counts),
    )
    assert re.fullmatch(r"\d+\.\d%", page.text_content("#yield") or "")
    # the line's flow in the small live view
    page.wait_for_function("() => document.getElementById('live').naturalWidth > 0")
    assert page.text_content("#model-name")
    # on its requested provider: no fallback mark (tests/test_provider_fallback.py shows it)
    assert page.is_hidden("#model-fallback")
    assert "ok" in (page.get_attribute("#badge-model", "class") or "").split()


def test_not_a_defect_tap_changes_the_stored_row(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#thumbs .thumb")
    page.dispatch_event("#thumbs", "pointerdown")  # the strip holds still under a finger
    iid = page.locator("#thumbs .thumb").first.get_attribute("data-inspection-id")
    page.locator(f"#thumbs .thumb[data-inspection-id='{iid}']").click()  # shown large
    page.wait_for_selector(f"#thumbs .thumb.selected[data-inspection-id='{iid}']")
    assert iid and page.get_attribute("#feedback", "data-inspection-id") == iid
    page.wait_for_timeout(500)  # a tap right after the part changed is refused (part.js)
    page.click("#fb-not")
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{iid}']")
    assert "已记录" in (page.text_content("#fb-result") or "")
    row = screen.stored(iid)
    assert row["verdict"] in ("FAIL", "REVIEW")
    assert row["feedback"]["kind"] == "not_defect"
    assert row["feedback"]["actor"] == "screen"
    page.click("#back-live")  # lets the line's parts come up again


def _reason_line(page: Any, codes: list[str]) -> dict[str, str]:
    """Wait until the reason under the big verdict has one of ``codes``; return the
    inspection id, code and text read together (the next part may replace them)."""
    page.wait_for_function(
        "codes => codes.includes(document.getElementById('verdict-reason').dataset.code)",
        arg=codes,
    )
    line: dict[str, str] = page.evaluate(
        "() => { const r = document.getElementById('verdict-reason');"
        " return { id: r.dataset.inspectionId, code: r.dataset.code, text: r.textContent }; }"
    )
    return line


def test_language_switch(screen: Screen) -> None:
    page = screen.page
    assert page.text_content("#defects-title span") == "最近缺陷"
    assert page.text_content("#fb-not") == "不是缺陷"
    # the reason under the verdict is Chinese too: a defect's reason names the class in
    # Chinese and keeps only numbers (confidence, box) from the English sentence
    # class names as the model's display names give them (the demo bundle's manifest)
    status = httpx.get(
        f"{screen.served.url}/api/status", headers={"Authorization": f"Bearer {screen.token}"}
    ).json()
    zh_classes: dict[str, str] = status["model"]["display_names"].get("zh", {})
    assert zh_classes, "the demo bundle names its classes in Chinese"
    zh = _reason_line(page, ["defect_fail", "defect_review"])
    row = screen.stored(zh["id"])
    code, params = explain_reason(row["verdict"], row["reason"])
    assert code == zh["code"]
    name = str(params["class"])
    shown = zh_classes.get(name, name)  # a class without a translation keeps its name
    assert zh["text"].startswith(("不确定：" if code == "defect_review" else "") + shown + " ")
    assert f"{params['confidence']:.2f}" in zh["text"]
    assert not re.search(r"[A-Za-z]", zh["text"].replace(name, "")), zh["text"]
    if name in zh_classes:
        assert not re.search(r"[A-Za-z]", zh["text"]), zh["text"]
    page.click("#lang")
    assert page.get_attribute("html", "lang") == "en"
    assert page.text_content("#defects-title span") == "Last defects"
    assert page.text_content("#fb-not") == "Not a defect"
    page.wait_for_function(
        "words => words.includes(document.getElementById('verdict-word').textContent)",
        arg=sorted(EN_VERDICTS),
    )
    # in English the screen says what the store says, word for word (where on the part
    # in words instead of the box, when the station gives it)
    en = _reason_line(page, list(REASON_CODES))
    stored = screen.stored(en["id"])
    # the same sentence less the pixel box, the size written "w × h"
    said = re.sub(r"at \[[-\d,]+\], ", "at ", stored["reason"])
    said = re.sub(r"(\d)x(\d)", r"\1 × \2", said)
    assert en["text"] == said, (en["text"], stored["reason"])
    assert not re.search(r"[\u4e00-\u9fff]", en["text"]), en["text"]
    page.reload()  # the choice is remembered
    page.wait_for_selector("#badge-conn[data-state=connected]")
    assert page.text_content("#defects-title span") == "Last defects"
    page.click("#lang")
    assert page.text_content("#defects-title span") == "最近缺陷"
    assert page.text_content("#badge-conn") == "已连接"


def test_shows_disconnected_and_recovers(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#badge-conn[data-state=connected]")
    page.wait_for_selector("#fb-not:enabled")  # a judged part is up, its buttons work
    # a part with the wrong-class picker open, as the connection goes
    page.dispatch_event("#thumbs", "pointerdown")
    page.locator("#thumbs .thumb").first.click()
    page.wait_for_function(
        "() => document.getElementById('feedback').dataset.inspectionId"
        " === document.querySelector('#thumbs .thumb.selected').dataset.inspectionId"
    )
    page.wait_for_timeout(500)  # a tap right after the part changed is refused
    page.click("#fb-wrong")
    page.wait_for_selector("#fb-classes button:enabled")
    out = screen.served.stop()
    assert "store flushed" in out
    page.wait_for_selector("#badge-conn[data-state=disconnected]")
    assert page.text_content("#badge-conn") == "已断开"
    assert page.is_visible("#view-offline")
    # no answer can be given to a station that is not there
    for b in ("#fb-confirm", "#fb-not", "#fb-wrong"):
        assert page.is_disabled(b), b
    picker = page.locator("#fb-classes button")
    assert picker.count() >= 2 and page.is_visible("#fb-classes")
    for i in range(picker.count()):
        assert picker.nth(i).is_disabled(), picker.nth(i).text_content()
    page.click("#back-live")  # the line's parts, when it is back
    before = page.get_attribute("#verdict", "data-inspection-id")
    screen.restart()
    page.wait_for_selector("#badge-conn[data-state=connected]", timeout=60_000)
    assert not page.is_visible("#view-offline")
    page.wait_for_function(
        "prev => document.getElementById('verdict').dataset.inspectionId !== prev", arg=before
    )
    _verdict_ids(page, 2)
    page.wait_for_selector("#fb-not:enabled")
