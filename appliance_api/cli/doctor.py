"""``kanjian doctor``: what is installed and usable here, and what a station config
still lacks to run.

The checks live with what they check (:mod:`kanjian.station.doctor_system`,
:mod:`kanjian.station.doctor`, :mod:`kanjian.appliance_api.http.font_check`); this
module loads the config, runs them in order and prints a table or JSON. Exit status:
1 when a row is ``fail`` (the configured station cannot run as configured), 0
otherwise (warnings do not fail); 2 for a usage error (an unknown demo, both a config
and a demo).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kanjian.appliance_api.cli.common import DemoOpt, load_station_config

console = Console(stderr=True)
out = Console()

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "", "not checked": "dim"}


def _load(config: Path | None, data_dir: Path | None, demo: str | None) -> tuple[Any, list[Any]]:
    """The config (``None`` when it does not validate) and the rows saying what is wrong
    with it: every invalid key, every file it names that is not there."""
    from kanjian.appliance_api.cli.config_check import missing_files
    from kanjian.station.config import ConfigError, load_config
    from kanjian.station.doctor_types import Check

    if config is None:  # an embedded demo (an unknown one is a usage error: exit 2)
        cfg = load_station_config(None, data_dir, demo)
        return cfg, [Check("station", "config", "ok", f"embedded demo {demo or 'neu-det'}")]
    if demo is not None:
        load_station_config(config, data_dir, demo)  # says "not both" and exits 2
    try:
        cfg = load_config(config)
    except ConfigError as e:
        rows = [
            Check(
                "station",
                "config",
                "fail",
                f"{config}: "
                + (f"line {i.line}: " if i.line else "")
                + f"{i.location}: {i.message}",
                "kanjian config validate names the nearest valid key",
            )
            for i in e.issues
        ]
        return None, rows
    if data_dir is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"data_dir": data_dir})})
    rows = [Check("station", "config", "ok", f"{config} valid")]
    for issue in missing_files(cfg, config.read_text(encoding="utf-8")):
        where = f" (line {issue.line})" if issue.line else ""
        rows.append(Check("station", issue.location, "fail", f"{issue.message}{where}"))
    return cfg, rows


def _model_onnx(cfg: Any) -> Path | None:
    p = Path(cfg.model.path)
    onnx = p / "model.onnx" if p.is_dir() else p
    return onnx if onnx.is_file() else None


def _provider_name(name: str) -> str:
    """ONNX Runtime's name for a configured provider (``cuda`` -> ``CUDAExecutionProvider``);
    as given where ONNX Runtime is missing (the doctor still describes the machine)."""
    try:
        from kanjian.inference.session import PROVIDER_ALIASES
    except ModuleNotFoundError:
        return name
    return PROVIDER_ALIASES.get(name.lower(), name)


def run_checks(cfg: Any, config_rows: list[Any]) -> list[Any]:
    """Every row, in the order they are printed."""
    from kanjian.appliance_api.http.font_check import font_checks
    from kanjian.inference.providers import GPU_PROVIDERS
    from kanjian.station.doctor import station_checks
    from kanjian.station.doctor_system import (
        clock_checks,
        gpu_checks,
        onnxruntime_checks,
        python_checks,
    )

    rows = python_checks()
    if cfg is not None:
        first = _provider_name(cfg.model.providers[0])
        onnx = _model_onnx(cfg)
        console.print(f"trying each ONNX Runtime provider on {onnx or cfg.model.path} …")
        rows += onnxruntime_checks(onnx, cfg.model.providers, cfg.model.allow_fallback)
        rows += gpu_checks(first in GPU_PROVIDERS)
    else:
        rows += onnxruntime_checks(None, ["auto"], False)
        rows += gpu_checks(False)
    rows += font_checks()
    rows += clock_checks()
    rows += config_rows
    if cfg is not None:
        console.print("loading the model and replaying its golden set …")
        rows += station_checks(cfg)
    return rows


def doctor(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="station YAML; default: the embedded demo station"),
    ] = None,
    demo: DemoOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="override store.data_dir")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Say what is installed and usable here (Python and packages, ONNX Runtime's
    providers tried on the configured model, GPU and driver, Numba CUDA, TensorRT, the
    screen's font, the clock) and what the station config lacks to run (model and its
    golden check, rules, camera, data folder and free disk, ports, MQTT broker and
    object store: a TCP connect of 2 s).

    Exit status: 1 when the station cannot run as configured (a row says fail), else 0
    (warnings do not fail); 2 for a usage error.
    """
    cfg, config_rows = _load(config, data_dir, demo)
    rows = run_checks(cfg, config_rows)
    failed = [r for r in rows if r.status == "fail"]
    shown = str(config) if config else f"demo {demo or 'neu-det'}"
    if as_json:
        report = {"config": shown, "ok": not failed, "checks": [asdict(r) for r in rows]}
        typer.echo(json.dumps(report))  # plain: no wrapping, no colour
    else:
        table = Table("section", "check", "status", "detail", show_lines=False)
        for r in rows:
            style = _STYLE[r.status]
            status = f"[{style}]{r.status}[/]" if style else r.status
            detail = escape(r.detail) + (f" [dim]→ {escape(r.fix)}[/]" if r.fix else "")
            table.add_row(r.section, r.name, status, detail)
        out.print(table)
        if failed:
            out.print(
                f"[bold red]{escape(shown)}: cannot run as configured[/] ({len(failed)} failed: "
                + ", ".join(f"{r.section}/{r.name}" for r in failed)
                + ")",
                highlight=False,
                soft_wrap=True,
            )
        else:
            warns = sum(r.status == "warn" for r in rows)
            out.print(
                f"[green]{escape(shown)}: can run as configured[/] ({warns} warnings)",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the ``kanjian`` CLI."""
    app.command("doctor")(doctor)
