// The engineer's models page (/models): the active model and the shadow panel. A shadow is
// a registered model judging the same frames as the active one, apart, on spare capacity
// (GET /api/shadow, polled every 2 s: counters, measured mode, latency, the promotion
// gate's numbers). An engineer loads one (PUT /api/shadow), stops it (DELETE) or promotes
// it (POST /api/shadow/promote): a refusal lists each condition that failed, with its
// numbers, as the station words them. Language, login and who is asking: pages.js (KJ)
// and auth.js. Plain JS, no build.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t } = KJ;
  const POLL_MS = 2000;
  let models = null; // GET /api/models
  let state = null; // GET /api/shadow: { shadow, gate }
  let busy = false;
  let message = { key: "", params: {}, extra: "", error: false };
  let reasons = []; // a refused promotion's conditions

  const short = (sha) => sha.slice(0, 12);
  const label = (m) => `${m.name} v${m.version} (${short(m.sha256)})`;
  const pct = (x) => (x === null || x === undefined ? "—" : (x * 100).toFixed(1) + "%");

  function renderPick() {
    const sel = $("shadow-pick");
    const cur = state && state.shadow ? state.shadow.sha256 : null;
    const choices = (models ? models.models : []).filter((m) => !m.active && m.sha256 !== cur);
    const list = choices.map((m) => m.sha256).join(",");
    if (sel.dataset.list === list) return;
    const keep = sel.value;
    sel.replaceChildren(
      KJ.el("option", { value: "", text: t(choices.length ? "pick_model" : "no_other_model") }),
      ...choices.map((m) => KJ.el("option", { value: m.sha256, text: label(m) })),
    );
    sel.dataset.list = list;
    if (choices.some((m) => m.sha256 === keep)) sel.value = keep;
  }

  function gateLines(g) {
    const lines = [[t("gate_frames", { n: g.frames, min: g.min_frames }), g.frames >= g.min_frames]];
    if (g.min_agreement > 0)
      lines.push([
        t("gate_agreement", { a: pct(g.agreement), min: pct(g.min_agreement) }),
        g.agreement !== null && g.agreement >= g.min_agreement,
      ]);
    if (g.no_worse_on_feedback)
      lines.push([
        t("gate_feedback", { s: g.shadow_wrong, a: g.active_wrong, n: g.feedback_frames }),
        g.shadow_wrong <= g.active_wrong,
      ]);
    $("gate-lines").replaceChildren(
      ...lines.map(([text, ok]) => KJ.el("li", { text: `${ok ? "✓" : "✗"} ${text}`, "data-ok": ok ? "1" : "0" })),
    );
    $("gate-verdict").textContent = t(g.passed ? "gate_pass" : "gate_fail");
    $("gate-verdict").dataset.passed = g.passed ? "1" : "0";
  }

  function render() {
    const active = models && models.models.find((m) => m.active);
    $("active-model").textContent = active ? label(active) : "—";
    $("active-model").dataset.sha = active ? active.sha256 : "";
    const s = state && state.shadow;
    const panel = $("shadow-panel");
    panel.dataset.state = s ? "loaded" : "none";
    panel.dataset.sha = s ? s.sha256 : "";
    $("shadow-none").hidden = !!s;
    $("shadow-now").hidden = !s;
    if (s) {
      $("shadow-model").textContent = label(s);
      $("shadow-since").textContent =
        t("shadow_since", { by: s.started_by, at: KJ.localTime(s.started_at) }) + " · " + t("child_" + s.child);
      for (const k of ["offered", "judged", "skipped", "errors"]) $("n-" + k).textContent = String(s[k]);
      const mode = $("shadow-mode");
      mode.dataset.mode = s.mode || "";
      mode.textContent =
        s.mode === null ? t("mode_none") : t(s.mode === "every frame" ? "mode_every" : "mode_sampling", { share: pct(s.judged_share) });
      $("shadow-latency").textContent =
        s.latency_mean_ms === null ? "" : t("s_latency", { mean: s.latency_mean_ms.toFixed(1), p95: s.latency_p95_ms.toFixed(1) });
      $("shadow-error").hidden = !s.last_error;
      $("shadow-error").textContent = s.last_error ? t("s_last_error") + s.last_error : "";
      gateLines(state.gate);
    }
    renderPick();
    const engineer = KJ.isEngineer();
    $("shadow-pick").disabled = !engineer || busy;
    $("shadow-load").disabled = !engineer || busy || !$("shadow-pick").value;
    $("shadow-stop").disabled = !engineer || busy || !s;
    $("shadow-promote").disabled = !engineer || busy || !s;
    const msg = $("shadow-msg");
    msg.textContent = !engineer ? t("needs_engineer") : message.key ? t(message.key, message.params) + message.extra : "";
    msg.dataset.state = message.error ? "error" : message.key ? "ok" : "";
    msg.dataset.key = message.key;
    $("promote-reasons").hidden = !reasons.length;
    $("promote-reasons").replaceChildren(...reasons.map((r) => KJ.el("li", { text: r })));
  }

  async function load() {
    try {
      [models, state] = await Promise.all([KJ.get("/api/models"), KJ.get("/api/shadow")]);
      document.body.dataset.loaded = "1";
    } catch (e) {
      message = { key: "load_failed", params: {}, extra: `: ${e.message}`, error: true };
    }
    render();
  }

  async function detailOf(r) {
    try {
      const d = (await r.json()).detail;
      return typeof d === "string" ? d : JSON.stringify(d);
    } catch (e) {
      return r.statusText;
    }
  }

  async function act(method, path, body, done) {
    busy = true;
    reasons = [];
    message = { key: "working", params: {}, extra: "", error: false };
    render();
    const r = await KJ.send(method, path, body);
    busy = false;
    if (r.ok) {
      message = { key: done, params: await r.json(), extra: "", error: false };
    } else {
      const detail = await detailOf(r);
      const cut = detail.indexOf("refused: ");
      if (path.endsWith("/promote") && r.status === 409 && cut >= 0) {
        reasons = detail.slice(cut + "refused: ".length).split("; ");
        message = { key: "promote_refused", params: {}, extra: "", error: true };
      } else {
        message = { key: "s_refused", params: {}, extra: `: ${detail}`, error: true };
      }
    }
    await load();
  }

  function ready() {
    $("shadow-pick").addEventListener("change", render);
    $("shadow-load").addEventListener("click", () =>
      act("PUT", "/api/shadow", { sha256: $("shadow-pick").value }, "shadow_loaded"),
    );
    $("shadow-stop").addEventListener("click", () => act("DELETE", "/api/shadow", undefined, "shadow_stopped"));
    $("shadow-promote").addEventListener("click", () =>
      act("POST", "/api/shadow/promote", { force: false }, "promoted"),
    );
    KJ.onLang.push(() => {
      $("shadow-pick").dataset.list = ""; // its first line is a word of the page's language
      render();
    });
    load();
    setInterval(() => (busy ? null : load()), POLL_MS);
  }

  KJ.start(ready);
})();
