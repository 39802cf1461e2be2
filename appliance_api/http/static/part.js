// The shown part: one inspection at a time on the verdict block, the big picture, the
// reason and the feedback buttons, which all carry its data-inspection-id and change
// together, in one synchronous step, once its picture has loaded. A FAIL / REVIEW stays
// up at least hold_s (api.screen_hold_s); newer defects wait in order; any other part
// at least min_show_s, and a defect replaces it at once. Tapping a thumbnail shows that
// part (pinned) with its own buttons. A finger on the buttons pins the part under it:
// an answer goes to the part it came down on, or nowhere. FAIL beeps / flashes when it
// arrives, not when it comes up large. Used by app.js: window.KanjianPart(ctx).
"use strict";

window.KanjianPart = (ctx) => {
  const $ = (id) => document.getElementById(id);
  const { t } = ctx;
  const PIN_MS = 30000; // a tapped part stays up this long after the last touch
  const TOUCH_MS = 1500; // the strip does not move this long after a touch
  const LOAD_MS = 4000; // a picture that takes longer is shown as missing
  const SETTLE_MS = 400; // a tap this soon after the part changed was aimed at the one before
  const PRESS_MS = 8000; // a finger on the buttons holds the part (time to pick a class)
  const DEFECT = new Set(["FAIL", "REVIEW"]);
  const JUDGED = new Set(["PASS", "FAIL", "REVIEW"]);

  const items = new Map(); // id -> {insp, fb, alerted}
  const pending = []; // defects not yet shown large, oldest first
  let strip = []; // defects, newest first
  let shown = null; // the item the four elements show
  let shownAt = 0;
  let swappedAt = 0; // when the part last changed by itself (a tapped thumbnail: never)
  let loading = null; // the item whose picture is loading
  let latest = null; // the newest item of any verdict
  let pinUntil = 0;
  let touchUntil = 0;
  let timer = null;
  let stripTimer = null;
  let undoTimer = null;
  let message = null; // {id, text, cls, kind}: the last answer's outcome, for its part
  let press = null; // {id, ok, at}: the part a finger came down on in #feedback
  let skipped = 0; // defects that never came up large: more queued than the strip holds

  const isDefect = (insp) => DEFECT.has(insp.verdict);
  // labels drawn in the screen's language
  const picUrl = (id) => `/api/screen/picture/${id}?lang=${ctx.lang()}`;
  const shortId = (id) => "#" + id.slice(0, 8);
  const hhmmss = (iso) => new Date(iso).toLocaleTimeString(ctx.lang() === "zh" ? "zh-CN" : "en-GB");
  const topDetection = (insp) =>
    (insp.detections || []).reduce((a, d) => (a && a.confidence >= d.confidence ? a : d), null);

  function remember(insp, fb) {
    let item = items.get(insp.id);
    if (item) {
      Object.assign(item.insp, insp);
      if (fb !== undefined && !item.fb) item.fb = fb;
    } else {
      item = { insp, fb: fb || null, alerted: false };
      items.set(insp.id, item);
    }
    if (items.size > 400) {
      const keep = new Set([...pending, ...strip, shown, loading, latest].filter(Boolean));
      for (const [id, it] of items) if (!keep.has(it) && !thumbEls.has(id)) items.delete(id);
    }
    return item;
  }

  // -- what to show ---------------------------------------------------------------------
  function holdEnd() {
    if (!shown) return 0;
    return shownAt + 1000 * (isDefect(shown.insp) ? ctx.settings.hold_s : ctx.settings.min_show_s);
  }

  function schedule(at) {
    clearTimeout(timer);
    timer = setTimeout(decide, Math.max(0, at - Date.now()) + 5);
  }

  function decide() {
    if (loading) return; // its swap calls back
    const now = Date.now();
    renderPin();
    if (now < pinUntil) return schedule(pinUntil);
    const end = holdEnd();
    if (shown && isDefect(shown.insp) && now < end) return schedule(end);
    let next = null;
    if (pending.length) next = pending.shift();
    else if (now < end) return schedule(end);
    else if (latest && latest !== shown) next = latest;
    if (next) load(next, true);
  }

  async function load(item, auto) {
    loading = item;
    const img = new Image();
    img.alt = "";
    img.dataset.inspectionId = item.insp.id;
    img.src = picUrl(item.insp.id);
    const late = new Promise((_, no) => setTimeout(() => no(new Error("slow")), LOAD_MS));
    let ok = true;
    try {
      await Promise.race([img.decode(), late]);
    } catch (e) {
      ok = false; // no picture (not kept, not saved, a failure) or offline: say so
    }
    if (loading !== item) return; // the operator chose another part meanwhile
    loading = null;
    if (auto && Date.now() < pinUntil) {
      // a finger came down on the buttons meanwhile: the part under it stays up
      if (isDefect(item.insp) && shown !== item && !pending.includes(item)) pending.unshift(item);
      return decide();
    }
    swap(item, ok ? img : null, auto);
    decide();
  }

  // The one place the shown part changes: everything in one task, so no frame is ever
  // painted with the picture of one part and the verdict or buttons of another.
  function swap(item, img, auto) {
    shown = item;
    shownAt = Date.now();
    // a part the operator chose is the one they aim at: no settling time for it
    swappedAt = auto ? shownAt : 0;
    const i = pending.indexOf(item);
    if (i >= 0) pending.splice(i, 1);
    const pic = $("picture");
    pic.replaceChildren(...(img ? [img] : []));
    pic.dataset.inspectionId = item.insp.id;
    $("picture-none").hidden = Boolean(img);
    $("fb-classes").hidden = true;
    render();
    renderThumbs();
  }

  function select(item) {
    pinUntil = Date.now() + PIN_MS;
    load(item, false);
  }

  $("back-live").addEventListener("click", () => {
    pinUntil = 0;
    renderThumbs();
    decide();
  });

  // -- rendering ------------------------------------------------------------------------
  function render() {
    renderVerdict();
    renderFeedback();
    renderPin();
  }

  function renderPin() {
    $("back-live").hidden = Date.now() >= pinUntil;
    const n = pending.length;
    const el = $("pending");
    el.textContent =
      (n ? `· ${t("waiting_n").replace("{n}", n)}` : "") +
      (skipped ? ` · ${t("skipped_n").replace("{n}", skipped)}` : "");
    el.dataset.waiting = String(n);
    el.dataset.skipped = String(skipped);
  }

  function renderVerdict() {
    const box = $("verdict");
    const line = $("verdict-reason");
    if (!shown) {
      line.textContent = t("waiting");
      return;
    }
    const i = shown.insp;
    box.dataset.verdict = i.verdict;
    box.dataset.inspectionId = i.id;
    $("verdict-word").textContent = t(i.verdict);
    $("verdict-id").textContent = shortId(i.id);
    $("verdict-time").textContent = hhmmss(i.captured_at);
    line.dataset.inspectionId = i.id;
    line.textContent = ctx.reasonText(i);
    line.dataset.code = i.reason_code || "";
    line.title = i.reason || ""; // the stored English sentence, for the engineer
  }

  function renderFeedback() {
    const box = $("feedback");
    const buttons = document.querySelectorAll("#fb-buttons button");
    const out = $("fb-result");
    const undo = $("fb-undo");
    clearInterval(undoTimer);
    undo.hidden = true;
    if (!shown) {
      buttons.forEach((b) => (b.disabled = true));
      return;
    }
    const i = shown.insp;
    box.dataset.inspectionId = i.id;
    const fb = shown.fb;
    const can = ctx.connected() && JUDGED.has(i.verdict);
    buttons.forEach((b) => {
      b.disabled = !can;
      b.classList.toggle("chosen", Boolean(fb) && fb.kind === b.dataset.kind);
    });
    document.querySelectorAll("#fb-classes button").forEach((b) => (b.disabled = !can));
    // an answer shows as given until the part changes; a failed one says so
    const msg = message && message.id === i.id ? message : null;
    if (msg && msg.cls === "bad") {
      out.textContent = msg.text;
      out.className = "bad";
    } else if (fb) {
      const what = t(fb.kind) + (fb.class_name ? " → " + ctx.className(fb.class_name) : "");
      const head = msg && msg.undone ? t("undone") + " · " : "";
      out.textContent = `${head}${t(fb.replaces ? "changed" : "recorded")}: ${what}`;
      out.className = "ok";
    } else {
      out.textContent = msg && msg.undone ? t("undone") : "";
      out.className = "";
    }
    out.dataset.inspectionId = i.id;
    out.dataset.kind = fb ? fb.kind : "";
    if (fb && fb.undoUntil && ctx.connected()) {
      const tick = () => {
        const left = Math.ceil((fb.undoUntil - Date.now()) / 1000);
        if (left <= 0 || shown.fb !== fb) {
          undo.hidden = true;
          clearInterval(undoTimer);
          return;
        }
        undo.hidden = false;
        undo.textContent = `${t("undo")} ${left}`;
      };
      tick();
      undoTimer = setInterval(tick, 250);
    }
  }

  function scheduleThumbs(at) {
    if (stripTimer !== null) return;
    stripTimer = setTimeout(() => {
      stripTimer = null;
      renderThumbs();
    }, Math.max(50, (at || 0) - Date.now()));
  }

  // The strip holds still under a finger, and while the operator looks at a part they
  // chose (or answered): their thumbnail must not slide away. New defects are counted
  // ("N waiting") and join when it moves again.
  const thumbEls = new Map(); // id -> button, reused so pictures are not fetched again
  function renderThumbs() {
    const still = Math.max(touchUntil, pinUntil);
    const frozen = Date.now() < still;
    if (frozen) scheduleThumbs(still);
    const box = $("thumbs");
    const want = frozen ? [...box.children] : strip.map((d) => thumbFor(d));
    for (const b of want) {
      const d = items.get(b.dataset.inspectionId);
      const top = topDetection(d.insp);
      b.className =
        "thumb v-" + d.insp.verdict +
        (shown === d ? " selected" : "") +
        (pending.includes(d) ? " unseen" : "");
      b.lastChild.textContent =
        (top ? ctx.className(top.class_name) : t(d.insp.verdict)) + (d.fb ? " ✓" : "");
    }
    if (frozen) return;
    for (const [id, b] of thumbEls) if (!want.includes(b)) thumbEls.delete(id);
    box.replaceChildren(...want);
  }

  function thumbFor(d) {
    let b = thumbEls.get(d.insp.id);
    if (b) return b;
    b = document.createElement("button");
    b.type = "button";
    b.dataset.inspectionId = d.insp.id;
    const img = document.createElement("img");
    img.alt = "";
    img.onerror = () => img.remove();
    img.src = picUrl(d.insp.id);
    b.appendChild(img);
    b.appendChild(document.createElement("span"));
    b.addEventListener("click", () => select(items.get(b.dataset.inspectionId)));
    thumbEls.set(d.insp.id, b);
    return b;
  }

  $("thumbs").addEventListener("pointerdown", () => {
    touchUntil = Date.now() + TOUCH_MS;
  });

  // -- data in --------------------------------------------------------------------------
  // An inspection as it arrives (live) or the station's last one on (re)connecting
  // (hello: not news, nothing to queue or sound again if this screen has it already).
  function onInspection(insp, live = true) {
    const known = items.has(insp.id);
    const item = remember(insp);
    if (!live) {
      if (!latest || latest.insp.captured_at <= insp.captured_at) latest = item;
      if (!known && isDefect(insp)) {
        strip = [item, ...strip.filter((d) => d !== item)].slice(0, ctx.settings.strip);
        scheduleThumbs();
      }
      return decide();
    }
    latest = item;
    if (insp.verdict === "FAIL" && !item.alerted) {
      item.alerted = true; // the alarm is for its arrival: a queued FAIL may come up later
      ctx.alarm();
    }
    if (isDefect(insp) && !known) {
      strip = [item, ...strip.filter((d) => d !== item)].slice(0, ctx.settings.strip);
      pending.push(item);
      // more waiting than the strip holds: the oldest will never come up large; counted
      skipped += pending.splice(0, Math.max(0, pending.length - ctx.settings.strip)).length;
      scheduleThumbs();
    }
    decide();
  }

  // the strip from the log (first connection, or after this screen fell behind)
  async function loadDefects() {
    const n = ctx.settings.strip;
    const r = await ctx.api(`/api/inspections?verdict=FAIL&verdict=REVIEW&limit=${n}`);
    let page = null;
    try {
      page = r && r.ok ? await r.json() : null;
    } catch (e) {
      page = null; // cut off mid-answer: the next hello or resync reloads
    }
    if (!page) return;
    const fresh = page.items.map((row) =>
      remember(
        {
          id: row.id,
          verdict: row.verdict,
          reason: row.reason,
          reason_code: row.reason_code || null,
          reason_params: row.reason_params || {},
          captured_at: row.captured_at,
          detections: row.top_class
            ? [{ class_name: row.top_class, confidence: row.top_confidence }]
            : [],
        },
        row.feedback,
      ),
    );
    // with what arrived while the log was read, newest first
    const all = [...new Set([...strip, ...fresh])];
    all.sort((a, b) => (a.insp.captured_at < b.insp.captured_at ? 1 : -1));
    strip = all.slice(0, n);
    renderThumbs();
  }

  // -- feedback -------------------------------------------------------------------------
  // A finger on the buttons: pin the part under it and remember which it was.
  $("feedback").addEventListener("pointerdown", () => {
    if (!shown) return;
    const now = Date.now();
    press = { id: shown.insp.id, ok: now - swappedAt >= SETTLE_MS, at: now };
    pinUntil = Math.max(pinUntil, now + PRESS_MS);
    $("feedback").dataset.pressId = press.id;
    $("feedback").dataset.pressOk = press.ok ? "1" : "0";
    renderPin();
  });

  // The part a tap on the buttons is for: the one the finger came down on, if it is
  // still the one shown and had been up SETTLE_MS by then (else the tap was aimed at the
  // part before: nothing is sent, the screen says to tap again). A click without a
  // pointer (a key) is for the shown part, by the same rule.
  function tapped(ev) {
    const p = press && Date.now() - press.at < PRESS_MS ? press : null;
    press = null;
    if (!shown) return null;
    const id = shown.insp.id;
    const ok = p ? p.id === id && p.ok : !(ev && ev.detail > 0) && Date.now() - swappedAt >= SETTLE_MS;
    if (ok) return shown;
    message = { id, cls: "bad", text: t("part_changed") };
    renderFeedback();
    return null;
  }

  async function answer(item, kind, klass) {
    if (!item || !ctx.connected()) return;
    const body = { kind };
    if (klass) body.class_name = klass;
    const id = item.insp.id;
    const sent = Date.now();
    const r = await ctx.api(`/api/inspections/${id}/feedback`, "POST", body);
    if (r && (r.status === 201 || r.status === 200)) {
      const fb = await r.json();
      // the station's time left, less the round trip (our clock may differ from its)
      fb.undoUntil = fb.undo_s_left ? Date.now() + 1000 * fb.undo_s_left - (Date.now() - sent) : 0;
      item.fb = fb;
      message = { id };
      // the part stays up while its answer can be undone (返回实时 lets it go)
      if (shown === item) pinUntil = Math.max(pinUntil, fb.undoUntil);
    } else if (r && r.status === 401) {
      ctx.showLogin("");
      return;
    } else {
      message = { id, cls: "bad", text: r && r.status === 403 ? t("no_role") : t("failed") };
    }
    if (shown === item) render();
    renderThumbs();
  }

  async function undo(ev) {
    const item = tapped(ev);
    const fb = item && item.fb;
    if (!fb || !fb.undoUntil) return;
    const r = await ctx.api(`/api/inspections/${item.insp.id}/feedback/${fb.id}`, "DELETE");
    if (r && r.ok) {
      item.fb = (await r.json()).latest; // the answer it had changed stands again (or none)
      message = { id: item.insp.id, undone: true };
    } else {
      message = { id: item.insp.id, cls: "bad", text: t("undo_refused") };
    }
    if (shown === item) render();
    renderThumbs();
  }

  $("fb-undo").addEventListener("click", undo);
  $("fb-confirm").addEventListener("click", (ev) => answer(tapped(ev), "confirm_defect"));
  $("fb-not").addEventListener("click", (ev) => answer(tapped(ev), "not_defect"));
  $("fb-wrong").addEventListener("click", (ev) => {
    if (!tapped(ev)) return;
    const box = $("fb-classes");
    box.textContent = "";
    const title = document.createElement("div");
    title.textContent = t("pick_class");
    box.appendChild(title);
    for (const name of ctx.classNames()) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = ctx.className(name);
      b.disabled = !ctx.connected();
      b.addEventListener("click", (e) => answer(tapped(e), "wrong_class", name));
      box.appendChild(b);
    }
    box.hidden = false;
  });

  return {
    onInspection,
    loadDefects,
    render() {
      render();
      renderThumbs();
    },
    // the language changed: pictures with labels in it (the same parts, new labels)
    relabel() {
      const img = $("picture").querySelector("img");
      if (img) img.src = picUrl(img.dataset.inspectionId);
      for (const [id, b] of thumbEls) {
        const ti = b.querySelector("img");
        if (ti) ti.src = picUrl(id);
      }
    },
  };
};
