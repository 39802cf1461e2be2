"""Shadow model benchmark: what a shadow costs the active model.

``python -m benchmarks.shadow`` runs, in one process, on the same frames (the demo's
NEU-DET images, 416x416, looping from a folder camera), two real stations one after
the other, the active model being the demo bundle:

- **free run**: the active model's frames per second over blocks of ``--frames``
  inspections (``Station.run(max_frames=...)``, from the first frame taken to the last
  one emitted), in ``--rounds`` rounds of two blocks, one without and one with a
  shadow loaded, their order alternating each round (PITFALLS.md: a noisy machine);
- **triggered**: trigger-to-verdict latency, ``Station.trigger()`` to its future
  resolved (the row committed: what the PLC waits for), one trigger at a time with
  ``--gap-ms`` between an answer and the next trigger, ``--triggers`` per block, the
  blocks alternating as above.

The shadow is loaded and stopped with the station's own keeper (golden check, child
process at nice +10 on one thread) before and after each of its blocks, and timing
starts once its child runs. Default shadow: the magnetic-tile anomaly demo bundle (a
real second bundle that ships with the repository; on NEU-DET frames its verdicts mean
nothing, its cost is real); ``--shadow`` takes any bundle folder (a retrained detect
model is the realistic case). The Markdown table goes to ``--out``
(``benchmarks/results/shadow.md``), the host named with its load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, system_info

RESULTS = REPO / "benchmarks" / "results" / "shadow.md"


@dataclass
class Side:
    """One contender's samples: FPS per free-run block, latencies (ms) per trigger."""

    fps: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    shadow: list[dict[str, Any]] = field(default_factory=list)  # the shadow's counters per block


def _station(data: Path, model: Path, images: Path, triggered: bool) -> Any:
    from kanjian.station.config import StationConfig
    from kanjian.station.pipeline import build_station
    from kanjian.station.shadow import service as _shadow  # noqa: F401  registers "shadow"

    cfg = StationConfig.model_validate(
        {
            "model": {"path": str(model), "providers": ["cpu"]},
            "camera": {"kind": "folder", "path": str(images), "loop": True},
            "policy": "lossless",
            "trigger": {"mode": "triggered" if triggered else "free_run"},
            "store": {"data_dir": str(data), "min_free_mb": 0, "retention": {"min_free_mb": 0}},
        }
    )
    return build_station(cfg)


def _register(station: Any, bundle: Path, tmp: Path) -> str:
    from kanjian.station.state.audit import Actor

    archive = tmp / f"{bundle.name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(bundle.rglob("*")):
            zf.write(p, f"bundle/{p.relative_to(bundle)}")
    entry, _ = station.state.models.ingest(archive, Actor("benchmark"))
    return str(entry.sha256)


class ShadowSwitch:
    """Loads and stops the shadow around a block; reads its counters."""

    def __init__(self, station: Any, sha: str) -> None:
        from kanjian.station.shadow.service import ShadowService
        from kanjian.station.state.audit import Actor

        svc = station.channels.get(ShadowService)
        assert svc is not None
        self.svc, self.sha, self.actor = svc, sha, Actor("benchmark")

    def on(self) -> None:
        self.svc.keeper.load(self.sha, self.actor)
        deadline = time.monotonic() + 300
        while (st := self.svc.status()) is None or st.child != "running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the shadow child did not start: {st}")
            time.sleep(0.05)

    def off(self) -> dict[str, Any]:
        st = self.svc.status()
        self.svc.keeper.clear(self.actor)
        c = st.counters
        return {"offered": c.offered, "judged": c.judged, "skipped": c.skipped,
                "errors": c.errors, "latency_mean_ms": st.latency_mean_ms,
                "latency_p95_ms": st.latency_p95_ms}  # fmt: skip


def free_run(args: argparse.Namespace, tmp: Path, sides: dict[str, Side]) -> Any:
    station = _station(tmp / "free", args.model, args.images, triggered=False)
    try:
        switch = ShadowSwitch(station, _register(station, args.shadow, tmp))
        station.run(max_frames=args.frames)  # warm-up: caches, the pump's read-ahead

        def block(with_shadow: bool) -> None:
            if with_shadow:
                switch.on()
            t0 = time.perf_counter()
            station.run(max_frames=args.frames)
            dt = time.perf_counter() - t0
            side = sides["with" if with_shadow else "without"]
            side.fps.append(args.frames / dt)
            if with_shadow:
                side.shadow.append(switch.off())

        for r in range(args.rounds):
            for w in (False, True) if r % 2 == 0 else (True, False):
                block(w)
        return station.inspector.model.info
    finally:
        station.close()


def triggered(args: argparse.Namespace, tmp: Path, sides: dict[str, Side]) -> None:
    station = _station(tmp / "trig", args.model, args.images, triggered=True)
    loop = threading.Thread(target=station.run, name="bench-shadow-loop", daemon=True)
    loop.start()
    try:
        switch = ShadowSwitch(station, _register(station, args.shadow, tmp))

        def block(n: int, record: Side | None) -> None:
            for i in range(n):
                t0 = time.perf_counter()
                station.trigger(f"bench-{i}").result(120)
                if record is not None:
                    record.latency_ms.append((time.perf_counter() - t0) * 1e3)
                time.sleep(args.gap_ms / 1e3)

        block(10, None)  # warm-up
        for r in range(args.rounds):
            for w in (False, True) if r % 2 == 0 else (True, False):
                if w:
                    switch.on()
                block(args.triggers, sides["with" if w else "without"])
                if w:
                    sides["with"].shadow.append({"triggered": True, **switch.off()})
    finally:
        station.stop()
        loop.join(60)
        station.close()


def _rel(p: Path) -> str:
    """``p`` relative to the repository when it lies inside it."""
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _load(avg: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


def _fmt(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:.1f}{unit}"


def markdown(args: argparse.Namespace, sides: dict[str, Side], info: Any, sysinfo: Any) -> str:
    wo, wi = sides["without"], sides["with"]
    rows = [
        ("free-run FPS, median of blocks", float(np.median(wo.fps)), float(np.median(wi.fps))),
        ("trigger → verdict, median (ms)", float(np.median(wo.latency_ms)),
         float(np.median(wi.latency_ms))),
        ("trigger → verdict, p95 (ms)", float(np.percentile(wo.latency_ms, 95)),
         float(np.percentile(wi.latency_ms, 95))),
    ]  # fmt: skip
    free = [s for s in wi.shadow if not s.get("triggered")]
    trig = [s for s in wi.shadow if s.get("triggered")]

    def shadow_line(blocks: list[dict[str, Any]]) -> str:
        o = sum(b["offered"] for b in blocks)
        j = sum(b["judged"] for b in blocks)
        s = sum(b["skipped"] for b in blocks)
        e = sum(b["errors"] for b in blocks)
        mean = np.mean([b["latency_mean_ms"] for b in blocks if b["latency_mean_ms"]] or [np.nan])
        return (f"offered {o}, judged {j} ({100 * j / max(o, 1):.0f} %), skipped {s}, "
                f"errors {e}; the shadow's own time {_fmt(float(mean), ' ms')} mean")  # fmt: skip

    lines = [
        "# Shadow model: what it costs the active model",
        "",
        f"Active model **{info.name} v{info.version}** ({info.task}, {info.imgsz[1]}x"
        f"{info.imgsz[0]}, `{_rel(args.model)}`, ONNX Runtime CPU, default threads); shadow "
        f"`{_rel(args.shadow)}` (child process, one thread, nice +10). Frames: "
        f"`{_rel(args.images)}` looping from a folder camera; {args.rounds} round(s), "
        f"each a block without and a block with the shadow in alternating order: free run "
        f"{args.frames} frames a block, triggered {args.triggers} triggers a block one at a "
        f"time with {args.gap_ms:g} ms between an answer and the next trigger.",
        "",
        "| | without shadow | with shadow | with / without |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |" for name, a, b in rows],
        "",
        f"- shadow, free run: {shadow_line(free)}",
        f"- shadow, triggered: {shadow_line(trig)}",
        "",
        "Machine: " + "; ".join(sysinfo.lines()[:4]) + ".",
        f"Load average (1 / 5 / 15 min) at start {_load(sysinfo.loadavg_start)}, at end "
        f"{_load(os.getloadavg())}.",
        "",
        f"Reproduce: `NUMBA_THREADING_LAYER=workqueue python -m benchmarks.shadow --rounds "
        f"{args.rounds} --frames {args.frames} --triggers {args.triggers} --gap-ms "
        f"{args.gap_ms:g}`.",
    ]
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
    from kanjian.station.demos import MAGNETIC_TILE_DIR

    p = argparse.ArgumentParser(prog="python -m benchmarks.shadow", description=__doc__)
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help="the active bundle")
    p.add_argument("--shadow", type=Path, default=MAGNETIC_TILE_DIR / "model",
                   help="the shadow bundle (another model than --model)")  # fmt: skip
    p.add_argument("--images", type=Path, default=DEMO_IMAGES, help="a folder of frames")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--frames", type=int, default=300, help="free-run frames per block")
    p.add_argument("--triggers", type=int, default=60, help="triggers per block")
    p.add_argument("--gap-ms", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--note", default="", help="a line added under the table (who shared the host)")
    args = p.parse_args(argv)
    sysinfo = system_info()
    sides = {"without": Side(), "with": Side()}
    with tempfile.TemporaryDirectory(prefix="kanjian-bench-shadow-") as t:
        info = free_run(args, Path(t), sides)
        triggered(args, Path(t), sides)
    text = markdown(args, sides, info, sysinfo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
