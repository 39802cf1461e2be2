"""The screen's own CJK font ("Kanjian Sans", static/fonts): it holds every character the
app shows, built from the committed charset.txt into the bytes its README records; the
app serves it under its CSP, and Chromium renders Chinese with it on a machine whose
fontconfig has no CJK font at all (only DejaVu, as a fresh Debian).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from kanjian.inference.bundle import read_manifest
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from tests.support import api as S
from tests.support.station_config import station_config, write_config

FONTS = S.REPO / "appliance_api" / "http" / "static" / "fonts"
FACES = ("KanjianSans-Regular.woff2", "KanjianSans-Bold.woff2")
#: CJK ideographs, CJK punctuation, full-width forms: what DejaVu lacks
CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)


def _make_font() -> ModuleType:
    """scripts/make_font.py as a module: its scan of the app's texts and charset.txt."""
    spec = importlib.util.spec_from_file_location("make_font", S.REPO / "scripts" / "make_font.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MF = _make_font()


def test_every_character_the_app_shows_is_in_charset_txt_and_both_faces() -> None:
    from fontTools.ttLib import TTFont

    texts = {str(p.relative_to(S.REPO)): t for p, t in MF.app_texts()}
    # the scan sees the screen's words, the demo bundle's names and the Python strings
    assert CJK.search(texts["appliance_api/http/static/i18n.js"])
    names = read_manifest(DEMO_MODEL).display_names
    assert {c for m in names.values() for n in m.values() for c in n} <= MF.app_cjk()
    assert CJK.search(texts["inference/display_names.py"])
    # of a Python source, its strings; not its comments (a comment cannot grow the font)
    assert MF._py_strings('x = "划痕"  # 龟裂\n') == '"划痕"'
    charset = set(MF.read_charset())

    def lacking(have: set[int] | set[str]) -> dict[str, str]:
        out = {k: "".join(sorted({c for c in t if CJK.match(c)} - {*map(str, have)}))
               for k, t in texts.items()}  # fmt: skip
        return {k: v for k, v in out.items() if v}

    missing = lacking(charset)
    assert not missing, (
        f"charset.txt lacks characters the app shows: {missing}; run "
        "scripts/make_font.py --update-charset, then rebuild (static/fonts/README.md)"
    )
    # nothing else the script wants either (ASCII, GB 2312's hanzi, ...)
    assert MF.wanted() <= charset, "".join(sorted(MF.wanted() - charset))
    for face in FACES:
        font = TTFont(FONTS / face)
        assert font["name"].getDebugName(1) == "Kanjian Sans"
        cmap = {chr(o) for o in font.getBestCmap()}
        missing = lacking(cmap)
        assert not missing, (
            f"{face} lacks characters the app shows: {missing}; rebuild it from "
            "charset.txt with scripts/make_font.py (see static/fonts/README.md)"
        )
        # built from charset.txt alone: nothing else in it, and of the list only
        # symbols Noto Sans CJK has no glyph for are left out (never a CJK one)
        assert cmap <= charset, "".join(sorted(cmap - charset))
        absent = charset - cmap
        assert not any(CJK.match(c) for c in absent) and len(absent) < 16, absent
        # GB 2312's hanzi, so the display names engineers type render too
        gb = bytes(b for hi in range(0xB0, 0xF8) for lo in range(0xA1, 0xFF) for b in (hi, lo))
        hanzi = gb.decode("gb2312", errors="ignore")
        assert len(hanzi) == 6763 and set(hanzi) <= cmap
    licence = (FONTS / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence and "Reserved Font Name" in licence
    total = sum((FONTS / f).stat().st_size for f in FACES)
    assert total < 3 * 2**20, f"{total} bytes: the screen loads these on every fresh start"


def test_the_readme_records_the_bytes_and_the_versions_that_made_them() -> None:
    readme = (FONTS / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
            if line.startswith("| `")}  # fmt: skip
    for face in FACES:
        data = (FONTS / face).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert f"`{digest}`" in rows[face] and f"{len(data):,} bytes" in rows[face], (
            f"{face} is not the file the README records (sha256 {digest}, {len(data):,} "
            "bytes): a font rebuilt on purpose gets its new sha256 and size written there"
        )
    lines = (FONTS / "charset.txt").read_text(encoding="utf-8").splitlines()
    assert f"{sum(1 for t in lines if t.startswith('U+')):,} lines" in rows["charset.txt"]
    pins = (S.REPO / "pyproject.toml").read_text(encoding="utf-8")  # the test extra
    for dist, version in MF.PINNED.items():
        shown = {"fonttools": "fontTools"}.get(dist, dist)
        assert f"**{shown} {version}**" in readme, (dist, version)
        assert f'"{dist}=={version}"' in pins, f"pyproject.toml does not pin {dist}=={version}"


def test_charset_txt_is_sorted_one_a_line_and_update_only_adds(tmp_path: Path) -> None:
    committed = FONTS / "charset.txt"
    chars = MF.read_charset(committed)
    # the committed file is exactly what the script writes: sorted, one code point a
    # line, no duplicates, each shown character the one its code point names
    MF.write_charset(chars, tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_bytes() == committed.read_bytes()
    for line in committed.read_text(encoding="utf-8").splitlines():
        if line.startswith("U+") and " " in line:
            point, shown = line.split(" ", 1)
            assert chr(int(point[2:], 16)) == shown, line
    # --update-charset adds what is missing, says what, keeps what the scan no longer
    # finds, and a second run adds nothing
    older = tmp_path / "charset.txt"
    dropped = {"划", "痕", "A"}
    MF.write_charset([c for c in chars if c not in dropped] + ["Ω"], older)
    assert set(MF.update_charset(older)) == dropped
    assert set(MF.read_charset(older)) == set(chars) | {"Ω"}
    assert MF.update_charset(older) == []


#: runs make_font.py's main as if the pinned brotli were another version
_OTHER_BROTLI = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("make_font", sys.argv[1])
mf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mf)
mf.PINNED["brotli"] = "0.0.1"
sys.argv = ["make_font.py", *sys.argv[2:]]
raise SystemExit(mf.main())
"""


def test_the_script_refuses_other_fonttools_or_brotli_versions(tmp_path: Path) -> None:
    script = str(S.REPO / "scripts" / "make_font.py")
    nowhere = ["--source", str(tmp_path / "none"), "--out", str(tmp_path)]
    same = subprocess.run([sys.executable, script, *nowhere], capture_output=True, text=True)
    assert same.returncode == 2 and "not found" in same.stderr, same.stderr  # past the check
    assert "pinned" not in same.stderr
    other = [sys.executable, "-c", _OTHER_BROTLI, script, *nowhere]
    refused = subprocess.run(other, capture_output=True, text=True)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    installed = metadata.version("brotli")
    assert f"error: brotli {installed}, not the pinned 0.0.1" in refused.stderr, refused.stderr
    assert "--any-version" in refused.stderr and "not found" not in refused.stderr
    anyway = subprocess.run([*other, "--any-version"], capture_output=True, text=True)
    assert "WARNING: brotli" in anyway.stderr and "not found" in anyway.stderr, anyway.stderr
    assert not list(tmp_path.glob("*.woff2"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app of a demo station (it judged the demo images once), on a real uvicorn."""
    from kanjian.appliance_api.http.state import start_services
    from kanjian.station.config import load_config
    from kanjian.station.pipeline import build_station

    tmp = tmp_path_factory.mktemp("font")
    cfg = station_config(tmp / "data", bundle=DEMO_MODEL, images=DEMO_IMAGES)
    station = build_station(load_config(write_config(tmp / "station.yaml", cfg)))
    state = start_services(station)
    state.loop.start()
    server = S.ServerThread(state)
    try:
        yield server.url
    finally:
        server.stop()
        state.loop.stop()
        station.close()
        state.pool.close_all()


def test_the_app_serves_the_font_under_its_csp(served: str) -> None:
    page = httpx.get(served + "/", timeout=30)
    csp = page.headers["content-security-policy"]
    assert "font-src 'self'" in csp and "default-src 'self'" in csp
    css = httpx.get(served + "/static/fonts/fonts.css", timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for face in FACES:
        assert f'url("{face}")' in css.text
        r = httpx.get(f"{served}/static/fonts/{face}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "font/woff2"
        assert r.content == (FONTS / face).read_bytes()


def _no_cjk_fontconfig(tmp: Path) -> dict[str, str]:
    """Environment whose fontconfig knows DejaVu only, and a check that it has no CJK."""
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        "  <dir>/usr/share/fonts/truetype/dejavu</dir>\n"
        f"  <cachedir>{tmp / 'fc-cache'}</cachedir>\n</fontconfig>\n"
    )
    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    listed = subprocess.run(["fc-list"], env=env, capture_output=True, text=True, check=True)
    assert "DejaVu" in listed.stdout
    zh = subprocess.run(["fc-list", ":lang=zh"], env=env, capture_output=True, text=True)
    assert zh.stdout.strip() == "", f"fontconfig still finds CJK fonts: {zh.stdout}"
    return env


#: draws a text on a canvas in a font and returns its alpha channel, as text
_RENDER = """
async ([family, texts]) => {
  const fonts = document.fonts;
  await fonts.ready;
  const out = {};
  for (const t of texts) {
    const c = document.createElement("canvas");
    c.width = 160; c.height = 72;
    const g = c.getContext("2d");
    g.font = `48px ${family}`;
    g.fillStyle = "#000";
    g.fillText(t, 4, 56);
    const a = g.getImageData(0, 0, c.width, c.height).data;
    let s = "";
    for (let i = 3; i < a.length; i += 4) s += a[i] > 127 ? "1" : "0";
    out[t] = s;
  }
  return out;
}
"""


#: elements whose own text has a hanzi, and those of them not set in "Kanjian Sans" first
_NOT_OURS = """
() => {
  const out = { checked: 0, others: [] };
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.data).join("");
    if (!/[\u4e00-\u9fff]/.test(own)) continue;
    out.checked += 1;
    const family = getComputedStyle(el).fontFamily.split(",")[0].trim().replace(/"/g, "");
    if (family !== "Kanjian Sans") out.others.push(`${el.tagName}#${el.id}: ${family}`);
  }
  return out;
}
"""


def test_chromium_renders_chinese_with_the_shipped_font_and_no_cjk_font_installed(
    served: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    env = _no_cjk_fontconfig(tmp_path)
    problems: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True, env=env
        )
        try:
            page = browser.new_page(locale="zh-CN")
            page.on("console", lambda m: problems.append(m.text) if "Security" in m.text else None)
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("response", lambda r: fetched.append(r.url) if "/fonts/" in r.url else None)
            # every element that shows Chinese on each page is set in the shipped font
            # (form controls do not inherit the page's font unless told to)
            for path in ("/history", "/shift", "/zones", "/quality", "/"):
                page.goto(served + path)
                page.wait_for_load_state("networkidle")
                wrong = page.evaluate(_NOT_OURS)
                assert wrong["checked"] > 3, (path, wrong)
                assert not wrong["others"], (path, wrong["others"])
            # the screen's page links the stylesheet (index.html, the screen's part of issue
            # 13); linked here too when it does not yet, the way the page does: by URL
            linked = page.evaluate(
                "() => [...document.querySelectorAll('link[rel=stylesheet]')]"
                ".some(l => l.href.endsWith('/static/fonts/fonts.css'))"
            )
            if not linked:
                page.add_style_tag(url="/static/fonts/fonts.css")
            page.evaluate("() => document.fonts.load('48px \"Kanjian Sans\"', '合格')")
            assert page.evaluate("() => document.fonts.check('48px \"Kanjian Sans\"', '合格')")
            ours: dict[str, Any] = page.evaluate(
                _RENDER, ['"Kanjian Sans"', ["合", "格", "\U0010ffff"]]
            )
            system: dict[str, Any] = page.evaluate(_RENDER, ["sans-serif", ["合", "格"]])
        finally:
            browser.close()
    assert not problems, problems
    assert any(u.endswith("/static/fonts/KanjianSans-Regular.woff2") for u in fetched), fetched
    # without the app's font this machine draws every hanzi as the same empty box...
    assert system["合"] == system["格"] and "1" in system["合"]
    # ...with it, real glyphs: two hanzi differ from each other and from the box
    assert ours["合"] != ours["格"]
    assert ours["合"] != ours["\U0010ffff"] and ours["格"] != ours["\U0010ffff"]
    assert ours["合"] != system["合"]
    assert ours["合"].count("1") > 200  # ink, not a hairline
