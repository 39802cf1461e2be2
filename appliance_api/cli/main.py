"""The ``kanjian`` command line.

Runtime commands (run, inspect, config) import only the runtime. Training
commands (dataset, train, model) live in ``kanjian.appliance_api.cli.training``, which
imports Ultralytics and torch only inside the commands that need them.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kanjian.appliance_api.cli.common import DemoOpt, load_station_config, start_refusals
from kanjian.appliance_api.cli.logs import setup_logging

app = typer.Typer(
    name="kanjian",
    help="kanjian (看见): visual quality inspection at the line.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Check and show station configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="station YAML; default: the embedded demo station"),
]


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose, console, (out,))  # plain lines when stderr is the journal


@app.command()
def run(
    config: ConfigOpt = None,
    demo: DemoOpt = None,
    frames: Annotated[
        int | None, typer.Option("--frames", "-n", min=1, help="stop after N inspections")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="override store.data_dir (database and images)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the inspection loop: camera → model → verdict → SQLite, until stopped.

    Exit status: 0 when every judged inspection was committed; 1 when some were
    not (the last line says ``STORE NOT FLUSHED: N ...`` and why, e.g. a full
    disk); 2 when the station could not start.
    """
    _setup_logging(verbose)
    from kanjian.station.notify import ServiceNotify
    from kanjian.station.pipeline import build_station
    from kanjian.station.plc import service as _plc  # noqa: F401  registers the "plc" channel
    from kanjian.station.shadow import service as _shadow  # noqa: F401  registers "shadow"
    from kanjian.station.sync import service as _sync  # noqa: F401  registers "sync"

    cfg = load_station_config(config, data_dir, demo)
    t_start = time.perf_counter()
    try:
        station = build_station(cfg)
    except start_refusals() as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line
        raise typer.Exit(2) from e
    service = ServiceNotify(station.stats)  # systemd: READY, WATCHDOG, STOPPING
    info = station.inspector.model.info
    sess = station.inspector.model.session_info
    console.print(
        f"model [bold]{info.name}[/] v{info.version} ({info.task}, {len(info.class_names)} classes)"
        f" on [bold]{sess.provider}[/]"
        + (
            f" [red](FALLBACK from {sess.requested[0]}: model.allow_fallback is on)[/]"
            if sess.fell_back
            else ""
        )
    )
    console.print(f"store {station.store.db_path}")
    console.print(
        "start-up ms: " + ", ".join(f"{k} {v:.0f}" for k, v in station.startup_ms.items())
    )

    def _stop(signum: int, _frame: Any) -> None:
        console.print(f"signal {signum}: finishing the frame in flight and flushing the store")
        station.stop()
        service.stopping()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    first: list[float] = []

    def _each(insp: Any) -> None:
        if not first:
            first.append((time.perf_counter() - t_start) * 1e3)
            console.print(f"first inspection {first[0]:.0f} ms after start")
        if verbose or station.stats.frames % 50 == 1:
            console.print(
                f"#{station.stats.frames} {insp.frame.uri or insp.frame.frame_id}: "
                f"[bold]{insp.verdict.value}[/] {insp.reason}"
            )

    try:
        service.ready()
        stats = station.run(max_frames=frames, on_inspection=_each)
    finally:
        service.stopping()
        stored = station.close()
    p50 = stats.percentiles(50)
    summary = (
        f"{stats.frames} inspections ({stats.fps:.1f}/s), {dict(stats.verdicts)}; median ms: "
        + ", ".join(f"{k} {v:.2f}" for k, v in p50.items())
    )
    if not stored.ok:  # judged but not committed (a full disk): never a normal ending
        console.print(summary)
        console.print(stored.line(), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(summary)


@app.command()
def inspect(
    images: Annotated[list[Path], typer.Argument(help="image files to judge")],
    config: ConfigOpt = None,
    demo: DemoOpt = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="bundle dir or .onnx (overrides config)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Judge image files once and print verdicts and detections (nothing is logged); with
    the config's quality gate on, a frame it rejects says why instead."""
    _setup_logging(False)
    from kanjian.camera.frame import Frame
    from kanjian.camera.imagefile import ImageFileError, decode_image_file
    from kanjian.inference.bundle import BundleError
    from kanjian.inference.model import load_model
    from kanjian.inference.session import ModelLoadError
    from kanjian.inference.types import Verdict
    from kanjian.station.inspector import Inspector
    from kanjian.station.quality import QualityError, gate_from_config

    cfg = load_station_config(config, demo=demo)
    try:
        mc = cfg.model
        m = load_model(model or mc.path, mc.providers, mc.intra_op_threads, mc.allow_fallback)
        gate = gate_from_config(cfg.quality)  # station.yaml's (an API override is the station's)
    except (ModelLoadError, BundleError, QualityError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    inspector = Inspector(
        m,
        cfg.rules,
        cfg.model.conf,
        cfg.model.iou,
        cfg.model.max_det,
        mm_per_px=cfg.camera.mm_per_px,
        quality=gate,
    )
    failed = 0
    from datetime import datetime, timezone

    from kanjian.camera.frame import FrameFailure

    for i, path in enumerate(images):
        now = datetime.now(timezone.utc)
        item: Frame | FrameFailure
        try:
            item = Frame(decode_image_file(path), i, "cli", now, uri=str(path))
        except ImageFileError as e:
            item = FrameFailure(i, "cli", now, reason=str(e), uri=str(path))
        insp = inspector.inspect(item)
        failed += insp.verdict in (Verdict.ERROR, Verdict.MISSED)
        d = insp.detections
        names = insp.class_names
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "image": str(path),
                        "inspection_id": str(insp.inspection_id),
                        "verdict": insp.verdict.value,
                        # anomaly models: the normalised image score (else null)
                        "score": None if insp.score is None else round(insp.score, 5),
                        "reason": insp.reason,
                        "detections": [
                            {
                                "class": names[int(c)],
                                "confidence": round(float(s), 5),
                                "xyxy": [round(float(v), 2) for v in b],
                            }
                            for b, s, c in zip(d.xyxy, d.confidence, d.class_id, strict=False)
                        ],
                        "probs": None if insp.probs is None else [float(p) for p in insp.probs],
                        "timings_ms": {k: round(v, 2) for k, v in insp.timings_ms.items()},
                        "quality": None if insp.quality is None else insp.quality.values(),
                    }
                ),
                indent=None,
            )
        else:
            score = "" if insp.score is None else f" (score {insp.score:.3f})"
            out.print(f"{path}: [bold]{insp.verdict.value}[/]{score} {insp.reason}")
            for b, s, c in zip(d.xyxy, d.confidence, d.class_id, strict=False):
                x1, y1, x2, y2 = (f"{v:.1f}" for v in b)
                out.print(f"  {names[int(c)]:<20} {s:.3f}  [{x1}, {y1}, {x2}, {y2}]")
    if failed:
        raise typer.Exit(1)


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="station YAML file")],
) -> None:
    """Check a config file: every key and value (a misspelt key gets the nearest one),
    and every file or folder it names (model, camera folder, TLS files...); print
    every problem with its key and line."""
    from kanjian.appliance_api.cli.config_check import missing_files
    from kanjian.station.config import ConfigError, load_config

    try:
        cfg = load_config(file)
        issues = missing_files(cfg, file.read_text(encoding="utf-8"))
        if issues:
            raise ConfigError(file, issues)
    except ConfigError as e:
        console.print(f"[red]invalid[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from e
    out.print(f"{file}: valid")


@config_app.command("show")
def config_show(
    file: Annotated[
        Path | None, typer.Argument(help="station YAML; default: the embedded demo station")
    ] = None,
    config: ConfigOpt = None,
    demo: DemoOpt = None,
) -> None:
    """Print the effective configuration (defaults filled in) as YAML."""
    import yaml

    if file is not None and config is not None and file != config:
        console.print("[red]error:[/] give the config file once (FILE or --config)")
        raise typer.Exit(2)
    cfg = load_station_config(file or config, demo=demo)
    out.print(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False), end="")


def _register_commands() -> None:
    # each module imports its heavy dependencies (torch, Ultralytics, uvicorn, paho...)
    # only inside its commands, so ``kanjian --help`` stays fast and runtime-only
    from kanjian.appliance_api.cli import (
        bench,
        doctor,
        platform,
        plc,
        serve,
        store,
        sync,
        training,
    )

    for module in (training, serve, sync, store, platform, plc, bench, doctor):
        module.register(app)


#: top-level module -> the extra that installs it (pyproject's optional-dependencies)
EXTRA_OF = {
    **dict.fromkeys(
        ("torch", "torchvision", "ultralytics", "onnx", "onnxslim", "pi_heif"), "training"
    ),
    **dict.fromkeys(("asyncua", "pymodbus", "cryptography"), "plc"),
    "gi": "gige",
}


def missing_extra_line(e: BaseException) -> str | None:
    """One line naming the extra to install, when ``e`` is a missing optional module
    (directly or as the cause of a RuntimeError that already names it); else None."""
    for err in (e, e.__cause__):
        if isinstance(err, ModuleNotFoundError):
            top = (err.name or "").split(".")[0]
            if top == "onnxruntime":  # not an extra of its own: one per target
                from kanjian.inference.ort_install import NO_ORT_MESSAGE

                return f"error: {NO_ORT_MESSAGE}"
            extra = EXTRA_OF.get(top)
            if extra is not None:
                return (
                    f"error: this command needs the '{extra}' extra (no module {top}): "
                    f"pip install 'kanjian[{extra}]'"
                )
    if isinstance(e, RuntimeError) and "pip install 'kanjian[" in str(e):
        return f"error: {e}"
    return None


def main() -> None:
    """Entry point of the ``kanjian`` script.

    A command that needs an extra the install lacks (``pip install -e .`` has none)
    ends with one line naming it and exit status 2, not a traceback.
    """
    _register_commands()
    try:
        app(prog_name="kanjian")
    except (ModuleNotFoundError, RuntimeError) as e:
        line = missing_extra_line(e)
        if line is None:
            raise
        console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
