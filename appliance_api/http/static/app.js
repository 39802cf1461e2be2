// The operator's screen: live verdict, annotated view, shift counts, last defects, feedback.
// Plain JS, no build step. Live data comes from /api/events (server-sent events); the
// picture from /api/live.mjpeg. Both reconnect by themselves when the station returns.
"use strict";

(() => {
  const I18N = window.KANJIAN_I18N;
  const $ = (id) => document.getElementById(id);
  const RECONNECT_MS = 2000;
  const SILENCE_MS = 12000; // the server sends a status event every 5 s
  const PIN_MS = 15000; // a tapped defect stays the feedback target this long
  const MAX_THUMBS = 8;
  const THUMBS_EVERY_MS = 500;
  const HOLD_MS = 1500;
  const DEFECT_MIN_MS = 500; // a newer defect replaces the shown one at most this often

  let lang = localStorage.getItem("kanjian.lang") || "zh";
  let token = localStorage.getItem("kanjian.token");
  let es = null;
  let connected = false;
  let lastEventAt = 0;
  let reconnectTimer = null;
  let status = null;
  let current = null; // the inspection on the big verdict
  let holdUntil = 0;
  let target = null; // the defect feedback goes to
  let pinnedUntil = 0;
  let shift = null;
  const defects = []; // newest first: {insp, feedback}

  const t = (key) => (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
  const className = (name) => (lang === "zh" && I18N.zh.classes[name]) || name;
  const isDefect = (v) => v === "FAIL" || v === "REVIEW";
  const topDetection = (insp) =>
    (insp.detections || []).reduce((a, d) => (a && a.confidence >= d.confidence ? a : d), null);
  const hhmmss = (iso) => new Date(iso).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB");

  // -- language -------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    $("live").alt = t("live_view");
    $("lang").textContent = lang === "zh" ? "EN" : "中文";
    renderConnection();
    renderStatus();
    renderVerdict();
    renderShift();
    renderTarget();
    renderThumbs();
  }

  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("kanjian.lang", lang);
    applyLang();
  });

  // -- auth -----------------------------------------------------------------------------
  function adoptTokenFromUrl() {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      token = decodeURIComponent(m[1]);
      localStorage.setItem("kanjian.token", token);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-token").focus();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token = $("login-token").value.trim();
    const r = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    }).catch(() => null);
    if (r && r.status === 204) {
      localStorage.setItem("kanjian.token", token);
      $("login").hidden = true;
      connect();
    } else {
      showLogin(t("bad_token"));
    }
  });

  // -- connection -----------------------------------------------------------------------
  function setConnected(on) {
    if (connected === on) return;
    connected = on;
    renderConnection();
    if (on) {
      $("live").src = "/api/live.mjpeg?t=" + Date.now();
    } else {
      $("live").removeAttribute("src"); // ends the MJPEG request; reopened on return
    }
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
      if (token) {
        const r = await fetch("/api/session", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ token }),
        });
        if (r.status === 401) {
          localStorage.removeItem("kanjian.token");
          token = null;
        }
      }
      const who = await (await fetch("/api/whoami", { cache: "no-store" })).json();
      if (!who.authenticated && !who.open_reads) {
        setConnected(false);
        showLogin(token ? t("bad_token") : "");
        return;
      }
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
      setConnected(true);
      onStatus(d.status);
      if (d.shift) onShift(d.shift);
      if (d.last) onInspection(d.last);
      loadDefects();
    });
    es.addEventListener("inspection", (e) => {
      const d = JSON.parse(e.data);
      lastEventAt = Date.now();
      setConnected(true);
      onInspection(d.inspection);
      if (d.shift) onShift(d.shift);
    });
    es.addEventListener("resync", () => {
      // this screen fell behind and missed inspections: take the defects from the log
      lastEventAt = Date.now();
      loadDefects();
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

  // -- data -----------------------------------------------------------------------------
  function onStatus(s) {
    status = s;
    renderStatus();
  }

  function onShift(s) {
    shift = s;
    renderShift();
  }

  function onInspection(insp) {
    // A defect stays on the big verdict at least HOLD_MS, so a line running faster
    // than people can read never hides a FAIL behind the next PASS.
    // A newer defect takes over at most every DEFECT_MIN_MS: words and picture that
    // change at the line's rate cannot be read (it is counted and in the strip anyway).
    const now = Date.now();
    const holding = current && isDefect(current.verdict);
    const newerDefect = isDefect(insp.verdict) && now >= holdUntil - HOLD_MS + DEFECT_MIN_MS;
    if (!current || !holding || now >= holdUntil || newerDefect) {
      current = insp;
      if (isDefect(insp.verdict)) holdUntil = now + HOLD_MS;
      renderVerdict();
    }
    if (isDefect(insp.verdict)) {
      incoming.push({ insp, feedback: null });
      incoming.splice(0, Math.max(0, incoming.length - MAX_THUMBS));
      scheduleThumbs();
    }
  }

  // New defects join the strip at most twice a second, and not while the operator is
  // touching it (a thumbnail must not move under a finger).
  const incoming = [];
  let thumbsTimer = null;
  function scheduleThumbs() {
    if (thumbsTimer !== null) return;
    const wait = Math.max(THUMBS_EVERY_MS, pinnedUntil - Date.now());
    thumbsTimer = setTimeout(() => {
      thumbsTimer = null;
      if (Date.now() < pinnedUntil) {
        scheduleThumbs();
        return;
      }
      for (const d of incoming.splice(0)) {
        if (!defects.some((x) => x.insp.id === d.insp.id)) defects.unshift(d);
      }
      defects.length = Math.min(defects.length, MAX_THUMBS);
      target = defects[0] || null;
      renderThumbs();
      renderTarget();
    }, wait);
  }

  $("thumbs").addEventListener("pointerdown", () => {
    pinnedUntil = Date.now() + PIN_MS;
  });

  async function loadDefects() {
    try {
      const r = await fetch("/api/inspections?verdict=FAIL&verdict=REVIEW&limit=" + MAX_THUMBS, {
        cache: "no-store",
      });
      if (!r.ok) return;
      const page = await r.json();
      const fresh = page.items.map((row) => ({
        insp: {
          id: row.id,
          verdict: row.verdict,
          reason: row.reason,
          captured_at: row.captured_at,
          detections: row.top_class
            ? [{ class_name: row.top_class, confidence: row.top_confidence }]
            : [],
          image_saved: row.has_image,
        },
        feedback: row.feedback ? row.feedback.kind : null,
      }));
      defects.length = 0;
      defects.push(...fresh);
      if (Date.now() > pinnedUntil || !target) target = defects[0] || null;
      renderThumbs();
      renderTarget();
    } catch (e) {
      /* the next hello reloads */
    }
  }

  // -- rendering ------------------------------------------------------------------------
  function renderStatus() {
    if (!status) return;
    $("station-name").textContent = `${status.station.id} · ${status.station.line}`;
    const cam = status.camera.state;
    $("camera-state").textContent = t("state_" + cam);
    $("badge-camera").className = "badge " + (cam === "connected" ? "ok" : "bad");
    const m = status.model;
    $("model-name").textContent = `${m.name} v${m.version}` + (m.fell_back ? ` (${t("fell_back")})` : "");
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

  function renderVerdict() {
    const box = $("verdict");
    if (!current) return;
    box.dataset.verdict = current.verdict;
    box.dataset.id = current.id;
    $("verdict-word").textContent = t(current.verdict);
    const line = $("verdict-reason");
    line.textContent = reasonText(current);
    line.dataset.code = current.reason_code || "";
    line.title = current.reason || ""; // the stored English sentence, for the engineer
    renderHeld();
  }

  // While a defect holds the big verdict, the view shows that inspection's own saved
  // picture, not the live one: what the worker reads and what they see are the same part.
  function renderHeld() {
    const held = $("held");
    const show = current && isDefect(current.verdict) && current.image_saved;
    if (!show) {
      held.hidden = true;
      held.removeAttribute("src");
      delete held.dataset.id;
      return;
    }
    if (held.dataset.id !== current.id) {
      // shown once loaded: until then the old picture would sit under the new verdict
      held.hidden = true;
      held.dataset.id = current.id;
      const id = current.id;
      held.onload = () => {
        if (held.dataset.id === id) held.hidden = false;
      };
      held.src = `/api/inspections/${id}/image?annotated=true&max_side=960`;
    }
  }

  // The reason in the screen's language, from its code and parameters; the server's
  // English sentence when the code is unknown (an older server, a reason made elsewhere).
  function reasonText(insp) {
    const make = insp.reason_code && (I18N[lang].reasons || {})[insp.reason_code];
    if (!make) return insp.reason || "";
    const p = insp.reason_params || {};
    try {
      return make({
        ...p,
        class: p.class === undefined ? undefined : className(p.class),
        confidence: typeof p.confidence === "number" ? p.confidence.toFixed(2) : p.confidence,
        box: Array.isArray(p.box) ? p.box.join(",") : p.box,
      });
    } catch (e) {
      return insp.reason || "";
    }
  }

  function renderShift() {
    if (!shift) return;
    $("n-pass").textContent = shift.counts.PASS;
    $("n-fail").textContent = shift.counts.FAIL;
    $("n-review").textContent = shift.counts.REVIEW;
    $("yield").textContent = shift.yield_pct === null ? "—" : shift.yield_pct.toFixed(1) + "%";
  }

  function renderTarget() {
    const box = $("fb-target");
    const buttons = document.querySelectorAll("#fb-buttons button");
    if (!target) {
      box.textContent = t("no_defect_yet");
      delete box.dataset.id;
      buttons.forEach((b) => (b.disabled = true));
      return;
    }
    const i = target.insp;
    const top = topDetection(i);
    box.dataset.id = i.id;
    box.textContent =
      `${t(i.verdict)} · ${top ? className(top.class_name) + " · " : ""}${hhmmss(i.captured_at)}` +
      (target.feedback ? ` · ✓ ${t(target.feedback)}` : "");
    box.className = "v-" + i.verdict;
    buttons.forEach((b) => {
      b.disabled = false;
      b.classList.toggle("chosen", target.feedback === b.dataset.kind);
    });
  }

  function renderThumbs() {
    const strip = $("thumbs");
    strip.textContent = "";
    for (const d of defects) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "thumb v-" + d.insp.verdict + (target && target.insp.id === d.insp.id ? " selected" : "");
      b.dataset.id = d.insp.id;
      if (d.insp.image_saved) {
        const img = document.createElement("img");
        img.alt = "";
        img.src = `/api/inspections/${d.insp.id}/image?annotated=true&max_side=240`;
        b.appendChild(img);
      }
      const label = document.createElement("span");
      const top = topDetection(d.insp);
      label.textContent =
        (top ? className(top.class_name) : t(d.insp.verdict)) + (d.feedback ? " ✓" : "");
      b.appendChild(label);
      b.addEventListener("click", () => {
        target = d;
        pinnedUntil = Date.now() + PIN_MS;
        $("fb-classes").hidden = true;
        renderThumbs();
        renderTarget();
      });
      strip.appendChild(b);
    }
  }

  // -- feedback -------------------------------------------------------------------------
  async function sendFeedback(kind, klass) {
    if (!target) return;
    const d = target;
    pinnedUntil = Date.now() + PIN_MS;
    if (!token) {
      showLogin("");
      return;
    }
    const body = { kind };
    if (klass) body.class_name = klass;
    let r = null;
    try {
      r = await fetch(`/api/inspections/${d.insp.id}/feedback`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
        body: JSON.stringify(body),
      });
    } catch (e) {
      r = null;
    }
    const out = $("fb-result");
    if (r && r.status === 201) {
      d.feedback = kind;
      out.textContent = `${t("recorded")}: ${t(kind)}${klass ? " → " + className(klass) : ""}`;
      out.className = "ok";
      out.dataset.id = d.insp.id;
      out.dataset.kind = kind;
    } else {
      out.textContent = r && r.status === 403 ? t("no_role") : t("failed");
      out.className = "bad";
    }
    $("fb-classes").hidden = true;
    renderTarget();
    renderThumbs();
  }

  $("fb-confirm").addEventListener("click", () => sendFeedback("confirm_defect"));
  $("fb-not").addEventListener("click", () => sendFeedback("not_defect"));
  $("fb-wrong").addEventListener("click", () => {
    const box = $("fb-classes");
    box.textContent = "";
    const title = document.createElement("div");
    title.textContent = t("pick_class");
    box.appendChild(title);
    for (const name of (status && status.model.class_names) || []) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = className(name);
      b.addEventListener("click", () => sendFeedback("wrong_class", name));
      box.appendChild(b);
    }
    box.hidden = false;
  });

  // -- start ----------------------------------------------------------------------------
  adoptTokenFromUrl();
  applyLang();
  connect();
})();
