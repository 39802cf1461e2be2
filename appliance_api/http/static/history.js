// The history page: every inspection the station keeps, filtered by time, verdict, class
// and feedback (GET /api/inspections, newest first, keyset pages), one opened large with
// its overlay (GET /api/inspections/{id}/image?annotated=true). Operators read; engineers
// (and admins) also give or change feedback (POST /api/inspections/{id}/feedback) and see
// the feedback history, the model and the audit trail (GET /api/inspections/{id}/audit).
// The filters live in the address (?since=&until=&verdict=&class_name=&feedback=&open=),
// so the shift page links straight to a filtered list.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t, el } = KJ;
  const LIMIT = 50;
  // list thumbnails are drawn by the server this small (shown at 56 px, sharp at 2x):
  // a page of 50 costs 50 small pictures, not 50 full-size ones
  const THUMB_SIDE = 112;

  let filters = readUrl();
  let pages = [null]; // pages[k]: the `before` of page k (null: the newest)
  let pageNo = 0;
  let items = [];
  let classNames = [];
  let open = null; // the inspection shown large (InspectionDetailOut)

  function readUrl() {
    const q = new URLSearchParams(location.search);
    return {
      since: q.get("since"),
      until: q.get("until"),
      verdicts: q.getAll("verdict"),
      class_name: q.get("class_name") || "",
      feedback: q.get("feedback") || "",
      open: q.get("open"),
    };
  }

  function writeUrl() {
    const q = query(false);
    if (open) q.set("open", open.id);
    history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
  }

  function query(withPaging) {
    const q = new URLSearchParams();
    if (filters.since) q.set("since", filters.since);
    if (filters.until) q.set("until", filters.until);
    for (const v of filters.verdicts) q.append("verdict", v);
    if (filters.class_name) q.set("class_name", filters.class_name);
    if (filters.feedback) q.set("feedback", filters.feedback);
    if (withPaging) {
      q.set("limit", LIMIT);
      if (pages[pageNo] !== null) q.set("before", pages[pageNo]);
    }
    return q;
  }

  // -- filters --------------------------------------------------------------------------
  function showFilters() {
    $("f-since").value = KJ.isoToInput(filters.since);
    $("f-until").value = KJ.isoToInput(filters.until);
    document.querySelectorAll("#f-verdicts input").forEach((b) => {
      b.checked = filters.verdicts.includes(b.value);
    });
    $("f-feedback").value = filters.feedback;
    renderClassOptions();
  }

  function renderClassOptions() {
    const sel = $("f-class");
    const keep = filters.class_name;
    sel.textContent = "";
    sel.append(el("option", { value: "", text: t("any_class") }));
    const names = [...classNames];
    if (keep && !names.includes(keep)) names.push(keep);
    for (const n of names) sel.append(el("option", { value: n, text: KJ.className(n) }));
    sel.value = keep;
  }

  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    filters = {
      since: KJ.inputToIso($("f-since").value),
      until: KJ.inputToIso($("f-until").value),
      verdicts: [...document.querySelectorAll("#f-verdicts input:checked")].map((b) => b.value),
      class_name: $("f-class").value,
      feedback: $("f-feedback").value,
    };
    pages = [null];
    pageNo = 0;
    writeUrl();
    load();
  });

  $("f-reset").addEventListener("click", () => {
    filters = { since: null, until: null, verdicts: [], class_name: "", feedback: "" };
    showFilters();
    pages = [null];
    pageNo = 0;
    writeUrl();
    load();
  });

  $("older").addEventListener("click", () => {
    if (pages[pageNo + 1] === undefined) return;
    pageNo += 1;
    load();
  });
  $("newer").addEventListener("click", () => {
    if (pageNo === 0) return;
    pageNo -= 1;
    load();
  });

  // -- the list -------------------------------------------------------------------------
  async function load() {
    const state = $("list-state");
    state.textContent = t("loading");
    state.dataset.state = "loading";
    let page;
    try {
      page = await KJ.get("/api/inspections?" + query(true));
    } catch (e) {
      state.textContent = `${t("load_failed")}: ${e.message}`;
      state.dataset.state = "error";
      return;
    }
    items = page.items;
    pages.length = pageNo + 1;
    if (page.next_before !== null) pages.push(page.next_before);
    renderRows();
    state.textContent = items.length ? t("rows", { n: items.length }) : t("no_rows");
    state.dataset.state = "ready";
    state.dataset.query = query(true).toString();
  }

  function feedbackText(fb) {
    if (!fb) return "";
    return t(fb.kind) + (fb.kind === "wrong_class" && fb.class_name ? " → " + KJ.className(fb.class_name) : "");
  }

  function renderRows() {
    const body = $("rows");
    // the thumbnails' object URLs go back to the browser with their rows
    body.querySelectorAll("img").forEach((i) => i.src.startsWith("blob:") && URL.revokeObjectURL(i.src));
    body.textContent = "";
    for (const r of items) {
      let thumb = "";
      if (r.has_image) {
        thumb = el("img", { alt: "" });
        KJ.picture(thumb, `/api/inspections/${r.id}/image?annotated=true&max_side=${THUMB_SIDE}`);
      }
      const tr = el(
        "tr",
        {
          class: "row v-" + r.verdict,
          "data-inspection-id": r.id,
          "data-seq": r.seq,
          "data-verdict": r.verdict,
          "data-feedback": r.feedback ? r.feedback.kind : "",
          tabIndex: 0,
        },
        el("td", { class: "thumb" }, thumb),
        el("td", { class: "time", text: KJ.localTime(r.captured_at) }),
        el("td", { class: "id" }, el("code", { text: r.id.slice(0, 8) })),
        el("td", { class: "verdict", text: t(r.verdict) }),
        el("td", { class: "class", text: r.top_class ? KJ.className(r.top_class) : "" }),
        el("td", {
          class: "conf",
          text: r.top_confidence === null ? "" : r.top_confidence.toFixed(2),
        }),
        el("td", { class: "fb", text: feedbackText(r.feedback) }),
      );
      tr.addEventListener("click", () => openDetail(r.id));
      tr.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") openDetail(r.id);
      });
      body.append(tr);
    }
    $("newer").disabled = pageNo === 0;
    $("older").disabled = pages[pageNo + 1] === undefined;
    const no = $("page-no");
    no.dataset.page = pageNo + 1;
    no.textContent = t("page", { n: pageNo + 1 });
  }

  // -- one inspection, large --------------------------------------------------------------
  async function openDetail(id) {
    const dlg = $("detail");
    if (dlg.dataset.inspectionId !== id) {
      // another part: the last answer's line belonged to the one before
      const out = $("d-result");
      out.textContent = "";
      delete out.dataset.kind;
      delete out.dataset.inspectionId;
    }
    dlg.dataset.inspectionId = id;
    dlg.dataset.state = "loading";
    $("d-classes").hidden = true;
    if (!dlg.open) dlg.showModal();
    let rec;
    try {
      rec = await KJ.get(`/api/inspections/${id}`);
    } catch (e) {
      dlg.dataset.state = "error";
      $("d-reason").textContent = `${t("load_failed")}: ${e.message}`;
      return;
    }
    if (dlg.dataset.inspectionId !== id) return; // another one was opened meanwhile
    open = rec;
    writeUrl();
    renderDetail();
    const img = $("d-image");
    if (rec.has_image) {
      img.hidden = false;
      $("d-no-image").hidden = true;
      img.onload = () => {
        if (img.dataset.inspectionId === id) dlg.dataset.image = "loaded";
      };
      img.onerror = () => {
        img.hidden = true;
        $("d-no-image").hidden = false;
        $("d-no-image").textContent = t("image_gone");
      };
      dlg.dataset.image = "loading";
      img.dataset.inspectionId = id;
      KJ.picture(img, `/api/inspections/${id}/image?annotated=true&max_side=1280`);
    } else {
      img.hidden = true;
      img.removeAttribute("src");
      delete img.dataset.src; // a picture still on its way is not shown
      delete img.dataset.inspectionId;
      dlg.dataset.image = "none";
      $("d-no-image").hidden = false;
      $("d-no-image").textContent = t("no_image");
    }
    if (KJ.isEngineer()) loadAudit(id);
    dlg.dataset.state = "ready";
  }

  function renderDetail() {
    const rec = open;
    if (!rec) return;
    const v = $("d-verdict");
    v.dataset.verdict = rec.verdict;
    $("d-verdict-word").textContent = t(rec.verdict);
    $("d-id").textContent = rec.id.slice(0, 8);
    $("d-id").title = rec.id;
    $("d-time").textContent = KJ.localTime(rec.captured_at);
    // as the screen says it: class, confidence, where on the part and its size
    $("d-reason").textContent = KJ.reasonText(rec);
    $("d-reason").title = rec.reason || ""; // the stored English sentence
    const dets = $("d-detections");
    dets.textContent = "";
    for (const d of rec.detections) {
      const box = d.xyxy.map((x) => Math.round(x)).join(",");
      dets.append(
        el("li", { "data-class": d.class_name }, `${KJ.className(d.class_name)} ${d.confidence.toFixed(2)}`,
          KJ.isEngineer() ? el("small", { text: ` [${box}]` }) : null),
      );
    }
    const fb = $("d-feedback");
    fb.dataset.kind = rec.feedback ? rec.feedback.kind : "";
    fb.textContent = rec.feedback
      ? `${feedbackText(rec.feedback)} · ${t("by")} ${rec.feedback.actor} · ${KJ.localTime(rec.feedback.created_at)}`
      : t("no_feedback");
    const engineer = KJ.isEngineer();
    $("d-answer").hidden = !engineer;
    $("d-read-only").hidden = engineer;
    $("d-engineer").hidden = !engineer;
    document.querySelectorAll("#d-buttons button").forEach((b) => {
      b.classList.toggle("chosen", !!rec.feedback && rec.feedback.kind === b.dataset.kind);
    });
    if (!engineer) return;
    const hist = $("d-history");
    hist.textContent = "";
    for (const f of [...rec.feedback_history].reverse()) {
      hist.append(
        el("li", { "data-kind": f.kind, text: `${KJ.localTime(f.created_at)} · ${feedbackText(f)} · ${f.actor}` }),
      );
    }
    const m = rec.model;
    $("d-model").textContent = `${m.name || "?"} v${m.version || "?"} · ${(m.sha256 || "").slice(0, 12)}`;
    $("d-model").title = m.sha256 || "";
    $("d-timings").textContent = Object.entries(rec.timings_ms)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(" · ");
  }

  async function loadAudit(id) {
    const list = $("d-audit");
    list.textContent = "";
    list.dataset.state = "loading";
    try {
      const page = await KJ.get(`/api/inspections/${id}/audit`);
      if ($("detail").dataset.inspectionId !== id) return;
      for (const a of page.items) {
        list.append(
          el("li", { "data-action": a.action, text: `${KJ.localTime(a.at)} · ${a.action} · ${a.actor} (${a.role || "-"})` }),
        );
      }
      list.dataset.state = "ready";
    } catch (e) {
      list.dataset.state = "error";
      list.append(el("li", { text: `${t("load_failed")}: ${e.message}` }));
    }
  }

  $("d-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("close", () => {
    open = null;
    delete $("detail").dataset.inspectionId; // reopened, it starts afresh
    writeUrl();
  });

  async function sendFeedback(kind, klass) {
    if (!open) return;
    const id = open.id;
    const body = { kind };
    if (klass) body.class_name = klass;
    let r = null;
    try {
      r = await KJ.post(`/api/inspections/${id}/feedback`, body);
    } catch (e) {
      r = null;
    }
    const out = $("d-result");
    $("d-classes").hidden = true;
    const saved = r && r.ok ? await r.json().catch(() => ({})) : null;
    if (saved) {
      // a first answer is recorded; one over an earlier answer changed it (audited so)
      const word = saved.replaces ? "changed" : "recorded";
      out.className = "ok";
      out.dataset.inspectionId = id;
      out.dataset.kind = kind;
      out.dataset.result = word;
      out.textContent = `${t(word)}: ${t(kind)}${klass ? " → " + KJ.className(klass) : ""}`;
      await openDetail(id); // the stored answer, its history and audit
      const row = document.querySelector(`#rows tr[data-inspection-id="${id}"]`);
      if (row && open) {
        row.dataset.feedback = open.feedback ? open.feedback.kind : "";
        row.querySelector(".fb").textContent = feedbackText(open.feedback);
        const item = items.find((x) => x.id === id);
        if (item) item.feedback = open.feedback;
      }
    } else {
      out.className = "bad";
      delete out.dataset.kind;
      delete out.dataset.result;
      out.textContent = r && r.status === 403 ? t("no_role") : t("failed");
    }
  }

  $("d-buttons").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.kind !== "wrong_class") {
      sendFeedback(b.dataset.kind);
      return;
    }
    const box = $("d-classes");
    box.textContent = "";
    box.append(el("div", { text: t("pick_class") }));
    const names = (KJ.status && KJ.status.model.class_names) || classNames;
    for (const n of names) {
      const c = el("button", { type: "button", "data-class": n, text: KJ.className(n) });
      c.addEventListener("click", () => sendFeedback("wrong_class", n));
      box.append(c);
    }
    box.hidden = false;
  });

  // -- start ----------------------------------------------------------------------------
  KJ.onLang.push(() => {
    renderClassOptions();
    renderRows();
    renderDetail();
  });

  KJ.start(async () => {
    try {
      classNames = (await KJ.get("/api/trends/classes")).classes;
    } catch (e) {
      classNames = [];
    }
    const model = (KJ.status && KJ.status.model.class_names) || [];
    classNames = [...new Set([...model, ...classNames])].sort();
    showFilters();
    await load();
    if (filters.open) openDetail(filters.open);
  });
})();
