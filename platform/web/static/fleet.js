// The fleet page (/): every station in the token's scope with its state, yield per hour
// and per site / line / station, the FAIL rate's p-chart, a line's defect Pareto and the
// latest events, over a window of whole UTC hours (?since=&until=, default the last 24
// hours; ?site= narrows the charts to one site, ?by= and ?line= pick a grouping and the
// Pareto's line). Numbers from the scoped API (GET /api/stations, /api/yield,
// /api/fail-rate, /api/pareto, /api/events).
"use strict";

(() => {
  const KJ = window.KJ;
  const FL = window.FL;
  const { $, t, el } = KJ;
  let data = null; // {stations, hourly, groups, failRate, pareto, events}

  function selected() {
    const q = new URLSearchParams(location.search);
    return { by: q.get("by") || "site", line: q.get("line") };
  }

  async function load() {
    FL.state("loading", t("loading"));
    const site = FL.range().site;
    const sel = selected();
    try {
      const stations = await KJ.get("/api/stations");
      const lines = [...new Set(stations.map((s) => `${s.site}/${s.line}`))]
        .filter((l) => !site || l.startsWith(site + "/"));
      const line = sel.line && lines.includes(sel.line) ? sel.line : lines[0] || null;
      const [hourly, groups, failRate, events, rollouts] = await Promise.all([
        KJ.get("/api/yield?" + FL.query({ by: "hour", site })),
        KJ.get("/api/yield?" + FL.query({ by: sel.by, site })),
        KJ.get("/api/fail-rate?" + FL.query({ site })),
        KJ.get("/api/events?" + new URLSearchParams(site ? { site, limit: 30 } : { limit: 30 })),
        KJ.get("/api/rollouts?limit=10"),
      ]);
      let pareto = null;
      if (line) {
        const [ps, pl] = line.split("/");
        pareto = await KJ.get("/api/pareto?" + FL.query({ site: ps, line: pl }));
      }
      data = { stations, lines, line, hourly, groups, failRate, pareto, events, rollouts };
    } catch (e) {
      FL.state("error", `${t("load_failed")}: ${e.message}`);
      return;
    }
    await document.fonts.ready; // canvas text drawn before the font is in stays in a fallback
    FL.rangeForm(data.hourly.window);
    render();
    const s = $("state");
    s.dataset.since = data.hourly.window.since;
    s.dataset.until = data.hourly.window.until;
    FL.state("ready");
  }

  function render() {
    if (!data) return;
    const { stations, hourly, failRate } = data;
    const site = FL.range().site;
    $("s-stations").textContent = stations.length;
    $("s-online").textContent = stations.filter((s) => s.availability === "online").length;
    $("s-offline").textContent = stations.filter((s) => s.availability === "offline").length;
    $("s-judged").textContent = hourly.totals.judged;
    $("s-yield").textContent = KJ.pct(hourly.totals.yield_pct);
    $("s-pbar").textContent = KJ.rate(failRate.p_bar);
    $("s-out").textContent = failRate.out_of_control;
    renderSites(stations, site);
    renderStations(stations);
    FL.hourly(hourly.rows);
    FL.pchart(failRate);
    renderGroups(data.groups);
    renderPareto();
    FL.events($("t-events"), data.events, true);
    renderRollouts(data.rollouts);
    FL.renderWho();
  }

  // the newest rollouts in scope (GET /api/rollouts): state, stations per state, and the
  // canaries' FAIL rate against the baseline the regression margin is measured from, the
  // operators' answers, and the shadow's agreement
  function renderRollouts(rollouts) {
    const body = FL.head($("t-rollouts"), [t("ro_id"), t("ro_model"), t("ro_state"), t("ro_stations"),
      t("ro_canary_rate"), t("ro_baseline"), t("ro_wrong_rate"), t("ro_agreement"), t("ro_window_ends")]);
    if (!rollouts.length) body.append(el("tr", {}, el("td", { text: t("ro_none") })));
    for (const r of rollouts) {
      const counts = Object.entries(r.counts).map(([k, n]) => `${k} ${n}`).join(", ");
      body.append(
        el("tr", { "data-rollout": r.rollout_id, "data-state": r.state },
          el("th", { text: r.rollout_id }),
          FL.cell("model", `${r.name} v${r.version}`),
          FL.cell("state", r.state),
          FL.cell("stations", counts),
          FL.cell("canary_rate", KJ.rate(r.canary_rate), r.canary_rate),
          FL.cell("baseline", KJ.rate(r.baseline_rate), r.baseline_rate),
          // parts the canaries' operators said were judged wrong, against the baseline's
          FL.cell("wrong_rate", `${KJ.rate(r.canary_wrong_rate)} / ${KJ.rate(r.baseline_wrong_rate)}`,
            r.canary_wrong_rate),
          // a shadow's verdict agreement with the old model, where a station compared them
          FL.cell("agreement", r.agreement === null ? "—" : KJ.rate(r.agreement), r.agreement),
          FL.cell("window_ends", r.window_ends ? KJ.localTime(r.window_ends) : "—")),
      );
    }
  }

  function renderSites(stations, site) {
    const f = $("f-site");
    f.textContent = "";
    f.append(el("option", { value: "", text: t("all_sites") }));
    for (const s of [...new Set(stations.map((x) => x.site))])
      f.append(el("option", { value: s, text: s, selected: s === site }));
  }

  function renderStations(stations) {
    const body = FL.head($("t-stations"), [
      t("firm"), t("site"), t("line"), t("station"), t("status"), t("camera"), t("model"),
      t("backlog"), t("last_confirmed"), t("last_inspection"),
    ]);
    if (!stations.length) body.append(el("tr", {}, el("td", { text: t("no_stations"), colSpan: 10 })));
    for (const s of stations) {
      const last = s.last_inspection;
      body.append(
        el("tr", { "data-site": s.site, "data-line": s.line, "data-station": s.station },
          FL.cell("firm", s.firm || "—", s.firm || ""),
          FL.cell("site", s.site),
          FL.cell("line", s.line),
          el("td", { "data-key": "station", "data-value": s.station },
            el("a", { href: FL.stationPath(s), text: s.station })),
          ...FL.stateCells(s),
          FL.cell("last_inspection", last ? `${t(last.verdict)} · ${FL.when(last.captured_at)}` : "—",
            last ? last.verdict : "")),
      );
    }
  }

  function groupLabel(r) {
    return [r.site, r.line, r.station].filter((x) => x !== null && x !== undefined).join("/");
  }

  function renderGroups(g) {
    $("f-by").value = g.by;
    // yields sit close together near the top: the axis starts a little below the lowest
    const lowest = Math.min(100, ...g.rows.map((r) => (r.yield_pct === null ? 100 : r.yield_pct)));
    const floor = Math.max(0, Math.floor(lowest / 5) * 5 - 5);
    FL.chart("yield", {
      type: "bar",
      data: {
        labels: g.rows.map(groupLabel),
        datasets: [{ label: t("yield"), data: g.rows.map((r) => r.yield_pct), backgroundColor: FL.COLOURS.PASS }],
      },
      options: { scales: { y: { min: floor, max: 100 } } },
    });
    const body = FL.head($("t-yield"), [t("group"), ...FL.countHeads()]);
    for (const r of g.rows)
      body.append(el("tr", { "data-group": groupLabel(r) }, el("th", { text: groupLabel(r) }), ...FL.countCells(r)));
  }

  function renderPareto() {
    const f = $("f-line");
    f.textContent = "";
    for (const l of data.lines) f.append(el("option", { value: l, text: l, selected: l === data.line }));
    const p = data.pareto;
    const classes = p ? p.classes : [];
    FL.chart("pareto", {
      type: "bar",
      data: {
        labels: classes.map((c) => c.class_name || t("none_class")),
        datasets: [
          { label: t("detections"), data: classes.map((c) => c.detections), backgroundColor: FL.COLOURS.FAIL,
            yAxisID: "y", order: 2 },
          { type: "line", label: t("cumulative"), data: classes.map((c) => c.cumulative_pct),
            borderColor: FL.COLOURS.line, backgroundColor: FL.COLOURS.line, yAxisID: "pct", order: 1 },
        ],
      },
      options: {
        scales: {
          y: { beginAtZero: true },
          pct: { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } },
        },
      },
    });
    const body = FL.head($("t-pareto"), [t("class"), t("detections"), t("parts"), t("share"), t("cumulative")]);
    for (const c of classes)
      body.append(
        el("tr", { "data-class": c.class_name || "" },
          el("th", { text: c.class_name || t("none_class") }),
          FL.cell("detections", String(c.detections)), FL.cell("parts", String(c.parts)),
          FL.cell("share", KJ.pct(c.share_pct), c.share_pct),
          FL.cell("cumulative", KJ.pct(c.cumulative_pct), c.cumulative_pct)),
      );
  }

  KJ.onLang.push(render);
  KJ.start(() => {
    $("f-site").addEventListener("change", (ev) => FL.go({ site: ev.target.value, line: null }));
    $("f-by").addEventListener("change", (ev) => FL.go({ by: ev.target.value }));
    $("f-line").addEventListener("change", (ev) => FL.go({ line: ev.target.value }));
    load();
  });
})();
