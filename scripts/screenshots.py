"""Redraw the screenshots in docs/ from a running demo station (the README's first command).

Starts ``kanjian serve`` with no config (demo images looping, the bundled model,
default rules) on a free 127.0.0.1 port and a throw-away data folder, opens each
page of :data:`PAGES` in Debian's Chromium (Playwright) with the printed screen
token, in each language of :data:`LANGS` and at each size of :data:`SIZES`, and
saves ``docs/{page}-{lang}-{W}x{H}.png`` (colours reduced, so each stays small).

    .venv/bin/python scripts/screenshots.py [--only screen] [--only zones] [--only trends]
                                            [--only fleet] [--out docs]

Every picture in docs/ is drawn here, nowhere else: ``zones`` is ``docs/zones.png``
(the zones page on the same demo station, an ROI and an ignore zone set through the
API, in English at 1280x900); ``trends`` is ``docs/history.png`` and ``docs/shift.png``
(and their ``-en`` twins), drawn from the history tests' station with known rows
(tests/support/trends_station.py), not the demo, as an engineer sees them; ``fleet`` is
``docs/fleet.png`` and ``docs/fleet-station.png``: ``kanjian platform serve`` over a
platform holding 48 hours of three firms' stations (tests/support/fleet_platform.py:
PostgreSQL, Mosquitto, the receiver, SeaweedFS with NEU-DET pictures), the fleet page as
a cluster admin (Chinese, with the page tests' staged rollouts) and one station's page
as a viewer of its firm (English).

A new page is one row of :data:`PAGES`: its name, its path, and a function that
waits until the page is worth a picture.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import api as S  # noqa: E402  (the test suite's serve + Chromium helpers)

#: the zones drawn for docs/zones.png, as fractions of the frame: a pentagon and a triangle
ZONE_ROI = [(0.05, 0.05), (0.42, 0.07), (0.45, 0.40), (0.07, 0.33), (0.03, 0.18)]
ZONE_IGNORE = [(0.15, 0.12), (0.30, 0.14), (0.20, 0.28)]


def ready_screen(page: Any) -> None:
    """The operator's screen with a FAIL shown large (its thumbnail tapped, so it stays),
    the strip full of loaded pictures and the live view running."""
    page.wait_for_selector("#badge-conn[data-state=connected]")
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb.v-FAIL img').length")
    page.dispatch_event("#thumbs", "pointerdown")  # a touch holds the strip still
    page.locator("#thumbs .thumb.v-FAIL").first.click()
    page.wait_for_function(
        "() => { const v = document.getElementById('verdict');"
        " const t = document.querySelector('#thumbs .thumb.selected');"
        " const img = document.querySelector('#picture img');"
        " return t && v.dataset.inspectionId === t.dataset.inspectionId"
        " && img && img.complete && img.naturalWidth > 0; }"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#thumbs img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
        " && document.getElementById('live').naturalWidth > 0"
    )
    page.wait_for_timeout(300)  # fonts and the last thumbnails settle


@dataclass(frozen=True)
class Page:
    """One page to draw: ``docs/{name}-{lang}-{W}x{H}.png``."""

    name: str
    path: str
    ready: Callable[[Any], None]


#: the pages drawn (add the history and shift pages here)
PAGES: tuple[Page, ...] = (Page("screen", "/", ready_screen),)
LANGS: tuple[str, ...] = ("zh", "en")
SIZES: tuple[tuple[int, int], ...] = ((1920, 1080), (1024, 768))


def small_png(png: bytes, colours: int = 64) -> bytes:
    """``png`` with its colours reduced to ``colours`` (a palette PNG: a few hundred KB
    instead of a few MB for a screen full of photographs)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True
    )
    return out.getvalue()


def shoot(
    browser: Any, url: str, token: str, page_def: Page, lang: str, size: tuple[int, int]
) -> bytes:
    """One page in one language at one size, as PNG bytes (full colour)."""
    w, h = size
    ctx = browser.new_context(
        viewport={"width": w, "height": h}, locale="zh-CN" if lang == "zh" else "en-GB"
    )
    try:
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{url}{page_def.path}#token={token}")
        page.evaluate("lang => localStorage.setItem('kanjian.lang', lang)", lang)
        page.reload()
        page_def.ready(page)
        png: bytes = page.screenshot()
        return png
    finally:
        ctx.close()


def shoot_zones(browser: Any, url: str, data: Path, out: Path) -> None:
    """docs/zones.png: an engineer's /zones with an ROI and an ignore zone (set through
    ``PUT /api/thresholds``, audited like any change), one selected, in English."""
    import httpx

    token = S.make_token(data, "engineer", "screenshots")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        frame = c.get("/api/live/frame.jpg")
        frame.raise_for_status()
        w, h = int(frame.headers["x-frame-width"]), int(frame.headers["x-frame-height"])
        th = c.get("/api/thresholds").json()
        rules = th["rules"] or th["bundle_defaults"]["rules"]

        def zone(name: str, kind: str, pts: list[tuple[float, float]]) -> dict[str, Any]:
            return {"name": name, "kind": kind, "points": [[x * w, y * h] for x, y in pts]}

        rules["zones"] = [zone("part", "roi", ZONE_ROI), zone("ignore-1", "ignore", ZONE_IGNORE)]
        body = {k: th[k] for k in ("conf", "iou", "max_det")}
        c.put("/api/thresholds", json={**body, "rules": rules}).raise_for_status()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        ctx.add_init_script("localStorage.setItem('kanjian.lang', 'en')")
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{url}/zones#token={token}")
        page.wait_for_selector("#frame-box[data-ready='1']")
        page.click("#zone-list li.roi")  # selected: its handles show
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "zones.png"))
        print(f"wrote {out / 'zones.png'}")
    finally:
        ctx.close()


def shoot_trends(browser: Any, out: Path, langs: tuple[str, ...] = LANGS) -> None:
    """docs/shift.png and docs/history.png (``-en`` twins) at 1920x1080 from a station with
    known rows: the shift view over the whole span (full page), the history page with
    one FAIL open large, as an engineer sees them."""
    from urllib.parse import urlencode

    from tests.support import trends_station as TS

    window = urlencode({"since": TS.FIRST.isoformat(), "until": TS.LAST.isoformat()})
    with tempfile.TemporaryDirectory(prefix="kanjian-trends-shot-") as tmp:
        st = TS.start(Path(tmp))
        try:
            for lang in langs:
                suffix = "" if lang == "zh" else f"-{lang}"
                ctx = browser.new_context(
                    viewport={"width": 1920, "height": 1080},
                    locale="zh-CN" if lang == "zh" else "en-GB",
                    timezone_id=TS.ZONE_NAME,
                )
                ctx.add_init_script(f"localStorage.setItem('kanjian.lang', '{lang}')")
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                token = st.tokens["engineer"]
                page.goto(f"{st.url}/shift?{window}#token={token}")
                page.wait_for_selector("#state[data-state=ready]")
                page.screenshot(path=str(out / f"shift{suffix}.png"), full_page=True)
                page.goto(f"{st.url}/history?verdict=FAIL&feedback=any")
                page.wait_for_selector("#list-state[data-state=ready]")
                page.click("#rows tr")
                page.wait_for_selector("#detail[data-image=loaded]")
                page.wait_for_selector("#d-audit[data-state=ready]")
                page.screenshot(path=str(out / f"history{suffix}.png"))
                ctx.close()
                print(f"wrote shift{suffix}.png, history{suffix}.png in {out}")
        finally:
            log = st.served.stop()
        if st.served.proc.returncode not in (0, None):
            raise SystemExit(log)


def shoot_fleet(browser: Any, out: Path) -> None:
    """docs/fleet.png (the fleet page, a cluster-wide admin, Chinese) and
    docs/fleet-station.png (a station with a bad hour, a viewer of its firm, English)."""
    from tests.support.fleet_platform import running_fleet
    from tests.support.fleet_rollouts import seed

    images = S.NEU_IMAGES if S.NEU_IMAGES.is_dir() else None
    with (
        tempfile.TemporaryDirectory(prefix="kanjian-fleet-shot-") as tmp,
        running_fleet(Path(tmp), hours=48, per_hour=30, images_dir=images) as fp,
    ):
        seed(fp.pg.url)  # staged rollouts in the table (the fleet page tests' own rows)
        shots = (("fleet.png", "/", "admin", "zh"),
                 ("fleet-station.png", "/station/sz-01/L1/L1-b", "viewer-acme", "en"))  # fmt: skip
        for name, path, token, lang in shots:
            ctx = browser.new_context(viewport={"width": 1600, "height": 1000},
                                      locale="zh-CN" if lang == "zh" else "en-GB",
                                      timezone_id="Asia/Shanghai")  # fmt: skip
            ctx.add_init_script(f"localStorage.setItem('kanjian.lang', '{lang}')")
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{fp.url}{path}#token={fp.tokens[token]}")
            page.wait_for_selector("#state[data-state=ready]")
            page.wait_for_function(
                "() => [...document.querySelectorAll('#pictures img')]"
                ".every((i) => i.complete && i.naturalWidth > 0)"
            )
            png = small_png(page.screenshot(full_page=True), colours=128)
            (out / name).write_bytes(png)
            print(f"wrote {out / name} ({len(png) // 1024} KiB)")
            ctx.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    ap.add_argument(
        "--only",
        action="append",
        help="screen, zones, trends or fleet (default: all); repeatable",
    )
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    wanted = lambda name: not args.only or name in args.only  # noqa: E731
    pages = [p for p in PAGES if wanted(p.name)]
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
        )
        if pages or wanted("zones"):
            with tempfile.TemporaryDirectory(prefix="kanjian-shots-") as tmp:
                served = S.start_serve(None, S.free_port(), Path(tmp))  # no config: the default
                try:
                    if not served.token:
                        raise SystemExit("the first start printed no screen token")
                    for p in pages:
                        for lang in LANGS:
                            for size in SIZES:
                                png = small_png(
                                    shoot(browser, served.url, served.token, p, lang, size)
                                )
                                dest = args.out / f"{p.name}-{lang}-{size[0]}x{size[1]}.png"
                                dest.write_bytes(png)
                                print(f"wrote {dest} ({len(png) // 1024} KiB)")
                    if wanted("zones"):  # last: its zones change the station's verdicts
                        data = next(Path(tmp).rglob("kanjian.db")).parent
                        shoot_zones(browser, served.url, data, args.out)
                finally:
                    log = served.stop()
                if served.proc.returncode not in (0, None):
                    print(log, file=sys.stderr)
                    return 1
        if wanted("trends"):
            shoot_trends(browser, args.out)
        if wanted("fleet"):
            shoot_fleet(browser, args.out)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
