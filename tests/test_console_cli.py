"""The console's command-line friction (issue 13, point 5): ``model check`` on a folder,
an archive or a bare .onnx; ``config show FILE``; ``config validate`` checking named
files and suggesting the nearest key; ``kanjian train``'s weak-model gate (the gate
function itself: training a model here would take minutes)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from kanjian.station.config import DEMO_MODEL

KANJIAN = Path(sys.executable).with_name("kanjian")


def _kanjian(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KANJIAN), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def _archives(tmp: Path) -> dict[str, Path]:
    """The demo bundle packed as a station takes uploads: .zip (a folder at the top),
    .tar.gz, and a .tar with manifest.json at the top."""
    z = tmp / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(DEMO_MODEL.rglob("*")):
            zf.write(p, f"neu/{p.relative_to(DEMO_MODEL)}")
    tgz = tmp / "bundle.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(DEMO_MODEL, arcname="neu")
    tar = tmp / "bundle.tar"
    with tarfile.open(tar, "w") as tf:
        for p in sorted(DEMO_MODEL.iterdir()):
            tf.add(p, arcname=p.name)
    return {"zip": z, "tgz": tgz, "tar": tar}


def test_model_check_takes_a_folder_an_archive_or_an_onnx(tmp_path: Path) -> None:
    folder = _kanjian("model", "check", str(DEMO_MODEL))
    assert folder.returncode == 0, folder.stdout + folder.stderr
    assert "golden images reproduced" in folder.stdout
    for kind, archive in _archives(tmp_path).items():
        r = _kanjian("model", "check", str(archive))
        assert r.returncode == 0, (kind, r.stdout + r.stderr)
        assert f"OK {archive}:" in r.stdout and "golden images reproduced" in r.stdout, kind
        assert "Errno" not in r.stdout + r.stderr
    onnx = _kanjian("model", "check", str(DEMO_MODEL / "model.onnx"))
    assert onnx.returncode == 0, onnx.stdout + onnx.stderr
    assert "loads on CPUExecutionProvider (detect, 6 classes" in onnx.stdout


def test_model_check_refuses_an_altered_archive_and_names_what_is_wrong(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(DEMO_MODEL, bundle)
    with (bundle / "model.onnx").open("ab") as f:
        f.write(b"\0")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(bundle, arcname="b")
    (tmp_path / "b.tar.gz").write_bytes(buf.getvalue())
    r = _kanjian("model", "check", str(tmp_path / "b.tar.gz"))
    assert r.returncode == 1 and "sha256" in r.stdout, r.stdout + r.stderr
    (tmp_path / "notes.txt").write_text("not a bundle")
    r = _kanjian("model", "check", str(tmp_path / "notes.txt"))
    assert r.returncode == 1 and "not a .zip, .tar.gz or .tar" in r.stdout
    r = _kanjian("model", "check", str(tmp_path / "missing.zip"))
    assert r.returncode == 1 and "no such file or folder" in r.stdout
    assert "Traceback" not in r.stderr


def test_config_show_takes_the_file_as_validate_does(tmp_path: Path) -> None:
    cfg = tmp_path / "station.yaml"
    cfg.write_text("station: {id: press-7}\n")
    for args in (["config", "show", str(cfg)], ["config", "show", "--config", str(cfg)]):
        r = _kanjian(*args)
        assert r.returncode == 0, r.stderr
        assert "id: press-7" in r.stdout
    assert "id: press-7" not in _kanjian("config", "show").stdout  # the embedded default


def test_config_validate_suggests_the_nearest_key_and_checks_named_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "store: {daat_dir: x}\n"
        "sync: {mqtt: {hots: broker}}\n"
        "camera: {kind: folder, path: imgs, pattren: '*.jpg'}\n"
        "zzzz: 1\n"
    )
    r = _kanjian("config", "validate", str(bad))
    assert r.returncode == 1
    assert "line 1: store.daat_dir: unknown key (not allowed here); did you mean 'data_dir'?" in (
        r.stderr
    )
    assert (
        "line 2: sync.mqtt.hots: unknown key (not allowed here); did you mean 'host'?" in r.stderr
    )
    assert "camera.pattren: unknown key (not allowed here); did you mean 'pattern'?" in r.stderr
    assert "line 4: zzzz: unknown key (not allowed here)\n" in r.stderr  # nothing close
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "camera: {kind: folder, path: imgs}\nmodel: {path: models/neu-v3}\n"
        "plc: {recipes: {7: recipes/a}}\n"
    )
    r = _kanjian("config", "validate", str(missing))
    assert r.returncode == 1, r.stdout
    assert f"line 1: camera.path: {tmp_path / 'imgs'} does not exist" in r.stderr
    assert f"line 2: model.path: {tmp_path / 'models/neu-v3'} does not exist" in r.stderr
    assert f"line 3: plc.recipes.7: {tmp_path / 'recipes/a'} does not exist" in r.stderr
    (tmp_path / "imgs").write_text("a file, not a folder")
    shutil.copytree(DEMO_MODEL, tmp_path / "models" / "neu-v3")
    shutil.copytree(DEMO_MODEL, tmp_path / "recipes" / "a")
    r = _kanjian("config", "validate", str(missing))
    assert r.returncode == 1 and "camera.path" in r.stderr and "is not a folder" in r.stderr
    assert "model.path" not in r.stderr and "recipes" not in r.stderr
    (tmp_path / "imgs").unlink()
    (tmp_path / "imgs").mkdir()
    r = _kanjian("config", "validate", str(missing))
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr


def _parity(reference: int, onnx: int) -> object:
    from kanjian.training.gates import ParityReport

    matched = min(reference, onnx)
    rate = 1.0 if reference == onnx == 0 else matched / max(reference, onnx)
    return ParityReport(
        images=50, conf=0.1, iou=0.7, reference=reference, onnx=onnx, matched=matched,
        match_rate=rate, min_rate=0.99, mismatches=(),
    )  # fmt: skip


def test_weak_gate_refuses_low_map_and_parity_that_compared_nothing() -> None:
    from kanjian.training.weak import DEFAULT_MIN_MAP50, weak_before_bundle

    good = {"mAP50": 0.41, "mAP50-95": 0.2}
    assert weak_before_bundle("detect", good, DEFAULT_MIN_MAP50, _parity(30, 30)) == []  # type: ignore[arg-type]
    low = weak_before_bundle("detect", {"mAP50": 0.0}, DEFAULT_MIN_MAP50, _parity(0, 0))  # type: ignore[arg-type]
    assert len(low) == 2
    assert low[0] == f"accuracy FAIL: mAP50 0.0000 < --min-map50 {DEFAULT_MIN_MAP50}"
    assert "parity compared nothing" in low[1] and "50 val images at conf 0.1" in low[1]
    # 0: report only; the vacuous parity still counts
    assert len(weak_before_bundle("segment", {"mAP50": 0.0}, 0.0, _parity(0, 0))) == 1  # type: ignore[arg-type]
    # classify: top-1 is the metric; parity counts images, never "nothing"
    cls = weak_before_bundle("classify", {"top1": 0.02}, DEFAULT_MIN_MAP50, _parity(0, 0))  # type: ignore[arg-type]
    assert cls == [f"accuracy FAIL: top1 0.0200 < --min-map50 {DEFAULT_MIN_MAP50}"]


def test_weak_gate_refuses_a_golden_set_without_a_detection() -> None:
    from kanjian.inference.golden_set import GoldenDetection, GoldenImage, GoldenSet
    from kanjian.training.weak import weak_golden

    empty = GoldenSet(conf=0.25, iou=0.7, images=[GoldenImage(file=f"{i}.jpg") for i in range(4)])
    msg = weak_golden("detect", empty)
    assert msg is not None and "no detection on its 4 images at conf 0.25" in msg
    one = GoldenDetection(xyxy=(1, 2, 3, 4), confidence=0.5, class_id=0)
    held = empty.model_copy(update={"images": [GoldenImage(file="a.jpg", detections=[one])]})
    assert weak_golden("detect", held) is None
    assert weak_golden("classify", empty) is None


def test_train_cli_default_and_flag_match_the_gate() -> None:
    from kanjian.training.weak import DEFAULT_MIN_MAP50

    r = _kanjian("train", "--help")
    assert r.returncode == 0, r.stderr
    assert "--allow-weak" in r.stdout and "--min-map50" in r.stdout
    assert f"[default: {DEFAULT_MIN_MAP50}]" in r.stdout.replace("\n", " ")


def test_pipeline_options_default_to_the_gate() -> None:
    from kanjian.training.pipeline import PipelineOptions
    from kanjian.training.weak import DEFAULT_MIN_MAP50

    opts = PipelineOptions(name="m", version="1")
    assert opts.min_map50 == DEFAULT_MIN_MAP50 and opts.allow_weak is False


def test_a_cold_kernel_cache_is_seen_before_compiling(tmp_path: Path) -> None:
    # the start-up says "compiling ..." before the silent seconds only when this is True
    code = "from kanjian.kernels.warmup import cache_is_cold; print(cache_is_cold())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "empty")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
