"""The history and shift pages in a real browser (Playwright + Debian's Chromium, headless).

Against ``kanjian serve`` on a store with known rows (tests/support/trends_station.py,
Shanghai local time in the server and in the browser): the numbers the shift page
shows, in its tables and in the charts Chart.js drew, are SQL's on the same file
(tests/support/trends_oracle.py); the history page filters and pages through the
same rows SQL lists; an inspection opens large with its overlay; an engineer's
answer there is stored; an operator reads only and cannot reach the engineer's
audit trail. Screenshots of each step go to the test's temp folder
(``scripts/screenshots.py --only trends`` redraws the ones in docs/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support import api as S
from tests.support import trends_oracle as O
from tests.support import trends_station as TS

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)

SINCE, UNTIL = TS.FIRST, TS.LAST
PAGE = 50  # history.js's page size


@dataclass
class Web:
    st: TS.TrendStation
    browser: Any
    shots: Path

    def page(self, role: str, path: str, lang: str = "zh") -> Any:
        """A fresh browser context (its own cookie and storage) logged in as ``role``."""
        ctx = self.browser.new_context(
            viewport={"width": 1400, "height": 1000}, locale="zh-CN", timezone_id=TS.ZONE_NAME
        )
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        # the first page's language; a switch on the page is kept across pages
        page.add_init_script(
            f"if (!localStorage.getItem('kanjian.lang')) localStorage.setItem('kanjian.lang', '{lang}')"
        )
        page.goto(f"{self.st.url}{path}#token={self.st.tokens[role]}")
        return page


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("trends-web")
    st = TS.start(tmp)
    shots = tmp  # the suite never changes tracked files
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=S.CHROMIUM, args=S.CHROMIUM_ARGS, headless=True
            )
            try:
                yield Web(st, browser, shots)
            finally:
                browser.close()
    finally:
        print(st.served.stop())


def _window_query() -> str:
    return urlencode({"since": SINCE.isoformat(), "until": UNTIL.isoformat()})


#: every table of the shift page as {table id: [{"attrs": tr dataset, "cells": {key: text}}]}
READ_TABLES = """() => {
  const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].map((tr) => ({
    attrs: { ...tr.dataset },
    cells: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(
      (td) => [td.dataset.key, { text: td.textContent, value: td.dataset.value }])),
  }));
  const ids = ['t-hourly', 't-shifts', 't-pareto', 't-pchart', 't-feedback'];
  const out = Object.fromEntries(ids.map((id) => [id, rows(id)]));
  out.totals = Object.fromEntries([...document.querySelectorAll('#fb-totals [data-total]')]
    .map((d) => [d.dataset.total, d.querySelector('b').textContent]));
  out.summary = Object.fromEntries(['s-total', 's-judged', 's-yield', 's-pbar', 's-out']
    .map((id) => [id, document.getElementById(id).textContent]));
  const c = window.KJ_CHARTS;
  out.charts = Object.fromEntries(Object.keys(c).map((k) => [k, {
    labels: c[k].data.labels, data: c[k].data.datasets.map((d) => d.data) }]));
  return out;
}"""


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}%"


def test_the_shift_page_shows_the_sql(web: Web) -> None:
    db = web.st.db_path
    page = web.page("operator", f"/shift?{_window_query()}")
    page.wait_for_selector("#state[data-state=ready]")
    got = page.evaluate(READ_TABLES)
    s, u = O.hour_floor(SINCE), O.hour_ceil(UNTIL)

    # per hour: the table and the chart's bars and yield line
    hours = O.hours(db, s, u)
    n_hours = round((u - s) / timedelta(hours=1))
    assert len(got["t-hourly"]) == n_hours
    want_rows = []
    for k, row in enumerate(got["t-hourly"]):
        start = s + timedelta(hours=k)
        assert row["attrs"]["start"] == start.isoformat()
        c = hours.get(start.strftime("%Y-%m-%dT%H:00"), Counter())
        want_rows.append(c)
        assert {v: int(row["cells"][v]["text"]) for v in O.VERDICTS} == {
            v: c[v] for v in O.VERDICTS
        }
        assert row["cells"]["yield"]["text"] == _pct(O.yield_pct(c))
    bars = got["charts"]["hourly"]["data"]
    assert bars[:3] == [[c[v] for c in want_rows] for v in ("PASS", "FAIL", "REVIEW")]
    assert bars[3] == [O.yield_pct(c) for c in want_rows]

    total = O.totals(db, s, u)
    assert got["summary"]["s-total"] == str(sum(total.values()))
    assert got["summary"]["s-yield"] == _pct(O.yield_pct(total))

    # per shift, the night shifts across midnight one row each
    shifts = O.shifts(db, s, u)
    for row in got["t-shifts"]:
        c = shifts.pop(row["attrs"]["shiftStart"][:16], Counter())
        assert {v: int(row["cells"][v]["text"]) for v in O.VERDICTS} == {
            v: c[v] for v in O.VERDICTS
        }
        assert row["cells"]["yield"]["text"] == _pct(O.yield_pct(c))
    assert not shifts

    # the Pareto: SQL's order and counts, share and cumulative share
    ranked = O.pareto(db, s, u)
    assert [r["attrs"]["class"] for r in got["t-pareto"]] == [k for k, _ in ranked]
    all_classes = sum(sum(c.values()) for _, c in ranked)
    running = 0
    for row, (_, c) in zip(got["t-pareto"], ranked, strict=True):
        n = sum(c.values())
        running += n
        assert int(row["cells"]["count"]["text"]) == n
        assert int(row["cells"]["FAIL"]["text"]) == c["FAIL"]
        assert row["cells"]["share"]["text"] == _pct(round(100 * n / all_classes, 2))
        assert row["cells"]["cumulative"]["text"] == _pct(round(100 * running / all_classes, 2))
    assert got["charts"]["pareto"]["data"][0] == [sum(c.values()) for _, c in ranked]

    # the p-chart: the formula on SQL's counts, in the table and in the drawn lines
    ns = [c["PASS"] + c["FAIL"] + c["REVIEW"] for c in want_rows]
    xs = [c["FAIL"] for c in want_rows]
    pbar, points = O.p_chart(ns, xs)
    assert got["summary"]["s-pbar"] == f"{pbar:.4f}"
    drawn_p, drawn_centre, drawn_ucl, drawn_lcl = got["charts"]["pchart"]["data"]
    assert drawn_centre == pytest.approx([pbar] * n_hours, rel=1e-12)
    out = 0
    for k, (row, want) in enumerate(zip(got["t-pchart"], points, strict=True)):
        if want is None:
            assert row["cells"]["p"]["value"] == "" and drawn_p[k] is None
            continue
        table = tuple(float(row["cells"][key]["value"]) for key in ("p", "lcl", "ucl"))
        assert table == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert (drawn_p[k], drawn_lcl[k], drawn_ucl[k]) == pytest.approx(want, rel=1e-12, abs=1e-15)
        flagged = not want[1] <= want[0] <= want[2]
        assert row["attrs"]["out"] == ("1" if flagged else "0")
        out += flagged
    assert out >= 1 and got["summary"]["s-out"] == str(out)

    # feedback against the model, in total and per class
    per = O.feedback(db, s, u)
    totals = sum(per.values(), Counter())
    assert {k: int(got["totals"][k]) for k in O.FEEDBACK_KEYS} == {
        k: totals[k] for k in O.FEEDBACK_KEYS
    }
    assert int(got["totals"]["defects"]) == total["FAIL"] + total["REVIEW"]
    table = {
        r["attrs"]["class"] or None: {k: int(r["cells"][k]["text"]) for k in O.FEEDBACK_KEYS}
        for r in got["t-feedback"]
    }
    assert table == {cls: {k: c[k] for k in O.FEEDBACK_KEYS} for cls, c in per.items()}
    page.screenshot(path=str(web.shots / "shift.png"), full_page=True)
    page.context.close()


def test_the_shift_page_speaks_english_and_links_to_history(web: Web) -> None:
    page = web.page("operator", f"/shift?{_window_query()}")
    page.wait_for_selector("#state[data-state=ready]")
    assert page.text_content("#pareto h2") == "缺陷帕累托"
    page.click("#lang")
    assert page.text_content("#pareto h2") == "Defect Pareto"
    assert page.text_content("#lang") == "中文"
    assert page.get_attribute("#nav a[href='/history']", "href") == "/history"
    # a Pareto class opens the history filtered to it, in the same window
    top = page.get_attribute("#t-pareto tbody tr", "data-class")
    page.click("#t-pareto tbody tr th a")
    page.wait_for_selector("#list-state[data-state=ready]")
    ids = page.eval_on_selector_all("#rows tr", "(rs) => rs.map((r) => r.dataset.inspectionId)")
    want = O.listed(web.st.db_path, SINCE, UNTIL, ("FAIL", "REVIEW"), top)
    assert ids == want[:PAGE] and ids
    assert page.text_content("#nav a.here") == "History"  # the language was kept
    page.context.close()


def _ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#rows tr", "(rs) => rs.map((r) => r.dataset.inspectionId)"
    )
    return ids


def _search(page: Any) -> None:
    before = page.get_attribute("#list-state", "data-query")
    page.click("#f-apply")
    page.wait_for_function(
        "before => { const s = document.getElementById('list-state');"
        " return s.dataset.state === 'ready' && s.dataset.query !== before; }",
        arg=before,
    )


def test_history_filters_and_pages_through_what_sql_lists(web: Web) -> None:
    db = web.st.db_path
    page = web.page("operator", "/history")
    page.wait_for_selector("#list-state[data-state=ready]")
    assert _ids(page) == O.listed(db)[:PAGE]
    assert page.get_attribute("#nav a[href='/shift']", "href") == "/shift"

    # FAIL and REVIEW in a window given in the browser's local time (Shanghai)
    since, until = (
        datetime(2026, 3, 2, 13, 20, tzinfo=TS.ZONE),
        datetime(2026, 3, 3, 15, 5, tzinfo=TS.ZONE),
    )
    page.fill("#f-since", since.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#f-until", until.strftime("%Y-%m-%dT%H:%M"))
    page.check("#f-verdicts input[value=FAIL]")
    page.check("#f-verdicts input[value=REVIEW]")
    _search(page)
    want = O.listed(db, since, until, ("FAIL", "REVIEW"))
    assert len(want) > 2 * PAGE  # three pages at least
    seen, pages = _ids(page), 1
    while not page.is_disabled("#older"):
        before = page.get_attribute("#page-no", "data-page")
        page.click("#older")
        page.wait_for_function(
            "before => document.getElementById('page-no').dataset.page !== before"
            " && document.getElementById('list-state').dataset.state === 'ready'",
            arg=before,
        )
        seen += _ids(page)
        pages += 1
    assert seen == want and pages == -(-len(want) // PAGE)
    page.click("#newer")
    page.wait_for_selector(f"#page-no[data-page='{pages - 1}']")
    assert _ids(page) == want[(pages - 2) * PAGE : (pages - 1) * PAGE]
    assert "verdict=FAIL" in page.url and "verdict=REVIEW" in page.url  # bookmarkable

    # a class, then the latest answer
    page.select_option("#f-class", "scratches")
    _search(page)
    assert _ids(page) == O.listed(db, since, until, ("FAIL", "REVIEW"), "scratches")[:PAGE]
    page.select_option("#f-class", "")
    page.uncheck("#f-verdicts input[value=FAIL]")
    page.uncheck("#f-verdicts input[value=REVIEW]")
    page.click("#f-reset")
    page.wait_for_selector("#list-state[data-state=ready]")
    page.select_option("#f-feedback", "not_defect")
    _search(page)
    got = _ids(page)
    assert got == O.listed(db, feedback_kind="not_defect")[:PAGE] and got
    page.screenshot(path=str(web.shots / "history.png"))
    page.context.close()


def _open_first(page: Any, selector: str) -> str:
    iid: str = page.get_attribute(selector, "data-inspection-id")
    page.click(selector)
    page.wait_for_selector(f"#detail[data-state=ready][data-inspection-id='{iid}']")
    return iid


def test_an_engineer_opens_one_large_and_answers_there(web: Web) -> None:
    st = web.st
    page = web.page("engineer", "/history?verdict=FAIL&feedback=none")
    page.wait_for_selector("#list-state[data-state=ready]")
    iid = _open_first(page, "#rows tr")
    verdict, width, answered = st.sql(
        "SELECT verdict, width, (SELECT COUNT(*) FROM feedback WHERE inspection_id = i.id) "
        "FROM inspections i WHERE id = ?",
        (iid,),
    )[0]
    assert (verdict, answered) == ("FAIL", 0)
    page.wait_for_selector("#detail[data-image=loaded]")
    # fetched with the page's token (dataset.src: the address asked for, src its blob)
    src, natural = page.evaluate(
        "() => { const i = document.getElementById('d-image');"
        " return [i.dataset.src, i.naturalWidth]; }"
    )
    assert f"/api/inspections/{iid}/image?annotated=true" in src and natural == width
    assert page.get_attribute("#d-verdict", "data-verdict") == "FAIL"
    assert page.text_content("#d-id") == iid[:8]
    assert page.is_visible("#d-buttons") and page.is_visible("#d-engineer")

    page.click("#d-buttons [data-kind=not_defect]")
    page.wait_for_selector(f"#d-result[data-kind=not_defect][data-inspection-id='{iid}']")
    assert page.get_attribute("#d-result", "data-result") == "recorded"  # a first answer
    page.wait_for_selector("#detail[data-state=ready]")
    latest = "SELECT kind, class_name, actor FROM feedback WHERE inspection_id = ? ORDER BY id DESC"
    assert st.sql(latest, (iid,))[0] == ("not_defect", None, "trends-engineer")
    row = f"#rows tr[data-inspection-id='{iid}']"
    assert page.get_attribute(row, "data-feedback") == "not_defect"

    # changed: a wrong class, picked from the model's classes
    page.click("#d-buttons [data-kind=wrong_class]")
    page.click("#d-classes [data-class=patches]")
    page.wait_for_selector(f"#d-result[data-kind=wrong_class][data-inspection-id='{iid}']")
    assert page.get_attribute("#d-result", "data-result") == "changed"  # over the first
    assert (page.text_content("#d-result") or "").startswith("已更改")
    page.wait_for_selector("#d-audit[data-state=ready]")
    assert st.sql(latest, (iid,))[0] == ("wrong_class", "patches", "trends-engineer")
    assert page.get_attribute("#d-feedback", "data-kind") == "wrong_class"
    history = page.eval_on_selector_all("#d-history li", "(ls) => ls.map((l) => l.dataset.kind)")
    assert history == [k for k, _, _ in st.sql(latest, (iid,))]
    audit = page.eval_on_selector_all("#d-audit li", "(ls) => ls.map((l) => l.dataset.action)")
    assert audit == [
        a for (a,) in st.sql("SELECT action FROM audit WHERE target = ? ORDER BY id DESC", (iid,))
    ]
    assert len(audit) >= 2
    page.screenshot(path=str(web.shots / "history-detail.png"))
    page.context.close()


def test_an_operator_reads_and_cannot_reach_the_engineers_part(web: Web) -> None:
    st = web.st
    before = st.sql("SELECT COUNT(*), MAX(id) FROM feedback")[0]
    page = web.page("operator", "/history?verdict=FAIL")
    page.wait_for_selector("#list-state[data-state=ready]")
    assert page.get_attribute("body", "data-role") == "operator"
    iid = _open_first(page, "#rows tr")
    page.wait_for_selector("#detail[data-image=loaded]")
    assert page.is_visible("#d-read-only")
    for hidden in ("#d-answer", "#d-buttons", "#d-engineer", "#d-audit"):
        assert not page.is_visible(hidden), hidden
    # the page's token (the operator's, kept for this tab only) is refused the audit trail
    status = page.evaluate(
        "async (id) => (await window.KanjianAuth.fetch('/api/inspections/' + id + '/audit'))"
        ".status",
        iid,
    )
    assert status == 403
    assert page.evaluate("() => localStorage.getItem('kanjian.token')") is None
    assert st.sql("SELECT COUNT(*), MAX(id) FROM feedback")[0] == before
    page.context.close()
