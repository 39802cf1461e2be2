"""Synthetic defects on good images, for models trained from good parts only.

DRAEM's recipe (Perlin-noise masks, a foreign texture blended in) without its DTD
texture set, which cannot be downloaded here: the textures come from the good images
themselves, from noise, or from an intensity change of the host (anomaly design note
§6). numpy and cv2 only, seeded, cheap enough to run in the training loop on 2 cores.

- Masks: Perlin noise, scale ``2^a x 2^b`` (``a, b`` in ``0..5``), rotated by up to
  ±90°, thresholded at 0.5 and cut to the part (``valid``); masks under ``min_area``
  pixels are redrawn. Noise fields are drawn once into a bank (:class:`PerlinBank`) and
  reused with random flips, transposes, crops and rotations. Behind a flag, a share of
  masks are thin random-walk polylines (1–3 px), like scratches or cracks.
- Textures, equal odds: (1) a crop of another good image, turned 90° (stripes across
  the host's) or rescaled 0.5–2x; (2) a Perlin field or band-pass noise; each through 3
  random ops (gamma, gain/offset, sharpen, solarise, posterise, invert, equalise,
  autocontrast); (3) the host itself times 0.4–0.8 or 1.2–1.6 under a mask softened by
  a Gaussian (σ 1–4 px; 0.5–1 px for thin masks).
- Blend: ``x~ = x (1 - m) + β t m + (1 - β) x m`` with ``β ~ U(0.1, 1)``; the label
  is ``m`` (binary, or the softened mask for family 3). Outside ``m`` the image is
  untouched, so the letterbox padding stays exactly the station's border.

Normal images are flipped but never turned by 90°: the stripe direction of a part
under a fixed camera is part of "normal" (design note §1.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Defect",
    "PerlinBank",
    "SyntheticDefects",
    "augment_normal",
    "perlin_noise",
    "sample_crops",
    "valid_bbox",
]

F32 = NDArray[np.float32]
Bool = NDArray[np.bool_]

#: family names, in the order of :attr:`Defect.family`
FAMILIES = ("foreign", "noise", "intensity")


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> F32:
    """2-D gradient (Perlin) noise, ``res`` periods over ``shape``; values about ``[-1, 1]``.

    DRAEM's ``rand_perlin_2d_np`` (quintic fade, random unit gradients, ``√2`` scale),
    written for any ``shape`` (no need to divide by ``res``).

    Returns:
        ``shape`` float32.
    """
    h, w = shape
    ry, rx = res
    angles = rng.uniform(0.0, 2 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    u = np.arange(h) * (ry / h)
    v = np.arange(w) * (rx / w)
    iy, ix = u.astype(np.intp), v.astype(np.intp)
    fy = (u - iy).astype(np.float64)[:, None]
    fx = (v - ix).astype(np.float64)[None, :]

    def corner(dy: int, dx: int) -> NDArray[np.float64]:
        a, b = iy[:, None] + dy, ix[None, :] + dx
        out: NDArray[np.float64] = gy[a, b] * (fy - dy) + gx[a, b] * (fx - dx)
        return out

    def fade(t: NDArray[np.float64]) -> NDArray[np.float64]:
        return t * t * t * (t * (t * 6 - 15) + 10)

    ty, tx = fade(fy), fade(fx)
    top = corner(0, 0) + tx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + tx * (corner(1, 1) - corner(1, 0))
    out: F32 = (np.sqrt(2) * (top + ty * (bottom - top))).astype(np.float32)
    return out


class PerlinBank:
    """``n`` Perlin fields of ``size``, drawn once, sampled with flips, crops and rotations.

    Stored as float16 (``n x H x W x 2`` bytes: 512 fields at 256² take 64 MiB).
    """

    def __init__(self, n: int, size: tuple[int, int], seed: int, max_log2: int = 5) -> None:
        if n < 1:
            raise ValueError(f"PerlinBank: n={n}; give at least one field")
        rng = np.random.default_rng(seed)
        self.fields = np.empty((n, *size), np.float16)
        for i in range(n):
            res = (2 ** int(rng.integers(0, max_log2 + 1)), 2 ** int(rng.integers(0, max_log2 + 1)))
            self.fields[i] = perlin_noise(size, res, rng)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator, rotate: bool = True) -> F32:
        """A ``shape`` float32 field: a random stored field, flipped/transposed, cropped, rotated."""
        h, w = shape
        f = self.fields[int(rng.integers(len(self.fields)))].astype(np.float32)
        if rng.random() < 0.5:
            f = f.T
        f = f[:: int(rng.choice((-1, 1))), :: int(rng.choice((-1, 1)))]
        if f.shape[0] < h or f.shape[1] < w:
            raise ValueError(
                f"PerlinBank: fields are {f.shape}, asked for {shape}; build the bank at least "
                "as large as the images it serves"
            )
        y = int(rng.integers(0, f.shape[0] - h + 1))
        x = int(rng.integers(0, f.shape[1] - w + 1))
        f = np.ascontiguousarray(f[y : y + h, x : x + w])
        if rotate:
            rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-90, 90)), 1.0)
            f = cv2.warpAffine(
                f, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        out: F32 = f.astype(np.float32, copy=False)
        return out


def valid_bbox(valid: Bool) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the True pixels of one ``(H, W)`` plane (all of it if none)."""
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if rows.size == 0:
        return 0, valid.shape[0], 0, valid.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _crop_start(lo: int, hi: int, size: int, full: int, rng: np.random.Generator) -> int:
    """Start of a ``size`` window in ``[0, full)`` that covers as much of ``[lo, hi)`` as it can."""
    if hi - lo >= size:
        return int(rng.integers(lo, hi - size + 1))
    a, b = max(0, hi - size), min(lo, full - size)  # windows holding all of [lo, hi)
    return int(rng.integers(a, b + 1)) if a <= b else max(0, min(lo, full - size))


def sample_crops(
    images: F32, valid: Bool, index: NDArray[np.intp], crop: int, rng: np.random.Generator
) -> tuple[F32, Bool]:
    """``crop x crop`` windows of ``images[index]``, each placed to hold as much part as it can.

    Where the part is larger than the window it lies wholly on the part; where it is
    smaller the window holds all of it. Random horizontal/vertical flips (never a 90° turn).

    Args:
        images: ``(N, H, W)`` float32; valid: ``(N, H, W)`` bool; index: ``(B,)`` image indices.

    Returns:
        ``(B, crop, crop)`` float32 crops and their bool valid planes.
    """
    _, h, w = images.shape
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} is larger than the images ({h}x{w}); lower --crop")
    out = np.empty((len(index), crop, crop), np.float32)
    vout = np.empty((len(index), crop, crop), np.bool_)
    for k, i in enumerate(index):
        y0, y1, x0, x1 = valid_bbox(valid[i])
        y, x = _crop_start(y0, y1, crop, h, rng), _crop_start(x0, x1, crop, w, rng)
        sy, sx = int(rng.choice((-1, 1))), int(rng.choice((-1, 1)))
        out[k] = images[i, y : y + crop, x : x + crop][::sy, ::sx]
        vout[k] = valid[i, y : y + crop, x : x + crop][::sy, ::sx]
    return out, vout


def augment_normal(
    images: F32,
    valid: Bool,
    rng: np.random.Generator,
    gain: tuple[float, float] = (0.6, 1.6),
    gamma: tuple[float, float] = (0.8, 1.25),
) -> F32:
    """Exposure jitter of good images: ``clip(gain * x ** gamma, 0, 1)`` on the part only.

    The letterbox padding keeps its value: the station pads with 114/255 whatever the
    exposure. Gamma is drawn log-uniformly, so 0.8 and 1.25 are equally likely.

    Args:
        images, valid: ``(B, H, W)`` float32 / bool. Returns a new ``(B, H, W)`` float32.
    """
    out = images.copy()
    for k in range(len(images)):
        g = float(np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1]))))
        a = float(rng.uniform(*gain))
        v = valid[k]
        out[k][v] = np.clip(a * np.power(images[k][v], g), 0.0, 1.0)
    return out


# --- random ops on a texture in [0, 1] (DRAEM's list without hue; grey images) ---


def _gamma(t: F32, rng: np.random.Generator) -> F32:
    return np.power(t, np.float32(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))


def _gain(t: F32, rng: np.random.Generator) -> F32:
    return np.float32(rng.uniform(0.8, 1.2)) * t + np.float32(rng.uniform(-30, 30) / 255)


def _sharpen(t: F32, rng: np.random.Generator) -> F32:
    blur = cv2.GaussianBlur(t, (0, 0), 1.0)
    return t + np.float32(rng.uniform(0.5, 2.0)) * (t - blur)


def _solarise(t: F32, rng: np.random.Generator) -> F32:
    thr = np.float32(rng.uniform(32, 128) / 255)
    return np.where(t >= thr, 1 - t, t)


def _posterise(t: F32, rng: np.random.Generator) -> F32:
    levels = np.float32(2 ** int(rng.integers(1, 6)))
    out: F32 = np.floor(t * (levels - 1) + 0.5) / (levels - 1)
    return out


def _invert(t: F32, rng: np.random.Generator) -> F32:
    return 1 - t


def _equalise(t: F32, rng: np.random.Generator) -> F32:
    u8 = np.ascontiguousarray(np.clip(t * 255 + 0.5, 0, 255).astype(np.uint8))
    out: F32 = cv2.equalizeHist(u8).astype(np.float32) / np.float32(255)
    return out


def _autocontrast(t: F32, rng: np.random.Generator) -> F32:
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi - lo > 1e-6 else t


OPS: tuple[Callable[[F32, np.random.Generator], F32], ...] = (
    _gamma,
    _gain,
    _sharpen,
    _solarise,
    _posterise,
    _invert,
    _equalise,
    _autocontrast,
)


def random_ops(t: F32, rng: np.random.Generator, n: int = 3) -> F32:
    """``n`` distinct ops from :data:`OPS` in random order, clipped to ``[0, 1]`` after each."""
    for k in rng.permutation(len(OPS))[:n]:
        t = np.clip(OPS[int(k)](t, rng), 0.0, 1.0).astype(np.float32)
    return t


@dataclass(frozen=True)
class Defect:
    """One synthetic defect on one image (all planes ``(H, W)`` float32).

    Attributes:
        image: the blended image ``x (1 - m) + β t m + (1 - β) x m``.
        mask: ``m`` in ``[0, 1]``, zero off the part; the training label.
        texture: ``t``, in ``[0, 1]``.
        beta: the blend weight ``β``.
        family: index into :data:`FAMILIES`.
        thin: the mask is a polyline, not Perlin blobs.
    """

    image: F32
    mask: F32
    texture: F32
    beta: float
    family: int
    thin: bool


def blend(x: F32, t: F32, m: F32, beta: float) -> F32:
    """``x (1 - m) + β t m + (1 - β) x m`` (float32; exactly ``x`` where ``m == 0``)."""
    b = np.float32(beta)
    out: F32 = x * (1 - m) + b * t * m + (1 - b) * x * m
    return out


class SyntheticDefects:
    """Seeded generator of synthetic defects on good images (see the module docstring).

    Args:
        pool: ``(N, H, W)`` float32 good images in ``[0, 1]`` (the train split): the
            source of foreign textures. ``H, W`` also size the Perlin bank.
        valid: ``(N, H, W)`` bool, the part in each pool image.
        seed: seeds the Perlin bank (the per-image draws use the ``rng`` passed in).
        bank_size: Perlin fields drawn once.
        thin: also draw thin polyline masks (1–3 px), for a ``thin_share`` of defects.
        min_area: masks with fewer part pixels are redrawn.
    """

    def __init__(
        self,
        pool: F32,
        valid: Bool,
        seed: int,
        *,
        bank_size: int = 512,
        thin: bool = False,
        thin_share: float = 0.25,
        min_area: int = 16,
    ) -> None:
        if pool.ndim != 3 or pool.shape != valid.shape or len(pool) == 0:
            raise ValueError(
                f"SyntheticDefects: pool {pool.shape} and valid {valid.shape} must be the same "
                "non-empty (N, H, W)"
            )
        self.pool = pool
        self.valid = valid
        self.boxes = [valid_bbox(v) for v in valid]
        self.bank = PerlinBank(bank_size, (pool.shape[1], pool.shape[2]), seed)
        self.thin = thin
        self.thin_share = thin_share
        self.min_area = min_area

    # --- masks ---

    def _perlin_mask(self, valid: Bool, rng: np.random.Generator) -> Bool:
        m: Bool = (self.bank.sample(valid.shape, rng) > 0.5) & valid
        return m

    def _thin_mask(self, valid: Bool, rng: np.random.Generator) -> Bool:
        """A random-walk polyline (2–8 segments of 4–20 px), 1–3 px wide, starting on the part."""
        canvas = np.zeros(valid.shape, np.uint8)
        ys, xs = np.nonzero(valid)
        if ys.size == 0:
            return canvas.astype(np.bool_)
        k = int(rng.integers(ys.size))
        pts = [(float(xs[k]), float(ys[k]))]
        base = rng.uniform(0, 2 * np.pi)
        turn = 0.0
        for _ in range(int(rng.integers(2, 9))):
            # the heading stays within ±45° of where it started: a scratch bends but never
            # doubles back, which would lay strokes side by side into a broad band
            turn = float(np.clip(turn + rng.uniform(-np.pi / 6, np.pi / 6), -np.pi / 4, np.pi / 4))
            angle = base + turn
            step = rng.uniform(4, 20)
            pts.append((pts[-1][0] + step * np.cos(angle), pts[-1][1] + step * np.sin(angle)))
        poly = np.round(np.array(pts)).astype(np.int32).reshape(-1, 1, 2)
        # cv2's thickness 1 draws 1 px, 2 draws about 3 px (3 would draw 5)
        cv2.polylines(canvas, [poly], False, 1, thickness=int(rng.integers(1, 3)))
        m: Bool = canvas.astype(np.bool_) & valid
        return m

    def _mask(self, valid: Bool, rng: np.random.Generator) -> tuple[Bool, bool]:
        thin = self.thin and rng.random() < self.thin_share
        for _ in range(20):
            m = self._thin_mask(valid, rng) if thin else self._perlin_mask(valid, rng)
            if int(m.sum()) >= self.min_area:
                return m, thin
        # a crop with little part left: a small disc on the part (or nothing without part)
        disc = np.zeros(valid.shape, np.uint8)
        ys, xs = np.nonzero(valid)
        if ys.size:
            k = int(rng.integers(ys.size))
            cv2.circle(disc, (int(xs[k]), int(ys[k])), int(rng.integers(3, 7)), 1, -1)
        return disc.astype(np.bool_) & valid, thin

    # --- textures ---

    def _foreign(self, shape: tuple[int, int], rng: np.random.Generator) -> F32:
        """A crop of a random pool image's part, turned 90° or rescaled 0.5–2x."""
        h, w = shape
        j = int(rng.integers(len(self.pool)))
        y0, y1, x0, x1 = self.boxes[j]
        src: NDArray[np.float32] = self.pool[j, y0:y1, x0:x1]
        turn = rng.random() < 0.5
        scale = 1.0 if turn else float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        ch, cw = (w, h) if turn else (max(1, round(h / scale)), max(1, round(w / scale)))
        if src.shape[0] < ch or src.shape[1] < cw:  # a small part: mirror it out
            py, px = max(0, ch - src.shape[0]), max(0, cw - src.shape[1])
            src = np.asarray(cv2.copyMakeBorder(src, 0, py, 0, px, cv2.BORDER_REFLECT_101))
        y = int(rng.integers(0, src.shape[0] - ch + 1))
        x = int(rng.integers(0, src.shape[1] - cw + 1))
        t = np.ascontiguousarray(src[y : y + ch, x : x + cw])
        if turn:
            t = np.rot90(t, 1 if rng.random() < 0.5 else -1)
        elif (ch, cw) != (h, w):
            t = np.asarray(cv2.resize(t, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
        return np.ascontiguousarray(t, np.float32)

    def _noise(self, shape: tuple[int, int], rng: np.random.Generator) -> F32:
        """A Perlin field or band-pass white noise, stretched to ``[0, 1]``."""
        if rng.random() < 0.5:
            n = self.bank.sample(shape, rng)
        else:
            white = rng.standard_normal(shape).astype(np.float32)
            s1 = float(rng.uniform(0.5, 2.0))
            s2 = s1 * float(rng.uniform(2.0, 4.0))
            n = cv2.GaussianBlur(white, (0, 0), s1) - cv2.GaussianBlur(white, (0, 0), s2)
        return _autocontrast(n.astype(np.float32), rng)

    # --- public ---

    def draw(self, image: F32, valid: Bool, rng: np.random.Generator) -> Defect:
        """One synthetic defect on ``image`` (``(H, W)`` float32 in [0, 1]) within ``valid``."""
        mask_b, thin = self._mask(valid, rng)
        family = int(rng.integers(3))
        beta = float(rng.uniform(0.1, 1.0))
        if family == 2:
            f = rng.uniform(0.4, 0.8) if rng.random() < 0.5 else rng.uniform(1.2, 1.6)
            t = np.clip(image * np.float32(f), 0.0, 1.0).astype(np.float32)
            # thin lines are blurred less, or a scratch would turn into a broad smudge
            sigma = float(rng.uniform(0.5, 1.0) if thin else rng.uniform(1.0, 4.0))
            soft = cv2.GaussianBlur(mask_b.astype(np.float32), (0, 0), sigma)
            m = (soft * valid).astype(np.float32)
            m[m < 1e-3] = 0.0  # a clean zero off the blob, so the label has no faint halo
        else:
            src = self._foreign if family == 0 else self._noise
            t = random_ops(src(image.shape, rng), rng)
            m = mask_b.astype(np.float32)
        return Defect(blend(image, t, m, beta), m, t, beta, family, thin)

    def make(self, image: F32, valid: Bool, rng: np.random.Generator) -> tuple[F32, F32]:
        """``(augmented, mask)``: ``(H, W)`` float32 each, the mask in ``[0, 1]``."""
        d = self.draw(image, valid, rng)
        return d.image, d.mask

    def make_batch(
        self, images: F32, valid: Bool, rng: np.random.Generator, defect_share: float = 0.5
    ) -> tuple[F32, F32]:
        """Defects on ``round(defect_share * B)`` of ``images`` (at random places), the rest clean.

        Args:
            images, valid: ``(B, H, W)`` float32 / bool.

        Returns:
            ``(augmented, masks)``, ``(B, H, W)`` float32 each; clean images come back
            unchanged with all-zero masks.
        """
        out = images.copy()
        masks = np.zeros(images.shape, np.float32)
        n_def = round(defect_share * len(images))
        for k in np.sort(rng.permutation(len(images))[:n_def]):
            out[k], masks[k] = self.make(images[k], valid[k], rng)
        return out, masks
