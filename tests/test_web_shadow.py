"""The shadow panel of the engineer's models page (``/models``) in a real browser
(Playwright + Debian's Chromium) against a running ``kanjian serve`` of the demo: an
operator may look but not act; an engineer loads a registered model (the test detect
model, another trained model than the demo's) as shadow and sees its counts, has a
promotion refused with the gate's reasons shown, and stops it. What the page shows is
held to the API and the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import api as S
from tests.support import web as W

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)

MIN_FRAMES = 100_000  # never reached here: a promotion is refused


@pytest.fixture(scope="module")
def screen(
    tmp_path_factory: pytest.TempPathFactory, detect_model: Any
) -> Iterator[tuple[W.Screen, str, str]]:
    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("shadow-web")
    with W.screen_station(tmp, sections={"shadow": {"promote_min_frames": MIN_FRAMES}}) as scr:
        eng = S.make_token(tmp / "data", "engineer", "web-engineer")
        r = httpx.post(
            f"{scr.served.url}/api/models",
            content=S.pack(bundles.a),
            headers={"Authorization": f"Bearer {eng}"},
            timeout=300,
        )
        assert r.status_code == 201, r.text
        yield scr, eng, bundles.sha_a


def _open(scr: W.Screen, token: str) -> Any:
    page = scr.page
    page.goto("about:blank")  # else a new #token= on the same page would not reload it
    page.goto(f"{scr.served.url}/models#token={token}")
    page.wait_for_selector("body[data-loaded='1']")
    return page


def _api(scr: W.Screen, token: str) -> Any:
    r = httpx.get(
        f"{scr.served.url}/api/shadow", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_an_operator_sees_the_panel_but_cannot_act(screen: tuple[W.Screen, str, str]) -> None:
    scr, _, sha = screen
    page = _open(scr, scr.token)
    assert page.text_content("h1") == "模型"
    assert page.get_attribute("#shadow-panel", "data-state") == "none"
    assert page.text_content("#shadow-none") == "未加载影子模型"
    assert page.text_content("#active-model").startswith("neu-det-s4 v1.2")
    for sel in ("#shadow-pick", "#shadow-load", "#shadow-stop", "#shadow-promote"):
        assert page.is_disabled(sel), sel
    assert page.text_content("#shadow-msg") == "只读：保存需要工程师令牌"
    # the registered other model is offered, the active one is not
    values = page.eval_on_selector_all("#shadow-pick option", "os => os.map(o => o.value)")
    assert values == ["", sha]


def test_an_engineer_loads_a_shadow_sees_its_counts_is_refused_and_stops_it(
    screen: tuple[W.Screen, str, str],
) -> None:
    scr, eng, sha = screen
    page = _open(scr, eng)
    page.select_option("#shadow-pick", sha)
    page.click("#shadow-load")
    page.wait_for_selector(f"#shadow-panel[data-state='loaded'][data-sha='{sha}']", timeout=120_000)
    assert page.text_content("#shadow-msg") == "已加载影子模型"
    assert page.text_content("#shadow-model") == f"neu-detect v1.0 ({sha[:12]})"
    # counts move as the demo loops; what is shown is what the API said a moment before
    page.wait_for_function(
        "() => Number(document.getElementById('n-judged').textContent) >= 3", timeout=180_000
    )
    shown = {
        k: int(page.text_content(f"#n-{k}") or "-1")
        for k in ("offered", "judged", "skipped", "errors")
    }
    now = _api(scr, eng)["shadow"]
    assert all(0 <= shown[k] <= now[k] for k in shown), (shown, now)
    assert page.get_attribute("#shadow-mode", "data-mode") in ("every frame", "sampling")
    assert re.fullmatch(
        r"影子模型耗时：平均 [\d.]+ ms，p95 [\d.]+ ms", page.text_content("#shadow-latency") or ""
    )
    assert page.text_content("#gate-verdict") == "尚不满足提升条件"
    # a promotion the gate refuses: its reasons, as the station words them
    page.click("#shadow-promote")
    page.wait_for_selector("#promote-reasons:not([hidden]) li")
    assert page.text_content("#shadow-msg") == "提升被拒绝："
    reasons = page.eval_on_selector_all("#promote-reasons li", "ls => ls.map(l => l.textContent)")
    m = re.fullmatch(rf"frames seen (\d+) < {MIN_FRAMES}", reasons[0])
    assert m, reasons
    (audit,) = scr.sql("SELECT detail_json FROM audit WHERE action = 'shadow.promote_refused'")
    assert f'"frames": {m[1]}' in audit[0]
    active = httpx.get(
        f"{scr.served.url}/api/status", headers={"Authorization": f"Bearer {eng}"}, timeout=60
    ).json()["model"]["sha256"]
    assert active != sha  # still the demo's model
    # stop it: the panel says none, the session ended by this engineer
    page.click("#shadow-stop")
    page.wait_for_selector("#shadow-panel[data-state='none']")
    assert page.text_content("#shadow-msg") == "已停止影子模型"
    assert scr.sql("SELECT end_reason, ended_by FROM shadow_sessions") == [
        ("stopped", "web-engineer")
    ]
    assert _api(scr, eng)["shadow"] is None
    # in English too
    page.click("#lang")
    assert page.text_content("#shadow-none") == "No shadow model loaded"
    assert page.text_content("#shadow-load") == "Load as shadow"
