// What the engineer's pages (/history, /shift, /zones) share: language (their table,
// i18n-pages.js, then the screen's, i18n.js), login through auth.js (a token of the
// page's own in sessionStorage, else the screen's; always sent as the bearer token,
// pictures fetched with it too), who is asking, the model's class display names, the
// reason sentence as the screen says it, and small formatting helpers. Plain JS.
"use strict";

(() => {
  const I18N = window.KANJIAN_PAGES_I18N;
  const SCREEN = window.KANJIAN_I18N; // the words the screen and the pages share
  const Auth = window.KanjianAuth;
  const $ = (id) => document.getElementById(id);
  const KJ = {
    lang: localStorage.getItem("kanjian.lang") || "zh",
    who: null, // GET /api/whoami
    status: null, // GET /api/status (model class names, display names)
    onLang: [],
  };

  KJ.$ = $;
  const word = (table, lang, key) => {
    const v = table && table[lang] && table[lang][key];
    return typeof v === "string" ? v : null;
  };
  KJ.t = (key, params) => {
    let s =
      word(I18N, KJ.lang, key) || word(SCREEN, KJ.lang, key) ||
      word(I18N, "en", key) || word(SCREEN, "en", key) || key;
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

  // The reason in the page's language from its code and parameters, as the screen says it
  // (i18n.js's `reasons` and `where`): class, confidence, where on the part and its size
  // in mm when the station gives them; the stored English sentence for an unknown code.
  KJ.reasonText = (insp) => {
    const words = SCREEN && SCREEN[KJ.lang];
    const make = insp.reason_code && words && (words.reasons || {})[insp.reason_code];
    if (!make) return insp.reason || "";
    const p = insp.reason_params || {};
    try {
      const where = p.where && words.where && words.where[p.where];
      const size =
        Array.isArray(p.size_mm) && p.size_mm.length === 2
          ? p.size_mm.map((v) => Number(v).toFixed(1)).join(" × ") + " mm"
          : "";
      const box = Array.isArray(p.box) ? `[${p.box.map((v) => Math.round(v)).join(",")}]` : "";
      return make({
        ...p,
        class: p.class === undefined ? undefined : KJ.className(p.class),
        confidence: typeof p.confidence === "number" ? p.confidence.toFixed(2) : p.confidence,
        place: where ? where + (size ? (KJ.lang === "zh" ? "，约 " : ", ") + size : "") : box,
      });
    } catch (e) {
      return insp.reason || "";
    }
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
    const r = await Auth.fetch(path);
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
  KJ.send = (method, path, body) =>
    Auth.fetch(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  KJ.post = (path, body) => KJ.send("POST", path, body);

  // A picture fetched with the page's token (an <img src> would carry only the screen's
  // cookie) as an object URL; null when it could not be had. `img.dataset.src` keeps the
  // address asked for. The URL before is given back to the browser.
  KJ.picture = async (img, path) => {
    img.dataset.src = path;
    let r = null;
    try {
      r = await Auth.fetch(path);
    } catch (e) {
      r = null;
    }
    if (img.dataset.src !== path) return false; // another picture was asked meanwhile
    if (!r || !r.ok) {
      img.dispatchEvent(new Event("error"));
      return false;
    }
    const url = URL.createObjectURL(await r.blob());
    if (img.dataset.src !== path) {
      URL.revokeObjectURL(url);
      return false;
    }
    const old = img.src;
    img.src = url;
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    return true;
  };

  function applyLang() {
    document.documentElement.lang = KJ.lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((e) => {
      e.textContent = KJ.t(e.dataset.i18n);
    });
    $("lang").textContent = KJ.t("lang");
    Auth.setLang(KJ.lang);
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

  // Logs in (a token from #token=, this tab's, the screen's, or the form), then calls
  // ready() once
  KJ.start = (ready) => {
    Auth.init("page", KJ.lang);
    $("lang").addEventListener("click", () => {
      KJ.lang = KJ.lang === "zh" ? "en" : "zh";
      localStorage.setItem("kanjian.lang", KJ.lang);
      applyLang();
    });
    let started = false;
    // another token on a page already showing: what it may see changed, start afresh
    Auth.onLogin(() => (started ? location.reload() : begin()));
    // #logout: "log out" of the page's own token (the screen's stays), else "log in"
    const account = $("logout");
    const renderAccount = () => {
      if (!account) return;
      account.dataset.login = Auth.ownToken() ? "logout" : "login";
      account.textContent = Auth.t(account.dataset.login);
    };
    if (account)
      account.addEventListener("click", () =>
        Auth.ownToken() ? Auth.logout() : Auth.showLogin(""),
      );
    async function begin() {
      try {
        KJ.who = await Auth.whoami();
      } catch (e) {
        Auth.showLogin("load_failed");
        return;
      }
      renderAccount();
      if (!KJ.who.authenticated && !KJ.who.open_reads) {
        Auth.showLogin(Auth.refused ? "bad_token" : "");
        return;
      }
      Auth.hideLogin();
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
