"""``python -m benchmarks``: the whole benchmark suite in one process, one run.

Sections, in order: preprocessing (:mod:`benchmarks.preprocess`), the image quality
gate beside it (:mod:`benchmarks.quality`), model inference per execution provider
(:mod:`benchmarks.infer`), decode + NMS (:mod:`benchmarks.nms`), end to end and
trigger-to-verdict (:mod:`benchmarks.e2e`), the SQLite sink (:mod:`benchmarks.store`),
the anomaly models' per-image latency beside the YOLO model's (:mod:`benchmarks.anomaly`).
Then the targets (:mod:`benchmarks.targets`) are printed with pass/fail, and the run is
written to ``<out>/<host>-<UTC date-time>/`` (``results.json``, ``results.md``, ``chart.png``).

Ultralytics is imported first, so that its ``cv2.setNumThreads(0)`` holds for
every section alike; Numba runs on the ``workqueue`` layer
(:func:`kanjian.kernels.configure_threads`), as the station does.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, SystemInfo, offline_env, system_info, thread_env
from benchmarks.targets import (
    Target,
    e2e_targets,
    preprocess_targets,
    quality_targets,
    store_targets,
    trigger_targets,
    verdict_text,
)

SECTIONS = ("preprocess", "quality", "inference", "nms", "e2e", "trigger", "store", "anomaly")


@dataclass(frozen=True)
class Params:
    """How much to measure. :data:`QUICK` and :data:`FULL` are the two presets."""

    preprocess_sizes: tuple[tuple[int, int], ...] = ((480, 640), (1080, 1920), (2048, 2448))
    preprocess_repeats: int = 60
    compile_times: bool = True
    infer_frames: int = 10
    infer_rounds: int = 7
    nms_candidates: tuple[int, ...] = (279, 2000)
    nms_repeats: int = 200
    video_wh: tuple[int, int] = (1920, 1080)
    e2e_rounds: int = 5
    e2e_frames: int = 100
    e2e_warm: int = 8
    triggers: int = 200
    trigger_gap_s: float = 0.05
    store_inspections: int = 20_000
    store_rounds: int = 5
    anomaly_frames: int = 10
    anomaly_rounds: int = 9
    anomaly_threads: tuple[int, ...] = (1, 2)
    anomaly_methods: tuple[str, ...] = ("draem", "draem-lite", "patchknn")
    anomaly_imgsz: int = 256


FULL = Params()
QUICK = Params(
    preprocess_repeats=20,
    compile_times=False,
    infer_frames=4,
    infer_rounds=3,
    nms_candidates=(279,),
    nms_repeats=30,
    e2e_rounds=2,
    e2e_frames=20,
    e2e_warm=3,
    triggers=20,
    store_inspections=10_000,
    store_rounds=2,
    anomaly_frames=4,
    anomaly_rounds=3,
)


@dataclass
class SuiteResult:
    """One run of the suite (written as JSON; see :mod:`benchmarks.report`)."""

    mode: str
    params: Params
    system: SystemInfo
    model: str
    preprocess: Any = None
    quality: Any = None
    inference: list[Any] = field(default_factory=list)
    nms: list[Any] = field(default_factory=list)
    e2e: Any = None
    store: list[Any] = field(default_factory=list)
    anomaly: Any = None
    targets: list[Target] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _onnx_file(model: Path) -> Path:
    if model.is_dir():
        from kanjian.inference.bundle import MODEL_NAME

        return model / MODEL_NAME
    return model


def run_suite(
    params: Params,
    mode: str,
    model: Path | None = None,
    skip: Sequence[str] = (),
    log: Callable[[str], None] = print,
    anomaly_model: Path | None = None,
) -> SuiteResult:
    """Measure every section not in ``skip``; a section that raises is recorded, not fatal.

    ``anomaly_model``: a trained anomaly bundle (folder or its ``model.onnx``) measured
    beside the untrained exports of ``params.anomaly_methods``; None: only those.
    """
    offline_env()
    env_at_start = thread_env()
    import cv2

    try:  # first: it sets cv2's thread count for the whole process
        import ultralytics  # noqa: F401

        have_ul = True
    except ImportError:
        have_ul = False
    from kanjian.kernels import configure_threads

    configure_threads(None, layer="workqueue")
    from benchmarks import assets

    info = system_info(env_at_start)
    for line in info.lines():
        log(line)
    if model is None and not have_ul:
        from kanjian.station.config import DEMO_MODEL

        model = DEMO_MODEL
        log(
            "no torch/Ultralytics (pip install 'kanjian[training]'): the bundled demo model "
            "instead of the random-weight YOLO11n reference, and no Ultralytics contenders"
        )
    model_path = model if model is not None else assets.reference_model()
    onnx = _onnx_file(model_path)
    from kanjian.inference.model import load_model

    m = load_model(model_path, ["cpu"])
    imgsz = m.info.imgsz
    model_desc = (
        f"{model_path} ({m.info.task}, {len(m.info.class_names)} classes, input "
        f"{imgsz[1]}x{imgsz[0]}, sha256 {m.info.sha256[:12]})"
    )
    del m
    log(f"model {model_desc}")
    res = SuiteResult(mode=mode, params=params, system=info, model=model_desc)
    res.notes.append(
        f"cv2 threads {cv2.getNumThreads()} and OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')} in every section (importing Ultralytics sets "
        f"both; it is {'imported' if have_ul else 'NOT installed: its contenders are missing'})"
    )
    from benchmarks.e2e import has_workers_knob

    knob = has_workers_knob()
    cpus = info.usable_cpus or 1

    # these two time kanjian against Ultralytics' own code: nothing to compare without it
    needs_ul = () if have_ul else ("preprocess", "nms")
    for name in needs_ul:
        if name not in skip:
            log(
                f"== {name}: skipped, it compares with Ultralytics (pip install 'kanjian[training]')"
            )
    skip = [*skip, *needs_ul]

    def section(name: str, fn: Callable[[], None]) -> None:
        if name in skip:
            return
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # one broken section must not lose the others
            res.errors[name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
        res.seconds[name] = time.perf_counter() - t0

    def preprocess() -> None:
        from benchmarks.preprocess import run as run_pre

        res.preprocess = run_pre(
            sizes=params.preprocess_sizes,
            dst_hw=imgsz,
            repeats=params.preprocess_repeats,
            compile_times=params.compile_times,
        )
        log(res.preprocess.markdown())

    def quality() -> None:
        from benchmarks.quality import run as run_quality

        res.quality = run_quality(params.preprocess_sizes, imgsz, params.preprocess_repeats)
        log(res.quality.markdown())

    def inference() -> None:
        from benchmarks.infer import default_settings, run_inference
        from kanjian.inference.session import cuda_device_present

        gpu = cuda_device_present()
        settings = default_settings(cpus, info.ort_available_providers, knob, gpu)
        listed = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        if not gpu and listed & set(info.ort_available_providers):
            res.notes.append(
                "onnxruntime lists CUDA/TensorRT but no NVIDIA device is present: not measured"
            )
        res.inference = run_inference(
            onnx, settings, params.infer_frames, params.infer_rounds, trt_cache=_trt_cache()
        )
        for r in res.inference:
            fps = f"{r.fps.median:.2f} FPS" if r.fps else r.error
            log(f"  {r.label} on {r.active_provider}: {fps}")

    def nms() -> None:
        from benchmarks.nms import run_nms

        res.nms = run_nms(params.nms_candidates, repeats=params.nms_repeats, dst_hw=imgsz)
        for r in res.nms:
            log(f"  {r.candidates} candidates, {r.method}: {r.ms.median:.3f} ms, kept {r.kept}")

    e2e_state: dict[str, Any] = {}

    def e2e() -> None:
        from benchmarks.e2e import E2EResult, StationSetting, run_e2e

        settings = [StationSetting(1, cpus)]
        if knob and cpus > 1:
            settings.append(StationSetting(2, max(1, cpus // 2)))
        video = assets.make_video(params.e2e_warm + params.e2e_frames + 2, params.video_wh)
        e2e_state["video"] = video
        contenders, ratios = run_e2e(
            onnx, video, settings, params.e2e_rounds, params.e2e_frames, params.e2e_warm,
            imgsz=max(imgsz), ultralytics=have_ul, log=log,
        )  # fmt: skip
        notes = ["the station does not batch: one frame per ONNX Runtime call"]
        if model is None:
            notes.append(
                "random-weight model: almost no detections, so NMS and logging carry little load"
            )
        if not knob:
            notes.append("this checkout has no runtime.inference_workers: 1 worker only")
        notes += cpu_notes(contenders)
        res.e2e = E2EResult(
            video=str(video), resolution_wh=params.video_wh, rounds=params.e2e_rounds,
            frames_per_round=params.e2e_frames, warm_frames=params.e2e_warm,
            contenders=tuple(contenders), ratios=tuple(ratios), triggered=(), notes=tuple(notes),
        )  # fmt: skip

    def trigger() -> None:
        from benchmarks.e2e import E2EResult, StationSetting, run_triggered

        video = e2e_state.get("video") or assets.make_video(
            params.e2e_warm + params.e2e_frames + 2, params.video_wh
        )
        # all cores for the model (lowest median), and one core left to the frame pump
        # and the sinks (ORT's threads then never wait for a core: a tighter tail)
        settings = [StationSetting(1, cpus)] + ([StationSetting(1, cpus - 1)] if cpus > 1 else [])
        done = []
        for setting in settings:
            t = run_triggered(onnx, video, setting, params.triggers, gap_s=params.trigger_gap_s)
            log(f"  trigger to verdict ({setting.label}) p50 {t.latency_ms.median:.1f} ms, "
                f"p99 {t.latency_ms.p99:.1f} ms")  # fmt: skip
            done.append(t)
        if res.e2e is None:
            res.e2e = E2EResult(str(video), params.video_wh, 0, 0, 0, (), (), ())
        res.e2e = replace(res.e2e, triggered=tuple(done))

    def store() -> None:
        from benchmarks.store import run_store

        res.store = run_store(params.store_inspections, params.store_rounds)
        for r in res.store:
            log(f"  {r.method}, {r.synchronous}: {r.durable_per_s.median:.0f} inspections/s")

    def anomaly() -> None:
        from benchmarks.anomaly import build_models, run_anomaly_latency

        models, notes = build_models(
            model_path, anomaly_model, params.anomaly_methods, params.anomaly_imgsz, log
        )
        threads = sorted({max(1, min(t, cpus)) for t in params.anomaly_threads})
        if threads != sorted(set(params.anomaly_threads)):
            notes.append(f"thread counts capped at the {cpus} usable CPUs: {threads}")
        res.anomaly = run_anomaly_latency(
            models, threads, params.anomaly_frames, params.anomaly_rounds,
            cpu=info.cpu, usable_cpus=cpus, notes=notes, log=log,
        )  # fmt: skip

    for name, fn in (
        ("preprocess", preprocess), ("quality", quality), ("inference", inference), ("nms", nms),
        ("e2e", e2e), ("trigger", trigger), ("store", store), ("anomaly", anomaly),
    ):  # fmt: skip
        section(name, fn)
    res.targets = _targets(res, skip)
    res.system = replace(info, loadavg_end=os.getloadavg())
    return res


def cpu_notes(contenders: Sequence[Any]) -> list[str]:
    """Where the station's extra CPU per frame goes, against the model alone at its setting.

    When the model alone keeps every core busy, the station can reach at most
    ``model CPU / station CPU`` of its FPS: the decoding, preprocessing and
    NMS it adds run on the same cores.
    """
    by = {c.name: c for c in contenders}
    decode = next((c for c in contenders if c.kind == "decode"), None)
    out = []
    for c in contenders:
        if c.kind != "station" or c.setting is None:
            continue
        m = by.get(f"model alone, {c.setting.label}")
        if m is None:
            continue
        st, mo = c.cpu_ms_per_frame.median, m.cpu_ms_per_frame.median
        parts = "; ".join(
            f"{k} {c.stages_ms[k].median:.1f} ms"
            for k in ("preprocess", "postprocess")
            if k in c.stages_ms
        )
        dec = f"; decoding alone {decode.cpu_ms_per_frame.median:.1f}" if decode else ""
        out.append(
            f"{c.name}: {st:.1f} CPU ms per frame against {mo:.1f} for the model alone "
            f"(+{st - mo:.1f}{dec}; {parts} wall); if CPU-bound, at most "
            f"{mo / st:.3f}x the model's FPS (measured {c.fps.median / m.fps.median:.3f}x)"
        )
    return out


def _trt_cache() -> Path:
    from benchmarks.common import CACHE

    path = CACHE / "tensorrt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _targets(res: SuiteResult, skip: Sequence[str]) -> list[Target]:
    out: list[Target] = []
    if "preprocess" not in skip:
        out += preprocess_targets(res.preprocess.timings if res.preprocess else [])
    out += [] if "quality" in skip else quality_targets(res.quality.timings if res.quality else [])
    if "e2e" not in skip:
        out += e2e_targets(res.e2e.contenders if res.e2e else [], res.e2e.ratios if res.e2e else [])
    if "trigger" not in skip:
        out += trigger_targets(res.e2e.triggered if res.e2e else [])
    if "store" not in skip:
        out += store_targets(res.store)
    return out


def _wh(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="kanjian's benchmark suite: preprocessing, inference, NMS, end to end, "
        "trigger latency, SQLite sink, anomaly models beside YOLO; targets with pass/fail; "
        "JSON, Markdown and PNG results.",
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats (under two minutes on 2 cores)"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                   help="results go to OUT/<host>-<date>/ (default: benchmarks/results)")  # fmt: skip
    p.add_argument("--name", default=None, help="folder name instead of <host>-<date>")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX file or bundle folder (default: YOLO11n 640, random weights, exported once)")  # fmt: skip
    p.add_argument(
        "--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}"
    )
    p.add_argument("--only", default="", help="comma-separated sections to run (the rest skipped)")
    p.add_argument("--anomaly-model", default=None,
                   help="trained anomaly bundle folder or its model.onnx, measured beside the "
                   "untrained exports (default: station/demo/magnetic-tile/model when the "
                   "checkout has it; 'none': no bundle)")  # fmt: skip
    p.add_argument("--anomaly-methods", default=None,
                   help="untrained anomaly graphs to export and measure, comma-separated "
                   "(default draem,draem-lite,patchknn; '' for none)")  # fmt: skip
    p.add_argument("--anomaly-threads", default=None,
                   help="ONNX Runtime intra-op thread counts, comma-separated (default 1,2)")  # fmt: skip
    p.add_argument(
        "--preprocess-sizes", default=None, help="WxH,WxH,... (default 640x480,1920x1080,2448x2048)"
    )
    p.add_argument(
        "--video-size", default=None, help="WxH of the end-to-end video (default 1920x1080)"
    )
    for name, kind in (
        ("preprocess-repeats", int), ("infer-frames", int), ("infer-rounds", int), ("nms-repeats", int),
        ("e2e-rounds", int), ("e2e-frames", int), ("e2e-warm", int), ("triggers", int),
        ("trigger-gap-s", float), ("store-inspections", int), ("store-rounds", int),
        ("anomaly-frames", int), ("anomaly-rounds", int),
    ):  # fmt: skip
        p.add_argument(f"--{name}", type=kind, default=None, help="override the preset")
    return p


def params_from(args: argparse.Namespace) -> Params:
    base = QUICK if args.quick else FULL
    over: dict[str, Any] = {}
    for key in (
        "preprocess_repeats", "infer_frames", "infer_rounds", "nms_repeats", "e2e_rounds",
        "e2e_frames", "e2e_warm", "triggers", "trigger_gap_s", "store_inspections", "store_rounds",
        "anomaly_frames", "anomaly_rounds",
    ):  # fmt: skip
        v = getattr(args, key)
        if v is not None:
            over[key] = v
    if args.preprocess_sizes:
        over["preprocess_sizes"] = tuple(_wh(s)[::-1] for s in args.preprocess_sizes.split(","))
    if args.video_size:
        over["video_wh"] = _wh(args.video_size)
    if args.anomaly_methods is not None:
        over["anomaly_methods"] = tuple(m for m in args.anomaly_methods.split(",") if m)
    if args.anomaly_threads:
        over["anomaly_threads"] = tuple(int(t) for t in args.anomaly_threads.split(","))
    return replace(base, **over)


def anomaly_model_from(text: str | None) -> Path | None:
    """``--anomaly-model``: a path, ``none``, or (unset) the demo bundle when present."""
    from benchmarks.anomaly_assets import DEMO_ANOMALY_MODEL

    if text is None:
        return DEMO_ANOMALY_MODEL if DEMO_ANOMALY_MODEL.is_file() else None
    if text.lower() == "none":
        return None
    path = Path(text)
    if not path.exists():
        raise SystemExit(f"anomaly model not found: {path} (a bundle folder or its model.onnx)")
    return path


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the suite; returns 0 when it ran (targets missed included), 1 if a section failed."""
    args = build_parser(prog).parse_args(argv)
    skip = [s for s in args.skip.split(",") if s]
    only = [s for s in args.only.split(",") if s]
    bad = [s for s in skip + only if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if only:
        skip += [s for s in SECTIONS if s not in only and s not in skip]
    if args.model is not None and not args.model.exists():
        raise SystemExit(f"model not found: {args.model}")
    params = params_from(args)
    from benchmarks.anomaly_export import METHODS

    unknown = [m for m in params.anomaly_methods if m not in METHODS]
    if unknown and "anomaly" not in skip:
        raise SystemExit(
            f"unknown anomaly method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )
    anomaly_model = anomaly_model_from(args.anomaly_model) if "anomaly" not in skip else None
    t0 = time.perf_counter()
    res = run_suite(
        params, "quick" if args.quick else "full", args.model, skip, anomaly_model=anomaly_model
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = args.out / (args.name or f"{socket.gethostname()}-{stamp}")
    from benchmarks.report import targets_table, write

    paths = write(res, folder)
    print("\n".join(["", "Targets:", *targets_table(res.targets)]))
    for t in res.targets:
        print(
            f"{verdict_text(t):>12}  {t.name}: {t.measured if t.measured is None else f'{t.measured:.3g}'} (goal {t.goal})"
        )
    print(
        f"\nwrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s"
    )
    if res.errors:
        print("sections that failed: " + ", ".join(res.errors))
        return 1
    return 0
