"""The second embedded demo: ``kanjian serve --demo magnetic-tile`` (and ``run``).

An anomaly bundle (``station/demo/magnetic-tile/model``) judges real magnetic-tile
images of the validation split, good and defective in turn, in a loop: no broker,
SQLite in a data folder of its own. Every row must carry the score the bundle's
calibration gives the image (ONNX Runtime on the reference letterbox), the verdict
that score implies under the bundle's rules, and its defect regions where it fails
(:mod:`tests.support.anomaly_oracle`); the API shows the stored score. Nothing here
depends on one bundle's numbers: the trained bundle replaces the stand-in as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from kanjian.camera.config import FolderSourceConfig
from kanjian.inference.bundle import MODEL_NAME, read_manifest, sha256_file
from kanjian.inference.golden import check_bundle
from kanjian.inference.model import load_model
from kanjian.station.config import StationConfig, default_config
from kanjian.station.demos import DEFAULT_DEMO, DEMOS, UnknownDemoError, get_demo
from tests.support import api as S
from tests.support.anomaly_oracle import AnomalyOracle, read_rows

ROOT = Path(__file__).resolve().parents[1]
DEMO = get_demo("magnetic-tile")
KINDS = ("blowhole", "break", "crack", "fray", "uneven")
#: ``NN_KIND_<the source file's name>``: the loop's order, what it shows, where it is from
IMAGE_NAME = re.compile(r"^(\d\d)_(good|" + "|".join(KINDS) + r")_(exp\d+_num_\d+\.jpg)$")


def _images() -> list[Path]:
    return sorted(DEMO.images.glob("*.jpg"))


def _kind(image: Path) -> str:
    """``good`` or the defect kind, from the file's name."""
    m = IMAGE_NAME.match(image.name)
    assert m, image
    return m[2]


def _live_inspections(client: httpx.Client, n: int) -> list[dict[str, Any]]:
    """The next ``n`` inspections the screen's event stream pushes."""
    got: list[dict[str, Any]] = []
    with client.stream("GET", "/api/events", timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"inspection"' in line:
                ev = json.loads(line[6:])
                if "inspection" in ev:
                    got.append(ev["inspection"])
                if len(got) == n:
                    break
    return got


def test_bundle_passes_its_golden_check() -> None:
    report = check_bundle(DEMO.model)
    assert report.ok, report.problems
    assert report.images >= 1


def test_bundle_is_a_calibrated_anomaly_model_with_its_metrics() -> None:
    m = read_manifest(DEMO.model)
    assert m.task == "anomaly" and m.onnx_sha256 == sha256_file(DEMO.model / MODEL_NAME)
    assert m.calibration is not None and len(m.class_names) == 1
    for key in ("val_image_auroc", "val_pixel_auroc", "val_frr", "val_miss_rate"):
        assert 0.0 <= m.metrics[key] <= 1.0, key
    assert m.metrics["val_good"] > 0 and m.metrics["val_defect"] > 0
    model = load_model(DEMO.model, ("cpu",))
    assert model.info.task == "anomaly" and model.info.sha256 == m.onnx_sha256


def test_images_are_validation_parts_good_and_defective_in_turn() -> None:
    images = _images()
    parsed = [IMAGE_NAME.match(p.name) for p in images]
    assert all(parsed), [p.name for p, m in zip(images, parsed, strict=True) if not m]
    kinds = [m[2] for m in parsed if m]
    assert [int(m[1]) for m in parsed if m] == list(range(1, len(images) + 1))
    assert [k == "good" for k in kinds] == [i % 2 == 0 for i in range(len(kinds))]
    assert set(KINDS) <= set(kinds) and kinds.count("good") >= 5
    # the anomaly model learns "good" from the training list: none of the demo's parts
    train = set((ROOT / "docs/research/anomaly/differnet_mtd_train.txt").read_text().split())
    sources = [m[3] for m in parsed if m]
    assert not train & set(sources)
    assert all(p.stat().st_size < 100_000 for p in images)
    # the README names the source, the licence terms and every file it took
    readme = (DEMO.images.parent / "README.md").read_text(encoding="utf-8")
    assert "Surface defect saliency of magnetic tile" in readme and "validation" in readme
    for p in images:
        assert p.name in readme


def test_default_stays_neu_det_and_an_unknown_demo_lists_the_known_ones() -> None:
    assert DEFAULT_DEMO == "neu-det" and default_config() == StationConfig()
    assert default_config(demo="neu-det") == StationConfig()
    cfg = default_config(demo="magnetic-tile")
    cam = cfg.camera
    assert isinstance(cam, FolderSourceConfig) and cam.path == DEMO.images and cam.loop
    assert cfg.model.path == DEMO.model and cfg.store.data_dir == DEMO.data_dir
    assert DEMO.data_dir != StationConfig().store.data_dir  # the two stores never mix
    assert not cfg.sync.enabled
    with pytest.raises(UnknownDemoError) as e:
        default_config(demo="magnetic_tile")
    assert all(name in str(e.value) for name in DEMOS)


def test_cli_refuses_an_unknown_demo_and_a_demo_beside_a_config(tmp_path: Path) -> None:
    r = S.kanjian("run", "--demo", "steel", "--frames", "1", "--data-dir", str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown demo 'steel'" in r.stderr and all(n in r.stderr for n in DEMOS)
    cfg = tmp_path / "station.yaml"
    cfg.write_text("{}\n")
    r = S.kanjian("serve", "-c", str(cfg), "--demo", "magnetic-tile")
    assert r.returncode == 2 and "not both" in r.stderr, r.stdout + r.stderr
    r = S.kanjian("config", "show", "--demo", "magnetic-tile")
    assert r.returncode == 0, r.stderr
    assert f"path: {DEMO.model}" in r.stdout and f"data_dir: {DEMO.data_dir}" in r.stdout
    assert not list(tmp_path.glob("*/kanjian.db"))  # nothing started


def test_run_demo_judges_each_image_once_as_the_bundle_implies(tmp_path: Path) -> None:
    n = len(_images())
    r = S.kanjian("run", "--demo", "magnetic-tile", "--frames", str(n), "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = read_rows(tmp_path / "kanjian.db")
    assert [Path(x.uri) for x in rows] == _images()  # one loop, in name order
    assert AnomalyOracle(DEMO.model).check(rows) == []
    # a demo worth watching: some good part passes and some defective one fails
    shown = {(_kind(Path(x.uri)) == "good", x.verdict) for x in rows}
    assert (True, "PASS") in shown and (False, "FAIL") in shown, shown


def test_serve_demo_loops_and_the_api_shows_each_rows_score(tmp_path: Path) -> None:
    """``kanjian serve --demo magnetic-tile``: its own data folder in the working
    directory, one row per frame over more than one loop, each as the bundle implies."""
    images = _images()
    port = S.free_port()
    s = S.start_serve(None, port, tmp_path, timeout=180, args=["--demo", "magnetic-tile"])
    try:
        op = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"})
        S.wait_for(
            lambda: op.get("/api/status").json()["frames"] > len(images) + 2,
            120,
            what="more than one loop",
        )
        page = op.get("/api/inspections", params={"limit": 500}).json()["items"]
        live = _live_inspections(op, 3)
    finally:
        out = s.stop()
    assert s.proc.returncode == 0 and "store flushed" in out, out
    stopped = [line for line in out.splitlines() if line.startswith("stopped:")][-1]
    db = tmp_path / DEMO.data_dir / "kanjian.db"
    rows = read_rows(db)
    assert f"stopped: {len(rows)} inspections" in stopped  # one row per frame
    assert [x.seq for x in rows] == list(range(1, len(rows) + 1))
    assert [Path(x.uri) for x in rows] == [images[i % len(images)] for i in range(len(rows))]
    oracle = AnomalyOracle(DEMO.model)
    assert oracle.check(rows) == []
    # the API lists what the store holds, score included
    by_id = {x.id: x for x in rows}
    assert page and all(item["score"] == by_id[item["id"]].score for item in page)
    for ev in live:  # and the screen's events, to 6 decimals
        stored = by_id[ev["id"]].score
        assert stored is not None and ev["score"] == round(stored, 6), ev
    assert not (tmp_path / "kanjian-data").exists()  # the NEU-DET demo's store is untouched


def test_anomaly_doc_quotes_the_shipped_manifest() -> None:
    """docs/anomaly.md's shipped row and reproduce section are the manifest's own numbers."""
    m = read_manifest(DEMO.model)
    doc = (ROOT / "docs" / "anomaly.md").read_text(encoding="utf-8")
    x = m.metrics
    row = next(line for line in doc.splitlines() if "(shipped)**" in line)
    kinds = " / ".join(f"{x[f'val_auroc_{k}']:.3f}" for k in KINDS)
    for quoted in (
        f"**{x['val_image_auroc']:.3f}**",
        f"{x['calib_val_image_auroc']:.3f}",
        kinds,
        f"**{x['val_pixel_auroc']:.3f}**",
        f"{x['val_f1']:.3f}",
        f"{x['val_frr']:.3f} ({x['val_frr_upper95']:.3f})",
        f"{x['val_miss_rate']:.3f}",
    ):
        assert quoted in row, (quoted, row)
    assert m.onnx_sha256 in doc
    assert f"`{m.name}` v{m.version}" in doc
    assert f"--name {m.name} --version {m.version}" in doc  # the command that made it
    assert m.training.model_extra is not None
    steps = m.training.model_extra["method"]["steps"]
    assert f"{steps:,} steps" in row and f"--steps {steps}" in doc


def test_readme_quotes_the_shipped_manifest() -> None:
    m = read_manifest(DEMO.model)
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    x = m.metrics
    assert (
        f"image AUROC {x['val_image_auroc']:.3f}, pixel AUROC {x['val_pixel_auroc']:.3f}" in readme
    )
    assert f"--name {m.name} --version {m.version}" in readme
