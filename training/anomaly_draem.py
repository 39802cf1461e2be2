"""DRAEM-S: a small DRAEM (reconstruct, then discriminate), trained from scratch.

Anomaly design note §4. Two networks on the grey plane:

- R, reconstruction, **no skip connections** (a skip would copy the defect through):
  PixelUnshuffle(2), encoder of two Conv3x3+BN+ReLU per level at widths 16/32/64/64
  with MaxPool between levels, a mirrored decoder (bilinear x2, two convs a level),
  Conv3x3 to 4 channels, PixelShuffle(2): one grey plane.
- D, discriminative U-Net **with skips**: concat(x, R(x)) → PixelUnshuffle(2) → widths
  16/32/48/64 → 1x1 conv to one logit at half resolution → sigmoid → bilinear x2.
- Image score in the graph: DRAEM's ``max(avg_pool2d(map, 21, stride=1, padding=10))``
  (zero padding counted), so any image over the image threshold has a map pixel over it.

Widths scale with ``width`` (``LITE_WIDTH`` = 0.75: 0.58 instead of 1.01 GMAC at 256²).
Inputs must be multiples of 16 on each side (PixelUnshuffle, then three MaxPools).

:class:`DraemS` is also the exported graph: ``forward`` takes the station's input
``(1, 3, H, W)`` float32 (letterbox kernel output, three equal planes for a grey
camera) and returns ``(score (1,), anomaly_map (1, 1, H, W))`` raw, the contract of
docs/extending.md "Anomaly models". Training lives in :mod:`.anomaly_draem_fit`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

__all__ = [
    "LITE_WIDTH",
    "DraemS",
    "draem_loss",
    "export_draem_onnx",
    "focal_loss",
    "score_images",
    "ssim",
]

LITE_WIDTH = 0.75
#: input sides must be multiples of this (PixelUnshuffle(2) and three MaxPool(2))
SIDE_MULTIPLE = 16
#: DRAEM's image score: mean over a 21x21 window (stride 1, zero padding 10), then max
SCORE_POOL = 21


def _scaled(widths: tuple[int, ...], width: float) -> tuple[int, ...]:
    return tuple(max(2, round(w * width)) for w in widths)


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two Conv3x3 + BatchNorm + ReLU (BN folds into the convs on ONNX export)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ReconNet(nn.Module):
    """R: grey ``(B, 1, H, W)`` → reconstruction ``(B, 1, H, W)`` (raw, about [0, 1])."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        w = _scaled((16, 32, 64, 64), width)
        self.widths = w
        self.unshuffle = nn.PixelUnshuffle(2)
        self.enc = nn.ModuleList(
            [_block(4, w[0]), _block(w[0], w[1]), _block(w[1], w[2]), _block(w[2], w[3])]
        )
        self.dec = nn.ModuleList([_block(w[3], w[2]), _block(w[2], w[1]), _block(w[1], w[0])])
        self.out = nn.Conv2d(w[0], 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.unshuffle(x)
        for i, block in enumerate(self.enc):
            x = block(F.max_pool2d(x, 2) if i else x)
        for block in self.dec:
            x = block(_up(x))
        out: Tensor = self.shuffle(self.out(x))
        return out


class DiscNet(nn.Module):
    """D: ``(B, 2, H, W)`` (image, reconstruction) → logits ``(B, 1, H/2, W/2)``."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        w = _scaled((16, 32, 48, 64), width)
        self.widths = w
        self.unshuffle = nn.PixelUnshuffle(2)
        self.enc = nn.ModuleList(
            [_block(8, w[0]), _block(w[0], w[1]), _block(w[1], w[2]), _block(w[2], w[3])]
        )
        self.dec = nn.ModuleList(
            [_block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])]
        )
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.unshuffle(x)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = block(torch.cat((_up(x), skip), dim=1))
        logits: Tensor = self.head(x)
        return logits


class DraemS(nn.Module):
    """R and D together; ``forward`` is the exported ONNX graph.

    Args:
        width: multiplier on every layer's width (1.0: 1.01 GMAC at 256²;
            :data:`LITE_WIDTH`: 0.58 GMAC).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = width
        self.recon = ReconNet(width)
        self.disc = DiscNet(width)

    def grey_forward(self, grey: Tensor) -> tuple[Tensor, Tensor]:
        """``grey (B, 1, H, W)`` → ``(reconstruction (B, 1, H, W), anomaly_map (B, 1, H, W))``.

        The map is a probability in ``[0, 1]``: sigmoid at half resolution, then bilinear x2.
        """
        rec = self.recon(grey)
        logits = self.disc(torch.cat((grey, rec), dim=1))
        return rec, _up(torch.sigmoid(logits))

    @staticmethod
    def image_score(anomaly_map: Tensor) -> Tensor:
        """``(B, 1, H, W)`` map → ``(B,)``: max of the 21x21 mean (DRAEM's image score)."""
        pooled = F.avg_pool2d(anomaly_map, SCORE_POOL, stride=1, padding=SCORE_POOL // 2)
        return torch.amax(pooled, dim=(1, 2, 3))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Station input ``(B, 3, H, W)`` float32 in [0, 1] → ``(score (B,), anomaly_map (B, 1, H, W))``."""
        grey = images.mean(dim=1, keepdim=True)
        _, amap = self.grey_forward(grey)
        return self.image_score(amap), amap


def check_side(h: int, w: int) -> None:
    """Raise ValueError unless both sides are multiples of :data:`SIDE_MULTIPLE`."""
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
        raise ValueError(
            f"DRAEM-S needs sides that are multiples of {SIDE_MULTIPLE}, got {h}x{w}; "
            f"choose an image size / crop such as 128, 256 or 320"
        )


# --- losses ---


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


_WINDOW = _gaussian_window()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two ``(B, 1, H, W)`` images in [0, 1] (fixed 11x11 Gaussian, σ 1.5).

    A fixed-size window as a plain conv: kornia's blur is not installed here and does
    not export to ONNX (design note §4.5). Zero padding at the borders, as DRAEM's.
    """
    win = _WINDOW.to(a.dtype)
    pad = win.shape[-1] // 2

    def f(t: Tensor) -> Tensor:
        return F.conv2d(t, win, padding=pad)

    mu_a, mu_b = f(a), f(b)
    var_a = f(a * a) - mu_a**2
    var_b = f(b * b) - mu_b**2
    cov = f(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean()


def focal_loss(prob: Tensor, target: Tensor, gamma: float = 2.0, eps: float = 1e-6) -> Tensor:
    """Binary focal loss, mean over pixels; ``target`` may be soft (in [0, 1]).

    ``-[y (1 - p)^γ log p + (1 - y) p^γ log(1 - p)]``: DRAEM's two-class focal loss
    (no α) written for one sigmoid output.
    """
    p = prob.clamp(eps, 1 - eps)
    pos = target * (1 - p) ** gamma * torch.log(p)
    neg = (1 - target) * p**gamma * torch.log(1 - p)
    return -(pos + neg).mean()


def draem_loss(
    rec: Tensor, clean: Tensor, amap: Tensor, mask: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """DRAEM's loss: ``L2(R(x~), x) + (1 - SSIM(R(x~), x)) + focal(D, m)``.

    Args:
        rec: ``R(x~)``; clean: ``x``; amap: D's probability map; mask: ``m``; all
            ``(B, 1, H, W)`` float32.

    Returns:
        The total and its parts (``l2``, ``ssim``, ``focal``) as floats for logging.
    """
    l2 = F.mse_loss(rec, clean)
    ss = 1 - ssim(rec, clean)
    fo = focal_loss(amap, mask)
    return l2 + ss + fo, {"l2": l2.item(), "ssim": ss.item(), "focal": fo.item()}


# --- inference helpers ---


@torch.no_grad()
def score_images(
    model: DraemS, images: NDArray[np.float32], batch: int = 8
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Score grey images with ``model`` as it is (call ``.eval()`` first for BN's running stats).

    Args:
        images: ``(N, H, W)`` float32 in [0, 1] (a :class:`LetterboxedSet`'s ``images``).

    Returns:
        ``(scores (N,), maps (N, H, W))`` float32: what the exported graph returns.
    """
    check_side(images.shape[1], images.shape[2])
    scores, maps = [], []
    for i in range(0, len(images), batch):
        grey = torch.from_numpy(np.ascontiguousarray(images[i : i + batch]))[:, None]
        _, amap = model.grey_forward(grey)
        scores.append(model.image_score(amap).numpy())
        maps.append(amap[:, 0].numpy())
    return np.concatenate(scores), np.concatenate(maps)


def export_draem_onnx(model: DraemS, path: Path, imgsz: tuple[int, int], opset: int = 17) -> Path:
    """Write ``model`` as ONNX: input ``images (1, 3, H, W)``, outputs ``score``, ``anomaly_map``.

    Puts ``model`` in eval mode (BN frozen and folded). Uses the TorchScript exporter
    (``dynamo=False``): the dynamo one needs onnxscript. No metadata: bundle code adds it.
    """
    check_side(*imgsz)
    model.eval()
    dummy = torch.zeros(1, 3, *imgsz, dtype=torch.float32)
    with warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (no onnxscript); its notice is noise
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["score", "anomaly_map"],
            do_constant_folding=True,
        )
    return path
