"""DRAEM-S and its synthetic defects: generator rules, training, ONNX export.

Small toy images (64 px: vertical stripes on a part, letterbox padding above and
below) and tiny widths keep the whole file to seconds. Oracles: the blend formula
recomputed in float64, a brute-force pair count for AUROC, the model's own PyTorch
outputs for ONNX Runtime, the model re-scored for the kept calibration AUROC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kanjian.training.anomaly_draem import DraemS, check_side, export_draem_onnx, score_images
from kanjian.training.anomaly_draem_fit import train_draem
from kanjian.training.anomaly_images import LetterboxedSet
from kanjian.training.anomaly_metrics import auroc
from kanjian.training.anomaly_synth import (
    SyntheticDefects,
    augment_normal,
    perlin_noise,
    sample_crops,
    valid_bbox,
)

SIDE = 64
PAD = 8  # padding rows above and below the part
BORDER = np.float32(114 / 255)
#: ops a DRAEM-S graph may hold: plain convs, pooling, resize, PixelShuffle's reshapes
ALLOWED_OPS = {
    "Conv", "Relu", "MaxPool", "AveragePool", "Resize", "Concat", "Sigmoid", "ReduceMean",
    "ReduceMax", "Reshape", "Transpose", "DepthToSpace", "SpaceToDepth", "Add", "Sub", "Mul",
    "Div", "Flatten", "Squeeze", "Unsqueeze", "Constant", "Shape", "Gather", "Identity",
    "BatchNormalization",
}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the test machine's cores are shared, and results stay comparable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_set(n: int, seed: int, defective: list[bool] | None = None) -> LetterboxedSet:
    """``n`` 64x64 parts: vertical stripes + noise on rows PAD..SIDE-PAD, border elsewhere.

    Defective images get a dark 10x10 square (their mask).
    """
    rng = np.random.default_rng(seed)
    images = np.full((n, SIDE, SIDE), BORDER, np.float32)
    valid = np.zeros((n, SIDE, SIDE), np.bool_)
    masks = np.zeros((n, SIDE, SIDE), np.bool_)
    cols = np.arange(SIDE)
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.15 * np.sin(cols * 2 * np.pi / rng.uniform(3, 6) + phase)
        noise = 0.03 * rng.standard_normal((SIDE - 2 * PAD, SIDE))
        images[i, PAD : SIDE - PAD] = np.clip(stripes[None, :] + noise, 0, 1)
        valid[i, PAD : SIDE - PAD] = True
    flags = np.zeros(n, np.bool_) if defective is None else np.array(defective, np.bool_)
    for i in np.flatnonzero(flags):
        images[i, 20:30, 20:30] *= 0.5
        masks[i, 20:30, 20:30] = True
    return LetterboxedSet(
        images=images,
        valid=valid,
        masks=masks,
        defective=flags,
        kinds=tuple("pit" if f else "good" for f in flags),
        names=tuple(f"{i}.png" for i in range(n)),
    )


@pytest.fixture(scope="module")
def pool() -> LetterboxedSet:
    return toy_set(6, seed=0)


def _gen(pool: LetterboxedSet, seed: int = 0, **kw: object) -> SyntheticDefects:
    return SyntheticDefects(pool.images, pool.valid, seed, bank_size=8, **kw)  # type: ignore[arg-type]


# --- generator ---


def test_perlin_noise_any_shape_bounded_and_seeded() -> None:
    a = perlin_noise((40, 24), (4, 8), np.random.default_rng(3))
    assert a.shape == (40, 24) and a.dtype == np.float32
    assert np.abs(a).max() <= np.sqrt(2) and a.std() > 0.05
    np.testing.assert_array_equal(a, perlin_noise((40, 24), (4, 8), np.random.default_rng(3)))
    assert not np.array_equal(a, perlin_noise((40, 24), (4, 8), np.random.default_rng(4)))


def test_generator_is_deterministic_for_a_seed(pool: LetterboxedSet) -> None:
    def run(bank_seed: int, draw_seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(draw_seed)
        return _gen(pool, bank_seed, thin=True).make_batch(pool.images, pool.valid, rng)

    a, b = run(0, 1), run(0, 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], run(0, 2)[0])
    assert not np.array_equal(a[1], run(5, 1)[1])


def test_defects_stay_on_the_part_and_follow_the_blend(pool: LetterboxedSet) -> None:
    gen = _gen(pool)
    rng = np.random.default_rng(0)
    seen = set()
    for k in range(60):
        i = k % len(pool)
        x, v = pool.images[i], pool.valid[i]
        d = gen.draw(x, v, rng)
        seen.add(d.family)
        assert d.mask.dtype == np.float32 and d.mask.min() >= 0 and d.mask.max() <= 1
        assert not d.mask[~v].any(), "a defect reached the letterbox padding"
        assert (d.mask > 0).sum() >= gen.min_area
        assert d.image.min() >= 0 and d.image.max() <= 1
        # untouched where the mask is zero: the padding is exactly the station's border
        np.testing.assert_array_equal(d.image[d.mask == 0], x[d.mask == 0])
        assert 0.1 <= d.beta <= 1.0
        m, t, xx = (a.astype(np.float64) for a in (d.mask, d.texture, x))
        want = xx * (1 - m) + d.beta * t * m + (1 - d.beta) * xx * m
        np.testing.assert_allclose(d.image, want, atol=1e-6)
        if d.family != 2:  # binary masks for the texture families, soft for intensity
            assert set(np.unique(d.mask)) <= {0.0, 1.0}
    assert seen == {0, 1, 2}, "each texture family should turn up in 60 draws"


def test_batch_half_clean_half_defective(pool: LetterboxedSet) -> None:
    rng = np.random.default_rng(1)
    crops, valid = sample_crops(pool.images, pool.valid, np.arange(6).repeat(2), 32, rng)
    out, masks = _gen(pool).make_batch(crops, valid, rng)
    has = masks.reshape(len(masks), -1).any(axis=1)
    assert has.sum() == len(crops) // 2
    np.testing.assert_array_equal(out[~has], crops[~has])
    assert (np.abs(out[has] - crops[has]).reshape(int(has.sum()), -1).max(axis=1) > 0).all()


def test_thin_masks_are_thin(pool: LetterboxedSet) -> None:
    gen = _gen(pool, thin=True, thin_share=1.0)
    rng = np.random.default_rng(2)
    for _ in range(20):
        d = gen.draw(pool.images[0], pool.valid[0], rng)
        assert d.thin
        core = (d.mask > 0.1).astype(np.uint8)  # the soft (intensity) family fades out
        # lines at most 3 px wide (plus a little blur) vanish under a 7x7 erosion
        eroded = cv2.erode(
            core, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
        assert core.sum() > 0 and not eroded.any()


def test_crops_hold_the_part_and_normal_jitter_spares_the_padding(pool: LetterboxedSet) -> None:
    rng = np.random.default_rng(3)
    idx = np.arange(len(pool))
    for crop in (32, 64):  # part (48 rows) taller / shorter than the crop
        crops, valid = sample_crops(pool.images, pool.valid, idx, crop, rng)
        part_rows = SIDE - 2 * PAD
        assert (valid.sum(axis=(1, 2)) == min(crop, part_rows) * crop).all()
        for c, i in zip(crops, idx, strict=True):  # a flipped window of its image, never turned
            windows = [
                pool.images[i][::sy, ::sx][y : y + crop, x : x + crop]
                for sy in (1, -1)
                for sx in (1, -1)
                for y in range(SIDE - crop + 1)
                for x in range(SIDE - crop + 1)
            ]
            assert any(np.array_equal(c, w) for w in windows)
    jittered = augment_normal(pool.images, pool.valid, rng)
    np.testing.assert_array_equal(jittered[~pool.valid], pool.images[~pool.valid])
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert not np.array_equal(jittered[pool.valid], pool.images[pool.valid])
    assert valid_bbox(pool.valid[0]) == (PAD, SIDE - PAD, 0, SIDE)


# --- metric ---


def test_auroc_equals_the_pair_count_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        s = rng.integers(0, 5, 30).astype(np.float64)  # many ties
        y = rng.random(30) < 0.4
        y[:2] = (True, False)
        pos, neg = s[y][:, None], s[~y][None, :]
        want = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
        assert auroc(s, y) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [False, False])


# --- model ---


def test_model_shapes_and_ranges() -> None:
    torch.manual_seed(0)
    model = DraemS(width=0.25).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        score, amap = model(x)
    assert score.shape == (2,) and amap.shape == (2, 1, 64, 96)
    assert float(amap.min()) >= 0 and float(amap.max()) <= 1
    assert (score <= amap.amax(dim=(1, 2, 3)) + 1e-7).all()
    with pytest.raises(ValueError, match="multiples of 16"):
        check_side(64, 40)


def test_training_lowers_the_loss_and_keeps_the_best_calib_state() -> None:
    train = toy_set(12, seed=0)
    calib = toy_set(8, seed=1, defective=[False, True] * 4)
    lines: list[str] = []
    r = train_draem(
        train, calib=calib, steps=60, batch=8, crop=32, width=0.25, eval_every=20,
        log_every=10, bank_size=16, log=lines.append,
    )  # fmt: skip
    assert r.steps == 60 and r.losses.shape == (60,) and np.isfinite(r.losses).all()
    assert r.losses[-10:].mean() < 0.85 * r.losses[:10].mean()
    assert [p.step for p in r.history] == [20, 40, 60]
    assert r.best_auroc == max(p.auroc for p in r.history)
    assert r.best_step == next(p.step for p in r.history if p.auroc == r.best_auroc)
    assert not r.model.training
    scores, maps = score_images(r.model, calib.images)
    assert auroc(scores, calib.defective) == pytest.approx(r.best_auroc, abs=1e-12)
    assert maps.shape == calib.images.shape
    assert any("ETA" in line for line in lines) and any("AUROC" in line for line in lines)


def test_training_is_deterministic_for_a_seed() -> None:
    train = toy_set(6, seed=0)

    def run(seed: int) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        r = train_draem(train, steps=4, batch=4, crop=32, width=0.25, seed=seed, log_every=0,
                        bank_size=4, log=lambda _: None)  # fmt: skip
        return r.losses, r.model.state_dict()

    (la, sa), (lb, sb), (lc, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(la, lb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert not np.array_equal(la, lc)


def test_a_time_budget_stops_training() -> None:
    r = train_draem(toy_set(4, 0), time_budget_s=0.5, batch=2, crop=32, width=0.25,
                    log_every=0, bank_size=2, log=lambda _: None)  # fmt: skip
    assert r.steps >= 1 and r.best_auroc is None and r.history == ()
    with pytest.raises(ValueError, match="steps or time_budget_s"):
        train_draem(toy_set(4, 0))
    with pytest.raises(ValueError, match="good and defective"):
        train_draem(toy_set(4, 0), calib=toy_set(4, 1), steps=1)


def test_onnx_export_matches_pytorch_with_plain_ops(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = DraemS(width=0.25)
    model.train()
    with torch.no_grad():  # move BN's running stats off their defaults, so folding matters
        for _ in range(3):
            model.grey_forward(torch.rand(4, 1, 64, 96))
    path = export_draem_onnx(model, tmp_path / "draem.onnx", (64, 96))
    assert not model.training
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    ops = {n.op_type for n in graph.graph.node}
    assert ops <= ALLOWED_OPS, f"ops outside the allow-list: {sorted(ops - ALLOWED_OPS)}"
    dims = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in v.type.tensor_type.shape.dim
        ]
        for v in (*graph.graph.input, *graph.graph.output)
    }
    assert dims == {"images": [1, 3, 64, 96], "score": [1], "anomaly_map": [1, 1, 64, 96]}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    grey = toy_set(2, seed=5, defective=[False, True]).images
    grey = np.concatenate([grey, grey[:, :, :32]], axis=2)  # 64 x 96
    for g in grey:
        x = np.repeat(g[None, None], 3, axis=1)
        with torch.no_grad():
            ts, tm = model(torch.from_numpy(x))
        os_, om = sess.run(["score", "anomaly_map"], {"images": x})
        assert np.abs(os_ - ts.numpy()).max() < 1e-4
        assert np.abs(om - tm.numpy()).max() < 1e-4
