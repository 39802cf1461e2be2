"""The anomaly methods ``kanjian train --task anomaly --method`` offers, behind one call.

- ``draem``: DRAEM-S (:mod:`.anomaly_draem`), a reconstruction net and a
  discriminative U-Net trained from scratch on synthetic defects; width 1.0.
- ``draem-lite``: the same at width 0.75 (about 0.58 of the MACs).
- ``patchknn``: PatchCore-style nearest-neighbour scoring against a memory bank of
  good patches from an encoder with random weights (:mod:`.anomaly_patch`); nothing
  is trained, so it is fast, and it is the CI smoke path.

docs/anomaly.md compares them on the magnetic-tile validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kanjian.training.anomaly_images import LetterboxedSet

__all__ = ["METHODS", "MethodOptions", "Trained", "train_method"]

METHODS = ("draem", "draem-lite", "patchknn")


@dataclass(frozen=True)
class MethodOptions:
    """Settings a method reads (the others ignore them).

    Attributes:
        steps: DRAEM: optimiser steps (None: run until ``time_budget_s``).
        time_budget_s: DRAEM: wall-time budget for the training loop, checks included.
        batch, crop, lr, eval_every: DRAEM's batch of crops, crop side (px), peak
            learning rate, and calibration checks every so many steps.
        bank_size, candidates: PatchKNN's coreset size and the patches it is drawn from.
        seed: every random choice.
        init: DRAEM: an earlier run's ``model.pt`` to continue from (same method).
    """

    steps: int | None = None
    time_budget_s: float | None = None
    batch: int = 16
    crop: int = 128
    lr: float = 1e-3
    eval_every: int = 500
    bank_size: int = 4096
    candidates: int = 131_072
    seed: int = 0
    init: Path | None = None


@dataclass(frozen=True)
class Trained:
    """A trained model and what to record about it.

    Attributes:
        model: ``(1, 3, H, W)`` -> ``score (1,)``, ``anomaly_map (1, 1, H, W)``, eval mode.
        meta: method and sizes, for the ONNX metadata and the manifest.
        info: numbers of the run for the manifest's ``training`` (steps, best step ...).
        stride: the map's coarsest grid in input pixels.
    """

    model: nn.Module
    meta: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    stride: int = 8


def train_method(
    method: str,
    train: LetterboxedSet,
    calib: LetterboxedSet | None,
    options: MethodOptions,
    log: Callable[[str], None] = print,
) -> Trained:
    """Train ``method`` on the good ``train`` images; ``calib`` selects DRAEM's best state.

    Raises:
        ValueError: an unknown method (the message lists the known ones).
    """
    if options.init is not None and not method.startswith("draem"):
        raise ValueError(f"--model: {method} has no trained weights to continue from")
    if options.init is not None and not options.init.is_file():
        raise ValueError(f"--model {options.init}: no such file; give an earlier run's model.pt")
    if method == "patchknn":
        from kanjian.training.anomaly_patch import PatchKNNConfig, fit_patchknn

        cfg = PatchKNNConfig(
            bank_size=options.bank_size, candidates=options.candidates, seed=options.seed
        )
        model = fit_patchknn(cfg, train.images, log=log)
        meta = {
            "method": "patchknn",
            "encoder": "random",
            "widths": list(cfg.widths),
            "dim": cfg.dim,
            "bank_size": cfg.bank_size,
        }
        return Trained(model=model, meta=meta, info=dict(meta), stride=8)
    if method in ("draem", "draem-lite"):
        from kanjian.training.anomaly_draem import LITE_WIDTH
        from kanjian.training.anomaly_draem_fit import train_draem

        width = 1.0 if method == "draem" else LITE_WIDTH
        init = None
        if options.init is not None:
            import torch

            init = torch.load(options.init, map_location="cpu", weights_only=True)
        result = train_draem(
            train,
            calib=calib,
            steps=options.steps,
            time_budget_s=options.time_budget_s,
            batch=options.batch,
            crop=min(options.crop, train.images.shape[1], train.images.shape[2]),
            width=width,
            lr=options.lr,
            seed=options.seed,
            eval_every=options.eval_every,
            init=init,
            log=log,
        )
        meta = {"method": method, "width": width}
        info = {
            **meta,
            "steps": result.steps,
            "best_step": result.best_step,
            "best_calib_auroc": result.best_auroc,
            "batch": options.batch,
            "crop": min(options.crop, train.images.shape[1], train.images.shape[2]),
            "lr": options.lr,
            "init": None if options.init is None else options.init.name,
        }
        return Trained(model=result.model, meta=meta, info=info, stride=2)
    raise ValueError(f"unknown anomaly method {method!r}; choose one of: {', '.join(METHODS)}")
