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

from kanjian.inference import bundle as b

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
    from kanjian.appliance_api.cli import main
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
    for cls in (
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    ):
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
    args = [
        "train", str(data), "--model", str(detect_model.pt), "--epochs", "2",
        "--imgsz", str(detect_model.imgsz), "--batch", "8", "--nbs", "8", "--workers", "0",
        "--optimizer", "AdamW", "--lr0", "0.0005", "--warmup-epochs", "0", "--close-mosaic", "0",
        "--no-val-each-epoch", "--project", str(tmp / "runs"), "--name", "neu-test",
        "--bundle", str(bundle), "--conf", "0.05", "--parity-conf", "0.02",
        "--golden-images", "3",
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
    assert manifest.training.data_summary["images"] == {"train": 12, "val": 12}
    assert len(manifest.training.data_sha256) == 64
    parity_line = next(line for line in run.stderr.splitlines() if line.startswith("parity"))
    assert "PASS" in parity_line
    # the gate compared real detections, not two empty lists
    reference = int(parity_line.split("reference ")[1].split(",")[0])
    assert reference >= 5, parity_line
    golden = b.GoldenSet.model_validate_json((bundle / "golden" / "expected.json").read_text())
    assert len(golden.images) == 3
    assert sum(len(g.detections) for g in golden.images) > 0


def _model_check(bundle: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kanjian"
    return subprocess.run(
        [str(exe), "model", "check", str(bundle)], capture_output=True, text=True, timeout=300
    )


def test_model_check_accepts_the_bundle(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str],
) -> None:
    run = _model_check(trained_bundle[0])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK" in run.stdout


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


def _perturb_weights(onnx_path: Path) -> None:
    """Scale the largest float weight tensor of the model by 1.5 (a different model)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).astype(np.float32) * 1.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(onnx_path))


def test_model_check_refuses_changed_weights_with_a_matching_hash(
    trained_bundle: tuple[Path, subprocess.CompletedProcess[str], str], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle[0], bundle)
    _perturb_weights(bundle / b.MODEL_NAME)
    manifest = b.read_manifest(bundle)
    b.write_manifest(
        bundle, manifest.model_copy(update={"onnx_sha256": b.sha256_file(bundle / b.MODEL_NAME)})
    )
    run = _model_check(bundle)
    assert run.returncode == 1, run.stdout
    assert "golden" in run.stdout.lower() or "expected" in run.stdout


def test_parity_gate_fails_on_a_different_model(detect_model: Any, tmp_path: Path) -> None:
    from kanjian.training.gates import parity_gate

    onnx = tmp_path / "other.onnx"
    shutil.copyfile(detect_model.onnx, onnx)
    _perturb_weights(onnx)
    same = parity_gate(
        detect_model.pt, detect_model.onnx, detect_model.val_images,
        imgsz=detect_model.imgsz, conf=0.02,
    )  # fmt: skip
    other = parity_gate(
        detect_model.pt, onnx, detect_model.val_images, imgsz=detect_model.imgsz, conf=0.02
    )
    assert same.reference > 0 and same.passed, same.line()
    assert not other.passed, other.line()
    assert other.mismatches


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


def test_detect_bundle_fixture_is_a_checked_bundle(detect_bundle: Path) -> None:
    from kanjian.inference.golden import check_bundle

    report = check_bundle(detect_bundle)
    assert report.ok, report.problems
    golden = b.GoldenSet.model_validate_json(
        (detect_bundle / "golden" / "expected.json").read_text()
    )
    assert golden.conf == 0.05 and len(golden.images) == 4
    assert all(g.detections for g in golden.images)  # images with detections come first


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_train_segment_and_classify_bundles(
    task: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One epoch from the test model's checkpoint on a copy of its dataset, then
    the gates, a bundle, and ``kanjian model check``."""
    import yaml

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
    ]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "parity PASS" in run.stderr
    manifest = b.read_manifest(tmp_path / "bundle")
    assert manifest.task == task
    assert ("top1" if task == "classify" else "mask_mAP50") in manifest.metrics
    golden = b.GoldenSet.model_validate_json(
        (tmp_path / "bundle" / "golden" / "expected.json").read_text()
    )
    if task == "classify":
        assert all(g.top_class is not None and g.probs for g in golden.images)
    else:
        assert sum(len(g.detections) for g in golden.images) > 0
    check = _model_check(tmp_path / "bundle")
    assert check.returncode == 0, check.stdout
