"""Write one suite run: ``results.json``, ``results.md`` and ``chart.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import Summary, jsonable
from benchmarks.targets import verdict_text


def _s(x: Summary | None, fmt: str = ".2f") -> str:
    return "" if x is None else f"{x.median:{fmt}}"


def _spread(x: Summary | None, fmt: str = ".2f") -> str:
    return "" if x is None else f"{x.p10:{fmt}}-{x.p90:{fmt}}"


def targets_table(targets: list[Any]) -> list[str]:
    lines = [
        "| target | goal | measured | spread | result | rows compared |",
        "|---|---|---:|---|---|---|",
    ]
    for t in targets:
        m = "" if t.measured is None else f"{t.measured:.3g}"
        lines.append(f"| {t.name} | {t.goal} | {m} | {t.spread} | {verdict_text(t)} | {t.detail} |")
    return lines


def markdown(res: Any) -> str:
    """The whole run as Markdown (what ``results.md`` holds)."""
    out = [f"# kanjian benchmark: {res.system.host}, {res.system.started_at} ({res.mode})", ""]
    out += [f"- {line}" for line in res.system.lines()]
    out += [f"- model: {res.model}", f"- suite wall time {sum(res.seconds.values()):.0f} s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items()), ""]  # fmt: skip
    out += ["## Targets", "", *targets_table(res.targets), ""]
    if res.errors:
        out += ["## Sections that failed", ""]
        out += [f"- {k}: {v}" for k, v in res.errors.items()] + [""]
    if res.preprocess is not None:
        h, w = res.preprocess.timings[0].dst_hw
        out += [
            f"## Preprocessing (frame -> {w}x{h} float32 RGB CHW)",
            "",
            res.preprocess.markdown(),
            "",
        ]
    if getattr(res, "quality", None) is not None:  # runs written before issue 15 lack it
        out += ["## Image quality gate beside preprocessing", "", res.quality.markdown(), ""]
    if res.inference:
        out += ["## Model inference (batch 1; the station does not batch)", ""]
        out += ["| setting | runs on | session s | ms per call (median) | p10-p90 | FPS (median of rounds) | FPS p10-p90 |",
                "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in res.inference:
            if r.error:
                out.append(
                    f"| {r.label} | {r.active_provider} | {r.session_s:.1f} | | | | {r.error} |"
                )
            else:
                out.append(
                    f"| {r.label} | {r.active_provider} | {r.session_s:.1f} | {_s(r.latency_ms)} "
                    f"| {_spread(r.latency_ms)} | {_s(r.fps)} | {_spread(r.fps)} |"
                )
        out.append("")
    if res.nms:
        out += ["## Decode + NMS (synthetic head output, 1080p frame, conf 0.25, iou 0.7)", ""]
        out += ["| candidates | method | kept | ms median | p10-p90 | x faster than Ultralytics | max box diff to kanjian px |",
                "|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in res.nms:
            d = "" if r.max_box_diff_px is None else f"{r.max_box_diff_px:.4f}"
            out.append(
                f"| {r.candidates} | {r.method} | {r.kept} | {r.ms.median:.3f} | {_spread(r.ms, '.3f')} "
                f"| {r.vs_ultralytics:.2f} | {d} |"
            )
        out.append("")
    if res.e2e is not None:
        e = res.e2e
        w, h = e.resolution_wh
        out += [f"## End to end ({w}x{h} MJPG video, {e.rounds} rounds x {e.frames_per_round} "
                f"frames after {e.warm_frames} warm-up frames, round-robin)", ""]  # fmt: skip
        out += [
            "| contender | runs on | FPS median | FPS p10-p90 | CPU ms per frame | stage p50 / p99 ms |",
            "|---|---|---:|---:|---:|---|",
        ]
        for c in e.contenders:
            stages = "; ".join(f"{k} {v.median:.1f} / {v.p99:.1f}" for k, v in c.stages_ms.items())
            out.append(
                f"| {c.name} | {c.runs_on} | {c.fps.median:.2f} | {_spread(c.fps)} "
                f"| {c.cpu_ms_per_frame.median:.1f} | {stages} |"
            )
        out += ["", "| ratio of FPS | of medians | per round min-max |", "|---|---:|---:|"]
        for r in e.ratios:
            out.append(
                f"| {r.numerator} / {r.denominator} | {r.of_medians:.3f} "
                f"| {r.per_round.min:.3f}-{r.per_round.max:.3f} |"
            )
        for t in e.triggered:
            lat = t.latency_ms
            out += ["", f"Trigger to verdict, triggered station ({t.setting.label}), {t.triggers} "
                    f"triggers one at a time, {t.gap_ms:.0f} ms apart: p50 {lat.median:.1f} ms, "
                    f"p90 {lat.p90:.1f}, p99 {lat.p99:.1f}, max {lat.max:.1f}; "
                    f"{t.missed} missed. Stages p50 / p99 ms: "
                    + "; ".join(f"{k} {v.median:.1f} / {v.p99:.1f}" for k, v in t.stages_ms.items())
                    + f". {t.cpu_ms_per_trigger:.1f} CPU ms per trigger; the frame pump read "
                    f"{t.stale_per_trigger:.1f} frames per trigger that grab_fresh then discarded as stale."]  # fmt: skip
        out += [""] + [f"- {n}" for n in e.notes] + [""]
    if res.store:
        out += ["## SQLite sink (ResultStore, group commit, flood from one thread)", ""]
        out += ["| method | synchronous | inspections/s median | min-max | rounds x inspections | transactions | put() p50 / p99 / max us | blocked puts |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in res.store:
            d, p = r.durable_per_s, r.put_us
            puts = "" if p is None else f"{p.median:.1f} / {p.p99:.1f} / {p.max:.0f}"
            blocked = "" if p is None else str(r.blocked_puts)
            out.append(
                f"| {r.method} | {r.synchronous} | {d.median:.0f} | {d.min:.0f}-{d.max:.0f} "
                f"| {r.rounds} x {r.inspections} | {r.batches:.0f} | {puts} | {blocked} |"
            )
        out.append("")
    if res.anomaly is not None:
        out += ["## Anomaly models beside the YOLO model (per image, CPU)", ""]
        out += [res.anomaly.markdown()]
    out += [f"- {n}" for n in res.notes]
    return "\n".join(out) + "\n"


def chart(d: dict[str, Any], path: Path) -> None:
    """Four panels: preprocessing ms, inference FPS, end-to-end FPS, targets (measured / goal).

    Args:
        d: a run as in ``results.json`` (so a chart can be redrawn from the file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.infer import InferSetting

    fig, axes = plt.subplots(2, 2, figsize=(16, 10))
    ax = axes[0][0]
    pre = d.get("preprocess")
    if pre:
        timings = pre["timings"]
        sizes = sorted({tuple(t["src_hw"]) for t in timings})
        methods = list(dict.fromkeys(t["method"] for t in timings))
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            pts = [
                (i + j * width, t["median_ms"])
                for i, hw in enumerate(sizes)
                for t in timings
                if t["method"] == m and tuple(t["src_hw"]) == hw
            ]
            ax.bar([x for x, _ in pts], [y for _, y in pts], width, label=m)
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(sizes))], [f"{w}x{h}" for h, w in sizes]
        )
        ax.set_ylabel("ms per frame (median)")
        ax.legend(fontsize=7)
        h, w = timings[0]["dst_hw"]
        ax.set_title(f"Preprocessing to {w}x{h} float32 CHW")
    ax = axes[0][1]
    rows = [r for r in d.get("inference", []) if r["fps"] is not None]
    _barh(ax, [InferSetting(**r["setting"]).label + f" ({r['active_provider']})" for r in rows],
          [r["fps"] for r in rows], ["C0"] * len(rows))  # fmt: skip
    ax.set_xlabel("FPS (median of rounds, p10-p90)")
    ax.set_title("Model alone, batch 1")
    ax = axes[1][0]
    e2e = d.get("e2e")
    if e2e:
        cs = [c for c in e2e["contenders"] if c["kind"] != "decode"]  # its FPS dwarfs the rest
        colour = {"station": "C0", "model": "C1", "ultralytics": "C2"}
        _barh(ax, [c["name"] for c in cs], [c["fps"] for c in cs], [colour[c["kind"]] for c in cs])
        w, h = e2e["resolution_wh"]
        ax.set_xlabel(f"FPS on the {w}x{h} video (median of rounds, p10-p90)")
    ax.set_title("End to end (blue: station, orange: model alone, green: Ultralytics)")
    ax = axes[1][1]
    ts = [t for t in d.get("targets", []) if t["measured"] is not None]
    vals = []
    for t in ts:
        op, goal = t["goal"].split()
        g, m = float(goal), t["measured"]
        # >= 1 means the target is met, whichever way it points
        if op == ">=":
            vals.append(m / g if g else 1.0)
        elif op == "<=":
            vals.append(g / m if m else 2.0)
        else:
            vals.append(1.0 if t["passed"] else 0.0)
    ax.barh([t["name"] for t in ts], vals,
            color=["tab:green" if t["passed"] else "tab:red" for t in ts])  # fmt: skip
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("measured / goal (>= 1 meets the target)")
    ax.set_title("Targets")
    ax.tick_params(axis="y", labelsize=7)
    sysd = d["system"]
    fig.suptitle(
        f"kanjian benchmarks ({d['mode']}): {sysd['host']}, {sysd['cpu']}, "
        f"{sysd['usable_cpus']} CPUs, GPU {sysd['gpu'] or 'none'}, {sysd['started_at']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _barh(ax: Any, labels: list[str], fps: list[dict[str, float]], colors: list[str]) -> None:
    med = [f["median"] for f in fps]
    err = [[f["median"] - f["p10"] for f in fps], [f["p90"] - f["median"] for f in fps]]
    ax.barh(labels, med, xerr=err, color=colors)
    ax.tick_params(axis="y", labelsize=7)


def write(res: Any, folder: Path) -> dict[str, Path]:
    """Write the three files into ``folder``; returns their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "results.json",
        "markdown": folder / "results.md",
        "chart": folder / "chart.png",
    }
    data = jsonable(res)
    paths["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(res), encoding="utf-8")
    try:
        import matplotlib  # noqa: F401  (only the chart needs it: not a runtime dependency)
    except ImportError:
        print("no chart.png: matplotlib is not installed (pip install matplotlib)")
        del paths["chart"]
        return paths
    chart(data, paths["chart"])
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report results.json [chart.png]``: redraw a run's chart."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(main.__doc__)
        return 2
    src = Path(args[0])
    chart(
        json.loads(src.read_text(encoding="utf-8")),
        Path(args[1]) if len(args) > 1 else src.with_name("chart.png"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
