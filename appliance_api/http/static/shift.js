// The shift view: yield per hour and per shift, the defect Pareto, the FAIL rate's
// p-chart and operator feedback against the model, over a window of whole local hours
// (at most 31 days). Numbers from GET /api/trends/overview (the same as
// /api/trends/{hourly,shifts,pareto,pchart,feedback});
// drawn with the vendored Chart.js (static/vendor/chartjs) and written out as tables
// beside each chart (data-key cells: what a screen reader and the tests read).
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t, el } = KJ;
  const VERDICTS = ["PASS", "FAIL", "REVIEW", "ERROR", "MISSED"];
  const COLOURS = {
    PASS: "#1f9d55",
    FAIL: "#d42a2a",
    REVIEW: "#f0a000",
    ERROR: "#6b7280",
    MISSED: "#9aa4b2",
    line: "#4ea1ff",
    limit: "#c084fc",
  };
  const FB_KEYS = ["false_reject", "missed", "confirmed", "wrong_class", "agreed_pass", "other"];
  const charts = {}; // name -> Chart (window.KJ_CHARTS: the tests read the drawn data)
  window.KJ_CHARTS = charts;
  let data = null; // GET /api/trends/overview: {hourly, shifts, pareto, pchart, feedback}
  let range = readUrl();

  function readUrl() {
    const q = new URLSearchParams(location.search);
    return { since: q.get("since"), until: q.get("until") };
  }

  function rangeQuery() {
    const q = new URLSearchParams();
    if (range.since) q.set("since", range.since);
    if (range.until) q.set("until", range.until);
    return q.toString();
  }

  // -- range ----------------------------------------------------------------------------
  document.querySelectorAll("#range [data-preset]").forEach((b) =>
    b.addEventListener("click", async () => {
      const now = new Date();
      const p = b.dataset.preset;
      if (p === "shift") {
        try {
          const s = await KJ.get("/api/shift");
          range = { since: s.start, until: s.end };
        } catch (e) {
          return;
        }
      } else if (p === "today") {
        const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
        range = { since: midnight.toISOString(), until: null };
      } else if (p === "7d") {
        range = { since: new Date(now - 7 * 86400e3).toISOString(), until: null };
      } else {
        range = { since: null, until: null };
      }
      go();
    }),
  );

  $("range").addEventListener("submit", (ev) => {
    ev.preventDefault();
    range = { since: KJ.inputToIso($("r-since").value), until: KJ.inputToIso($("r-until").value) };
    go();
  });

  function go() {
    const q = rangeQuery();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
    load();
  }

  async function load() {
    const state = $("state");
    state.dataset.state = "loading";
    state.textContent = t("loading");
    try {
      // one request: the store's rows in the window are counted once for all five
      data = await KJ.get("/api/trends/overview?" + rangeQuery());
    } catch (e) {
      state.dataset.state = "error";
      state.textContent = `${t("load_failed")}: ${e.message}`;
      return;
    }
    // canvas text drawn before the web font is in would stay in a fallback font
    await document.fonts.ready;
    $("r-since").value = KJ.isoToInput(data.hourly.window.since);
    $("r-until").value = KJ.isoToInput(data.hourly.window.until);
    render();
    state.dataset.state = "ready";
    state.dataset.since = data.hourly.window.since;
    state.dataset.until = data.hourly.window.until;
    state.textContent = "";
  }

  // -- drawing --------------------------------------------------------------------------
  // canvas text takes a font by name: the page's own (the shipped CJK font first), light
  // on the dark panels
  const Chart = window.Chart;
  Chart.defaults.color = "#c8d0da";
  Chart.defaults.borderColor = "#2f3642";
  Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;

  function chart(name, config) {
    if (charts[name]) charts[name].destroy();
    config.options = {
      animation: false, // drawn once per load; nothing to animate on a control room screen
      maintainAspectRatio: false,
      responsive: true,
      interaction: { mode: "index", intersect: false },
      ...config.options,
    };
    charts[name] = new Chart($("c-" + name), config);
  }

  function cell(key, text, value) {
    return el("td", { "data-key": key, "data-value": value === undefined ? text : value, text });
  }

  function head(table, names) {
    table.textContent = "";
    table.append(el("thead", {}, el("tr", {}, ...names.map((n) => el("th", { text: n })))));
    const body = el("tbody");
    table.append(body);
    return body;
  }

  function countCells(counts) {
    return VERDICTS.map((v) => cell(v, String(counts[v]), counts[v]));
  }

  function render() {
    if (!data) return;
    const { hourly, shifts, pareto, pchart, feedback } = data;
    const w = hourly.window;
    $("s-window").textContent = `${KJ.dayHhmm(w.since)} – ${KJ.dayHhmm(w.until)} (${w.since.slice(19)})`;
    $("s-total").textContent = hourly.totals.total;
    $("s-judged").textContent = hourly.totals.judged;
    $("s-yield").textContent = KJ.pct(hourly.totals.yield_pct);
    $("s-pbar").textContent = KJ.rate(pchart.p_bar);
    $("s-out").textContent = pchart.out_of_control;
    renderHourly(hourly);
    renderShifts(shifts);
    renderPareto(pareto);
    renderPChart(pchart);
    renderFeedback(feedback);
  }

  function renderHourly(h) {
    const labels = h.hours.map((b) => KJ.dayHhmm(b.start));
    chart("hourly", {
      type: "bar",
      data: {
        labels,
        datasets: [
          ...["PASS", "FAIL", "REVIEW"].map((v) => ({
            label: t(v),
            data: h.hours.map((b) => b.counts[v]),
            backgroundColor: COLOURS[v],
            stack: "n",
            yAxisID: "y",
            order: 2,
          })),
          {
            type: "line",
            label: t("yield"),
            data: h.hours.map((b) => b.yield_pct),
            borderColor: COLOURS.line,
            backgroundColor: COLOURS.line,
            yAxisID: "pct",
            order: 1,
            spanGaps: false,
          },
        ],
      },
      options: {
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, position: "left" },
          pct: { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } },
        },
      },
    });
    const body = head($("t-hourly"), [t("hour"), ...VERDICTS.map(t), t("total"), t("judged"), t("yield")]);
    for (const b of h.hours) {
      body.append(
        el(
          "tr",
          { "data-start": b.start },
          el("th", { text: KJ.dayHhmm(b.start) }),
          ...countCells(b.counts),
          cell("total", String(b.total)),
          cell("judged", String(b.judged)),
          cell("yield", KJ.pct(b.yield_pct), b.yield_pct === null ? "" : b.yield_pct),
        ),
      );
    }
  }

  function renderShifts(s) {
    const label = (r) => `${KJ.dayHhmm(r.shift_start)}–${KJ.hhmm(r.shift_end)}${r.partial ? t("partial") : ""}`;
    chart("shifts", {
      type: "bar",
      data: {
        labels: s.shifts.map(label),
        datasets: [
          {
            label: t("yield"),
            data: s.shifts.map((r) => r.yield_pct),
            backgroundColor: COLOURS.PASS,
          },
        ],
      },
      options: { scales: { y: { min: 0, max: 100 } } },
    });
    const body = head($("t-shifts"), [t("shift_col"), ...VERDICTS.map(t), t("total"), t("judged"), t("yield")]);
    for (const r of s.shifts) {
      body.append(
        el(
          "tr",
          {
            "data-start": r.start,
            "data-end": r.end,
            "data-shift-start": r.shift_start,
            "data-label": r.label,
            "data-partial": r.partial ? "1" : "0",
          },
          el("th", { text: label(r) }),
          ...countCells(r.counts),
          cell("total", String(r.total)),
          cell("judged", String(r.judged)),
          cell("yield", KJ.pct(r.yield_pct), r.yield_pct === null ? "" : r.yield_pct),
        ),
      );
    }
  }

  function historyLink(className, verdicts) {
    const q = new URLSearchParams();
    q.set("since", data.hourly.window.since);
    q.set("until", data.hourly.window.until);
    for (const v of verdicts) q.append("verdict", v);
    if (className) q.set("class_name", className);
    return "/history?" + q;
  }

  function renderPareto(p) {
    chart("pareto", {
      type: "bar",
      data: {
        labels: p.classes.map((r) => KJ.className(r.class_name)),
        datasets: [
          {
            label: t("count"),
            data: p.classes.map((r) => r.count),
            backgroundColor: COLOURS.FAIL,
            yAxisID: "y",
            order: 2,
          },
          {
            type: "line",
            label: t("cumulative"),
            data: p.classes.map((r) => r.cumulative_pct),
            borderColor: COLOURS.line,
            backgroundColor: COLOURS.line,
            yAxisID: "pct",
            order: 1,
          },
        ],
      },
      options: {
        scales: {
          y: { beginAtZero: true },
          pct: { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } },
        },
        onClick: (ev, elements) => {
          if (elements.length) location.href = historyLink(p.classes[elements[0].index].class_name, p.verdicts);
        },
      },
    });
    const body = head($("t-pareto"), [t("class"), ...p.verdicts.map(t), t("count"), t("share"), t("cumulative")]);
    for (const r of p.classes) {
      body.append(
        el(
          "tr",
          { "data-class": r.class_name },
          el("th", {}, el("a", { href: historyLink(r.class_name, p.verdicts), text: KJ.className(r.class_name) })),
          ...p.verdicts.map((v) => cell(v, String(r.counts[v]), r.counts[v])),
          cell("count", String(r.count)),
          cell("share", KJ.pct(r.share_pct), r.share_pct),
          cell("cumulative", KJ.pct(r.cumulative_pct), r.cumulative_pct),
        ),
      );
    }
  }

  function renderPChart(pc) {
    const labels = pc.points.map((b) => KJ.dayHhmm(b.start));
    const limit = (key, name) => ({
      type: "line",
      label: t(name),
      data: pc.points.map((b) => b[key]),
      borderColor: COLOURS.limit,
      borderDash: [6, 4],
      pointRadius: 0,
      stepped: "middle",
      fill: false,
    });
    chart("pchart", {
      type: "line",
      data: {
        labels,
        datasets: [
          {
            label: t("p"),
            data: pc.points.map((b) => b.p),
            borderColor: COLOURS.line,
            pointBackgroundColor: pc.points.map((b) => (b.out_of_control ? COLOURS.FAIL : COLOURS.line)),
            pointRadius: pc.points.map((b) => (b.out_of_control ? 5 : 3)),
            spanGaps: false,
          },
          {
            label: t("p_bar"),
            data: pc.points.map(() => pc.p_bar),
            borderColor: COLOURS.PASS,
            pointRadius: 0,
          },
          limit("ucl", "ucl"),
          limit("lcl", "lcl"),
        ],
      },
      options: { scales: { y: { min: 0 } } },
    });
    const body = head($("t-pchart"), [t("hour"), t("n"), t("fails"), t("p"), t("lcl"), t("ucl"), t("out_of_control")]);
    const num = (x) => (x === null ? "" : x);
    for (const b of pc.points) {
      body.append(
        el(
          "tr",
          { "data-start": b.start, "data-out": b.out_of_control ? "1" : "0" },
          el("th", { text: KJ.dayHhmm(b.start) }),
          cell("n", String(b.n)),
          cell("fails", String(b.fails)),
          cell("p", KJ.rate(b.p), num(b.p)),
          cell("lcl", KJ.rate(b.lcl), num(b.lcl)),
          cell("ucl", KJ.rate(b.ucl), num(b.ucl)),
          cell("out", b.out_of_control ? "●" : ""),
        ),
      );
    }
  }

  function renderFeedback(f) {
    const key = (k) => (k === "wrong_class" ? "wrong_class_col" : k);
    const totals = $("fb-totals");
    totals.textContent = "";
    const card = (k, label, n) =>
      el("div", { class: "card", "data-total": k }, el("span", { text: label }), el("b", { "data-value": n, text: String(n) }));
    totals.append(card("answered", t("answered"), f.answered), card("defects", t("defects"), f.defects));
    for (const k of FB_KEYS) totals.append(card(k, t(key(k)), f.totals[k]));
    const shown = ["false_reject", "missed", "confirmed", "wrong_class"];
    const colours = { false_reject: COLOURS.REVIEW, missed: COLOURS.FAIL, confirmed: COLOURS.PASS, wrong_class: COLOURS.limit };
    chart("feedback", {
      type: "bar",
      data: {
        labels: f.classes.map((r) => KJ.className(r.class_name)),
        datasets: shown.map((k) => ({
          label: t(key(k)),
          data: f.classes.map((r) => r.counts[k]),
          backgroundColor: colours[k],
          stack: "fb",
        })),
      },
      options: { indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true }, y: { stacked: true } } },
    });
    const body = head($("t-feedback"), [t("class"), ...FB_KEYS.map((k) => t(key(k)))]);
    for (const r of f.classes) {
      body.append(
        el(
          "tr",
          { "data-class": r.class_name === null ? "" : r.class_name },
          el("th", { text: KJ.className(r.class_name) }),
          ...FB_KEYS.map((k) => cell(k, String(r.counts[k]), r.counts[k])),
        ),
      );
    }
  }

  KJ.onLang.push(render);
  KJ.start(load);
})();
