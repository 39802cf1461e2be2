"""The fleet page and a station's page in a real browser (Playwright + Debian's Chromium).

On the shared platform (tests/support/fleet_platform.py), as a viewer of firm acme in
Shanghai time: the stations table, the summary and the data Chart.js drew are the
API's answers for the same window (which tests/test_platform_page.py holds to SQL); a
station's FAIL pictures load from S3 through the presigned links under the page's CSP;
another firm's station is "not found"; the login dialog asks for a platform token.
Screenshots go to the test's temp folder (``scripts/screenshots.py --only fleet``
draws the ones in docs/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support import api as S
from tests.support.fleet_platform import FleetPlatform
from tests.test_platform_page import params

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)

ZONE = "Asia/Shanghai"

#: the page's tables and charts, as the tests read them
READ = """() => {
  const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].map((tr) => ({
    attrs: { ...tr.dataset },
    cells: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(
      (td) => [td.dataset.key, td.dataset.value])),
  }));
  const out = Object.fromEntries(['t-stations', 't-hourly', 't-pchart', 't-yield', 't-pareto',
    't-events', 't-station', 't-rollouts'].map((id) => [id, document.getElementById(id) ? rows(id) : null]));
  out.summary = Object.fromEntries([...document.querySelectorAll('#summary b')]
    .map((b) => [b.id, b.textContent]));
  const c = window.KJ_CHARTS;
  out.charts = Object.fromEntries(Object.keys(c).map((k) => [k, {
    labels: c[k].data.labels, data: c[k].data.datasets.map((d) => d.data) }]));
  out.text = document.body.innerText;
  return out;
}"""


@dataclass
class Browser:
    fp: FleetPlatform
    browser: Any
    shots: Path

    def page(self, path: str, token: str | None = "viewer-acme", lang: str = "zh") -> Any:
        ctx = self.browser.new_context(viewport={"width": 1600, "height": 1000}, locale="zh-CN",
                                       timezone_id=ZONE)  # fmt: skip
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.csp_errors = []  # type: ignore[attr-defined]
        page.on("console", lambda m: "Content Security Policy" in m.text
                and page.csp_errors.append(m.text))  # type: ignore[attr-defined]  # fmt: skip
        page.add_init_script(f"localStorage.setItem('kanjian.lang', '{lang}')")
        page.goto(f"{self.fp.url}{path}" + (f"#token={self.fp.tokens[token]}" if token else ""))
        return page


@pytest.fixture(scope="module")
def web(
    fleet_platform: FleetPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS,
                                     headless=True)  # fmt: skip
        try:
            yield Browser(fleet_platform, browser, tmp_path_factory.mktemp("fleet-web"))
        finally:
            browser.close()


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def test_the_fleet_page_shows_the_apis_numbers(web: Browser) -> None:
    from tests.support.fleet_rollouts import seed

    fp = web.fp
    seed(fp.pg.url)  # rollouts of acme's stations, of borealis', and one over both
    q = params(fp)
    page = web.page("/?" + urlencode(q))
    page.wait_for_selector("#state[data-state=ready]")
    got = page.evaluate(READ)
    page.screenshot(path=str(web.shots / "fleet.png"), full_page=True)

    stations = fp.json("/api/stations")
    assert [r["attrs"] for r in got["t-stations"]] == [
        {"site": s["site"], "line": s["line"], "station": s["station"]} for s in stations]  # fmt: skip
    for r, s in zip(got["t-stations"], stations, strict=True):
        c = r["cells"]
        assert (c["firm"], c["availability"], c["camera"], c["backlog"]) == (
            "acme",
            s["availability"],
            s["camera"]["state"],
            s["backlog"]["state"],
        )
        assert c["model"] == f"{s['model']['name']}@{s['model']['version']}"
        assert c["last_confirmed"] == s["last_confirmed_at"]
        assert c["last_inspection"] == s["last_inspection"]["verdict"]
    hourly = fp.json("/api/yield", **q, by="hour")
    fail_rate = fp.json("/api/fail-rate", **q)
    assert got["summary"] == {
        "s-stations": str(len(stations)),
        "s-online": str(sum(s["availability"] == "online" for s in stations)),
        "s-offline": str(sum(s["availability"] == "offline" for s in stations)),
        "s-judged": str(hourly["totals"]["judged"]),
        "s-yield": f"{hourly['totals']['yield_pct']:.2f}%",
        "s-pbar": f"{fail_rate['p_bar']:.4f}",
        "s-out": str(fail_rate["out_of_control"]),
    }
    # the hourly chart: PASS / FAIL / REVIEW bars and the yield line, hour by hour
    drawn = got["charts"]["hourly"]["data"]
    assert drawn[:3] == [
        [r["counts"][v] for r in hourly["rows"]] for v in ("PASS", "FAIL", "REVIEW")
    ]
    assert drawn[3] == pytest.approx([r["yield_pct"] for r in hourly["rows"]])
    assert [r["attrs"]["hour"] for r in got["t-hourly"]] == [
        r["hour"] for r in hourly["rows"]]  # fmt: skip
    # the p-chart: p, the centre line and both limits
    p, pbar, ucl, lcl = got["charts"]["pchart"]["data"]
    pts = fail_rate["points"]
    assert p == pytest.approx([x["p"] for x in pts]) and pbar == pytest.approx(
        [fail_rate["p_bar"]] * len(pts))  # fmt: skip
    assert ucl == pytest.approx([x["ucl"] for x in pts])
    assert lcl == pytest.approx([x["lcl"] for x in pts])
    assert [r["attrs"]["out"] for r in got["t-pchart"]] == [
        "1" if x["out_of_control"] else "0" for x in pts]  # fmt: skip
    # yield per site, and the first line's Pareto
    by_site = fp.json("/api/yield", **q, by="site")
    assert got["charts"]["yield"]["labels"] == [r["site"] for r in by_site["rows"]]
    assert got["charts"]["yield"]["data"][0] == pytest.approx(
        [r["yield_pct"] for r in by_site["rows"]]
    )
    pareto = fp.json("/api/pareto", **q, site=stations[0]["site"], line=stations[0]["line"])
    assert got["charts"]["pareto"]["labels"] == [c["class_name"] for c in pareto["classes"]]
    assert got["charts"]["pareto"]["data"][0] == [c["detections"] for c in pareto["classes"]]
    assert [r["attrs"]["eventId"] for r in got["t-events"]] == [
        e["event_id"] for e in fp.json("/api/events", limit=30)]  # fmt: skip
    # the rollouts this token may see (all their stations in its scope), as the API has them
    rollouts = fp.json("/api/rollouts", limit=10)
    assert [r["rollout_id"] for r in rollouts] == ["ro-acme"]
    assert [(r["attrs"]["rollout"], r["attrs"]["state"]) for r in got["t-rollouts"]] == [
        (r["rollout_id"], r["state"]) for r in rollouts]  # fmt: skip
    # its numbers: FAIL rate, what operators said, the shadow's agreement
    [row], [r0] = got["t-rollouts"], rollouts
    assert (r0["canary_rate"], r0["canary_wrong_rate"], r0["agreement"]) == (0.05, 0.1, 0.95)
    assert [float(row["cells"][k]) for k in ("canary_rate", "wrong_rate", "agreement")] == [
        0.05, 0.1, 0.95]  # fmt: skip
    for other in ("borealis", "wx-01", "wx-02", "cathay", "nb-01", "lab-00"):
        assert other not in got["text"]
    assert not page.csp_errors


def test_a_stations_page_shows_its_fail_pictures_from_s3(web: Browser) -> None:
    fp = web.fp
    q = params(fp)
    page = web.page("/station/sz-01/L1/L1-a?" + urlencode(q), lang="en")
    page.wait_for_selector("#state[data-state=ready]")
    page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('#pictures img')];"
        " return i.length && i.every((x) => x.complete && x.naturalWidth > 0); }"
    )
    page.screenshot(path=str(web.shots / "fleet-station.png"), full_page=True)
    got = page.evaluate(READ)
    pictures = fp.json("/api/stations/sz-01/L1/L1-a/pictures", **q)
    shown = page.eval_on_selector_all(
        "#pictures figure",
        "fs => fs.map((f) => [f.dataset.inspectionId, f.querySelector('img').src])",
    )
    # the same objects (each answer signs afresh: the signature and expiry differ)
    assert [[i, u.split("?")[0]] for i, u in shown] == [
        [p["inspection_id"], p["url"].split("?")[0]] for p in pictures]  # fmt: skip
    assert len(shown) == 5
    events = fp.json("/api/stations/sz-01/L1/L1-a/events")
    assert [r["attrs"]["eventId"] for r in got["t-events"]] == [e["event_id"] for e in events]
    fail_rate = fp.json("/api/fail-rate", **q, site="sz-01", line="L1", station="L1-a")
    assert got["charts"]["pchart"]["data"][0] == pytest.approx(
        [x["p"] for x in fail_rate["points"]]
    )
    assert got["t-station"][0]["cells"]["availability"] == "online"
    assert "Latest FAIL pictures" in got["text"] and not page.csp_errors


def test_another_firms_station_is_not_found(web: Browser) -> None:
    page = web.page("/station/wx-01/L1/L1-a")
    page.wait_for_selector("#state[data-state=error]")
    assert page.text_content("#state") == "没有这个工位"
    assert page.eval_on_selector_all("#pictures figure", "fs => fs.length") == 0


def test_the_login_asks_for_a_platform_token(web: Browser) -> None:
    page = web.page("/", token=None, lang="en")
    page.wait_for_selector("#login:not([hidden])")
    assert "kanjian platform token create" in page.text_content("#login")
    page.fill("#login-token", "kjp_00000000_wrong")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error:has-text('Token unknown or revoked')")
    page.fill("#login-token", web.fp.tokens["viewer-sites"])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#state[data-state=ready]")
    assert page.text_content("#who") == "viewer-sites · viewer (read-only)"
    assert page.text_content("#scope") == "sites sz-02, nb-01"
    sites = page.eval_on_selector_all("#t-stations tbody tr", "rs => rs.map((r) => r.dataset.site)")
    assert set(sites) == {"sz-02", "nb-01"}
    page.click("#lang")
    page.wait_for_function(
        "() => document.getElementById('scope').textContent === '厂区 sz-02, nb-01'"
    )
