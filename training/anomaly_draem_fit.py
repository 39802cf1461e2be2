"""Train DRAEM-S (:mod:`.anomaly_draem`) on good images with synthetic defects.

Recipe (anomaly design note §4.6): random crops of the letterboxed images (placed to
hold as much part as they can, flipped but never turned), exposure jitter (gain
x[0.6, 1.6], gamma [0.8, 1.25]) on the part, then synthetic defects
(:mod:`.anomaly_synth`) on half of each batch. AdamW with a linear warm-up and cosine
decay. Every ``eval_every`` steps the full-size model scores the calibration split in
eval mode, and the state with the best image AUROC is kept: model selection sees calib
only, never the validation split.

Deterministic for a seed when stopped by ``steps`` (a ``time_budget_s`` stops where the
clock says, and its cosine follows the clock). ``torch.set_num_threads`` is the caller's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kanjian.training.anomaly_draem import DraemS, check_side, draem_loss, score_images
from kanjian.training.anomaly_images import LetterboxedSet
from kanjian.training.anomaly_metrics import auroc
from kanjian.training.anomaly_synth import SyntheticDefects, augment_normal, sample_crops

__all__ = ["DraemResult", "EvalPoint", "train_draem"]


@dataclass(frozen=True)
class EvalPoint:
    """One calibration check: after ``step`` steps, mean training loss since the last one."""

    step: int
    loss: float
    auroc: float
    elapsed_s: float


@dataclass(frozen=True)
class DraemResult:
    """What :func:`train_draem` hands back.

    Attributes:
        model: in eval mode, holding the best-on-calib state (the last state without calib).
        steps: steps run.
        best_step: the step whose state ``model`` holds.
        best_auroc: calib image AUROC of that state (None without calib).
        history: every calibration check, in order.
        losses: ``(steps,)`` float32 training loss per step.
        elapsed_s: wall time of the whole run, checks included.
    """

    model: DraemS
    steps: int
    best_step: int
    best_auroc: float | None
    history: tuple[EvalPoint, ...]
    losses: np.ndarray
    elapsed_s: float


def _lr_at(step: int, progress: float, lr: float, lr_min: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr_min`` by ``progress``."""
    cos = lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cos * min(1.0, (step + 1) / warmup) if warmup > 0 else cos


def _fmt_s(s: float) -> str:
    s = max(0, round(s))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def train_draem(
    train: LetterboxedSet,
    *,
    calib: LetterboxedSet | None = None,
    steps: int | None = None,
    time_budget_s: float | None = None,
    batch: int = 16,
    crop: int = 128,
    width: float = 1.0,
    lr: float = 1e-3,
    lr_min: float = 1e-5,
    weight_decay: float = 1e-4,
    warmup: int = 200,
    seed: int = 0,
    eval_every: int = 500,
    log_every: int = 50,
    thin: bool = False,
    bank_size: int = 512,
    eval_batch: int = 8,
    init: dict[str, torch.Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> DraemResult:
    """Train DRAEM-S from scratch on ``train``'s good images.

    Args:
        train: the train split (its defective images, if any, are left out).
        calib: scored every ``eval_every`` steps and at the end (needs good and defective
            images); the best state by image AUROC is kept. None: keep the last state.
        steps: stop after this many steps; time_budget_s: stop once this much wall time
            has passed. At least one; with both, whichever comes first.
        batch: crops per step, half of them with a synthetic defect.
        crop: side of the square training crops (a multiple of 16, ≤ the image size).
        width: network width multiplier (:data:`~.anomaly_draem.LITE_WIDTH` for lite).
        lr, lr_min, weight_decay, warmup: AdamW; linear warm-up over ``warmup`` steps
            (at most a tenth of ``steps``), cosine to ``lr_min``.
        seed: seeds the weights, the Perlin bank, the crops and the defects.
        eval_every: steps between calibration checks (0: only at the end).
        log_every: steps between progress lines (0: none).
        thin: also draw thin polyline defects (:class:`~.anomaly_synth.SyntheticDefects`).
        bank_size: Perlin fields drawn up front.
        eval_batch: images per forward when scoring calib.
        init: a state dict of the same width to start from (continue an earlier run's
            ``model.pt``) instead of random weights.
        log: receives the progress lines.

    Raises:
        ValueError: no stop given, no good train image, a bad crop size, or a calib
            split without both classes.
    """
    if steps is None and time_budget_s is None:
        raise ValueError("train_draem: give steps or time_budget_s (or both)")
    if steps is not None and steps < 1:
        raise ValueError(f"train_draem: steps={steps}; give at least 1")
    check_side(crop, crop)
    good = np.flatnonzero(~train.defective)
    if good.size == 0:
        raise ValueError("train_draem: the train split holds no good image")
    if calib is not None and (calib.defective.all() or not calib.defective.any()):
        raise ValueError(
            "train_draem: the calibration split needs good and defective images to score "
            "AUROC; pass calib=None to keep the last state instead"
        )
    if calib is not None:
        check_side(*calib.images.shape[1:])
    if steps is not None:
        warmup = min(warmup, max(1, steps // 10))

    t0 = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DraemS(width)
    if init is not None:
        try:
            model.load_state_dict(init)
        except RuntimeError as e:  # another width or method: say so, not a tensor dump
            raise ValueError(
                f"train_draem: the starting weights do not fit DRAEM-S width {width}; start "
                "from a model.pt of the same --method"
            ) from e
    gen = SyntheticDefects(
        train.images[good], train.valid[good], seed, bank_size=bank_size, thin=thin
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    log(
        f"DRAEM-S width {width}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{good.size} good train images, batch {batch} x {crop}², "
        f"stop at {steps or '-'} steps / {time_budget_s or '-'} s"
    )

    losses: list[float] = []
    history: list[EvalPoint] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    since_eval: list[float] = []
    t_train = time.monotonic()  # after set-up, for rate and ETA
    step = 0

    def check() -> None:
        nonlocal best
        assert calib is not None
        model.eval()
        scores, _ = score_images(model, calib.images, batch=eval_batch)
        model.train()
        a = auroc(scores, calib.defective)
        point = EvalPoint(
            step, float(np.mean(since_eval)) if since_eval else math.nan, a, time.monotonic() - t0
        )
        history.append(point)
        since_eval.clear()
        if best is None or a > best[0]:
            best = (a, step, copy.deepcopy(model.state_dict()))
        log(f"calib step {step}: image AUROC {a:.4f} (best {best[0]:.4f} at step {best[1]})")

    def progress() -> float:
        p = 0.0 if steps is None else step / steps
        if time_budget_s is not None:
            p = max(p, (time.monotonic() - t_train) / time_budget_s)
        return p

    model.train()
    while progress() < 1.0:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, progress(), lr, lr_min, warmup)
        idx = rng.choice(good, batch)
        crops, valid = sample_crops(train.images, train.valid, idx, crop, rng)
        clean = augment_normal(crops, valid, rng)
        aug, masks = gen.make_batch(clean, valid, rng)
        rec, amap = model.grey_forward(torch.from_numpy(aug)[:, None])
        loss, parts = draem_loss(
            rec, torch.from_numpy(clean)[:, None], amap, torch.from_numpy(masks)[:, None]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        step += 1
        losses.append(loss.item())
        since_eval.append(losses[-1])
        if log_every and step % log_every == 0:
            el = time.monotonic() - t_train
            p = progress()
            eta = el / p * (1 - p) if p > 0 else math.nan
            log(
                f"step {step}: loss {np.mean(losses[-log_every:]):.4f} (l2 {parts['l2']:.4f} "
                f"ssim {parts['ssim']:.4f} focal {parts['focal']:.4f}) lr {opt.param_groups[0]['lr']:.2e} "
                f"{step / el:.2f} steps/s elapsed {_fmt_s(el)} ETA {_fmt_s(eta)}"
            )
        if calib is not None and eval_every and step % eval_every == 0:
            check()
    if calib is not None and (not history or history[-1].step != step):
        check()

    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return DraemResult(
        model=model,
        steps=step,
        best_step=best[1] if best is not None else step,
        best_auroc=best[0] if best is not None else None,
        history=tuple(history),
        losses=np.asarray(losses, np.float32),
        elapsed_s=time.monotonic() - t0,
    )
