// The shadow report page (/shadow): GET /api/shadow/report (the shadow loaded now, or
// ?model=<sha> from the page's own address) drawn as tables: the verdict matrix (active
// rows x shadow columns), per-class box agreement, both models against operator feedback,
// and the disagreements, each with the picture of both models' boxes
// (GET /api/shadow/picture/{id}). Language, login: pages.js (KJ) and auth.js. Plain JS.
"use strict";

(() => {
  const KJ = window.KJ;
  const { $, t, el } = KJ;
  const WORDS = {
    zh: {
      sr_title: "影子模型报告",
      sr_models: "模型",
      sr_verdicts: "判定对比（行：当前模型，列：影子模型）",
      sr_classes: "各类别检测框一致性",
      sr_feedback: "对照操作员反馈",
      sr_disagreements: "分歧",
      sr_legend: "蓝框 A：当前模型；品红框 S：影子模型",
      sr_feedback_note: "反馈多针对当前模型判为不合格的零件：召回率只在有反馈的零件上估计。",
      sr_pair: "当前 {a} · 影子 {s}",
      sr_window: "最近 {n} 个两者都判定的零件（{since} – {until}）",
      sr_agreement: "判定一致 {agreed}/{n}（{pct}），kappa {kappa}",
      sr_class: "类别", sr_a_boxes: "当前框", sr_s_boxes: "影子框", sr_matched: "匹配",
      sr_only_a: "仅当前", sr_only_s: "仅影子", sr_mean_iou: "平均 IoU", sr_class_agree: "一致率",
      sr_model: "模型", sr_precision: "精确率", sr_recall: "召回率",
      sr_right: "分歧中判对", sr_active: "当前模型", sr_shadow: "影子模型",
      sr_no_picture: "未保存图片", sr_boxes_only: "判定相同，检测框不同",
      sr_none: "还没有影子模型运行过：在模型页加载一个。",
    },
    en: {
      sr_title: "Shadow model report",
      sr_models: "Models",
      sr_verdicts: "Verdicts (rows: active model, columns: shadow model)",
      sr_classes: "Box agreement per class",
      sr_feedback: "Against operator feedback",
      sr_disagreements: "Disagreements",
      sr_legend: "Blue boxes A: active model; magenta boxes S: shadow model",
      sr_feedback_note:
        "Operators answer mostly on parts the active model failed: recall is estimated over answered parts only.",
      sr_pair: "active {a} · shadow {s}",
      sr_window: "newest {n} parts both models judged ({since} – {until})",
      sr_agreement: "verdicts agree {agreed}/{n} ({pct}), kappa {kappa}",
      sr_class: "class", sr_a_boxes: "active boxes", sr_s_boxes: "shadow boxes", sr_matched: "matched",
      sr_only_a: "active only", sr_only_s: "shadow only", sr_mean_iou: "mean IoU", sr_class_agree: "agreement",
      sr_model: "model", sr_precision: "precision", sr_recall: "recall",
      sr_right: "right where they differ", sr_active: "active", sr_shadow: "shadow",
      sr_no_picture: "no picture kept", sr_boxes_only: "same verdict, different boxes",
      sr_none: "No shadow has run yet: load one on the models page.",
    },
  };
  for (const lang of Object.keys(WORDS)) Object.assign(window.KANJIAN_PAGES_I18N[lang], WORDS[lang]);

  let report = null;
  const num = (x, d = 3) => (x === null || x === undefined ? "—" : x.toFixed(d));
  const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");

  function row(cells, tag = "td") {
    return el("tr", {}, ...cells.map((c) => (c instanceof Node ? c : el(tag, { text: String(c) }))));
  }

  function renderMatrix(v) {
    const m = $("matrix");
    m.replaceChildren(row(["", ...v.labels.map((l) => t(l))], "th"));
    v.matrix.forEach((cells, i) => {
      const tr = row([el("th", { text: t(v.labels[i]) })]);
      cells.forEach((n, j) =>
        tr.append(el("td", { text: String(n), class: i === j ? "diag" : n ? "off" : "",
                             "data-a": v.labels[i], "data-s": v.labels[j] })),
      );
      m.append(tr);
    });
    $("agreement").textContent = t("sr_agreement", {
      agreed: v.agreed, n: v.n, pct: pct(v.agreement), kappa: num(v.kappa),
    });
  }

  function renderClasses(d) {
    const c = $("classes");
    c.replaceChildren(row(["sr_class", "sr_a_boxes", "sr_s_boxes", "sr_matched", "sr_only_a",
                           "sr_only_s", "sr_mean_iou", "sr_class_agree"].map((k) => t(k)), "th"));
    for (const k of d.classes) {
      if (!k.a_boxes && !k.b_boxes) continue;
      const tr = row([KJ.className(k.class_name), k.a_boxes, k.b_boxes, k.matched, k.only_a,
                      k.only_b, num(k.mean_iou), pct(k.agreement)]);
      tr.dataset.class = k.class_name;
      c.append(tr);
    }
  }

  function renderFeedback(f) {
    const c = $("feedback");
    c.replaceChildren(row(["sr_model", "n", "tp", "fp", "fn", "tn", "sr_precision", "sr_recall",
                           "sr_right"].map((k) => t(k)), "th"));
    for (const [key, s, right] of [["sr_active", f.a, f.a_right], ["sr_shadow", f.b, f.b_right]]) {
      const tr = row([t(key), s.n, s.tp, s.fp, s.fn, s.tn, pct(s.precision), pct(s.recall), right]);
      tr.dataset.model = key === "sr_active" ? "active" : "shadow";
      c.append(tr);
    }
  }

  function renderList(list) {
    const box = $("disagreements");
    box.replaceChildren();
    for (const d of list) {
      const img = el("img", { alt: d.inspection_id });
      const cap = el("figcaption", {},
        el("div", { class: "verdicts", text: t("sr_pair", { a: t(d.active_verdict), s: t(d.shadow_verdict) }) }),
        el("div", { class: "muted", text: KJ.localTime(d.captured_at) +
          (d.verdict_differs ? "" : " · " + t("sr_boxes_only")) +
          (d.feedback_kind ? " · " + t(d.feedback_kind) : "") }));
      const fig = el("figure", { class: "pair", "data-id": d.inspection_id }, img, cap);
      box.append(fig);
      if (d.picture) KJ.picture(img, d.picture + "&max_side=720");
      else img.alt = t("sr_no_picture");
    }
  }

  function render() {
    if (!report) return;
    const who = (name, sha) => (name ? name + " · " : "") + sha.slice(0, 12);
    $("models").textContent = t("sr_pair", {
      a: who(report.active_model, report.active_sha256), s: who(report.shadow_model, report.shadow_sha256),
    });
    $("window").textContent = report.frames
      ? t("sr_window", { n: report.frames, since: KJ.localTime(report.since), until: KJ.localTime(report.until) })
      : "";
    renderMatrix(report.verdicts);
    renderClasses(report.detections);
    renderFeedback(report.feedback);
    renderList(report.listed);
    document.body.dataset.loaded = "1";
  }

  async function load() {
    const model = new URLSearchParams(location.search).get("model");
    try {
      report = await KJ.get("/api/shadow/report" + (model ? "?model=" + encodeURIComponent(model) : ""));
      $("error").textContent = "";
    } catch (e) {
      $("error").textContent = e.status === 404 ? t("sr_none") + " (" + e.message + ")" : e.message;
      document.body.dataset.loaded = "error";
      return;
    }
    render();
  }

  KJ.onLang.push(render);
  KJ.start(load);
})();
