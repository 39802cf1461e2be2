// The engineer's zone page: draw ROI polygons and ignore masks on the newest frame and
// save them as verdict rules (rules.zones) through PUT /api/thresholds (engineer-only,
// audited, kept over restarts). Points are SOURCE-frame pixels: the picture is shown
// scaled, so every click is mapped through the picture's on-screen box. Plain JS, no build.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const HANDLE_PX = 7; // handle radius on screen
  const DRAG_PX = 3; // a press that moves less than this is a click

  const I18N = {
    zh: {
      title: "检测区域",
      refresh: "刷新画面",
      new_roi: "新建检测区",
      new_ignore: "新建屏蔽区",
      close: "闭合",
      cancel: "取消",
      delete_point: "删除点",
      delete_zone: "删除",
      save: "保存",
      saving: "正在保存…",
      saved: "已保存",
      roi: "检测区",
      ignore: "屏蔽区",
      points: "个点",
      help_idle: "点选区域后可拖动它的点；点一下某个点再按“删除点”可删除。",
      help_drawing: "在画面上点击添加点；点第一个点或按“闭合”完成（至少 3 个点）。Esc 取消。",
      roi_share: "检测区内至少占",
      ignore_share: "屏蔽区内达到此比例不计",
      no_frame: "还没有画面（相机尚未送来第一帧）",
      frame_error: "无法读取画面",
      source_px: "原图",
      needs_engineer: "只读：保存需要工程师令牌",
      login_title: "请输入工程师令牌",
      login_help: "用 kanjian token create --role engineer 创建",
      login: "登录",
      bad_token: "令牌无效",
      old_roi: "旧矩形区域 roi_xyxy（按框中心判定）",
      convert: "转换为检测区",
      pins_defaults: "当前使用模型自带的判定规则；保存后这些规则连同区域将成为本站规则。",
      changed_since: "规则在你打开本页后已被修改，请刷新页面再画。",
      unsaved: "有未保存的修改",
      too_few: "至少需要 3 个点",
      min_points: "区域至少保留 3 个点",
      rules_by: "当前规则来源",
      refused: "保存被拒绝",
    },
    en: {
      title: "Zones",
      refresh: "Refresh picture",
      new_roi: "New ROI",
      new_ignore: "New ignore zone",
      close: "Close polygon",
      cancel: "Cancel",
      delete_point: "Delete point",
      delete_zone: "Delete",
      save: "Save",
      saving: "Saving…",
      saved: "Saved",
      roi: "ROI",
      ignore: "ignore",
      points: "points",
      help_idle: "Select a zone to drag its points; click a point, then “Delete point”.",
      help_drawing:
        "Click on the picture to add points; click the first point or “Close polygon” to finish (3 points at least). Esc cancels.",
      roi_share: "Counts when at least this share lies in the ROI",
      ignore_share: "Not counted from this share inside ignore zones",
      no_frame: "No frame yet (the camera has not sent one)",
      frame_error: "The picture could not be read",
      source_px: "source",
      needs_engineer: "Read only: saving needs an engineer token",
      login_title: "Enter an engineer token",
      login_help: "Make one with kanjian token create --role engineer",
      login: "Log in",
      bad_token: "Token not accepted",
      old_roi: "Old rectangle roi_xyxy (judged by the box centre)",
      convert: "Convert to an ROI zone",
      pins_defaults:
        "The model's own rules are in force; saving makes them, with these zones, the station's rules.",
      changed_since: "The rules were changed after this page loaded them: reload before drawing.",
      unsaved: "Unsaved changes",
      too_few: "A zone needs 3 points at least",
      min_points: "A zone keeps 3 points at least",
      rules_by: "Rules from",
      refused: "Not saved",
    },
  };

  let lang = localStorage.getItem("kanjian.lang") || "zh";
  // an engineer's token stays for this tab only; the operator screen's token (if any) is
  // used for reading when no engineer token was given
  let token = sessionStorage.getItem("kanjian.engineer_token") || localStorage.getItem("kanjian.token");
  let role = null;
  let frameW = 0;
  let frameH = 0;
  let frameUrl = null;
  let loaded = null; // GET /api/thresholds as loaded: what a save must not silently overwrite
  let zones = []; // [{name, kind, points: [[x, y], ...]}] in source pixels
  let oldRoi = null; // rules.roi_xyxy, kept unless converted
  let drawing = null; // {kind, points} while a new polygon is being clicked in
  let selected = -1; // index into zones
  let selectedPoint = -1;
  let drag = null; // {zone, point, startX, startY, moved}
  let dirty = false;
  let busy = false; // a save is on its way
  let message = { key: "", extra: "" }; // the status line under Save, re-worded with the language
  let frameMsg = "";

  const t = (key) => (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
  const auth = () => (token ? { Authorization: "Bearer " + token } : {});
  const round1 = (v) => Math.round(v * 10) / 10;

  // -- language -------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = (lang === "zh" ? "看见 · " : "kanjian · ") + t("title");
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    $("lang").textContent = lang === "zh" ? "EN" : "中文";
    renderAll();
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
      sessionStorage.setItem("kanjian.engineer_token", token);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showLogin(text) {
    $("login").hidden = false;
    $("login-error").textContent = text || "";
    $("login-token").focus();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token = $("login-token").value.trim();
    sessionStorage.setItem("kanjian.engineer_token", token);
    $("login").hidden = true;
    start();
  });

  async function whoami() {
    const r = await fetch("/api/whoami", { headers: auth(), cache: "no-store" });
    const who = await r.json();
    role = who.role;
    $("who").textContent = who.authenticated ? `${who.name} · ${who.role}` : "";
    return who;
  }

  // -- data -----------------------------------------------------------------------------
  async function loadFrame() {
    frameMsg = "";
    renderFrameInfo();
    const r = await fetch("/api/live/frame.jpg", { headers: auth(), cache: "no-store" });
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
    frameW = w || img.naturalWidth;
    frameH = h || img.naturalHeight;
    fitPicture();
    $("overlay").setAttribute("viewBox", `0 0 ${frameW} ${frameH}`);
    renderFrameInfo();
    $("frame-box").dataset.ready = "1";
    renderShapes();
  }

  function rulesOf(th) {
    return th.rules || th.bundle_defaults.rules;
  }

  async function loadRules() {
    const r = await fetch("/api/thresholds", { headers: auth(), cache: "no-store" });
    if (!r.ok) throw new Error("thresholds " + r.status);
    loaded = await r.json();
    const rules = rulesOf(loaded);
    zones = (rules.zones || []).map((z) => ({
      name: z.name,
      kind: z.kind,
      points: z.points.map((p) => [p[0], p[1]]),
    }));
    oldRoi = rules.roi_xyxy || null;
    const ov = rules.zone_overlap || { roi: 0.5, ignore: 0.5 };
    $("roi-share").value = Math.round(ov.roi * 100);
    $("ignore-share").value = Math.round(ov.ignore * 100);
    selected = -1;
    selectedPoint = -1;
    dirty = false;
    document.body.dataset.loaded = "1";
    renderAll();
  }

  async function start() {
    try {
      const who = await whoami();
      if (!who.authenticated && !who.open_reads) {
        showLogin(token ? t("bad_token") : "");
        return;
      }
      await loadRules();
      await loadFrame();
    } catch (e) {
      say("", String(e));
    }
  }

  /** Show the picture as large as the stage allows, small frames enlarged too: points
   * are placed more precisely on a bigger picture. */
  function fitPicture() {
    if (!frameW) return;
    const stage = $("stage").getBoundingClientRect();
    const room = Math.max(100, window.innerHeight - stage.top - 48);
    const s = Math.min(stage.width / frameW, room / frameH);
    $("frame").style.width = `${Math.floor(frameW * s)}px`;
    $("frame").style.height = `${Math.floor(frameH * s)}px`;
  }

  // -- geometry -------------------------------------------------------------------------
  /** A pointer event's position in source pixels (the picture is shown scaled). */
  function toSource(ev) {
    const r = $("frame").getBoundingClientRect();
    const x = ((ev.clientX - r.left) * frameW) / r.width;
    const y = ((ev.clientY - r.top) * frameH) / r.height;
    return [round1(Math.min(Math.max(x, 0), frameW)), round1(Math.min(Math.max(y, 0), frameH))];
  }

  /** Source pixels per screen pixel. */
  function unit() {
    const r = $("frame").getBoundingClientRect();
    return r.width ? frameW / r.width : 1;
  }

  // -- drawing --------------------------------------------------------------------------
  function el(name, attrs) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function pointsAttr(points) {
    return points.map((p) => `${p[0]},${p[1]}`).join(" ");
  }

  function renderShapes() {
    const g = $("shapes");
    g.replaceChildren();
    if (!frameW) return;
    const u = unit();
    if (oldRoi) {
      const [x1, y1, x2, y2] = oldRoi;
      g.append(
        el("rect", {
          x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "old-roi",
          "vector-effect": "non-scaling-stroke",
        }),
      );
    }
    zones.forEach((z, i) => {
      const poly = el("polygon", {
        points: pointsAttr(z.points),
        class: `zone ${z.kind}${i === selected ? " selected" : ""}`,
        "data-index": i,
        "vector-effect": "non-scaling-stroke",
      });
      poly.addEventListener("pointerdown", (ev) => {
        if (drawing) return;
        ev.stopPropagation();
        select(i, -1);
      });
      g.append(poly);
    });
    if (selected >= 0 && zones[selected]) {
      zones[selected].points.forEach((p, j) => {
        const h = el("circle", {
          cx: p[0], cy: p[1], r: HANDLE_PX * u,
          class: "handle" + (j === selectedPoint ? " selected" : ""),
          "data-point": j,
          "vector-effect": "non-scaling-stroke",
        });
        h.addEventListener("pointerdown", (ev) => startDrag(ev, selected, j));
        g.append(h);
      });
    }
    if (drawing) {
      const pts = drawing.points;
      g.append(
        el("polyline", {
          points: pointsAttr(pts), class: `drawing ${drawing.kind}`,
          "vector-effect": "non-scaling-stroke",
        }),
      );
      pts.forEach((p, j) => {
        const h = el("circle", {
          cx: p[0], cy: p[1], r: HANDLE_PX * u, class: "handle" + (j === 0 ? " first" : ""),
          "vector-effect": "non-scaling-stroke",
        });
        if (j === 0) {
          h.addEventListener("pointerdown", (ev) => {
            ev.stopPropagation();
            closePolygon();
          });
        }
        g.append(h);
      });
    }
  }

  function renderList() {
    const ol = $("zone-list");
    ol.replaceChildren();
    zones.forEach((z, i) => {
      const li = document.createElement("li");
      li.className = z.kind + (i === selected ? " selected" : "");
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
        zones.splice(i, 1);
        selected = -1;
        selectedPoint = -1;
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
    $("close-poly").disabled = !drawing || drawing.points.length < 3;
    $("cancel-poly").disabled = !drawing;
    $("new-roi").disabled = !!drawing;
    $("new-ignore").disabled = !!drawing;
    $("delete-point").disabled = drawing !== null || selected < 0 || selectedPoint < 0;
    $("help").textContent = drawing ? t("help_drawing") : t("help_idle");
    $("old-roi").hidden = !oldRoi;
    $("pins").hidden = !(loaded && loaded.rules === null);
    const engineer = role === "engineer" || role === "admin";
    $("save").disabled = !loaded || !!drawing || !engineer || busy;
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
    $("frame-size").textContent = frameW ? `${t("source_px")} ${frameW} × ${frameH} px` : "";
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
    selected = i;
    selectedPoint = j;
    if (redraw) renderAll();
    else {
      renderShapes();
      renderTools();
    }
  }

  // -- editing --------------------------------------------------------------------------
  function begin(kind) {
    drawing = { kind, points: [] };
    selected = -1;
    selectedPoint = -1;
    renderAll();
  }

  function uniqueName(kind) {
    const names = new Set(zones.map((z) => z.name));
    for (let n = 1; ; n++) if (!names.has(`${kind}-${n}`)) return `${kind}-${n}`;
  }

  function closePolygon() {
    if (!drawing) return;
    if (drawing.points.length < 3) {
      say("too_few");
      return;
    }
    zones.push({ name: uniqueName(drawing.kind), kind: drawing.kind, points: drawing.points });
    selected = zones.length - 1;
    selectedPoint = -1;
    drawing = null;
    markDirty();
    renderAll();
  }

  function cancelPolygon() {
    drawing = null;
    renderAll();
  }

  function deletePoint() {
    if (selected < 0 || selectedPoint < 0) return;
    const pts = zones[selected].points;
    if (pts.length <= 3) {
      say("min_points");
      return;
    }
    pts.splice(selectedPoint, 1);
    selectedPoint = -1;
    markDirty();
    renderAll();
  }

  function startDrag(ev, zone, point) {
    if (drawing) return;
    ev.stopPropagation();
    ev.preventDefault();
    drag = { zone, point, startX: ev.clientX, startY: ev.clientY, moved: false };
    $("overlay").setPointerCapture(ev.pointerId);
    selected = zone;
    selectedPoint = point;
    renderShapes();
    renderTools();
  }

  $("overlay").addEventListener("pointermove", (ev) => {
    if (!drag) return;
    if (!drag.moved && Math.hypot(ev.clientX - drag.startX, ev.clientY - drag.startY) < DRAG_PX)
      return;
    drag.moved = true;
    zones[drag.zone].points[drag.point] = toSource(ev);
    renderShapes();
  });

  $("overlay").addEventListener("pointerup", (ev) => {
    if (!drag) return;
    if (drag.moved) {
      zones[drag.zone].points[drag.point] = toSource(ev);
      markDirty();
    }
    drag = null;
    renderAll();
  });

  // a press on the picture itself: a new point while drawing, else clear the selection
  $("overlay").addEventListener("pointerdown", (ev) => {
    if (!frameW || ev.button !== 0) return;
    if (drawing) {
      drawing.points.push(toSource(ev));
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
    const [x1, y1, x2, y2] = oldRoi;
    zones.push({ name: uniqueName("roi"), kind: "roi", points: [[x1, y1], [x2, y1], [x2, y2], [x1, y2]] });
    oldRoi = null;
    markDirty();
    renderAll();
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (ev.key === "Escape" && drawing) cancelPolygon();
    else if (ev.key === "Enter" && drawing) closePolygon();
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

  function same(a, b) {
    const key = (th) => JSON.stringify([th.conf, th.iou, th.max_det, th.rules, th.source, th.set_at]);
    return key(a) === key(b);
  }

  async function save() {
    busy = true;
    say("saving");
    try {
      // nothing here may overwrite a change someone else made since this page loaded
      const now = await (await fetch("/api/thresholds", { headers: auth(), cache: "no-store" })).json();
      if (!same(now, loaded)) {
        say("changed_since");
        return;
      }
      const rules = {
        ...rulesOf(loaded),
        roi_xyxy: oldRoi,
        zones: zones.map((z) => ({ name: z.name, kind: z.kind, points: z.points })),
        zone_overlap: {
          roi: Number($("roi-share").value) / 100,
          ignore: Number($("ignore-share").value) / 100,
        },
      };
      const body = { conf: loaded.conf, iou: loaded.iou, max_det: loaded.max_det, rules };
      const r = await fetch("/api/thresholds", {
        method: "PUT",
        headers: { ...auth(), "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const data = await r.json().catch(() => ({}));
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

  adoptTokenFromUrl();
  applyLang();
  start();
})();
