"""PatchKNN: nearest-neighbour distance of patch features to a memory bank of good patches.

PatchCore's scoring (Roth et al. 2022) on an encoder kanjian can make without
downloads: a small convolutional encoder with random weights (its BatchNorm
statistics re-estimated on the good images), features from two levels averaged over
3x3 neighbourhoods, a fixed random projection to ``dim`` channels, and a greedy
k-centre coreset of the good images' patch features as the bank. The whole scoring
is one ONNX graph: distances as ``|q|^2 - 2 q.b + |b|^2`` (MatMul + ReduceMin; never
``torch.cdist``, which does not export), bilinear up to the input size, a fixed
Gaussian blur (sigma 4 px, as PatchCore smooths its map), and the image score as the
map's maximum.

Cost at 256x256 with the default widths: encoder ~0.54 GMAC, kNN against 4,096
patches ~0.40 GMAC (docs/anomaly.md has the measured latency).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

__all__ = ["PatchKNN", "PatchKNNConfig", "fit_patchknn", "greedy_coreset"]


@dataclass(frozen=True)
class PatchKNNConfig:
    """Sizes of a PatchKNN model.

    Attributes:
        widths: channels of the encoder's three levels (strides 2, 4, 8 on the input).
        dim: channels after the random projection (the bank's vector length).
        bank_size: patches kept by the coreset.
        candidates: patch features sampled (seeded) before the coreset is drawn; the
            greedy k-centre pass costs ``candidates x bank_size x dim`` MACs.
        blur_sigma: Gaussian smoothing of the map, in input pixels.
        seed: weights, projection and sampling.
    """

    widths: tuple[int, int, int] = (32, 64, 96)
    dim: int = 96
    bank_size: int = 4096
    candidates: int = 131_072
    blur_sigma: float = 4.0
    seed: int = 0


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def _gauss_taps(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ``ceil(4 sigma)``: ``(2r + 1,)`` float32."""
    r = max(1, math.ceil(4 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


class PatchKNN(nn.Module):
    """Encoder + bank: ``(N, 3, H, W)`` station input -> raw ``score (N,)``, ``map (N, 1, H, W)``.

    The map's unit is a Euclidean distance in the projected feature space (>= 0).
    """

    # buffers, declared so the type checker knows them as tensors
    proj: torch.Tensor
    bank: torch.Tensor
    bank_sq: torch.Tensor
    taps: torch.Tensor

    def __init__(self, config: PatchKNNConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        gen = torch.Generator().manual_seed(config.seed)
        self.l1 = nn.Sequential(*_block(4, w1))  # after pixel_unshuffle(2): 4 planes
        self.l2 = nn.Sequential(nn.MaxPool2d(2), *_block(w1, w2))
        self.l3 = nn.Sequential(nn.MaxPool2d(2), *_block(w2, w3))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * 9
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                    assert m.bias is not None
                    m.bias.zero_()
        proj = torch.randn(config.dim, w2 + w3, 1, 1, generator=gen) / config.dim**0.5
        self.register_buffer("proj", proj)
        self.register_buffer("bank", torch.zeros(config.bank_size, config.dim))
        self.register_buffer("bank_sq", torch.zeros(config.bank_size))
        self.register_buffer("taps", _gauss_taps(config.blur_sigma))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> projected patch features ``(N, dim, H/8, W/8)``."""
        g = x.mean(dim=1, keepdim=True)  # the grey plane: the kernel's 3 planes are equal
        a = self.l1(F.pixel_unshuffle(g, 2))
        b = self.l2(a)
        c = self.l3(b)
        f2 = F.avg_pool2d(F.avg_pool2d(b, 3, 1, 1), 2)  # stride 4 -> 8, 3x3 neighbourhood
        f3 = F.avg_pool2d(c, 3, 1, 1)
        return F.conv2d(torch.cat([f2, f3], dim=1), self.proj)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image scores ``(N,)`` and maps ``(N, 1, H, W)`` float32."""
        n, _, h, w = x.shape
        f = self.features(x)
        fh, fw = f.shape[2], f.shape[3]
        q = f.flatten(2).transpose(1, 2)  # (N, P, dim)
        d2 = (q * q).sum(dim=-1, keepdim=True) - 2 * torch.matmul(q, self.bank.t()) + self.bank_sq
        dist = torch.sqrt(torch.clamp(d2.min(dim=-1).values, min=0.0))
        m = dist.reshape(n, 1, fh, fw)
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        taps = self.taps
        r = (taps.numel() - 1) // 2
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), taps.view(1, 1, -1, 1))
        return m.amax(dim=(1, 2, 3)), m


def greedy_coreset(x: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of a greedy k-centre coreset of the rows of ``x`` ``(n, d)``: ``(size,)`` int64.

    Each step adds the row farthest from those chosen (PatchCore's coreset), starting
    at a seeded random row; ``size >= n`` keeps every row.
    """
    n = x.shape[0]
    if size >= n:
        return torch.arange(n)
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = torch.empty(size, dtype=torch.int64)
    chosen[0] = start
    best = ((x - x[start]) ** 2).sum(dim=1)
    for i in range(1, size):
        j = int(torch.argmax(best))
        chosen[i] = j
        best = torch.minimum(best, ((x - x[j]) ** 2).sum(dim=1))
    return chosen


def _batches(images: NDArray[np.float32], batch: int) -> list[torch.Tensor]:
    """``(N, H, W)`` grey -> station-shaped ``(b, 3, H, W)`` tensors."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return [t[i : i + batch, None].expand(-1, 3, -1, -1) for i in range(0, len(t), batch)]


def fit_patchknn(
    config: PatchKNNConfig,
    train: NDArray[np.float32],
    *,
    batch: int = 16,
    log: Callable[[str], None] = print,
) -> PatchKNN:
    """Build a PatchKNN model on good ``train`` images ``(N, H, W)`` float32 in ``[0, 1]``.

    1. BatchNorm statistics from the train images (the weights stay random).
    2. Projected features of every train patch, padding patches included (padding is
       normal: it must not score high on the line).
    3. A seeded sample of ``config.candidates`` of them, then the greedy coreset.
    """
    model = PatchKNN(config)
    t0 = time.perf_counter()
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    with torch.no_grad():
        for xb in _batches(train, batch):
            model.features(xb)
    model.eval()
    with torch.no_grad():
        feats = torch.cat(
            [
                model.features(xb).flatten(2).transpose(1, 2).reshape(-1, config.dim)
                for xb in _batches(train, batch)
            ]
        )
    log(f"patch features: {feats.shape[0]:,} x {config.dim} in {time.perf_counter() - t0:.0f} s")
    gen = torch.Generator().manual_seed(config.seed)
    if feats.shape[0] > config.candidates:
        feats = feats[torch.randperm(feats.shape[0], generator=gen)[: config.candidates]]
    t1 = time.perf_counter()
    pick = greedy_coreset(feats, config.bank_size, seed=config.seed)
    bank = feats[pick]
    if bank.shape[0] < config.bank_size:  # fewer patches than the bank holds: repeat rows
        bank = bank[torch.arange(config.bank_size) % bank.shape[0]]
    with torch.no_grad():
        model.bank.copy_(bank)
        model.bank_sq.copy_((bank * bank).sum(dim=1))
    log(
        f"coreset: {config.bank_size:,} of {feats.shape[0]:,} patches in {time.perf_counter() - t1:.0f} s"
    )
    return model
