// What the history and shift pages share: language, login (the screen's token in
// localStorage, a session cookie for GETs, the bearer token for changes), who is asking,
// the model's class display names, and small formatting helpers. Plain JS, no build step.
"use strict";

(() => {
  const I18N = window.KANJIAN_PAGES_I18N;
  const $ = (id) => document.getElementById(id);
  const KJ = {
    lang: localStorage.getItem("kanjian.lang") || "zh",
    token: localStorage.getItem("kanjian.token"),
    who: null, // GET /api/whoami
    status: null, // GET /api/status (model class names, display names)
    onLang: [],
  };

  KJ.$ = $;
  KJ.t = (key, params) => {
    let s = (I18N[KJ.lang] && I18N[KJ.lang][key]) || I18N.en[key] || key;
    for (const [k, v] of Object.entries(params || {})) s = s.replace(`{${k}}`, v);
    return s;
  };

  // the model's display name in the page's language (bundle manifest display_names), else
  // the class as logged
  KJ.className = (name) => {
    if (name === null || name === undefined || name === "") return KJ.t("none_class");
    const names = KJ.status && KJ.status.model && KJ.status.model.display_names;
    return (names && names[KJ.lang] && names[KJ.lang][name]) || name;
  };

  KJ.isEngineer = () => !!(KJ.who && (KJ.who.role === "engineer" || KJ.who.role === "admin"));

  KJ.el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-") || k === "title" || k === "href" || k === "type" || k === "alt")
        e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };

  // percentages and rates as the tables show them (the tests read these back)
  KJ.pct = (x) => (x === null || x === undefined ? "—" : x.toFixed(2) + "%");
  KJ.rate = (x) => (x === null || x === undefined ? "—" : x.toFixed(4));
  // a station-local ISO time ("2026-01-05T22:00:00+08:00") as its own wall clock
  KJ.hhmm = (iso) => iso.slice(11, 16);
  KJ.dayHhmm = (iso) => iso.slice(5, 10) + " " + iso.slice(11, 16);
  // a stored UTC time in the browser's own local time
  KJ.localTime = (iso) =>
    new Date(iso).toLocaleString(KJ.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });

  // <input type=datetime-local> value <-> ISO 8601 with the browser's zone
  KJ.inputToIso = (v) => (v ? new Date(v).toISOString() : null);
  KJ.isoToInput = (iso) => {
    if (!iso) return "";
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  };

  KJ.get = async (path) => {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) {
      let detail = r.statusText;
      try {
        detail = (await r.json()).detail || detail;
      } catch (e) {
        /* not JSON */
      }
      const err = new Error(detail);
      err.status = r.status;
      throw err;
    }
    return r.json();
  };

  // a change: only the bearer token carries one (the cookie is honoured for GETs only)
  KJ.post = (path, body) =>
    fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + KJ.token },
      body: JSON.stringify(body),
    });

  function applyLang() {
    document.documentElement.lang = KJ.lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((e) => {
      e.textContent = KJ.t(e.dataset.i18n);
    });
    $("lang").textContent = KJ.t("lang");
    renderWho();
    for (const f of KJ.onLang) f();
  }

  function renderWho() {
    const b = $("who");
    if (!b) return;
    if (!KJ.who) {
      b.textContent = "";
      return;
    }
    const role = KJ.who.role || "anonymous";
    b.dataset.role = role;
    b.textContent = `${KJ.who.name || ""} · ${KJ.t("role_" + role)}`;
  }

  async function openSession() {
    if (!KJ.token) return;
    const r = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: KJ.token }),
    });
    if (r.status === 401) {
      localStorage.removeItem("kanjian.token");
      KJ.token = null;
    }
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-token").focus();
  }

  // Logs in (token from #token=, localStorage or the form), then calls ready() once
  KJ.start = (ready) => {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      KJ.token = decodeURIComponent(m[1]);
      localStorage.setItem("kanjian.token", KJ.token);
      history.replaceState(null, "", location.pathname + location.search);
    }
    $("lang").addEventListener("click", () => {
      KJ.lang = KJ.lang === "zh" ? "en" : "zh";
      localStorage.setItem("kanjian.lang", KJ.lang);
      applyLang();
    });
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      KJ.token = $("login-token").value.trim();
      localStorage.setItem("kanjian.token", KJ.token);
      await begin();
    });
    const logout = $("logout");
    if (logout)
      logout.addEventListener("click", async () => {
        await fetch("/api/session", { method: "DELETE" }).catch(() => null);
        localStorage.removeItem("kanjian.token");
        KJ.token = null;
        location.reload();
      });
    let started = false;
    async function begin() {
      try {
        await openSession();
        KJ.who = await KJ.get("/api/whoami");
      } catch (e) {
        showLogin(KJ.t("load_failed"));
        return;
      }
      if (!KJ.who.authenticated && !KJ.who.open_reads) {
        showLogin(KJ.token ? KJ.t("bad_token") : "");
        return;
      }
      $("login").hidden = true;
      document.body.dataset.role = KJ.who.role || "anonymous";
      try {
        KJ.status = await KJ.get("/api/status");
      } catch (e) {
        KJ.status = null; // class names then show as logged
      }
      renderWho();
      if (!started) {
        started = true;
        ready();
      }
      applyLang();
    }
    applyLang();
    begin();
  };

  window.KJ = KJ;
})();
