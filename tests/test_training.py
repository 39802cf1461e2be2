"""``kanjian train`` offline end to end, the gates, bundles and ``kanjian model check``.

The training run happens in a child process whose every network attempt
(DNS lookup, socket connect, HTTP request) is caught by a Python audit hook
and written down; the test fails on any. It starts from the detect test
model's checkpoint (a local ``.pt``, as a user may give) so that one or two
epochs give real detections for the parity gate to compare.
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
from kanjian.inference.golden_set import GoldenSet
from tests.support import scores
from tests.support.onnx_edit import perturb_weights
from tests.support.testmodels import CLASS_NAMES

pytestmark = pytest.mark.slow

#: runs the kanjian CLI with an audit hook that records network attempts in $NET_LOG
_GUARD = textwrap.dedent(
    """
    import os, sys
    log = open(os.environ["NET_LOG"], "a")
    EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
              "socket.gethostbyaddr", "socket.sendto", "urllib.Request", "http.client.connect"}
    def hook(event, args):
        if event in EVENTS:
            log.write(f"{event} {args!r}\\n"); log.flush()
            raise OSError(f"network blocked by test: {event}")
    sys.addaudithook(hook)
    from kanjian.appliance_api.cli.main import main
    sys.argv = ["kanjian", *sys.argv[1:]]
    main()
    """
)


def _kanjian_offline(args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    net_log = tmp / "net.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env |= {"NET_LOG": str(net_log), "HOME": str(tmp / "home")}  # no settings from home
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(proxy, None)
    run = subprocess.run(
        [sys.executable, "-c", _GUARD, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp,
    )
    return run, net_log.read_text() if net_log.exists() else ""


def _small_dataset(neu_det_dir: Path, out: Path, per_class: int = 4) -> Path:
    from kanjian.training.importer import import_dataset

    src = out.parent / f"{out.name}-voc"
    for sub in ("images", "annotations"):
        (src / sub).mkdir(parents=True)
    # images the detect test model never saw (it took the lowest numbers)
    for cls in CLASS_NAMES:
        stems = sorted(
            (p.stem for p in (neu_det_dir / "images").glob(f"{cls}_*.jpg")),
            key=lambda s: -int(s.rsplit("_", 1)[1]),
        )[:per_class]
        for s in stems:
            (src / "images" / f"{s}.jpg").symlink_to(neu_det_dir / "images" / f"{s}.jpg")
            (src / "annotations" / f"{s}.xml").symlink_to(neu_det_dir / "annotations" / f"{s}.xml")
    import_dataset(src, out, val_fraction=0.5, seed=0)
    return out / "data.yaml"


@pytest.fixture(scope="module")
def trained_bundle(
    detect_model: Any, neu_det_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], str]:
    """``kanjian train`` for 2 epochs, offline, from the detect test model's checkpoint."""
    tmp = tmp_path_factory.mktemp("train")
    data = _small_dataset(neu_det_dir, tmp / "data")
    bundle = tmp / "bundle"
    # the gate must compare real detections: a conf at which the starting model keeps one
    # on at least 5 of these val images, halved for what 2 epochs may move its scores
    val = tuple(sorted((tmp / "data" / "images" / "val").glob("*.jpg")))
    per = scores.detection_scores(detect_model.onnx, val)
    parity_conf = min(0.02, round(scores.conf_with_detections(per, 5) / 2, 6))
    args = [
        "train", str(data), "--model", str(detect_model.pt), "--epochs", "2",
        "--imgsz", str(detect_model.imgsz), "--batch", "8", "--nbs", "8", "--workers", "0",
        "--optimizer", "AdamW", "--lr0", "0.0005", "--warmup-epochs", "0", "--close-mosaic", "0",
        "--no-val-each-epoch", "--project", str(tmp / "runs"), "--name", "neu-test",
        "--bundle", str(bundle), "--conf", "0.05", "--parity-conf", str(parity_conf),
        "--golden-images", "3", "--fail-conf", "0.4", "--review-conf", "0.15",
        "--set", "scale=0.3", "--set", "hsv_h=0",
        "--min-map50", "0",  # a weak test model's mAP50 is no fixed number: report only
    ]  # fmt: skip
    run, net = _kanjian_offline(args, tmp)
    return bundle, run, net


def test_train_offline_writes_a_bundle_that_passes_parity(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str],
) -> None:
    bundle, run, net = trained_bundle
    assert run.returncode == 0, run.stderr[-4000:]
    assert net == "", f"network attempts during training:\n{net}"
    # progress is visible: epochs and losses (Ultralytics logs to stdout)
    output = run.stdout + run.stderr
    assert "1/2" in output and "2/2" in output and "box_loss" in output
    manifest = b.read_manifest(bundle)
    assert manifest.task == "detect"
    assert manifest.class_names[0] == "crazing" and len(manifest.class_names) == 6
    assert manifest.onnx_sha256 == b.sha256_file(bundle / b.MODEL_NAME)
    assert manifest.metrics["parity_match_rate"] >= 0.99
    assert 0.0 <= manifest.metrics["mAP50"] <= 1.0
    assert 0.0 <= manifest.metrics["mAP50-95"] <= manifest.metrics["mAP50"]
    assert manifest.training.command.startswith("kanjian train")
    assert manifest.rules is not None  # the station judges with these unless told otherwise
    # --set reached Ultralytics (its own record of the run's arguments)
    args = yaml.safe_load((bundle.parent / "runs" / "neu-test" / "args.yaml").read_text())
    assert (args["scale"], args["hsv_h"]) == (0.3, 0)
    assert (manifest.rules.default.fail_confidence, manifest.rules.default.review_confidence) == (
        0.4,
        0.15,
    )
    assert manifest.training.data_summary["images"] == {"train": 12, "val": 12}
    assert len(manifest.training.data_sha256) == 64
    parity_line = next(line for line in run.stderr.splitlines() if line.startswith("parity"))
    assert "PASS" in parity_line
    # the gate compared real detections, not two empty lists
    reference = int(parity_line.split("reference ")[1].split(",")[0])
    assert reference >= 5, parity_line
    golden = GoldenSet.model_validate_json((bundle / "golden" / "expected.json").read_text())
    assert len(golden.images) == 3
    assert sum(len(g.detections) for g in golden.images) > 0


def _model_check(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kanjian"
    return subprocess.run(
        [str(exe), "model", "check", str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_model_check_accepts_the_bundle(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str],
) -> None:
    run = _model_check(trained_bundle[0])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK" in run.stdout and "on CPUExecutionProvider" in run.stdout
    # as a CUDA station would replay it: on a machine without CUDA that fails, naming
    # the provider and the way out, unless the fallback is allowed (then the CPU says so)
    import torch

    run = _model_check(trained_bundle[0], "--providers", "cuda,cpu")
    if not torch.cuda.is_available():
        assert run.returncode == 1, run.stdout + run.stderr
        assert "FAIL execution provider CUDAExecutionProvider" in run.stdout
        assert "model.allow_fallback: true" in run.stdout
    run = _model_check(trained_bundle[0], "--providers", "cuda,cpu", "--allow-fallback")
    assert run.returncode == 0, run.stdout + run.stderr
    want = "CUDAExecutionProvider" if torch.cuda.is_available() else "CPUExecutionProvider"
    assert f"on {want}" in run.stdout


def test_model_check_refuses_altered_onnx_bytes(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle[0], bundle)
    with (bundle / b.MODEL_NAME).open("ab") as f:
        f.write(b"\0")
    run = _model_check(bundle)
    assert run.returncode == 1
    assert "sha256" in run.stdout


def test_model_check_refuses_changed_weights_with_a_matching_hash(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle[0], bundle)
    perturb_weights(bundle / b.MODEL_NAME)
    manifest = b.read_manifest(bundle)
    b.write_manifest(
        bundle, manifest.model_copy(update={"onnx_sha256": b.sha256_file(bundle / b.MODEL_NAME)})
    )
    run = _model_check(bundle)
    assert run.returncode == 1, run.stdout
    assert "golden" in run.stdout.lower() or "expected" in run.stdout


def test_train_refuses_missing_weights_instead_of_downloading(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: dent}\n")
    run, net = _kanjian_offline(["train", str(data), "--model", "yolo11n.pt"], tmp_path)
    assert run.returncode == 2
    assert "yolo11n.pt" in run.stderr and "never downloaded" in run.stderr
    assert net == ""


def test_dataset_summary_in_manifest_matches_the_import(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str],
) -> None:
    bundle = trained_bundle[0]
    manifest = b.read_manifest(bundle)
    summary = json.loads((bundle.parent / "data" / "summary.json").read_text())
    assert manifest.training.data_sha256 == summary["data_sha256"]
    assert manifest.training.data_summary["boxes_per_class"] == summary["boxes_per_class"]


def test_detect_bundle_fixture_is_a_checked_bundle(detect_bundle: Path, detect_model: Any) -> None:
    from kanjian.inference.golden import check_bundle
    from kanjian.training.package import _lower_confs

    report = check_bundle(detect_bundle)
    assert report.ok, report.problems
    golden = GoldenSet.model_validate_json((detect_bundle / "golden" / "expected.json").read_text())
    # what the set holds follows from the model's measured top scores: the bundle's conf
    # (0.05), or the first halving at which some val image keeps a detection
    tops = [float(s[0]) if len(s) else 0.0 for s in
            scores.detection_scores(detect_model.onnx, tuple(detect_model.val_images))]  # fmt: skip
    confs = _lower_confs(0.05)
    want = next((c for c in confs if max(tops) >= c), confs[-1])
    assert golden.conf == want and len(golden.images) == 4
    # images with detections come first
    with_dets = min(4, sum(t >= want for t in tops))
    assert sum(bool(g.detections) for g in golden.images) == with_dets, (tops, golden.conf)


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_train_segment_and_classify_bundles(
    task: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One epoch from the test model's checkpoint on a copy of its dataset, then
    the gates, a bundle, and ``kanjian model check``."""
    model = request.getfixturevalue(f"{task}_model")
    data_dir = tmp_path / "data"
    shutil.copytree(model.data_dir, data_dir)
    data = data_dir
    if task == "segment":
        data = data_dir / "data.yaml"
        raw = yaml.safe_load(data.read_text())
        data.write_text(yaml.safe_dump({**raw, "path": str(data_dir)}))
    exe = Path(sys.executable).parent / "kanjian"
    args = [
        str(exe), "train", str(data), "--task", task, "--model", str(model.pt),
        "--epochs", "1", "--imgsz", str(model.imgsz), "--batch", "8", "--nbs", "8",
        "--lr0", "0.0001", "--optimizer", "AdamW", "--warmup-epochs", "0",
        "--close-mosaic", "0", "--workers", "0", "--project", str(tmp_path / "runs"),
        "--name", task, "--bundle", str(tmp_path / "bundle"), "--conf", "0.05",
        "--parity-conf", "0.02", "--golden-images", "2",
        "--min-map50", "0",  # a weak test model's mAP50 is no fixed number: report only
    ]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "parity PASS" in run.stderr
    manifest = b.read_manifest(tmp_path / "bundle")
    assert manifest.task == task
    assert ("top1" if task == "classify" else "mask_mAP50") in manifest.metrics
    golden = GoldenSet.model_validate_json(
        (tmp_path / "bundle" / "golden" / "expected.json").read_text()
    )
    if task == "classify":
        assert all(g.top_class is not None and g.probs for g in golden.images)
    else:
        assert sum(len(g.detections) for g in golden.images) > 0
    check = _model_check(tmp_path / "bundle")
    assert check.returncode == 0, check.stdout


def test_train_refuses_to_replace_an_earlier_run_before_training(
    detect_model: Any, tmp_path: Path
) -> None:
    """An earlier run's weights (or bundle) are never deleted without --overwrite."""
    data = detect_model.data
    earlier = tmp_path / "runs" / "model" / "weights"
    earlier.mkdir(parents=True)
    (earlier / "best.pt").write_bytes(b"hours of training")
    base = [
        "train", str(data), "--model", str(detect_model.pt), "--epochs", "1",
        "--imgsz", str(detect_model.imgsz), "--project", str(tmp_path / "runs"),
    ]  # fmt: skip
    run, _ = _kanjian_offline(base, tmp_path)
    assert run.returncode == 2 and "--overwrite" in run.stderr, run.stderr[-2000:]
    assert str(tmp_path / "runs" / "model") in run.stderr.replace("\n", "")
    assert (earlier / "best.pt").read_bytes() == b"hours of training"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    run, _ = _kanjian_offline([*base, "--name", "other", "--bundle", str(bundle)], tmp_path)
    assert run.returncode == 2 and "a bundle is there" in run.stderr, run.stderr[-2000:]
    assert (bundle / "manifest.json").read_text() == "{}"
    assert not (tmp_path / "runs" / "other").exists()  # refused before any training


def test_train_refuses_rules_that_name_an_unknown_class(detect_model: Any, tmp_path: Path) -> None:
    args = [
        "train", str(detect_model.data), "--model", str(detect_model.pt),
        "--project", str(tmp_path / "runs"), "--pass-class", "scratchez",
    ]  # fmt: skip
    run, _ = _kanjian_offline(args, tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "scratchez" in run.stderr and "scratches" in run.stderr
    bad = [*args[:-2], "--fail-conf", "0.2", "--review-conf", "0.3"]
    run, _ = _kanjian_offline(bad, tmp_path)
    assert run.returncode == 2 and "--review-conf must be <= --fail-conf" in run.stderr
    for pair, says in (
        ("degress=10", "did you mean degrees"),
        ("name=x", "kanjian sets name itself"),
        ("scale", "expected KEY=VALUE"),
    ):
        run, _ = _kanjian_offline([*args[:-2], "--set", pair], tmp_path)
        assert run.returncode == 2 and says in run.stderr, (pair, run.stderr[-2000:])
    assert not (tmp_path / "runs").exists()


def test_golden_set_lowers_its_conf_until_it_holds_detections(
    detect_model: Any, tmp_path: Path
) -> None:
    """Above the model's best measured score it finds nothing: a set of empty images would
    pass any weights, so the conf is halved until the chosen images hold detections."""
    from kanjian.training.package import write_golden

    per = scores.detection_scores(detect_model.onnx, tuple(detect_model.val_images))
    above = round((1 + max(float(s[0]) for s in per if len(s))) / 2, 6)  # nothing scores it
    shutil.copyfile(detect_model.onnx, tmp_path / b.MODEL_NAME)
    golden = write_golden(tmp_path, detect_model.val_images, conf=above, iou=0.7, count=3)
    assert golden.conf < above
    assert sum(len(g.detections) for g in golden.images) > 0
    assert all(d.confidence >= golden.conf for g in golden.images for d in g.detections)
    on_disk = GoldenSet.model_validate_json((tmp_path / "golden" / "expected.json").read_text())
    assert on_disk == golden


def test_amp_check_needs_no_download_and_device_auto_follows_torch() -> None:
    """Ultralytics' AMP check downloads yolo26n.pt on a GPU; ours replaces it."""
    import torch

    from kanjian.training._env import offline_check_amp, ultralytics_module
    from kanjian.training.train import resolve_device

    ultralytics_module()
    from ultralytics.engine import trainer

    assert trainer.check_amp is offline_check_amp
    assert offline_check_amp(torch.nn.Linear(2, 2)) is False  # CPU: no AMP
    assert resolve_device("auto") == ("0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("1") == "1"


def test_summary_and_hash_of_a_dataset_not_made_by_kanjian(tmp_path: Path) -> None:
    """A hand-written data.yaml whose ``path:`` points elsewhere: its files are counted
    and hashed, not the folder data.yaml sits in."""
    import cv2
    import numpy as np

    from kanjian.training.layout import dataset_sha256
    from kanjian.training.package import data_summary_for

    root = tmp_path / "elsewhere"
    for split, stems in {"train": ["a", "b", "c"], "val": ["d"]}.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for s in stems:
            cv2.imwrite(str(root / "images" / split / f"{s}.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "labels" / "train" / "a.txt").write_text("0 .5 .5 .2 .2\n1 .3 .3 .1 .1\n")
    (root / "labels" / "train" / "b.txt").write_text("1 .5 .5 .2 .2\n")
    (root / "labels" / "val" / "d.txt").write_text("0 .5 .5 .2 .2\n")
    (root / "labels" / "train" / "c.txt").write_bytes(b"\xff\xfe junk")  # Ultralytics skips it
    data = tmp_path / "configs" / "data.yaml"
    data.parent.mkdir()
    raw = {"path": str(root), "train": "images/train", "val": "images/val",
           "names": {0: "dent", 1: "scratch"}}  # fmt: skip
    data.write_text(yaml.safe_dump(raw))
    summary, sha = data_summary_for(data)
    assert summary["images"] == {"train": 3, "val": 1}
    assert summary["boxes_per_class"] == {"dent": 2, "scratch": 2}
    assert (summary["images_without_labels"], summary["unreadable_label_files"]) == (0, 1)
    assert summary["class_names"] == ["dent", "scratch"]
    assert sha == dataset_sha256(root) != dataset_sha256(data.parent)
    (root / "labels" / "train" / "b.txt").write_text("0 .5 .5 .2 .2\n")
    assert data_summary_for(data)[1] != sha  # a changed label is a different dataset


def test_a_relative_dataset_path_is_resolved_as_ultralytics_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ultralytics reads a relative ``path:`` from the current directory, not from the
    yaml's folder: the gates and the manifest must look at the same files."""
    from kanjian.training._env import ultralytics_module
    from kanjian.training.layout import training_root

    ultralytics_module()
    from ultralytics.data.utils import check_det_dataset

    (tmp_path / "work" / "ds" / "images" / "val").mkdir(parents=True)
    (tmp_path / "work" / "configs").mkdir()
    data = tmp_path / "work" / "configs" / "data.yaml"
    raw = {"path": "ds", "train": "images/val", "val": "images/val", "names": ["a"]}
    data.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "work")
    ours = training_root(data, raw)
    assert ours == (tmp_path / "work" / "ds").resolve()
    assert Path(check_det_dataset(str(data))["path"]).resolve() == ours
    del raw["path"]
    assert training_root(data, raw) == data.parent
