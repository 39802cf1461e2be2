"""The operator's screen in a real browser (Playwright + Debian's Chromium, headless).

Against a running ``kanjian serve`` on the demo source (``station/demo/images``
looping, the demo bundle): the verdict follows the frames, "not a defect" is
stored, the language switches, and the page says it is disconnected when the
server stops and recovers by itself when it returns. Takes a screenshot of the
screen (into docs/screenshot.png with KANJIAN_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kanjian.inference.verdict import REASON_CODES, explain_reason
from tests.support import api as S  # the servers and bundles tests share
from tests.support.station_config import station_config, write_config

#: the README's picture; a plain test run writes to a temp file instead, so the
#: suite never changes tracked files (KANJIAN_UPDATE_SCREENSHOT=1 refreshes it)
SCREENSHOT = S.REPO / "docs" / "screenshot.png"
ZH_VERDICTS = {"合格", "不合格", "复检", "错误", "漏检"}
EN_VERDICTS = {"PASS", "FAIL", "REVIEW", "ERROR", "MISSED"}

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)


@dataclass
class Screen:
    site: Path
    config: Path
    port: int
    served: Any
    token: str
    page: Any

    def restart(self) -> None:
        self.served = S.start_serve(self.config, self.port, self.site)


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screen]:
    from playwright.sync_api import sync_playwright

    from kanjian.inference.bundle import read_manifest
    from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL

    tmp = tmp_path_factory.mktemp("web")
    read_manifest(DEMO_MODEL)  # the screen is tested on what a new user sees: the demo bundle
    port = S.free_port()
    # the demo bundle ships with the package (its scores do not move with Ultralytics):
    # these rules give its images a mix of PASS, REVIEW and FAIL
    rules = {"default": {"fail_confidence": 0.1, "review_confidence": 0.05}}
    config = write_config(
        tmp / "station.yaml",
        station_config(
            tmp / "data",
            bundle=DEMO_MODEL,
            images=DEMO_IMAGES,
            camera={"loop": True},
            rules=rules,
            api={"port": port},
        ),
    )
    served = S.start_serve(config, port, tmp)
    assert served.token, "the first start prints a screen token"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        page.set_default_timeout(30_000)
        # predicates are written as functions: the page's CSP forbids eval of expressions
        scr = Screen(tmp, config, port, served, served.token, page)
        try:
            yield scr
        finally:
            browser.close()
            print(scr.served.stop())


def _verdict_ids(page: Any, n: int) -> list[str]:
    """Wait until the big verdict has shown ``n`` different inspections; return them."""
    seen: list[str] = []
    for _ in range(n):
        prev = seen[-1] if seen else ""
        page.wait_for_function(
            "prev => { const v = document.getElementById('verdict');"
            " return v.dataset.id && v.dataset.id !== prev; }",
            arg=prev,
        )
        seen.append(page.get_attribute("#verdict", "data-id"))
    return seen


def test_first_visit_takes_the_token_from_the_link_and_connects(screen: Screen) -> None:
    page = screen.page
    page.goto(f"{screen.served.url}/#token={screen.token}")
    page.wait_for_selector("#badge-conn[data-state=connected]")
    assert "#token" not in page.url  # the secret does not stay in the address bar
    assert page.evaluate("localStorage.getItem('kanjian.token')") == screen.token
    assert page.get_attribute("html", "lang") == "zh-CN"  # Chinese first


def test_verdict_changes_as_frames_arrive(screen: Screen) -> None:
    page = screen.page
    ids = _verdict_ids(page, 4)
    assert len(set(ids)) == 4
    assert page.text_content("#verdict-word") in ZH_VERDICTS
    verdict = page.get_attribute("#verdict", "data-verdict")
    assert verdict in EN_VERDICTS
    # the screen shows what the store holds
    r = httpx.get(
        f"{screen.served.url}/api/inspections/{ids[-1]}",
        headers={"Authorization": f"Bearer {screen.token}"},
    )
    assert r.status_code == 200
    counts = [int(page.text_content(f"#n-{v}") or "0") for v in ("pass", "fail", "review")]
    page.wait_for_function(
        "before => ['pass','fail','review'].reduce("
        "(s, v) => s + +document.getElementById('n-' + v).textContent, 0) > before",
        arg=sum(counts),
    )
    assert re.fullmatch(r"\d+\.\d%", page.text_content("#yield") or "")
    page.wait_for_function("() => document.getElementById('live').naturalWidth > 0")
    assert page.text_content("#model-name")


def test_a_held_defect_shows_its_own_picture(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#badge-conn[data-state=connected]")
    # the big verdict is a defect, and the view shows that very inspection's saved picture
    page.wait_for_function(
        "() => { const v = document.getElementById('verdict');"
        " const h = document.getElementById('held');"
        " return ['FAIL', 'REVIEW'].includes(v.dataset.verdict) && !h.hidden"
        " && h.dataset.id === v.dataset.id && h.complete && h.naturalWidth > 0; }"
    )
    # read together (the line goes on: the next defect may replace both a moment later)
    held_id, src = page.evaluate(
        "() => { const h = document.getElementById('held'); return [h.dataset.id, h.src]; }"
    )
    assert f"/api/inspections/{held_id}/image" in src and "annotated=true" in src


def test_not_a_defect_tap_changes_the_stored_row(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#thumbs .thumb")
    page.locator("#thumbs .thumb").first.click()  # pins it as the feedback target
    iid = page.get_attribute("#thumbs .thumb.selected", "data-id")
    assert iid and page.get_attribute("#fb-target", "data-id") == iid
    page.click("#fb-not")
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-id='{iid}']")
    assert "已记录" in (page.text_content("#fb-result") or "")
    row = httpx.get(
        f"{screen.served.url}/api/inspections/{iid}",
        headers={"Authorization": f"Bearer {screen.token}"},
    ).json()
    assert row["verdict"] in ("FAIL", "REVIEW")
    assert row["feedback"]["kind"] == "not_defect"
    assert row["feedback"]["actor"] == "screen"


def _reason_line(page: Any, codes: list[str]) -> dict[str, str]:
    """Wait until the reason under the big verdict has one of ``codes``; return the
    inspection id, code and text read together (the next frame may replace them)."""
    page.wait_for_function(
        "codes => codes.includes(document.getElementById('verdict-reason').dataset.code)",
        arg=codes,
    )
    line: dict[str, str] = page.evaluate(
        "() => { const r = document.getElementById('verdict-reason');"
        " return { id: document.getElementById('verdict').dataset.id,"
        " code: r.dataset.code, text: r.textContent }; }"
    )
    return line


def _stored(screen: Screen, iid: str) -> dict[str, Any]:
    r = httpx.get(
        f"{screen.served.url}/api/inspections/{iid}",
        headers={"Authorization": f"Bearer {screen.token}"},
    )
    assert r.status_code == 200
    row: dict[str, Any] = r.json()
    return row


def test_language_switch(screen: Screen) -> None:
    page = screen.page
    assert page.text_content("#defects-title") == "最近缺陷"
    assert page.text_content("#fb-not") == "不是缺陷"
    # the reason under the verdict is Chinese too: a defect's reason names the class in
    # Chinese and keeps only numbers (confidence, box) from the English sentence
    zh_classes: dict[str, str] = page.evaluate("() => window.KANJIAN_I18N.zh.classes")
    zh = _reason_line(page, ["defect_fail", "defect_review"])
    row = _stored(screen, zh["id"])
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
    assert page.text_content("#defects-title") == "Last defects"
    assert page.text_content("#fb-not") == "Not a defect"
    page.wait_for_function(
        "words => words.includes(document.getElementById('verdict-word').textContent)",
        arg=sorted(EN_VERDICTS),
    )
    # in English the screen says what the store says, word for word
    en = _reason_line(page, list(REASON_CODES))
    assert en["text"] == _stored(screen, en["id"])["reason"]
    assert not re.search(r"[\u4e00-\u9fff]", en["text"]), en["text"]
    page.reload()  # the choice is remembered
    page.wait_for_selector("#badge-conn[data-state=connected]")
    assert page.text_content("#defects-title") == "Last defects"
    page.click("#lang")
    assert page.text_content("#defects-title") == "最近缺陷"
    assert page.text_content("#badge-conn") == "已连接"


def test_screenshot(screen: Screen, tmp_path: Path) -> None:
    shot = SCREENSHOT if os.environ.get("KANJIAN_UPDATE_SCREENSHOT") == "1" else tmp_path / "s.png"
    page = screen.page
    page.wait_for_selector("#badge-conn[data-state=connected]")
    page.wait_for_function("() => document.getElementById('live').naturalWidth > 0")
    page.dispatch_event("#thumbs", "pointerdown")  # a touch holds the strip still
    page.wait_for_timeout(700)  # a strip update already scheduled lands, then none
    page.wait_for_function(
        "() => [...document.querySelectorAll('#thumbs img')].length > 0 && "
        "[...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth)"
    )
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000


def test_shows_disconnected_and_recovers(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#badge-conn[data-state=connected]")
    out = screen.served.stop()
    assert "store flushed" in out
    page.wait_for_selector("#badge-conn[data-state=disconnected]")
    assert page.text_content("#badge-conn") == "已断开"
    assert page.is_visible("#view-offline")
    before = page.get_attribute("#verdict", "data-id")
    screen.restart()
    page.wait_for_selector("#badge-conn[data-state=connected]", timeout=60_000)
    assert not page.is_visible("#view-offline")
    page.wait_for_function(
        "prev => document.getElementById('verdict').dataset.id !== prev", arg=before
    )
    _verdict_ids(page, 2)
