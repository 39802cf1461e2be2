"""The operator's screen in a real browser: a ``kanjian serve`` of the demo at full rate
and a Chromium page on it (Playwright, Debian's Chromium, headless).

Shared by tests/test_web.py and tests/test_screen_web.py (this module holds no tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import api as S
from tests.support.station_config import merge, station_config, write_config

#: how long a defect stays large on the test station (api.screen_hold_s), seconds
HOLD_S = 2.0
#: the demo bundle ships with the package (its scores do not move with Ultralytics):
#: under these rules its 12 images give 2 PASS (crazing), 2 REVIEW (patches_14 at 0.42,
#: scratches_13 at 0.31) and 8 FAIL
RULES = {"default": {"fail_confidence": 0.5, "review_confidence": 0.2}}


@dataclass
class Screen:
    """A served demo station and a browser page; ``db`` is its SQLite file."""

    site: Path
    config: Path
    port: int
    served: Any
    token: str
    browser: Any
    page: Any

    @property
    def db(self) -> Path:
        return self.site / "data" / "kanjian.db"

    def restart(self) -> None:
        self.served = S.start_serve(self.config, self.port, self.site)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return S.sql(self.db, query, args)

    def stored(self, iid: str) -> dict[str, Any]:
        """``GET /api/inspections/{iid}``."""
        r = httpx.get(
            f"{self.served.url}/api/inspections/{iid}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert r.status_code == 200, r.text
        row: dict[str, Any] = r.json()
        return row

    def open(self, query: str = "", lang: str = "zh") -> None:
        """(Re)load the screen with the operator's link, ``query`` added to its address,
        in ``lang``, and wait until it is connected."""
        page = self.page
        page.goto(f"{self.served.url}/{query}#token={self.token}")
        if page.evaluate("() => localStorage.getItem('kanjian.lang') || 'zh'") != lang:
            page.evaluate("lang => localStorage.setItem('kanjian.lang', lang)", lang)
            page.reload()
        page.wait_for_selector("#badge-conn[data-state=connected]")


@contextmanager
def screen_station(
    tmp: Path, sections: dict[str, Any] | None = None, **api: Any
) -> Iterator[Screen]:
    """The demo (its 12 images looping as fast as the model judges them, the demo bundle)
    served on a free port with ``api`` settings, and a 1280x800 Chromium page.
    ``sections``: more of station.yaml, merged over that (e.g. ``model``, ``sync``)."""
    from playwright.sync_api import sync_playwright

    from kanjian.inference.bundle import read_manifest
    from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL

    read_manifest(DEMO_MODEL)  # the screen is tested on what a new user sees: the demo bundle
    port = S.free_port()
    config = write_config(
        tmp / "station.yaml",
        merge(
            station_config(
                tmp / "data",
                bundle=DEMO_MODEL,
                images=DEMO_IMAGES,
                camera={"loop": True},
                rules=RULES,
                api={"port": port, "screen_hold_s": HOLD_S, **api},
            ),
            sections or {},
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
        scr = Screen(tmp, config, port, served, served.token, browser, page)
        try:
            yield scr
        finally:
            browser.close()
            print(scr.served.stop())
