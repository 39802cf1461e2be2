// The engineer's image quality page (/quality): the quality gate's numbers for the newest
// frame it measured (GET /api/quality, every second) beside its thresholds, each marked
// pass / fail for that frame as the threshold is typed, so a limit is set between what
// good and bad parts score. Saved with PUT /api/quality (engineer-only, audited, kept
// over restarts), or back to station.yaml's with DELETE. Language, login and who is
// asking: pages.js (KJ) and auth.js. Plain JS, no build.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t } = KJ;
  const KEYS = ["min_focus", "min_mean", "max_mean", "max_clipped", "max_reference_diff"];
  const POLL_MS = 1000;
  let state = null; // GET /api/quality, the settings as loaded or saved
  let latest = null; // its newest reading
  let dirty = false;
  let busy = false;
  let message = { key: "", extra: "", error: false };

  // max_clipped is a fraction in the API and a percent on the page
  const shown = (k, v) => (k === "max_clipped" ? Number((v * 100).toPrecision(12)) : v);
  const sent = (k, v) => (k === "max_clipped" ? v / 100 : v);

  function limitOf(k) {
    const s = $(k).value.trim();
    if (s === "") return null;
    const n = Number(s);
    return Number.isFinite(n) && n >= 0 ? n : NaN;
  }

  function measure(q, name) {
    if (!q) return null;
    if (name === "clipped") return 100 * (q.dark + q.bright);
    const v = q[name];
    return v === undefined || v === null ? null : v;
  }

  function fill() {
    for (const k of KEYS) $(k).value = state[k] === null ? "" : String(shown(k, state[k]));
    $("enabled").checked = state.enabled;
    dirty = false;
  }

  function renderRows() {
    const q = latest && latest.quality;
    for (const tr of document.querySelectorAll("#gate tbody tr")) {
      const k = tr.dataset.key;
      const cell = tr.querySelector(".now");
      const v = measure(q, cell.dataset.measure);
      cell.textContent = v === null ? "—" : cell.dataset.measure === "clipped" ? v.toFixed(2) + "%" : v.toFixed(1);
      const lim = limitOf(k);
      let verdict = "";
      if (v !== null && lim !== null && !Number.isNaN(lim)) {
        const fails = k.startsWith("min_") ? v < lim : v > lim;
        verdict = fails ? "fail" : "pass";
      }
      tr.dataset.state = verdict;
      tr.querySelector(".mark").textContent = verdict === "fail" ? "✗" : verdict === "pass" ? "✓" : "";
    }
  }

  function render() {
    renderRows();
    const line = $("latest");
    if (!latest) {
      line.textContent = t(state && state.enabled ? "q_no_reading" : "q_off");
      delete line.dataset.inspectionId;
      line.dataset.rejected = "0";
    } else {
      line.textContent = `${KJ.localTime(latest.captured_at)} · ${t(latest.verdict)} · ${KJ.reasonText(latest)}`;
      line.dataset.inspectionId = latest.inspection_id;
      line.dataset.rejected = latest.rejected ? "1" : "0";
    }
    if (state) {
      $("source").textContent =
        state.source === "api"
          ? t("q_source_api", { by: state.set_by || "?", at: KJ.localTime(state.set_at) })
          : t("q_source_yaml");
      $("source").dataset.source = state.source;
      const rows = state.rows === null ? t("q_every_row") : String(state.rows);
      const ref = state.reference ? `${state.reference} (${state.reference_wh.join("×")})` : t("q_no_reference");
      $("measure").textContent = t("q_measure", { rows, ref });
      $("max_reference_diff").disabled = !KJ.isEngineer() || !state.reference;
    }
    const engineer = KJ.isEngineer();
    for (const k of KEYS) if (k !== "max_reference_diff") $(k).disabled = !engineer;
    $("enabled").disabled = !engineer;
    $("save").disabled = !engineer || busy || !dirty;
    $("reset").disabled = !engineer || busy || !state || state.source !== "api";
    const msg = $("save-msg");
    msg.textContent = !engineer ? t("needs_engineer") : message.key ? t(message.key) + message.extra : "";
    msg.dataset.state = message.error ? "error" : message.key ? "ok" : "";
  }

  async function load() {
    try {
      const got = await KJ.get("/api/quality");
      latest = got.latest;
      if (!dirty && !busy) {
        state = got;
        fill();
      }
      document.body.dataset.loaded = "1";
    } catch (e) {
      message = { key: "load_failed", extra: `: ${e.message}`, error: true };
    }
    render();
  }

  async function change(method) {
    const body = { enabled: $("enabled").checked };
    for (const k of KEYS) {
      const v = limitOf(k);
      if (Number.isNaN(v)) {
        message = { key: "q_bad_number", extra: "", error: true };
        render();
        $(k).focus();
        return;
      }
      if (v !== null && !$(k).disabled) body[k] = sent(k, v);
    }
    busy = true;
    message = { key: "saving", extra: "", error: false };
    render();
    const r = await KJ.send(method, "/api/quality", method === "PUT" ? body : undefined);
    busy = false;
    if (r.ok) {
      state = await r.json();
      latest = state.latest;
      fill();
      message = { key: method === "PUT" ? "saved" : "q_reset_done", extra: "", error: false };
    } else {
      let detail = r.statusText;
      try {
        const d = (await r.json()).detail;
        detail = typeof d === "string" ? d : JSON.stringify(d);
      } catch (e) {
        /* not JSON */
      }
      message = { key: "refused", extra: `: ${detail}`, error: true };
    }
    render();
  }

  function ready() {
    for (const k of KEYS) $(k).addEventListener("input", () => ((dirty = true), render()));
    $("enabled").addEventListener("change", () => ((dirty = true), render()));
    $("save").addEventListener("click", () => change("PUT"));
    $("reset").addEventListener("click", () => change("DELETE"));
    KJ.onLang.push(render);
    load();
    setInterval(load, POLL_MS);
  }

  KJ.start(ready);
})();
