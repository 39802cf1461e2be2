// The operator's screen: one part at a time (part.js), the live flow in a small view
// with the shift's counts, badges, language, login, and the optional beep and flash on
// FAIL. Plain JS, no build step. Live data comes from /api/events (server-sent events),
// the small live view from /api/live.mjpeg; both reconnect by themselves.
"use strict";

(() => {
  const I18N = window.KANJIAN_I18N;
  const $ = (id) => document.getElementById(id);
  const RECONNECT_MS = 2000;
  const SILENCE_MS = 12000; // the server sends a status event every 5 s

  let lang = localStorage.getItem("kanjian.lang") || "zh";
  // login and token: auth.js (the screen keeps its operator token in localStorage)
  const Auth = window.KanjianAuth;
  Auth.init("screen", lang);
  let es = null;
  let connected = false;
  let lastEventAt = 0;
  let reconnectTimer = null;
  let status = null;
  let shift = null;
  // api.screen_* (GET /api/screen); these defaults until it answers
  const settings = { hold_s: 3, min_show_s: 1, strip: 8, sound: false, flash: false, undo_s: 10 };

  const t = (key) => (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
  // the model's display names (GET /api/status model.display_names), else the class name
  const className = (name) => {
    const names = status && status.model && status.model.display_names;
    return (names && names[lang] && names[lang][name]) || name;
  };
  // the small live view, its labels in the screen's language
  const liveUrl = () => `/api/live.mjpeg?lang=${lang}&t=${Date.now()}`;

  // -- beep and flash on FAIL: api.screen_sound / screen_flash, or ?sound= / ?flash= in
  // the address, which this screen remembers (one screen by the line beeps, another not)
  const urlOpts = new URLSearchParams(location.search);
  for (const key of ["sound", "flash"]) {
    const v = urlOpts.get(key);
    if (v === "1" || v === "0") localStorage.setItem("kanjian." + key, v);
  }
  const opt = (key) => {
    const v = localStorage.getItem("kanjian." + key);
    return v === null ? settings[key] : v === "1";
  };
  let audio = null;
  let beeps = 0;
  let flashes = 0;
  function beep() {
    // WebAudio, no sound file. Browsers start audio only after a touch on the page (or
    // with Chromium's --autoplay-policy=no-user-gesture-required on a kiosk)
    try {
      audio = audio || new AudioContext();
      if (audio.state === "suspended") audio.resume();
      const now = audio.currentTime;
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, now);
      for (const [at, level] of [[0.01, 0.4], [0.18, 0.0001], [0.26, 0.4], [0.44, 0.0001]]) {
        gain.gain.exponentialRampToValueAtTime(level, now + at);
      }
      osc.connect(gain).connect(audio.destination);
      osc.start(now);
      osc.stop(now + 0.5);
      document.body.dataset.beeps = String(++beeps);
    } catch (e) {
      /* no audio device: the flash and the screen still say it */
    }
  }
  document.addEventListener("pointerdown", () => audio && audio.resume());
  function alarm() {
    if (opt("sound")) beep();
    if (opt("flash")) {
      const f = $("flash");
      f.classList.remove("on");
      void f.offsetWidth; // restart the animation
      f.classList.add("on");
      document.body.dataset.flashes = String(++flashes);
    }
  }
  $("flash").addEventListener("animationend", () => $("flash").classList.remove("on"));

  // The reason in the screen's language, from its code and parameters; the server's
  // English sentence when the code is unknown (an older server, a reason made elsewhere).
  function reasonText(insp) {
    const make = insp.reason_code && (I18N[lang].reasons || {})[insp.reason_code];
    if (!make) return insp.reason || "";
    const p = insp.reason_params || {};
    try {
      const where = p.where && I18N[lang].where && I18N[lang].where[p.where];
      const size =
        Array.isArray(p.size_mm) && p.size_mm.length === 2
          ? p.size_mm.map((v) => Number(v).toFixed(1)).join(" × ") + " mm"
          : "";
      const box = Array.isArray(p.box) ? `[${p.box.join(",")}]` : "";
      return make({
        ...p,
        class: p.class === undefined ? undefined : className(p.class),
        confidence: typeof p.confidence === "number" ? p.confidence.toFixed(2) : p.confidence,
        // where on the part in words (and its size), when the station says so; else the box
        place: where ? where + (size ? (lang === "zh" ? "，约 " : ", ") + size : "") : box,
      });
    } catch (e) {
      return insp.reason || "";
    }
  }

  async function api(path, method, body) {
    const init = { method: method || "GET", cache: "no-store", headers: Auth.headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(path, init);
    } catch (e) {
      return null;
    }
  }

  const part = window.KanjianPart({
    t,
    lang: () => lang,
    className,
    classNames: () => (status && status.model.class_names) || [],
    reasonText,
    connected: () => connected,
    settings,
    api,
    alarm,
    showLogin: (m) => showLogin(m),
  });

  // -- language -------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    $("live").alt = t("live_view");
    $("lang").textContent = lang === "zh" ? "EN" : "中文";
    Auth.setLang(lang);
    renderConnection();
    renderStatus();
    renderShift();
    part.render();
  }

  function relabel() {
    if (connected) $("live").src = liveUrl();
    part.relabel();
  }

  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("kanjian.lang", lang);
    applyLang();
    relabel();
  });

  // -- auth: auth.js's dialog; a token it accepted opens the session, then connect -------
  const showLogin = (errorKey) => Auth.showLogin(errorKey);
  Auth.onLogin(() => connect());

  // -- connection -----------------------------------------------------------------------
  function setConnected(on) {
    if (connected === on) return;
    connected = on;
    renderConnection();
    if (on) {
      $("live").src = liveUrl();
    } else {
      $("live").removeAttribute("src"); // ends the MJPEG request; reopened on return
    }
    part.render(); // the buttons work only while connected
  }

  function renderConnection() {
    const b = $("badge-conn");
    b.dataset.state = connected ? "connected" : "disconnected";
    b.className = "badge " + (connected ? "ok" : "bad");
    b.textContent = t(connected ? "connected" : "disconnected");
    $("view-offline").hidden = connected;
    document.body.classList.toggle("offline", !connected);
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, RECONNECT_MS);
  }

  async function connect() {
    try {
      const accepted = await Auth.openSession();
      const who = await Auth.whoami();
      if (!who.authenticated && !who.open_reads) {
        setConnected(false);
        showLogin(accepted ? "" : "bad_token");
        return;
      }
      const r = await api("/api/screen");
      if (r && r.ok) Object.assign(settings, await r.json());
      document.body.dataset.sound = opt("sound") ? "1" : "0";
      document.body.dataset.flash = opt("flash") ? "1" : "0";
      openEvents();
    } catch (e) {
      setConnected(false);
      scheduleReconnect();
    }
  }

  function openEvents() {
    if (es) es.close();
    es = new EventSource("/api/events");
    es.addEventListener("hello", (e) => {
      const d = JSON.parse(e.data);
      lastEventAt = Date.now();
      onStatus(d.status);
      setConnected(true);
      if (d.shift) onShift(d.shift);
      // the station's last part: shown if this screen has none, not queued or sounded again
      part.loadDefects().then(() => d.last && part.onInspection(d.last, false));
    });
    es.addEventListener("inspection", (e) => {
      const d = JSON.parse(e.data);
      lastEventAt = Date.now();
      setConnected(true);
      part.onInspection(d.inspection);
      if (d.shift) onShift(d.shift);
    });
    es.addEventListener("resync", () => {
      // this screen fell behind and missed inspections: take the defects from the log
      lastEventAt = Date.now();
      part.loadDefects();
    });
    es.addEventListener("status", (e) => {
      lastEventAt = Date.now();
      setConnected(true);
      onStatus(JSON.parse(e.data));
    });
    es.onerror = () => {
      setConnected(false);
      // CONNECTING: the browser retries by itself; CLOSED (HTTP error): we start over
      if (es && es.readyState === EventSource.CLOSED) {
        es.close();
        es = null;
        scheduleReconnect();
      }
    };
  }

  setInterval(() => {
    if (connected && Date.now() - lastEventAt > SILENCE_MS) {
      // a silent half-open connection (cable pulled): drop it and start over
      setConnected(false);
      if (es) es.close();
      es = null;
      scheduleReconnect();
    }
  }, 2000);

  // -- status and counts ----------------------------------------------------------------
  function onStatus(s) {
    const names = JSON.stringify(status && status.model.display_names);
    status = s;
    renderStatus();
    if (JSON.stringify(s.model.display_names) !== names) part.render(); // a new model
  }

  function onShift(s) {
    shift = s;
    renderShift();
  }

  function renderStatus() {
    if (!status) return;
    $("station-name").textContent = `${status.station.id} · ${status.station.line}`;
    const cam = status.camera.state;
    $("camera-state").textContent = t("state_" + cam);
    $("badge-camera").className = "badge " + (cam === "connected" ? "ok" : "bad");
    const m = status.model;
    $("model-name").textContent = `${m.name} v${m.version}`;
    // a model that runs on another provider than station.yaml's first (allow_fallback):
    // a mark ahead of the name, so a long name never hides it; the cause on hover
    const mark = $("model-fallback");
    mark.hidden = !m.fell_back;
    if (m.fell_back) {
      const short = m.provider.replace("ExecutionProvider", "").replace("Tensorrt", "TensorRT");
      mark.textContent =
        m.provider === "CPUExecutionProvider" ? t("fell_back") : t("fell_back_to").replace("{p}", short);
      mark.title = `${m.providers_requested[0]} → ${m.provider}: ${m.fallback_cause || ""}`;
    }
    $("badge-model").className = "badge " + (m.fell_back ? "warn" : "ok");
    const sync = status.sync;
    let text = t("sync_off");
    let cls = "";
    if (sync.enabled && !sync.connected) {
      text = `${t("sync_offline")} · ${sync.backlog}`;
      cls = "bad";
    } else if (sync.enabled) {
      text = sync.backlog === 0 ? t("sync_ok") : `${t("sync_pending")} ${sync.backlog}`;
      cls = sync.backlog === 0 ? "ok" : "warn";
    }
    $("sync-state").textContent = text;
    $("badge-sync").className = "badge " + cls;
  }

  function renderShift() {
    if (!shift) return;
    $("n-pass").textContent = shift.counts.PASS;
    $("n-fail").textContent = shift.counts.FAIL;
    $("n-review").textContent = shift.counts.REVIEW;
    $("yield").textContent = shift.yield_pct === null ? "—" : shift.yield_pct.toFixed(1) + "%";
  }

  // -- start ----------------------------------------------------------------------------
  applyLang();
  connect();
})();
