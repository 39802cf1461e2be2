"""Bundles carry their training weights; ``kanjian train --model BUNDLE`` continues from them.

Two tiny real runs (one epoch on a quarter of the detect test model's training split,
128 px): the first, from the test model's checkpoint, writes a bundle with
``weights.pt``; the second starts from that bundle folder. A callback registered in
the second run's process reads the model Ultralytics is about to train (at
``on_train_start``) and compares its state_dict with the bundle's weights.pt,
tensor by tensor. The refusals (no weights.pt, altered weights.pt, another task)
come before any training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from kanjian.inference import bundle as b

pytestmark = pytest.mark.slow

#: the kanjian CLI, with a callback that compares the weights training starts from
#: with $START_WEIGHTS and writes the verdict to $CHECK_OUT
_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from kanjian.training._env import ultralytics_module
    ultralytics_module()  # offline first: importing Ultralytics may probe the network
    from ultralytics.utils import callbacks

    def check(trainer):
        import torch
        path = os.environ.get("START_WEIGHTS")
        if not path:
            return
        want = torch.load(path, map_location="cpu", weights_only=False)["model"]
        want = {k: v.float() for k, v in want.float().state_dict().items()}
        got = {k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()}
        differ = [k for k in want if k not in got or not torch.equal(got[k], want[k])]
        with open(os.environ["CHECK_OUT"], "w") as f:
            json.dump({"tensors": len(want), "model_tensors": len(got), "differ": differ}, f)

    callbacks.default_callbacks["on_train_start"].append(check)
    from kanjian.appliance_api.cli.main import main
    sys.argv = ["kanjian", *sys.argv[1:]]
    main()
    """
)


def _train(tmp: Path, *args: str, start: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env |= {"HOME": str(tmp / "home"), "CHECK_OUT": str(tmp / "check.json")}
    if start is not None:
        env["START_WEIGHTS"] = str(start)
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, "train", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp,
    )


def _tiny(data: Path, runs: Path, name: str, bundle: Path) -> list[str]:
    return [
        str(data), "--epochs", "1", "--imgsz", "128", "--batch", "8", "--nbs", "8",
        "--workers", "0", "--fraction", "0.25", "--no-val-each-epoch", "--warmup-epochs", "0",
        "--close-mosaic", "0", "--optimizer", "AdamW", "--lr0", "0.0001",
        "--project", str(runs), "--name", name, "--bundle", str(bundle), "--conf", "0.05",
        "--parity-conf", "0.02", "--parity-images", "6", "--golden-images", "2",
        "--min-map50", "0", "--allow-weak",  # a one-epoch model's accuracy is no fixed number
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first(detect_model: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data.yaml of a copy of the test model's dataset, the first run's bundle)."""
    tmp = tmp_path_factory.mktemp("from-bundle")
    shutil.copytree(detect_model.data_dir, tmp / "data")  # Ultralytics writes label caches
    data = tmp / "data" / "data.yaml"
    bundle = tmp / "first-bundle"
    run = _train(tmp, *_tiny(data, tmp / "runs", "first", bundle), "--model", str(detect_model.pt))
    assert run.returncode == 0, run.stderr[-4000:]
    return data, bundle


def test_train_puts_the_runs_weights_in_the_bundle(first: tuple[Path, Path]) -> None:
    _, bundle = first
    manifest = b.read_manifest(bundle)
    ref = manifest.training.weights
    assert ref is not None and ref.file == b.WEIGHTS_NAME
    weights = bundle / b.WEIGHTS_NAME
    assert ref.sha256 == b.sha256_file(weights) and ref.bytes == weights.stat().st_size
    run_weights = bundle.parent / "runs" / "first" / "weights"
    best = run_weights / "best.pt"
    assert (
        weights.read_bytes() == (best if best.is_file() else run_weights / "last.pt").read_bytes()
    )
    raw = json.loads((bundle / b.MANIFEST_NAME).read_text())
    # rules make it format 2; the weights raise nothing: readers of format 2 take extra
    # keys under training, so a station that predates weights.pt still reads the bundle
    assert raw["schema_version"] == 2
    assert raw["training"]["weights"]["sha256"] == ref.sha256
    check = subprocess.run(
        [str(Path(sys.executable).with_name("kanjian")), "model", "check", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK weights.pt: sha256 as the manifest records" in check.stdout
    # as a station takes an upload or a platform deploy: packed, unpacked within the
    # default api.max_unpacked_mb, its manifest read
    from kanjian.station.api_config import ApiConfig
    from kanjian.station.state.archive import extract_bundle, pack_bundle

    archive = bundle.parent / "first.tar.gz"
    pack_bundle(bundle, archive)
    limit = int(ApiConfig().max_unpacked_mb * 2**20)
    root = extract_bundle(archive, bundle.parent / "unpacked", limit)
    assert b.read_manifest(root) == manifest
    assert (root / b.WEIGHTS_NAME).read_bytes() == weights.read_bytes()


def test_train_from_a_bundle_starts_from_its_weights(
    first: tuple[Path, Path], tmp_path: Path
) -> None:
    data, bundle = first
    second = tmp_path / "second-bundle"
    args = _tiny(data, tmp_path / "runs", "second", second)
    run = _train(
        tmp_path, *args, "--model", str(bundle), "--no-weights", start=bundle / "weights.pt"
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"continuing from {bundle}" in run.stderr
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["tensors"] == check["model_tensors"] > 100, check
    assert check["differ"] == [], check  # every tensor: the bundle's weights, bit for bit
    manifest = b.read_manifest(second)
    assert not (second / b.WEIGHTS_NAME).exists() and manifest.training.weights is None
    assert "weights" not in json.loads((second / b.MANIFEST_NAME).read_text())["training"]
    first_manifest = b.read_manifest(bundle)
    assert manifest.training.model_extra is not None
    assert manifest.training.model_extra["started_from"] == {
        "bundle": str(bundle),
        "name": first_manifest.name,
        "version": first_manifest.version,
        "onnx_sha256": first_manifest.onnx_sha256,
    }
    assert manifest.training.model_extra["config"]["model"] == str(bundle / "weights.pt")


def test_train_from_a_bundle_refuses_before_training(
    first: tuple[Path, Path], detect_bundle: Path, tmp_path: Path
) -> None:
    data, bundle = first
    base = [str(data), "--epochs", "1", "--project", str(tmp_path / "runs")]
    run = _train(tmp_path, *base, "--model", str(detect_bundle))  # written without weights
    assert run.returncode == 2, run.stderr[-2000:]
    said = " ".join(run.stderr.split())
    assert "this bundle was made without weights.pt (kanjian train --no-weights" in said
    assert "pass the run's .pt" in said
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    with (altered / b.WEIGHTS_NAME).open("ab") as f:
        f.write(b"\0")
    run = _train(tmp_path, *base, "--model", str(altered))
    assert run.returncode == 2 and "altered or replaced" in run.stderr, run.stderr[-2000:]
    run = _train(tmp_path, *base, "--model", str(bundle), "--task", "segment")
    assert run.returncode == 2, run.stderr[-2000:]
    assert "a detect bundle; this run trains a segment model" in " ".join(run.stderr.split())
    # the bundle's classes in another order (as a tool that renumbers them alphabetically
    # would give back): each class would start from another one's weights
    raw = yaml.safe_load(data.read_text())
    names = [raw["names"][i] for i in sorted(raw["names"])]
    permuted = data.with_name("permuted.yaml")
    permuted.write_text(yaml.safe_dump({**raw, "names": dict(enumerate(reversed(names)))}))
    run = _train(tmp_path, str(permuted), *base[1:], "--model", str(bundle))
    assert run.returncode == 2, run.stderr[-2000:]
    said = " ".join(run.stderr.split())
    assert "the dataset has the bundle's classes in another order" in said, said
    assert f"bundle: {', '.join(names)}" in said and f"--model {bundle / 'weights.pt'}" in said
    assert not (tmp_path / "runs").exists()  # nothing trained
