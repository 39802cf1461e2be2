"""Zones drawn on the picture, end to end: an engineer draws a polygon on the ``/zones``
page in a real browser (Playwright + Debian's Chromium), saves it, and it is the verdict
rules' zone in source pixels (API, settings row, audit row), judges the next frames,
is drawn on the live and stored pictures and outlives a restart. An operator cannot save.

Against a running ``kanjian serve`` on the demo (``station/demo/images`` looping, the
demo bundle), whose frames (416 px) the page shows enlarged: the clicks are mapped
back to source pixels by the page, and checked here against the same clicks mapped
independently (scripts/screenshots.py draws docs/zones.png).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from kanjian.inference.zone_drawing import ROI_BGR
from tests.support import api as S
from tests.support import web as W
from tests.support import zone_oracle as O
from tests.support.zone_oracle import Pt

#: the screen station's rules (tests/support/web.py): the demo gives PASS, REVIEW and FAIL
FAIL_AT = W.RULES["default"]["fail_confidence"]
REVIEW_AT = W.RULES["default"]["review_confidence"]
#: where the test clicks, as fractions of the shown picture: a pentagon in the top left
CLICKS = [(0.05, 0.05), (0.42, 0.07), (0.40, 0.36), (0.07, 0.33), (0.03, 0.18)]
DELETED = 4  # then removes the last point ...
MOVED, MOVED_TO = 2, (0.45, 0.40)  # ... and drags the third one
IGNORE = [(0.15, 0.12), (0.30, 0.14), (0.20, 0.28)]  # then an ignore zone inside

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)


@dataclass
class Site:
    """The screen's test station (tests/support/web.py) and an engineer's token."""

    screen: W.Screen
    engineer: str

    @property
    def served(self) -> Any:
        return self.screen.served

    @property
    def operator(self) -> str:
        return self.screen.token

    @property
    def page(self) -> Any:
        return self.screen.page

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.served.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.screen.sql(query, args)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("zones")
    with W.screen_station(tmp) as screen:
        yield Site(screen, S.make_token(tmp / "data", "engineer", "zone-engineer"))


def _open(site: Site, token: str) -> Any:
    page = site.page
    page.goto("about:blank")  # else a new #token= on the same page would not reload it
    page.goto(f"{site.served.url}/zones#token={token}")
    page.wait_for_selector("body[data-loaded='1']")
    page.wait_for_selector("#frame-box[data-ready='1']")
    return page


def _settings_and_audit(site: Site) -> tuple[Any, ...]:
    return (
        site.sql("SELECT * FROM settings"),
        site.sql("SELECT COUNT(*) FROM audit")[0][0],
    )


def test_an_operator_sees_the_page_but_cannot_save(site: Site) -> None:
    before = _settings_and_audit(site)
    page = _open(site, site.operator)
    assert page.is_disabled("#save")
    assert "工程师" in (page.text_content("#save-msg") or "")  # "needs an engineer token"
    zone = {"name": "x", "kind": "roi", "points": [[0, 0], [100, 0], [100, 100]]}
    with site.client(site.operator) as c:
        body = {"rules": {"zones": [zone]}}
        r = c.put("/api/thresholds", json=body)
        assert r.status_code == 403 and "role operator may not" in r.json()["detail"]
    assert _settings_and_audit(site) == before  # refused: nothing stored, nothing audited


def test_bad_zones_are_refused_with_the_zone_named(site: Site) -> None:
    before = _settings_and_audit(site)
    bow = {"name": "bow tie", "kind": "ignore", "points": [[0, 0], [50, 50], [50, 0], [0, 50]]}
    with site.client(site.engineer) as c:
        r = c.put("/api/thresholds", json={"rules": {"zones": [bow]}})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"][:4] == ["body", "rules", "zones", 0]
    assert "zone 'bow tie': edge 0-1 meets edge 2-3" in detail["msg"]
    assert _settings_and_audit(site) == before


def _click(page: Any, box: dict[str, float], fx: float, fy: float) -> tuple[float, float]:
    """Click at a fraction of the shown picture; returns the client position clicked."""
    x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    page.mouse.click(x, y)
    return x, y


def test_an_engineer_draws_a_zone_and_it_is_saved_in_source_pixels(site: Site) -> None:
    page = _open(site, site.engineer)
    with site.client(site.engineer) as c:
        r = c.get("/api/live/frame.jpg")
        src_w, src_h = int(r.headers["x-frame-width"]), int(r.headers["x-frame-height"])
        before = c.get("/api/thresholds").json()
    box = page.locator("#frame").bounding_box()
    assert box["width"] > 1.3 * src_w  # shown enlarged: the page must map the clicks

    def source(x: float, y: float) -> list[float]:
        return [(x - box["x"]) * src_w / box["width"], (y - box["y"]) * src_h / box["height"]]

    page.click("#new-roi")
    clicked = [_click(page, box, fx, fy) for fx, fy in CLICKS]
    _click(page, box, *CLICKS[0])  # the first point again closes the polygon
    page.wait_for_selector("#zone-list li.roi")
    assert page.locator("#shapes circle.handle").count() == len(CLICKS)
    # select the last point and delete it, then drag another
    _click(page, box, *CLICKS[DELETED])
    page.click("#delete-point")
    assert page.locator("#shapes circle.handle").count() == len(CLICKS) - 1
    page.mouse.move(*clicked[MOVED])
    page.mouse.down()
    moved_to = (box["x"] + MOVED_TO[0] * box["width"], box["y"] + MOVED_TO[1] * box["height"])
    page.mouse.move(*moved_to, steps=8)
    page.mouse.up()
    page.fill("#zone-list li .zone-name", "part")
    page.click("#new-ignore")
    ignored = [_click(page, box, fx, fy) for fx, fy in IGNORE]
    page.click("#close-poly")
    page.wait_for_selector("#zone-list li.ignore")
    page.click("#save")
    page.wait_for_selector("body[data-saved]")
    page.click("#lang")  # the language switch re-words the page, the zones stay
    assert page.text_content("#save") == "Save"
    assert page.locator("#shapes polygon.zone").count() == 2
    page.click("#lang")

    want = [source(*p) for p in clicked]
    want[MOVED] = source(*moved_to)
    del want[DELETED]
    with site.client(site.engineer) as c:
        th = c.get("/api/thresholds").json()
    zones = th["rules"]["zones"]
    assert [(z["name"], z["kind"]) for z in zones] == [("part", "roi"), ("ignore-1", "ignore")]
    for zone, points in zip(zones, (want, [source(*p) for p in ignored]), strict=True):
        got = np.array(zone["points"])
        assert got.shape == (len(points), 2)
        assert np.abs(got - np.array(points)).max() <= 1.0, (got, points)
    # the rest of the rules and thresholds are what they were
    assert th["rules"]["default"] == before["rules"]["default"]
    assert (th["conf"], th["iou"], th["max_det"]) == (
        before["conf"],
        before["iou"],
        before["max_det"],
    )
    assert (th["source"], th["set_by"]) == ("api", "zone-engineer")
    # stored and audited as exactly what the API says
    stored = json.loads(site.sql("SELECT value_json FROM settings WHERE key = 'thresholds'")[0][0])
    assert stored["rules"]["zones"] == zones
    actor, detail = site.sql(
        "SELECT actor, detail_json FROM audit WHERE action = 'thresholds.set' ORDER BY id DESC"
    )[0]
    audit = json.loads(detail)
    assert actor == "zone-engineer"
    assert audit["new"]["rules"]["zones"] == zones and audit["old"]["rules"]["zones"] == []


def _expected(dets: list[dict[str, Any]], roi: list[Pt], ignore: list[Pt]) -> str | None:
    """The verdict the rules give, by the slow reference; ``None`` when a detection's share
    lies too near a threshold to tell."""
    level = 0
    for d in dets:
        box = tuple(d["xyxy"])
        area = (box[2] - box[0]) * (box[3] - box[1])
        inside, on_ignore = O.area_in_box(roi, box) / area, O.area_in_box(ignore, box) / area
        if abs(inside - 0.5) < 1e-3 or abs(on_ignore - 0.5) < 1e-3:
            return None
        if inside >= 0.5 and on_ignore < 0.5:
            c = d["confidence"]
            level = max(level, 2 if c >= FAIL_AT else 1 if c >= REVIEW_AT else 0)
    return ("PASS", "REVIEW", "FAIL")[level]


def test_detections_outside_the_roi_no_longer_fail_a_part(site: Site) -> None:
    with site.client(site.engineer) as c:
        th = c.get("/api/thresholds").json()
        roi, ignore = ([tuple(p) for p in z["points"]] for z in th["rules"]["zones"])
        # frames captured a second after the change (one judged during the PUT is older)
        since = (datetime.fromisoformat(th["set_at"]) + timedelta(seconds=1)).isoformat()

        def judged_after() -> list[dict[str, Any]]:
            items = c.get("/api/inspections", params={"since": since, "limit": 200}).json()
            return items["items"] if len(items["items"]) >= 12 else []

        items = S.wait_for(judged_after, 120, what="12 inspections under the new rules")
        outside_fails = 0
        for item in items:
            full = c.get(f"/api/inspections/{item['id']}").json()
            want = _expected(full["detections"], roi, ignore)
            if want is None:
                continue
            assert full["verdict"] == want, (full["id"], full["detections"])
            would_fail = any(d["confidence"] >= FAIL_AT for d in full["detections"])
            outside_fails += would_fail and want != "FAIL"
    assert outside_fails > 0, "no part with a confident defect outside the ROI was seen"


def _on_outline(
    img: np.ndarray, roi: list[tuple[float, float]], dets: list[dict[str, Any]] | None = None
) -> tuple[float, int]:
    """Share of points along the ROI's edges whose pixel has the ROI's colour (as near as
    JPEG keeps it), and how many points were looked at: those away from the outlines and
    labels of the boxes drawn over the zone (``dets`` kept by the rules, source pixels)."""
    hits, n = 0, 0
    for (x0, y0), (x1, y1) in zip(roi, roi[1:] + roi[:1], strict=True):
        for t in np.linspace(0.05, 0.95, 19):
            x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            if any(_near_box(x, y, d["xyxy"]) for d in dets or [] if d["confidence"] >= REVIEW_AT):
                continue
            px = img[int(y), int(x)].astype(float)
            hits += np.abs(px - ROI_BGR).max() < 70
            n += 1
    return hits / max(n, 1), n


def _near_box(x: float, y: float, xyxy: list[float], d: float = 6) -> bool:
    x1, y1, x2, y2 = xyxy
    inside_out = x1 - d <= x <= x2 + d and y1 - d <= y <= y2 + d
    inside_in = x1 + d < x < x2 - d and y1 + d < y < y2 - d
    label = x1 - d <= x <= x1 + 160 and y1 - 24 <= y <= y1 + 24
    return (inside_out and not inside_in) or label


def _jpeg(c: httpx.Client, path: str) -> tuple[np.ndarray, httpx.Headers]:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR), r.headers


def test_the_pictures_show_the_zone(site: Site) -> None:
    with site.client(site.engineer) as c:
        roi = [tuple(p) for p in c.get("/api/thresholds").json()["rules"]["zones"][0]["points"]]
        # the live picture of a known inspection: the newest frame is the same before and
        # after it was fetched (the demo runs fast: try a few times)
        for _ in range(200):
            plain, h1 = _jpeg(c, "/api/live/frame.jpg")
            live, _ = _jpeg(c, "/api/live.jpg")
            _, h2 = _jpeg(c, "/api/live/frame.jpg")
            if h1["x-inspection-id"] == h2["x-inspection-id"]:
                break
        else:
            raise AssertionError("the live picture never held still for three requests")
        dets = c.get(f"/api/inspections/{h1['x-inspection-id']}").json()["detections"]
        assert live.shape == plain.shape  # the demo's 416 px frames are not shrunk
        share, n = _on_outline(live, roi, dets)
        assert share > 0.9 and n >= 10, (share, n)
        assert _on_outline(plain, roi)[0] < 0.1  # the frame the page draws on is left plain
        saved = c.get("/api/inspections", params={"verdict": ["FAIL", "REVIEW"]}).json()
        iid = next(i["id"] for i in saved["items"] if i["has_image"])
        dets = c.get(f"/api/inspections/{iid}").json()["detections"]
        drawn, _ = _jpeg(c, f"/api/inspections/{iid}/image?annotated=true")
        raw, _ = _jpeg(c, f"/api/inspections/{iid}/image")
    share, n = _on_outline(drawn, roi, dets)
    assert share > 0.9 and n >= 10, (share, n)
    assert _on_outline(raw, roi)[0] < 0.1


def test_zones_outlive_a_restart(site: Site) -> None:
    with site.client(site.engineer) as c:
        before = c.get("/api/thresholds").json()
    out = site.served.stop()
    assert site.served.proc.returncode == 0, out
    site.screen.restart()
    with site.client(site.engineer) as c:
        after = c.get("/api/thresholds").json()
    assert after == before and after["rules"]["zones"][0]["name"] == "part"
    page = _open(site, site.engineer)  # and the page shows them again
    assert page.locator("#zone-list li.roi .zone-name").input_value() == "part"
    assert page.locator("#shapes polygon.zone.roi").count() == 1
    assert page.locator("#shapes polygon.zone.ignore").count() == 1


def test_a_save_against_rules_changed_meanwhile_is_refused_by_the_server(site: Site) -> None:
    """The page loads the rules; someone else changes them; the page's save is refused by
    the server (409) with who changed them when, and what they set stays."""
    page = _open(site, site.engineer)
    other = S.make_token(site.screen.site / "data", "engineer", "other-engineer")
    with site.client(other) as c:
        now = c.get("/api/thresholds").json()
        body = {k: now[k] for k in ("conf", "iou", "max_det", "rules")}
        r = c.put("/api/thresholds", json={**body, "expected_set_at": now["set_at"]})
        assert r.status_code == 200, r.text
        theirs = r.json()
    before = _settings_and_audit(site)
    page.fill("#roi-share", "61")
    page.click("#save")
    page.wait_for_function(
        "() => document.getElementById('save-msg').textContent.includes('other-engineer')"
    )
    msg = page.text_content("#save-msg") or ""
    assert "规则在你打开本页后已被修改" in msg and theirs["set_at"] in msg
    assert page.get_attribute("body", "data-saved") != theirs["set_at"]
    assert _settings_and_audit(site) == before  # nothing stored, nothing audited
    with site.client(other) as c:
        assert c.get("/api/thresholds").json() == theirs


def test_an_engineer_on_the_pages_leaves_the_screens_operator_token(site: Site) -> None:
    """On the line PC: the screen runs with its operator token; an engineer logs into
    /history in another tab (by the form and by a #token= link). The engineer's token is
    kept for that tab only: localStorage `kanjian.token` and the screen's cookie stay the
    operator's, and an answer given on the screen afterwards is recorded under the
    operator."""
    # one browser profile, as on the line PC: the screen and the pages share its storage
    ctx = site.screen.browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    page.goto(f"{site.served.url}/#token={site.operator}")
    page.wait_for_selector("#badge-conn[data-state=connected]")
    stored = (
        "() => [localStorage.getItem('kanjian.token'), "
        "sessionStorage.getItem('kanjian.page_token')]"
    )
    assert page.evaluate(stored) == [site.operator, None]
    with site.client(site.operator) as c:
        operator = c.get("/api/whoami").json()["name"]

    tab = ctx.new_page()
    tab.goto(f"{site.served.url}/history")
    tab.wait_for_selector("#list-state[data-state=ready]")
    assert tab.get_attribute("body", "data-role") == "operator"  # reads with the screen's token
    tab.click("#logout")  # "log in" while the page has no token of its own
    tab.fill("#login-token", "kj_00000000_wrong")
    tab.click("#login-form button[type=submit]")
    tab.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
    tab.fill("#login-token", site.engineer)
    tab.click("#login-form button[type=submit]")
    tab.wait_for_selector("body[data-role=engineer]")
    assert tab.evaluate(stored) == [site.operator, site.engineer]
    assert tab.get_attribute("#logout", "data-login") == "logout"
    link = ctx.new_page()
    link.goto(f"{site.served.url}/shift#token={site.engineer}")
    link.wait_for_selector("body[data-role=engineer]")
    assert link.evaluate(stored) == [site.operator, site.engineer]
    # the cookie (what the screen's live view and events read with) is still the operator's
    whoami = "async () => (await (await fetch('/api/whoami')).json()).role"
    assert link.evaluate(whoami) == "operator"
    link.close()

    # an answer on the screen is the operator's
    page.bring_to_front()
    page.reload()
    page.wait_for_selector("#badge-conn[data-state=connected]")
    assert page.evaluate(stored)[0] == site.operator
    page.wait_for_selector("#thumbs .thumb")
    page.dispatch_event("#thumbs", "pointerdown")  # a finger on the strip holds it still
    page.locator("#thumbs .thumb").first.click()
    iid = page.get_attribute("#thumbs .thumb.selected", "data-inspection-id")
    page.click("#fb-confirm")
    page.wait_for_selector(f"#fb-result[data-inspection-id='{iid}']")
    rows = site.sql(
        "SELECT actor FROM feedback WHERE inspection_id = ? ORDER BY id DESC LIMIT 1", (iid,)
    )
    assert rows == [(operator,)]
    page.click("#back-live")

    # the history's detail says the reason as the screen does: where on the part in words
    tab.goto(f"{site.served.url}/history?verdict=FAIL")
    tab.wait_for_selector("#list-state[data-state=ready]")
    iid = tab.get_attribute("#rows tr", "data-inspection-id")
    tab.click("#rows tr")
    tab.wait_for_selector(f"#detail[data-state=ready][data-inspection-id='{iid}']")
    with site.client(site.engineer) as c:
        rec = c.get(f"/api/inspections/{iid}").json()
    assert rec["reason_code"] == "defect_fail" and rec["reason_params"]["where"]
    where = tab.evaluate("w => window.KANJIAN_I18N.zh.where[w]", rec["reason_params"]["where"])
    reason = tab.text_content("#d-reason") or ""
    assert where and where in reason and reason != rec["reason"], (reason, rec["reason"])
    tab.click("#d-close")

    # the engineer logs out of the tab: its token goes, the screen's stays
    tab.click("#logout")
    tab.wait_for_selector("body[data-role=operator]")
    assert tab.evaluate(stored) == [site.operator, None]
    ctx.close()
