// The engineer's zone page: draw ROI polygons and ignore masks on the newest frame and
// save them as verdict rules (rules.zones) through PUT /api/thresholds (engineer-only,
// audited, kept over restarts, refused with 409 when the rules changed since they were
// loaded). Points are SOURCE-frame pixels; the picture and its SVG are zones-draw.js's.
// Language, login and who is asking: pages.js (KJ) and auth.js. Plain JS, no build.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t } = KJ;
  const DRAG_PX = 3; // a press that moves less than this is a click

  // what the picture shows: zones-draw.js reads it, the editing below changes it
  const st = {
    frameW: 0,
    frameH: 0,
    zones: [], // [{name, kind, points: [[x, y], ...]}] in source pixels
    oldRoi: null, // rules.roi_xyxy, kept unless converted
    drawing: null, // {kind, points} while a new polygon is being clicked in
    selected: -1, // index into zones
    selectedPoint: -1,
  };
  let frameUrl = null;
  let loaded = null; // GET /api/thresholds as loaded: what a save is made against
  let drag = null; // {zone, point, startX, startY, moved}
  let dirty = false;
  let busy = false; // a save is on its way
  let message = { key: "", extra: "" }; // the status line under Save, re-worded with the language
  let frameMsg = "";

  const view = window.KanjianZonesDraw(st, {
    select: (i, j) => select(i, j),
    startDrag: (ev, zone, point) => startDrag(ev, zone, point),
    closePolygon: () => closePolygon(),
  });
  const { fitPicture, toSource, renderShapes } = view;

  // -- data -----------------------------------------------------------------------------
  async function loadFrame() {
    frameMsg = "";
    renderFrameInfo();
    const r = await window.KanjianAuth.fetch("/api/live/frame.jpg");
    if (!r.ok) {
      frameMsg = r.status === 404 ? "no_frame" : "frame_error";
      renderFrameInfo();
      return;
    }
    const w = parseInt(r.headers.get("X-Frame-Width") || "0", 10);
    const h = parseInt(r.headers.get("X-Frame-Height") || "0", 10);
    const blob = await r.blob();
    if (frameUrl) URL.revokeObjectURL(frameUrl);
    frameUrl = URL.createObjectURL(blob);
    const img = $("frame");
    await new Promise((resolve) => {
      img.onload = resolve;
      img.onerror = resolve;
      img.src = frameUrl;
    });
    st.frameW = w || img.naturalWidth;
    st.frameH = h || img.naturalHeight;
    fitPicture();
    renderFrameInfo();
    $("frame-box").dataset.ready = "1";
    renderShapes();
  }

  function rulesOf(th) {
    return th.rules || th.bundle_defaults.rules;
  }

  async function loadRules() {
    loaded = await KJ.get("/api/thresholds");
    const rules = rulesOf(loaded);
    st.zones = (rules.zones || []).map((z) => ({
      name: z.name,
      kind: z.kind,
      points: z.points.map((p) => [p[0], p[1]]),
    }));
    st.oldRoi = rules.roi_xyxy || null;
    const ov = rules.zone_overlap || { roi: 0.5, ignore: 0.5 };
    $("roi-share").value = Math.round(ov.roi * 100);
    $("ignore-share").value = Math.round(ov.ignore * 100);
    st.selected = -1;
    st.selectedPoint = -1;
    dirty = false;
    document.body.dataset.loaded = "1";
    renderAll();
  }

  // -- the panel ------------------------------------------------------------------------
  function renderList() {
    const ol = $("zone-list");
    ol.replaceChildren();
    st.zones.forEach((z, i) => {
      const li = document.createElement("li");
      li.className = z.kind + (i === st.selected ? " st.selected" : "");
      li.dataset.index = i;
      const name = document.createElement("input");
      name.className = "zone-name";
      name.value = z.name;
      name.maxLength = 64;
      name.addEventListener("input", () => {
        z.name = name.value;
        markDirty();
      });
      name.addEventListener("focus", () => select(i, -1, false));
      const kind = document.createElement("select");
      kind.className = "zone-kind";
      for (const k of ["roi", "ignore"]) {
        const o = document.createElement("option");
        o.value = k;
        o.textContent = t(k);
        o.selected = z.kind === k;
        kind.append(o);
      }
      kind.addEventListener("change", () => {
        z.kind = kind.value;
        markDirty();
        renderAll();
      });
      const count = document.createElement("span");
      count.className = "muted";
      count.textContent = `${z.points.length} ${t("points")}`;
      const del = document.createElement("button");
      del.type = "button";
      del.className = "zone-delete";
      del.textContent = t("delete_zone");
      del.addEventListener("click", () => {
        st.zones.splice(i, 1);
        st.selected = -1;
        st.selectedPoint = -1;
        markDirty();
        renderAll();
      });
      li.addEventListener("click", (ev) => {
        if (ev.target === li || ev.target === count) select(i, -1);
      });
      li.append(name, kind, count, del);
      ol.append(li);
    });
  }

  function renderTools() {
    $("close-poly").disabled = !st.drawing || st.drawing.points.length < 3;
    $("cancel-poly").disabled = !st.drawing;
    $("new-roi").disabled = !!st.drawing;
    $("new-ignore").disabled = !!st.drawing;
    $("delete-point").disabled = st.drawing !== null || st.selected < 0 || st.selectedPoint < 0;
    $("help").textContent = st.drawing ? t("help_drawing") : t("help_idle");
    $("old-roi").hidden = !st.oldRoi;
    $("pins").hidden = !(loaded && loaded.rules === null);
    const engineer = KJ.isEngineer();
    $("save").disabled = !loaded || !!st.drawing || !engineer || busy;
    if (loaded && !engineer && !message.key) message = { key: "needs_engineer", extra: "" };
    $("save-msg").textContent = (message.key ? t(message.key) : "") + message.extra;
    if (loaded) {
      const by = loaded.set_by ? ` · ${loaded.set_by} · ${loaded.set_at}` : "";
      $("source").textContent = `${t("rules_by")}: ${loaded.source}${by}`;
    }
    document.body.dataset.dirty = dirty ? "1" : "";
  }

  function say(key, extra = "") {
    message = { key, extra };
    renderTools();
  }

  function renderFrameInfo() {
    $("frame-msg").textContent = frameMsg ? t(frameMsg) : "";
    $("frame-size").textContent = st.frameW ? `${t("source_px")} ${st.frameW} × ${st.frameH} px` : "";
  }

  function renderAll() {
    renderFrameInfo();
    renderShapes();
    renderList();
    renderTools();
  }

  function markDirty() {
    dirty = true;
    say("unsaved");
    renderTools();
  }

  function select(i, j, redraw = true) {
    st.selected = i;
    st.selectedPoint = j;
    if (redraw) renderAll();
    else {
      renderShapes();
      renderTools();
    }
  }

  // -- editing --------------------------------------------------------------------------
  function begin(kind) {
    st.drawing = { kind, points: [] };
    st.selected = -1;
    st.selectedPoint = -1;
    renderAll();
  }

  function uniqueName(kind) {
    const names = new Set(st.zones.map((z) => z.name));
    for (let n = 1; ; n++) if (!names.has(`${kind}-${n}`)) return `${kind}-${n}`;
  }

  function closePolygon() {
    if (!st.drawing) return;
    if (st.drawing.points.length < 3) {
      say("too_few");
      return;
    }
    st.zones.push({ name: uniqueName(st.drawing.kind), kind: st.drawing.kind, points: st.drawing.points });
    st.selected = st.zones.length - 1;
    st.selectedPoint = -1;
    st.drawing = null;
    markDirty();
    renderAll();
  }

  function cancelPolygon() {
    st.drawing = null;
    renderAll();
  }

  function deletePoint() {
    if (st.selected < 0 || st.selectedPoint < 0) return;
    const pts = st.zones[st.selected].points;
    if (pts.length <= 3) {
      say("min_points");
      return;
    }
    pts.splice(st.selectedPoint, 1);
    st.selectedPoint = -1;
    markDirty();
    renderAll();
  }

  function startDrag(ev, zone, point) {
    if (st.drawing) return;
    ev.stopPropagation();
    ev.preventDefault();
    drag = { zone, point, startX: ev.clientX, startY: ev.clientY, moved: false };
    $("overlay").setPointerCapture(ev.pointerId);
    st.selected = zone;
    st.selectedPoint = point;
    renderShapes();
    renderTools();
  }

  $("overlay").addEventListener("pointermove", (ev) => {
    if (!drag) return;
    if (!drag.moved && Math.hypot(ev.clientX - drag.startX, ev.clientY - drag.startY) < DRAG_PX)
      return;
    drag.moved = true;
    st.zones[drag.zone].points[drag.point] = toSource(ev);
    renderShapes();
  });

  $("overlay").addEventListener("pointerup", (ev) => {
    if (!drag) return;
    if (drag.moved) {
      st.zones[drag.zone].points[drag.point] = toSource(ev);
      markDirty();
    }
    drag = null;
    renderAll();
  });

  // a press on the picture itself: a new point while st.drawing, else clear the selection
  $("overlay").addEventListener("pointerdown", (ev) => {
    if (!st.frameW || ev.button !== 0) return;
    if (st.drawing) {
      st.drawing.points.push(toSource(ev));
      renderShapes();
      renderTools();
    } else if (!drag) {
      select(-1, -1);
    }
  });

  $("new-roi").addEventListener("click", () => begin("roi"));
  $("new-ignore").addEventListener("click", () => begin("ignore"));
  $("close-poly").addEventListener("click", closePolygon);
  $("cancel-poly").addEventListener("click", cancelPolygon);
  $("delete-point").addEventListener("click", deletePoint);
  $("refresh").addEventListener("click", loadFrame);
  $("roi-share").addEventListener("input", markDirty);
  $("ignore-share").addEventListener("input", markDirty);
  $("convert-roi").addEventListener("click", () => {
    const [x1, y1, x2, y2] = st.oldRoi;
    st.zones.push({ name: uniqueName("roi"), kind: "roi", points: [[x1, y1], [x2, y1], [x2, y2], [x1, y2]] });
    st.oldRoi = null;
    markDirty();
    renderAll();
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (ev.key === "Escape" && st.drawing) cancelPolygon();
    else if (ev.key === "Enter" && st.drawing) closePolygon();
    else if (ev.key === "Delete" || ev.key === "Backspace") deletePoint();
  });

  window.addEventListener("resize", () => {
    fitPicture();
    renderShapes(); // handles keep their size on screen
  });

  // -- saving ---------------------------------------------------------------------------
  function describe(detail) {
    if (!Array.isArray(detail)) return String(detail);
    return detail
      .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(" → ")}: ${d.msg}`)
      .join("\n");
  }

  async function save() {
    busy = true;
    say("saving");
    try {
      const rules = {
        ...rulesOf(loaded),
        roi_xyxy: st.oldRoi,
        zones: st.zones.map((z) => ({ name: z.name, kind: z.kind, points: z.points })),
        zone_overlap: {
          roi: Number($("roi-share").value) / 100,
          ignore: Number($("ignore-share").value) / 100,
        },
      };
      // made against what this page loaded: the server refuses (409, naming who changed
      // the rules when) rather than overwrite a change made since
      const body = {
        conf: loaded.conf,
        iou: loaded.iou,
        max_det: loaded.max_det,
        rules,
        expected_set_at: loaded.set_at,
      };
      const r = await KJ.send("PUT", "/api/thresholds", body);
      const data = await r.json().catch(() => ({}));
      if (r.status === 409) {
        say("changed_since", ` ${describe(data.detail)}`);
        return;
      }
      if (!r.ok) {
        say("refused", ` (${r.status}): ${describe(data.detail)}`);
        return;
      }
      loaded = data;
      dirty = false;
      say("saved", ` · ${data.set_by} · ${data.set_at}`);
      document.body.dataset.saved = data.set_at;
    } catch (e) {
      say("", String(e));
    } finally {
      busy = false;
      renderTools();
    }
  }

  $("save").addEventListener("click", save);

  window.addEventListener("beforeunload", (ev) => {
    if (dirty) ev.preventDefault();
  });

  KJ.onLang.push(() => {
    document.title = (KJ.lang === "zh" ? "看见 · " : "kanjian · ") + t("zones");
    renderAll();
  });

  KJ.start(async () => {
    try {
      await loadRules();
      await loadFrame();
    } catch (e) {
      say("", String(e));
    }
  });
})();
