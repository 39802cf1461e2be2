// One login for every page: where a token is kept, the login dialog, who is asking.
//
// The screen (/) keeps the line's operator token in localStorage `kanjian.token` (it
// survives a reboot of the line PC) and opens a cookie session with it, because its
// live view (<img>) and events (EventSource) cannot send a header. Only the screen writes
// that key.
//
// The other pages (/history, /shift, /zones) keep a token typed or linked there
// (#token=) in sessionStorage `kanjian.page_token`: this tab only, gone when it closes,
// so an engineer's token neither stays on the line PC nor replaces the screen's. They
// send it as a bearer header on every request and open no cookie session (the screen's
// cookie stays the operator's, its answers recorded under the operator). Without a
// token of their own they read with the screen's token. The role always comes from
// GET /api/whoami. Plain JS, no build step; loaded before app.js / pages.js.
"use strict";

(() => {
  const SCREEN_KEY = "kanjian.token";
  const PAGE_KEY = "kanjian.page_token";

  // the login dialog's strings: here only, for the screen and the pages alike
  const TEXT = {
    zh: {
      title: "请输入访问令牌",
      help_screen: "用 kanjian token create --role operator 创建",
      help_page: "用 kanjian token create --role engineer 创建（只在本标签页保留）",
      login: "登录",
      logout: "退出",
      bad_token: "令牌无效或已撤销",
      load_failed: "加载失败",
    },
    en: {
      title: "Enter an access token",
      help_screen: "Make one with kanjian token create --role operator",
      help_page: "Make one with kanjian token create --role engineer (kept for this tab only)",
      login: "Log in",
      logout: "Log out",
      bad_token: "Token unknown or revoked",
      load_failed: "Could not load",
    },
  };

  const Auth = {
    mode: "page", // "screen" or "page"
    token: null, // what is sent as the bearer token
    who: null, // GET /api/whoami's answer
    refused: false, // the page's own token was refused (and dropped) by the last whoami
    lang: "zh",
  };
  let errorKey = "";
  let onLogin = null;

  Auth.t = (key) => (TEXT[Auth.lang] || TEXT.en)[key] || TEXT.en[key] || key;

  /** Where this page keeps a token it was given. */
  const store = () => (Auth.mode === "screen" ? localStorage : sessionStorage);
  const key = () => (Auth.mode === "screen" ? SCREEN_KEY : PAGE_KEY);

  /** Start: `mode` "screen" or "page"; takes #token= from the address (and removes it). */
  Auth.init = (mode, lang) => {
    Auth.mode = mode === "screen" ? "screen" : "page";
    Auth.lang = lang || "zh";
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      store().setItem(key(), decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    Auth.token = store().getItem(key()) || (Auth.mode === "page" ? localStorage.getItem(SCREEN_KEY) : null);
    dialog();
  };

  /** True when this page holds a token of its own (a page can log out of it). */
  Auth.ownToken = () => !!store().getItem(key());

  Auth.headers = () => (Auth.token ? { Authorization: "Bearer " + Auth.token } : {});

  /** fetch() with the bearer token; `init.headers` are kept. */
  Auth.fetch = (path, init) => {
    const i = { cache: "no-store", ...(init || {}) };
    i.headers = { ...Auth.headers(), ...(i.headers || {}) };
    return fetch(path, i);
  };

  /** Drop the token this page keeps (unknown or revoked). */
  Auth.forget = () => {
    store().removeItem(key());
    Auth.token = Auth.mode === "page" ? localStorage.getItem(SCREEN_KEY) : null;
  };

  /** The screen's cookie session for its token (the screen only). Returns false when the
   * token was refused (and forgets it). */
  Auth.openSession = async () => {
    if (Auth.mode !== "screen" || !Auth.token) return true;
    const r = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: Auth.token }),
    });
    if (r.status === 401) {
      Auth.forget();
      return false;
    }
    return r.ok;
  };

  /** GET /api/whoami with this page's credentials; a page's own token that is refused is
   * dropped (the screen's token, if any, reads then). */
  Auth.whoami = async () => {
    let who = await (await Auth.fetch("/api/whoami")).json();
    Auth.refused = false;
    if (!who.authenticated && Auth.mode === "page" && Auth.ownToken()) {
      Auth.forget();
      Auth.refused = true;
      who = await (await Auth.fetch("/api/whoami")).json();
    }
    Auth.who = who;
    return who;
  };

  /** Log out of this page's own token (the screen's token and cookie are left alone). */
  Auth.logout = () => {
    if (Auth.mode === "page") sessionStorage.removeItem(PAGE_KEY);
    location.reload();
  };

  // -- the dialog: made here for every page, so its markup is written once --------------
  function dialog() {
    let box = document.getElementById("login");
    if (box) return box;
    box = document.createElement("div");
    box.id = "login";
    box.hidden = true;
    const form = document.createElement("form");
    form.id = "login-form";
    const h2 = document.createElement("h2");
    h2.dataset.login = "title";
    const help = document.createElement("p");
    help.dataset.login = Auth.mode === "screen" ? "help_screen" : "help_page";
    const input = document.createElement("input");
    Object.assign(input, { id: "login-token", type: "password", autocomplete: "off", spellcheck: false });
    const button = document.createElement("button");
    button.type = "submit";
    button.dataset.login = "login";
    const err = document.createElement("p");
    err.id = "login-error";
    err.setAttribute("role", "alert");
    form.append(h2, help, input, button, err);
    box.append(form);
    document.body.append(box);
    form.addEventListener("submit", submit);
    // Esc closes it when the page can read without it (opened to change the token)
    box.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && Auth.who && (Auth.who.authenticated || Auth.who.open_reads))
        Auth.hideLogin();
    });
    render();
    return box;
  }

  function render() {
    document.querySelectorAll("[data-login]").forEach((e) => {
      e.textContent = Auth.t(e.dataset.login);
    });
    const err = document.getElementById("login-error");
    if (err) err.textContent = errorKey ? Auth.t(errorKey) : "";
  }

  /** The dialog's language (the page's own switch calls this). */
  Auth.setLang = (lang) => {
    Auth.lang = lang;
    render();
  };

  /** Show the dialog with an error (a key of the dialog's strings, or "" for none). */
  Auth.showLogin = (error) => {
    errorKey = error || "";
    dialog().hidden = false;
    render();
    document.getElementById("login-token").focus();
  };

  Auth.hideLogin = () => {
    errorKey = "";
    dialog().hidden = true;
  };

  /** What to do once a token typed in the dialog was accepted. */
  Auth.onLogin = (f) => {
    onLogin = f;
  };

  async function submit(ev) {
    ev.preventDefault();
    const typed = document.getElementById("login-token").value.trim();
    const before = Auth.token;
    Auth.token = typed;
    let ok = false;
    try {
      if (Auth.mode === "screen") {
        // the cookie session is the check: a refused token is not kept
        const r = await fetch("/api/session", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ token: typed }),
        });
        ok = r.status === 204;
      } else {
        ok = !!(await (await Auth.fetch("/api/whoami")).json()).authenticated;
      }
    } catch (e) {
      ok = false;
    }
    if (!ok) {
      Auth.token = before;
      Auth.showLogin("bad_token");
      return;
    }
    store().setItem(key(), typed);
    document.getElementById("login-token").value = "";
    Auth.hideLogin();
    if (onLogin) onLogin();
  }

  window.KanjianAuth = Auth;
})();
