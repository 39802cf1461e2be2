// What the fleet pages (/ and /station/...) share, on top of the station pages' pages.js
// (KJ: language, login with a platform token in this tab, who is asking, fetch helpers):
// the time window in the address, Chart.js set up as on the station's shift page
// (window.KJ_CHARTS: the tests read the drawn data), tables with data-key cells (what a
// screen reader and the tests read), and the words for a station's state. Plain JS.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t, el } = KJ;
  const FL = {
    VERDICTS: ["PASS", "FAIL", "REVIEW", "ERROR", "MISSED"],
    COLOURS: {
      PASS: "#1f9d55",
      FAIL: "#d42a2a",
      REVIEW: "#f0a000",
      ERROR: "#6b7280",
      MISSED: "#9aa4b2",
      line: "#4ea1ff",
      limit: "#c084fc",
    },
    charts: {},
  };
  window.KJ_CHARTS = FL.charts;

  // -- the window: ?since=&until= (ISO), else the last 24 hours -------------------------
  FL.range = () => {
    const q = new URLSearchParams(location.search);
    return { since: q.get("since"), until: q.get("until"), site: q.get("site") };
  };
  FL.query = (extra) => {
    const r = FL.range();
    const q = new URLSearchParams();
    if (r.since) q.set("since", r.since);
    if (r.until) q.set("until", r.until);
    for (const [k, v] of Object.entries(extra || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    return q.toString();
  };
  /** Go to the same page with these query values (null removes one). */
  FL.go = (values) => {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(values)) {
      if (v === null || v === undefined || v === "") q.delete(k);
      else q.set(k, v);
    }
    location.search = q.toString();
  };
  /** Wire the range form (#range): presets, since/until inputs, apply. */
  FL.rangeForm = (window_) => {
    $("r-since").value = KJ.isoToInput(window_.since);
    $("r-until").value = KJ.isoToInput(window_.until);
    document.querySelectorAll("#range [data-hours]").forEach((b) =>
      b.addEventListener("click", () => {
        const until = new Date();
        const since = new Date(until.getTime() - Number(b.dataset.hours) * 3600e3);
        FL.go({ since: since.toISOString(), until: until.toISOString() });
      }),
    );
    $("range").addEventListener("submit", (ev) => {
      ev.preventDefault();
      FL.go({ since: KJ.inputToIso($("r-since").value), until: KJ.inputToIso($("r-until").value) });
    });
  };

  // -- formatting -------------------------------------------------------------------------
  const p2 = (n) => String(n).padStart(2, "0");
  /** A UTC time as the browser's local "MM-DD HH:MM". */
  FL.hourLabel = (iso) => {
    const d = new Date(iso);
    return `${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}`;
  };
  FL.when = (iso) => (iso ? KJ.localTime(iso) : "—");
  FL.stationPath = (s) =>
    `/station/${encodeURIComponent(s.site)}/${encodeURIComponent(s.line)}/${encodeURIComponent(s.station)}`;
  FL.apiStation = (s) =>
    `/api/stations/${encodeURIComponent(s.site)}/${encodeURIComponent(s.line)}/${encodeURIComponent(s.station)}`;
  FL.eventWord = (name) => {
    const w = t(name);
    return w === name ? name : w;
  };
  FL.scopeText = (who) => {
    const s = who && who.scope;
    if (!s) return "";
    if (s.kind === "firm") return t("scope_firm", { firm: s.firm });
    if (s.kind === "sites") return t("scope_sites", { sites: s.sites.join(", ") });
    return t("scope_cluster");
  };

  // -- tables -----------------------------------------------------------------------------
  FL.cell = (key, text, value) =>
    el("td", { "data-key": key, "data-value": value === undefined || value === null ? text : value, text });
  FL.head = (table, names) => {
    table.textContent = "";
    table.append(el("thead", {}, el("tr", {}, ...names.map((n) => el("th", { text: n })))));
    const body = el("tbody");
    table.append(body);
    return body;
  };
  FL.countCells = (row) => [
    ...FL.VERDICTS.map((v) => FL.cell(v, String(row.counts[v]), row.counts[v])),
    FL.cell("judged", String(row.judged)),
    FL.cell("yield", KJ.pct(row.yield_pct), row.yield_pct === null ? "" : row.yield_pct),
  ];
  FL.countHeads = () => [...FL.VERDICTS.map(t), t("judged"), t("yield")];

  /** A station's state cells: availability, camera, model, backlog, last confirmed. */
  FL.stateCells = (s) => {
    const backlog =
      s.backlog.state === "unknown"
        ? t("unknown")
        : t("backlog_" + s.backlog.state) + (s.backlog.entries === null ? "" : ` (${s.backlog.entries})`);
    const model = s.model && s.model.name ? `${s.model.name} ${s.model.version || ""}`.trim() : "—";
    const camera = t(s.camera.state); // the station's own word where the page has none
    return [
      el("td", { "data-key": "availability", "data-value": s.availability },
        el("span", { class: "dot " + s.availability, text: t(s.availability) })),
      FL.cell("camera", camera, s.camera.state),
      FL.cell("model", model, s.model ? `${s.model.name}@${s.model.version}` : ""),
      FL.cell("backlog", backlog, s.backlog.state),
      FL.cell("last_confirmed", FL.when(s.last_confirmed_at), s.last_confirmed_at || ""),
    ];
  };

  // -- charts (as the station's shift page draws them) ---------------------------------------
  FL.chart = (name, config) => {
    const Chart = window.Chart;
    Chart.defaults.color = "#c8d0da";
    Chart.defaults.borderColor = "#2f3642";
    Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    if (FL.charts[name]) FL.charts[name].destroy();
    config.options = {
      animation: false,
      maintainAspectRatio: false,
      responsive: true,
      interaction: { mode: "index", intersect: false },
      ...config.options,
    };
    FL.charts[name] = new Chart($("c-" + name), config);
  };

  /** Hourly counts: stacked PASS / FAIL / REVIEW bars and the yield line; its table. */
  FL.hourly = (rows) => {
    FL.chart("hourly", {
      type: "bar",
      data: {
        labels: rows.map((r) => FL.hourLabel(r.hour)),
        datasets: [
          ...["PASS", "FAIL", "REVIEW"].map((v) => ({
            label: t(v), data: rows.map((r) => r.counts[v]), backgroundColor: FL.COLOURS[v],
            stack: "n", yAxisID: "y", order: 2,
          })),
          { type: "line", label: t("yield"), data: rows.map((r) => r.yield_pct),
            borderColor: FL.COLOURS.line, backgroundColor: FL.COLOURS.line, yAxisID: "pct", order: 1 },
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
    const body = FL.head($("t-hourly"), [t("hour"), ...FL.countHeads()]);
    for (const r of rows)
      body.append(el("tr", { "data-hour": r.hour }, el("th", { text: FL.hourLabel(r.hour) }), ...FL.countCells(r)));
  };

  /** The FAIL rate's p-chart: p per hour, the centre line and both limits; its table. */
  FL.pchart = (fr) => {
    const pts = fr.points;
    FL.chart("pchart", {
      type: "line",
      data: {
        labels: pts.map((p) => FL.hourLabel(p.hour)),
        datasets: [
          { label: t("fail_rate"), data: pts.map((p) => p.p), borderColor: FL.COLOURS.FAIL,
            backgroundColor: FL.COLOURS.FAIL,
            pointRadius: pts.map((p) => (p.out_of_control ? 5 : 2)) },
          { label: t("p_bar"), data: pts.map(() => fr.p_bar), borderColor: FL.COLOURS.line, pointRadius: 0 },
          { label: t("ucl"), data: pts.map((p) => p.ucl), borderColor: FL.COLOURS.limit, borderDash: [6, 4],
            pointRadius: 0, stepped: "middle" },
          { label: t("lcl"), data: pts.map((p) => p.lcl), borderColor: FL.COLOURS.limit, borderDash: [6, 4],
            pointRadius: 0, stepped: "middle" },
        ],
      },
      options: { scales: { y: { beginAtZero: true } } },
    });
    const body = FL.head($("t-pchart"), [t("hour"), t("n"), t("fails"), t("p"), t("lcl"), t("ucl")]);
    for (const p of pts)
      body.append(
        el("tr", { "data-hour": p.hour, "data-out": p.out_of_control ? "1" : "0" },
          el("th", { text: FL.hourLabel(p.hour) }),
          FL.cell("n", String(p.n)), FL.cell("fails", String(p.fails)),
          FL.cell("p", KJ.rate(p.p), p.p === null ? "" : p.p),
          FL.cell("lcl", KJ.rate(p.lcl), p.lcl === null ? "" : p.lcl),
          FL.cell("ucl", KJ.rate(p.ucl), p.ucl === null ? "" : p.ucl)),
      );
  };

  // a model's sha256 (64 hex digits) in an event's data, shown as its first 12
  const short = (_k, v) => (typeof v === "string" && /^[0-9a-f]{64}$/.test(v) ? v.slice(0, 12) + "…" : v);

  /** Events, newest first; `where` adds the station column (the fleet's list). */
  FL.events = (table, events, where) => {
    const body = FL.head(table, [t("time"), ...(where ? [t("station")] : []), t("event"), t("data")]);
    if (!events.length) body.append(el("tr", {}, el("td", { text: t("no_events"), colSpan: where ? 4 : 3 })));
    for (const e of events) {
      const station = `${e.site}/${e.line}/${e.station}`;
      body.append(
        el("tr", { "data-event-id": e.event_id, class: "ev-" + e.event },
          el("th", { text: FL.when(e.at) }),
          ...(where ? [el("td", { "data-key": "station", "data-value": station }, el("a", { href: FL.stationPath(e), text: station }))] : []),
          FL.cell("event", FL.eventWord(e.event), e.event),
          FL.cell("data", e.data ? JSON.stringify(e.data, short).slice(0, 160) : "", "")),
      );
    }
  };

  /** The page's status line (#state): loading, ready (data-state=ready) or an error. */
  FL.state = (state, text) => {
    const s = $("state");
    s.dataset.state = state;
    s.textContent = text || "";
  };
  FL.renderWho = () => {
    const scope = $("scope");
    if (scope) scope.textContent = FL.scopeText(KJ.who);
  };
  KJ.onLang.push(FL.renderWho);

  window.FL = FL;
})();
