"""``kanjian train --task anomaly``: the anomaly branch of the train command.

Kept out of :mod:`.training` so that module stays about the YOLO tasks; the training
code (and torch, which only ``kanjian.training`` may import) loads inside the call, so
``kanjian --help`` stays light.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

#: --imgsz when the command line leaves it out
DEFAULT_IMGSZ = 256


@dataclass(frozen=True)
class AnomalyArgs:
    """The train command's options that the anomaly task reads."""

    data: Path
    method: str
    imgsz: int
    batch: int
    seed: int
    steps: int | None
    time_hours: float | None
    target_frr: float
    review_frr: float
    bank_size: int
    eval_every: int
    project: Path
    name: str
    version: str
    bundle: Path | None
    golden_images: int
    overwrite: bool
    threads: int | None
    init: Path | None = None


def run_anomaly_command(args: AnomalyArgs) -> None:
    """Train an anomaly model and write its bundle; exit 2 on bad input, 1 when a gate fails."""
    from kanjian.training.anomaly_methods import MethodOptions
    from kanjian.training.anomaly_train import AnomalyTrainConfig, run_anomaly_training

    if args.method.startswith("draem") and args.steps is None and args.time_hours is None:
        raise typer.BadParameter(
            "DRAEM trains until told to stop: give --steps N or --time-hours H",
            param_hint="--steps",
        )
    options = MethodOptions(
        steps=args.steps,
        time_budget_s=None if args.time_hours is None else args.time_hours * 3600,
        batch=args.batch,
        eval_every=args.eval_every,
        bank_size=args.bank_size,
        seed=args.seed,
        init=args.init,
    )
    config = AnomalyTrainConfig(
        data=args.data,
        method=args.method,
        imgsz=args.imgsz,
        options=options,
        target_frr=args.target_frr,
        review_frr=args.review_frr,
        run_dir=args.project / args.name,
        bundle_dir=args.bundle,
        name=args.name,
        version=args.version,
        command=shlex.join(["kanjian", *sys.argv[1:]]),
        golden_images=args.golden_images,
        overwrite=args.overwrite,
        threads=args.threads,
    )
    try:
        outcome = run_anomaly_training(config, log=lambda s: console.print(s, markup=False))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if outcome.bundle_dir is None:
        raise typer.Exit(1)
    out.print(str(outcome.bundle_dir))
