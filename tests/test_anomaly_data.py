"""``kanjian dataset import --task anomaly``: good/ + defect/<kind>/ with binary masks.

Each test builds a small tree in one accepted layout (good-defect, magnetic-tile,
MVTec-AD) with cv2, imports it and checks what was written against the tree it
built: counts per kind, masks binarised at > 127 (compared pixel by pixel with
the source mask), faults named against their files, the split reproducible and
stratified, the train list honoured. One test imports the real magnetic-tile set
from ``shared/`` beside the checkout and checks it against its README and folders.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from kanjian.training.anomaly_data import (
    SPLITS,
    import_anomaly_dataset,
    load_anomaly_dataset,
    split_items,
)
from kanjian.training.anomaly_source import AnomalyItem, detect_anomaly_format, exposure_group
from tests.support.dataset import run_import_cli

REPO = Path(__file__).resolve().parents[1]
MAGNETIC_TILE = REPO.parent / "shared" / "datasets" / "magnetic-tile"


def _grey(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w), dtype=np.uint8))


def _mask(path: Path, w: int, h: int, *, fringe: bool = False, empty: bool = False) -> None:
    """A rectangle of 255; ``fringe`` adds JPEG-like values (1..254) around it."""
    m = np.zeros((h, w), np.uint8)
    if not empty:
        m[h // 4 : h // 2, w // 4 : w // 2] = 255
        if fringe:
            m[h // 4 - 1, w // 4 : w // 2] = 200  # above 127: a defect pixel
            m[h // 2, w // 4 : w // 2] = 3  # at most 127: background
            m[h // 4 : h // 2, w // 2] = 127
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), m)


def _good_defect_tree(root: Path) -> dict[str, int]:
    """good/ (12 in two exposure groups) + defect/scratch (5) + defect/dent (2 PNG images).

    Returns the images per kind a correct import keeps (the garbage file is not one).
    """
    for i in range(12):
        _grey(root / "good" / f"exp{1 + i % 2}_num_{i}.jpg", 40, 30, seed=i)
    (root / "good" / "garbage.jpg").write_bytes(b"not an image")
    sc = root / "defect" / "scratch"
    for i in range(5):
        _grey(sc / f"exp1_s{i}.jpg", 40, 30, seed=100 + i)
    _mask(sc / "exp1_s0.png", 40, 30)
    _mask(sc / "exp1_s1.png", 40, 30, fringe=True)
    _mask(sc / "exp1_s2.png", 40, 30, empty=True)
    _mask(sc / "exp1_s3.png", 20, 15)  # half size
    # exp1_s4 has no mask
    for i in range(2):
        _grey(root / "defect" / "dent" / f"d{i}.png", 32, 32, seed=200 + i)
        _mask(root / "defect" / "dent" / f"d{i}_mask.png", 32, 32, fringe=i == 1)
    return {"good": 12, "scratch": 5, "dent": 2}


def _problems(summary_problems: tuple[str, ...]) -> set[tuple[str, str]]:
    """``(file name, kind)`` of each problem line ``file: kind: message``."""
    out = set()
    for line in summary_problems:
        file, kind, _ = line.split(": ", 2)
        out.add((Path(file).name, kind))
    return out


def test_good_defect_layout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = _good_defect_tree(src)
    assert detect_anomaly_format(src) == "good-defect"
    out = tmp_path / "out"
    summary = import_anomaly_dataset(src, out, seed=1)
    assert summary.source_format == "good-defect"
    assert {k: sum(v.values()) for k, v in summary.per_kind.items()} == expected
    assert summary.kinds == ("dent", "scratch")
    assert summary.per_kind["scratch"]["train"] == summary.per_kind["dent"]["train"] == 0
    assert _problems(summary.problems) == {
        ("garbage.jpg", "unreadable_image"),
        ("exp1_s2.png", "empty_mask"),
        ("exp1_s3.png", "size_mismatch"),
        ("exp1_s4.jpg", "missing_mask"),
    }
    assert summary.masks == {
        "written": 6,
        "missing": 1,
        "empty": 1,
        "binarised": 2,  # exp1_s1.png and d1_mask.png hold fringe values
        "resized": 1,
    }
    # every written mask: 0/255, the image's size, and the source mask thresholded at > 127
    for kind, pairs in (
        ("scratch", [(f"exp1_s{i}.jpg", f"exp1_s{i}.png") for i in range(4)]),
        ("dent", [(f"d{i}.png", f"d{i}_mask.png") for i in range(2)]),
    ):
        for image, mask in pairs:
            img = cv2.imread(str(out / "defect" / kind / image), cv2.IMREAD_GRAYSCALE)
            written = cv2.imread(str(out / "defect" / kind / mask), cv2.IMREAD_GRAYSCALE)
            source = cv2.imread(str(src / "defect" / kind / mask), cv2.IMREAD_GRAYSCALE)
            assert written.shape == img.shape
            assert set(np.unique(written)) <= {0, 255}
            if source.shape == img.shape:
                assert np.array_equal(written == 255, source > 127), mask
    assert not (out / "defect" / "scratch" / "exp1_s4.png").exists()
    # the reader gives what split.json lists, with masks where they were written
    data = load_anomaly_dataset(out)
    split = json.loads((out / "split.json").read_text())
    for part in SPLITS:
        samples = getattr(data, part)
        assert [s.image.relative_to(out).as_posix() for s in samples] == split[part]
        assert len(samples) == summary.images[part]
    every = data.train + data.calibration + data.validation
    assert {s.kind for s in data.train} == {"good"}
    masked = {s.image.name for s in every if s.mask is not None}
    assert masked == {
        "exp1_s0.jpg",
        "exp1_s1.jpg",
        "exp1_s2.jpg",
        "exp1_s3.jpg",
        "d0.png",
        "d1.png",
    }
    assert data.kinds == ("dent", "scratch")
    assert data.data_sha256 == json.loads((out / "summary.json").read_text())["data_sha256"]


def test_split_is_seeded_and_stratified() -> None:
    sizes = {("good", "exp1"): 21, ("good", "exp2"): 10, ("good", ""): 3}
    sizes |= {("crack", "exp1"): 7, ("crack", "exp2"): 4, ("hole", "exp1"): 5, ("hole", ""): 1}
    items = [
        AnomalyItem(Path(f"/d/{kind}/{group or 'x'}_{i}.jpg"), kind, None, group)
        for (kind, group), n in sizes.items()
        for i in range(n)
    ]
    a = split_items(items, seed=3, held_back=0.25)
    assert a == split_items(list(reversed(items)), seed=3, held_back=0.25)  # order-free
    assert a != split_items(items, seed=4, held_back=0.25)
    assert sorted(i.image for p in SPLITS for i in a[p]) == sorted(i.image for i in items)
    for (kind, group), n in sizes.items():
        per = {p: sum(1 for i in a[p] if (i.kind, i.group) == (kind, group)) for p in SPLITS}
        if kind == "good":
            n_hold = max(round(n * 0.25), 1)
            assert per["train"] == n - n_hold, (group, per)
        else:
            assert per["train"] == 0
        assert abs(per["calibration"] - per["validation"]) <= 1, (kind, group, per)
    # odd strata alternate, so neither half takes every odd image
    assert abs(len(a["calibration"]) - len(a["validation"])) <= 1


def test_train_list_is_honoured(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _good_defect_tree(src)
    listed = tmp_path / "train.txt"
    listed.write_text("# the good images to learn from\nexp1_num_0.jpg\nexp2_num_1\nnot_here.jpg\n")
    summary = import_anomaly_dataset(src, tmp_path / "out", train_list=listed)
    data = load_anomaly_dataset(tmp_path / "out")
    assert sorted(s.image.name for s in data.train) == ["exp1_num_0.jpg", "exp2_num_1.jpg"]
    assert summary.per_kind["good"]["calibration"] + summary.per_kind["good"]["validation"] == 10
    assert any("2 good images train; 1 of its 3 names" in n for n in summary.notes), summary.notes


@pytest.mark.parametrize("imgs", [False, True], ids=["flat", "Imgs"])
def test_magnetic_tile_layout(tmp_path: Path, imgs: bool) -> None:
    src = tmp_path / "mt"
    sub = Path("Imgs") if imgs else Path()
    for i in range(6):
        _grey(src / "MT_Free" / sub / f"exp{i % 3}_num_{i}.jpg", 30, 40, seed=i)
        _mask(src / "MT_Free" / sub / f"exp{i % 3}_num_{i}.png", 30, 40, empty=True)
    for i in range(3):
        _grey(src / "MT_Crack" / sub / f"exp1_num_{90 + i}.jpg", 30, 40, seed=90 + i)
        _mask(src / "MT_Crack" / sub / f"exp1_num_{90 + i}.png", 30, 40, fringe=True)
    summary = import_anomaly_dataset(src, tmp_path / "out")
    assert summary.source_format == "magnetic-tile"
    assert {k: sum(v.values()) for k, v in summary.per_kind.items()} == {"good": 6, "crack": 3}
    assert summary.per_group == {"exp0": 2, "exp1": 5, "exp2": 2}
    assert summary.problems == ()
    assert summary.masks["written"] == summary.masks["binarised"] == 3
    assert not list((tmp_path / "out" / "good").glob("*.png"))  # good parts carry no mask


def test_mvtec_layout(tmp_path: Path) -> None:
    src = tmp_path / "bottle"
    for i in range(4):
        _grey(src / "train" / "good" / f"00{i}.png", 32, 32, seed=i)
    for i in range(2):
        _grey(src / "test" / "good" / f"00{i}.png", 32, 32, seed=10 + i)  # same names as train
    for i in range(3):
        _grey(src / "test" / "broken" / f"00{i}.png", 32, 32, seed=20 + i)
    for i in range(2):  # 002 has no ground truth
        _mask(src / "ground_truth" / "broken" / f"00{i}_mask.png", 32, 32)
    assert detect_anomaly_format(src) == "mvtec"
    with pytest.raises(ValueError, match="import one category at a time"):
        detect_anomaly_format(tmp_path)
    with pytest.raises(ValueError, match="the mvtec layout needs both"):
        import_anomaly_dataset(src / "train", tmp_path / "x", fmt="mvtec")
    summary = import_anomaly_dataset(src, tmp_path / "out")
    assert summary.per_kind["good"]["train"] == 4  # MVTec's own train/good
    assert sum(summary.per_kind["good"].values()) == 6
    assert sum(summary.per_kind["broken"].values()) == 3
    assert _problems(summary.problems) == {("002.png", "missing_mask")}
    good = sorted(p.name for p in (tmp_path / "out" / "good").iterdir())
    assert good == ["000.png", "000_1.png", "001.png", "001_1.png", "002.png", "003.png"]
    broken = sorted(p.name for p in (tmp_path / "out" / "defect" / "broken").iterdir())
    assert broken == ["000.png", "000_mask.png", "001.png", "001_mask.png", "002.png"]
    # the written folder is itself a good-defect source
    again = import_anomaly_dataset(tmp_path / "out", tmp_path / "again")
    assert again.source_format == "good-defect"
    assert again.per_kind["broken"] == summary.per_kind["broken"]
    assert _problems(again.problems) == {("002.png", "missing_mask")}


def test_cli(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = _good_defect_tree(src)
    run = run_import_cli(str(src), str(tmp_path / "out"), "--task", "anomaly", "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert sum(summary["images"].values()) == sum(expected.values())
    n = sum(expected.values())
    assert f"writing {tmp_path / 'out'}: {n:,} of {n:,} images (100 %)" in run.stderr

    # the same output again: refused in one line, nothing overwritten
    again = run_import_cli(str(src), str(tmp_path / "out"), "--task", "anomaly")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'out'} is not empty; choose a new output folder"
    ]

    # nothing importable: the summary, then one line naming the first problem, exit 2
    empty = tmp_path / "empty"
    (empty / "good").mkdir(parents=True)
    (empty / "good" / "x.jpg").write_bytes(b"garbage")
    run = run_import_cli(str(empty), str(tmp_path / "o2"), "--task", "anomaly")
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no images imported from "), lines
    assert "x.jpg: unreadable_image" in lines[0]

    # an unknown layout: one line, no traceback
    (tmp_path / "plain").mkdir()
    run = run_import_cli(str(tmp_path / "plain"), str(tmp_path / "o3"), "--task", "anomaly")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot tell the anomaly layout" in lines[0], run.stderr
    # options of the other kind: refused, exit 2
    for args in (["--task", "anomaly", "--classes", "a"], ["--train-list", str(tmp_path)]):
        run = run_import_cli(str(src), str(tmp_path / "o4"), *args)
        assert run.returncode == 2, args
        assert not (tmp_path / "o4").exists()


def test_real_magnetic_tile(tmp_path: Path) -> None:
    """The shared set: counts as its README states and its folders hold, the empty masks named."""
    assert MAGNETIC_TILE.is_dir(), f"{MAGNETIC_TILE}: shared/ must sit beside the checkout"
    readme = (MAGNETIC_TILE / "README.md").read_text(encoding="utf-8")
    stated = {m[0]: int(m[1]) for m in re.findall(r"`MT_(\w+)/` (\d+)", readme)}
    good = re.search(r"`MT_Free/` \(good parts, (\d+) images\)", readme)
    assert good, "the README no longer states the good count"
    stated["Free"] = int(good[1])
    folders = {p.name[3:]: len(list(p.glob("*.jpg"))) for p in MAGNETIC_TILE.glob("MT_*")}
    assert stated == folders
    empty = {
        p.name
        for p in MAGNETIC_TILE.glob("MT_*/*.png")
        if p.parent.name != "MT_Free" and cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).max() <= 127
    }
    summary = import_anomaly_dataset(MAGNETIC_TILE, tmp_path / "mt", seed=0)
    counts = {k: sum(v.values()) for k, v in summary.per_kind.items()}
    assert counts == {("good" if k == "Free" else k.lower()): n for k, n in stated.items()}
    assert counts["good"] == 717 and sum(counts.values()) - counts["good"] == 286
    assert summary.kinds == ("blowhole", "break", "crack", "fray", "uneven")
    assert _problems(summary.problems) == {(name, "empty_mask") for name in empty}
    assert summary.masks["written"] == 286 and summary.masks["empty"] == len(empty)
    assert set(summary.per_group) <= {f"exp{i}" for i in range(7)}
    data = load_anomaly_dataset(tmp_path / "mt")
    # 20 % of each exposure group's good images held back (at least one)
    groups = Counter(exposure_group(p.name) for p in (MAGNETIC_TILE / "MT_Free").glob("*.jpg"))
    train = sum(n - max(round(n * 0.2), 1 if n >= 2 else 0) for n in groups.values())
    assert len(data.train) == summary.images["train"] == train
    held = data.calibration + data.validation
    # halves stratified by kind and exposure group: each stratum splits within one image
    for kind in ("good", *summary.kinds):
        for group in summary.per_group:
            cal, val = (
                sum(1 for s in part if (s.kind, exposure_group(s.image.name)) == (kind, group))
                for part in (data.calibration, data.validation)
            )
            assert abs(cal - val) <= 1, (kind, group, cal, val)
    assert Counter(s.kind for s in held)["good"] == 717 - len(data.train)
    for sample in held:
        if sample.kind != "good":
            assert sample.mask is not None
            m = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
            assert set(np.unique(m)) <= {0, 255}


def test_loader_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"split\.json: not found; make the dataset with"):
        load_anomaly_dataset(tmp_path)
    src = tmp_path / "src"
    _good_defect_tree(src)
    import_anomaly_dataset(src, tmp_path / "out")
    first = json.loads((tmp_path / "out" / "split.json").read_text())["validation"][0]
    (tmp_path / "out" / first).unlink()
    with pytest.raises(ValueError, match=f"validation lists {first}, which is not in"):
        load_anomaly_dataset(tmp_path / "out")
    (tmp_path / "out" / "split.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable split"):
        load_anomaly_dataset(tmp_path / "out")
