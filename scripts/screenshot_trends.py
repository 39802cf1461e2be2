"""Redraw docs/history.png and docs/shift.png (and their -en twins) from a station with known rows.

Builds the history tests' station (tests/support/trends_station.py: ~800 rows over two
and a half days in Shanghai time, feedback given through the API), serves it with
``kanjian serve``, and saves in Debian's Chromium (Playwright) at 1920x1080: the shift
view over the whole span (full page) and the history page with one FAIL open large,
as an engineer sees them.

    .venv/bin/python scripts/screenshot_trends.py [--out docs] [--lang zh en]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import api as S  # noqa: E402  (the test suite's serve + Chromium helpers)
from tests.support import trends_station as TS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    ap.add_argument("--lang", nargs="+", default=["zh", "en"], choices=["zh", "en"])
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    window = urlencode({"since": TS.FIRST.isoformat(), "until": TS.LAST.isoformat()})
    with tempfile.TemporaryDirectory(prefix="kanjian-trends-shot-") as tmp:
        st = TS.start(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
                )
                args.out.mkdir(parents=True, exist_ok=True)
                for lang in args.lang:
                    suffix = "" if lang == "zh" else f"-{lang}"
                    ctx = browser.new_context(
                        viewport={"width": 1920, "height": 1080},
                        locale="zh-CN" if lang == "zh" else "en-GB",
                        timezone_id=TS.ZONE_NAME,
                    )
                    ctx.add_init_script(f"localStorage.setItem('kanjian.lang', '{lang}')")
                    page = ctx.new_page()
                    token = st.tokens["engineer"]
                    page.goto(f"{st.url}/shift?{window}#token={token}")
                    page.wait_for_selector("#state[data-state=ready]")
                    page.screenshot(path=str(args.out / f"shift{suffix}.png"), full_page=True)
                    page.goto(f"{st.url}/history?verdict=FAIL&feedback=any")
                    page.wait_for_selector("#list-state[data-state=ready]")
                    page.click("#rows tr")
                    page.wait_for_selector("#detail[data-image=loaded]")
                    page.wait_for_selector("#d-audit[data-state=ready]")
                    page.screenshot(path=str(args.out / f"history{suffix}.png"))
                    ctx.close()
                browser.close()
        finally:
            out = st.served.stop()
        if st.served.proc.returncode not in (0, None):
            print(out, file=sys.stderr)
            return 1
    print(
        f"wrote {', '.join(f'{n}.png' for n in ('shift', 'history'))} ({' '.join(args.lang)}) in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
