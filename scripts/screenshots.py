"""Redraw the screenshots in docs/ from a running demo station (the README's first command).

Starts ``kanjian serve`` with no config (demo images looping, the bundled model,
default rules) on a free 127.0.0.1 port and a throw-away data folder, opens each
page of :data:`PAGES` in Debian's Chromium (Playwright) with the printed screen
token, in each language of :data:`LANGS` and at each size of :data:`SIZES`, and
saves ``docs/{page}-{lang}-{W}x{H}.png`` (colours reduced, so each stays small).

    .venv/bin/python scripts/screenshots.py [--only screen] [--only trends] [--out docs]

``trends`` (the history and shift pages, drawn from a station with known rows, not the
demo) runs ``scripts/screenshot_trends.py``; the zones page is drawn by its test
(``KANJIAN_UPDATE_SCREENSHOT=1 pytest tests/test_web_zones.py``).

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    ap.add_argument("--only", action="append", help="page name(s) to draw (default: all)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    pages = [p for p in PAGES if not args.only or p.name in args.only]
    if pages:
        with tempfile.TemporaryDirectory(prefix="kanjian-shots-") as tmp:
            served = S.start_serve(None, S.free_port(), Path(tmp))  # no config: the default
            try:
                if not served.token:
                    raise SystemExit("the first start printed no screen token")
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(
                        executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
                    )
                    args.out.mkdir(parents=True, exist_ok=True)
                    for p in pages:
                        for lang in LANGS:
                            for size in SIZES:
                                png = small_png(
                                    shoot(browser, served.url, served.token, p, lang, size)
                                )
                                dest = args.out / f"{p.name}-{lang}-{size[0]}x{size[1]}.png"
                                dest.write_bytes(png)
                                print(f"wrote {dest} ({len(png) // 1024} KiB)")
                    browser.close()
            finally:
                out = served.stop()
            if served.proc.returncode not in (0, None):
                print(out, file=sys.stderr)
                return 1
    if not args.only or "trends" in args.only:
        import subprocess

        trends = [sys.executable, str(REPO / "scripts" / "screenshot_trends.py")]
        return subprocess.run([*trends, "--out", str(args.out)], check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
