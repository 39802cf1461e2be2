// One station's page (/station/{site}/{line}/{station}): its state, its latest FAIL
// pictures (presigned links to object storage, made by the API for rows in scope
// only), its yield per hour, its FAIL rate's p-chart and its events. A station outside
// the token's scope answers 404 like one nobody runs: the page says "no such station".
"use strict";

(() => {
  const KJ = window.KJ;
  const FL = window.FL;
  const { $, t, el } = KJ;
  const parts = location.pathname.split("/").slice(2).map(decodeURIComponent);
  const where = { site: parts[0], line: parts[1], station: parts[2] };
  const name = `${where.site}/${where.line}/${where.station}`;
  let data = null;

  async function load() {
    FL.state("loading", t("loading"));
    const api = FL.apiStation(where);
    try {
      const filter = { site: where.site, line: where.line, station: where.station };
      const [station, hourly, failRate, events, pictures] = await Promise.all([
        KJ.get(api),
        KJ.get("/api/yield?" + FL.query({ by: "hour", ...filter })),
        KJ.get("/api/fail-rate?" + FL.query(filter)),
        KJ.get(api + "/events?limit=50"),
        KJ.get(api + "/pictures?limit=12"),
      ]);
      data = { station, hourly, failRate, events, pictures };
    } catch (e) {
      FL.state("error", e.status === 404 ? t("not_found") : `${t("load_failed")}: ${e.message}`);
      return;
    }
    await document.fonts.ready;
    FL.rangeForm(data.hourly.window);
    render();
    FL.state("ready");
  }

  function render() {
    if (!data) return;
    const s = data.station;
    const last = s.last_inspection;
    const body = FL.head($("t-station"), [
      t("firm"), t("status"), t("camera"), t("model"), t("backlog"), t("last_confirmed"), t("last_inspection"),
    ]);
    body.append(
      el("tr", { "data-site": s.site, "data-line": s.line, "data-station": s.station },
        FL.cell("firm", s.firm || "—", s.firm || ""),
        ...FL.stateCells(s),
        FL.cell("last_inspection", last ? `${t(last.verdict)} · ${FL.when(last.captured_at)}` : "—",
          last ? last.verdict : "")),
    );
    $("s-judged").textContent = data.hourly.totals.judged;
    $("s-yield").textContent = KJ.pct(data.hourly.totals.yield_pct);
    $("s-pbar").textContent = KJ.rate(data.failRate.p_bar);
    $("s-out").textContent = data.failRate.out_of_control;
    renderPictures(data.pictures);
    FL.hourly(data.hourly.rows);
    FL.pchart(data.failRate);
    FL.events($("t-events"), data.events, false);
    FL.renderWho();
  }

  function renderPictures(pictures) {
    const box = $("pictures");
    box.textContent = "";
    if (!pictures.length) box.append(el("p", { class: "note", text: t("no_pictures") }));
    for (const p of pictures) {
      const caption = `${FL.when(p.captured_at)} · ${KJ.className(p.top_class)}` +
        (p.top_confidence === null ? "" : ` ${p.top_confidence.toFixed(2)}`);
      const shown = p.url
        ? el("img", { src: p.url, alt: caption, loading: "lazy" })
        : el("div", { class: "refused", text: `${t("no_link")}: ${p.refused}` });
      box.append(
        el("figure", { "data-inspection-id": p.inspection_id }, shown, el("figcaption", { text: caption })),
      );
    }
  }

  $("here").textContent = name;
  $("here").href = location.pathname;
  $("station-name").textContent = name;
  document.title = `看见 kanjian · ${name}`;
  KJ.onLang.push(render);
  KJ.start(load);
})();
