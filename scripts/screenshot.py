"""Redraw docs/screenshot.png from the embedded default station (the README's first command).

Starts ``kanjian serve`` with no config (demo images, bundled model, default
rules) on a free 127.0.0.1 port and a throw-away data folder, opens the
operator's screen in Debian's Chromium (Playwright) with the printed screen
token, waits until the strip of recent defects is full, and saves the page.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--lang zh-CN]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import api as S  # noqa: E402  (the test suite's serve + Chromium helpers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    ap.add_argument("--lang", default="zh-CN")
    ap.add_argument("--settle-ms", type=int, default=8000, help="let the strip fill first")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kanjian-shot-") as tmp:
        port = S.free_port()
        served = S.start_serve(None, port, Path(tmp))  # no config: the embedded default
        try:
            assert served.token, "the first start prints a screen token"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800}, locale=args.lang)
                page.goto(f"{served.url}/#token={served.token}")
                page.wait_for_selector("#badge-conn[data-state=connected]")
                page.wait_for_timeout(args.settle_ms)
                page.dispatch_event("#thumbs", "pointerdown")  # a touch holds the strip still
                page.wait_for_timeout(700)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#thumbs img')].length > 0 && "
                    "[...document.querySelectorAll('#thumbs img')]"
                    ".every(i => i.complete && i.naturalWidth)"
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            out = served.stop()
        if served.proc.returncode not in (0, None):
            print(out, file=sys.stderr)
            return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
