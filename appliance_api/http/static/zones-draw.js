// The zones page's picture: fitting the frame to the window, mapping pointer positions to
// source pixels, and drawing the zones, handles and the polygon being clicked in as SVG
// over it. State is zones.js's (`st`); what a press on a shape does is its `on*`
// callbacks. Points are SOURCE-frame pixels: the SVG's viewBox is the frame's size.
"use strict";

window.KanjianZonesDraw = (st, on) => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const HANDLE_PX = 7; // handle radius on screen
  const round1 = (v) => Math.round(v * 10) / 10;

  /** Show the picture as large as the stage allows, small frames enlarged too: points
   * are placed more precisely on a bigger picture. */
  function fitPicture() {
    if (!st.frameW) return;
    const stage = $("stage").getBoundingClientRect();
    const room = Math.max(100, window.innerHeight - stage.top - 48);
    const s = Math.min(stage.width / st.frameW, room / st.frameH);
    $("frame").style.width = `${Math.floor(st.frameW * s)}px`;
    $("frame").style.height = `${Math.floor(st.frameH * s)}px`;
    $("overlay").setAttribute("viewBox", `0 0 ${st.frameW} ${st.frameH}`);
  }

  /** A pointer event's position in source pixels (the picture is shown scaled). */
  function toSource(ev) {
    const r = $("frame").getBoundingClientRect();
    const x = ((ev.clientX - r.left) * st.frameW) / r.width;
    const y = ((ev.clientY - r.top) * st.frameH) / r.height;
    return [
      round1(Math.min(Math.max(x, 0), st.frameW)),
      round1(Math.min(Math.max(y, 0), st.frameH)),
    ];
  }

  /** Source pixels per screen pixel. */
  function unit() {
    const r = $("frame").getBoundingClientRect();
    return r.width ? st.frameW / r.width : 1;
  }

  function el(name, attrs) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    e.setAttribute("vector-effect", "non-scaling-stroke");
    return e;
  }

  const pointsAttr = (points) => points.map((p) => `${p[0]},${p[1]}`).join(" ");

  function handle(p, cls, r) {
    return el("circle", { cx: p[0], cy: p[1], r, class: cls });
  }

  function renderShapes() {
    const g = $("shapes");
    g.replaceChildren();
    if (!st.frameW) return;
    const r = HANDLE_PX * unit();
    if (st.oldRoi) {
      const [x1, y1, x2, y2] = st.oldRoi;
      g.append(el("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "old-roi" }));
    }
    st.zones.forEach((z, i) => {
      const poly = el("polygon", {
        points: pointsAttr(z.points),
        class: `zone ${z.kind}${i === st.selected ? " selected" : ""}`,
        "data-index": i,
      });
      poly.addEventListener("pointerdown", (ev) => {
        if (st.drawing) return;
        ev.stopPropagation();
        on.select(i, -1);
      });
      g.append(poly);
    });
    const sel = st.selected >= 0 ? st.zones[st.selected] : null;
    if (sel) {
      sel.points.forEach((p, j) => {
        const h = handle(p, "handle" + (j === st.selectedPoint ? " selected" : ""), r);
        h.setAttribute("data-point", j);
        h.addEventListener("pointerdown", (ev) => on.startDrag(ev, st.selected, j));
        g.append(h);
      });
    }
    if (st.drawing) {
      const pts = st.drawing.points;
      g.append(el("polyline", { points: pointsAttr(pts), class: `drawing ${st.drawing.kind}` }));
      pts.forEach((p, j) => {
        const h = handle(p, "handle" + (j === 0 ? " first" : ""), r);
        if (j === 0) {
          h.addEventListener("pointerdown", (ev) => {
            ev.stopPropagation();
            on.closePolygon();
          });
        }
        g.append(h);
      });
    }
  }

  return { fitPicture, toSource, renderShapes };
};
