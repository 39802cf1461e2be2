"""``kanjian doctor`` (issue 17, point 4): what is installed and usable, and what a
station config lacks to run; exit 1 exactly when a row fails.

Every run is a real ``kanjian doctor`` subprocess on this machine; what it reports is
held to what the test finds itself: the interpreter's version, ONNX Runtime's
providers, the demo bundle's manifest and golden set, the demo images on disk, the
font's glyphs read with fontTools (the doctor uses FreeType through Pillow), a port
the test holds, a data folder the test locks, a real Mosquitto.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from kanjian.inference.bundle import read_manifest
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from kanjian.station.demos import get_demo
from tests.peers import mosquitto as mosq
from tests.support import api as S
from tests.support.station_config import station_config, write_config

FONTS = S.REPO / "appliance_api" / "http" / "static" / "fonts"
CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA cannot run, even with a GPU


def doctor(*args: str) -> tuple[int, dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    """``kanjian doctor --json ARGS``: exit status, the report, its rows by (section, name)."""
    r = S.kanjian("doctor", "--json", *args, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    report = json.loads(r.stdout)
    rows = {(c["section"], c["name"]): c for c in report["checks"]}
    return r.returncode, report, rows


def _charset_cjk() -> list[str]:
    out = []
    for line in (FONTS / "charset.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("U+"):
            c = chr(int(line.split()[0][2:], 16))
            if CJK.match(c):
                out.append(c)
    return out


def test_the_demo_can_run_and_the_report_says_what_is_here(tmp_path: Path) -> None:
    from fontTools.ttLib import TTFont

    rc, report, rows = doctor("--data-dir", str(tmp_path / "data"))
    assert rc == 0 and report["ok"] is True, report
    assert report["config"] == "demo neu-det"
    assert not [c for c in report["checks"] if c["status"] == "fail"]
    assert rows["system", "python"]["detail"].startswith(platform.python_version() + " ")
    build = rows["onnxruntime", "build"]["detail"]
    assert all(p in build for p in ort.get_available_providers())
    assert rows["onnxruntime", "CPUExecutionProvider"]["status"] == "ok"
    # the font: charset.txt's CJK and ASCII characters have glyphs in both faces (fontTools)
    cjk = _charset_cjk()
    ascii_ = [chr(c) for c in range(0x21, 0x7F)]
    for face in ("KanjianSans-Regular.woff2", "KanjianSans-Bold.woff2"):
        cmap = {chr(c) for c in TTFont(FONTS / face).getBestCmap()}
        assert set(cjk) | set(ascii_) <= cmap
        row = rows["screen", face]
        assert row["status"] == "ok", row
        assert f"all {len(cjk)} CJK (zh) and {len(ascii_)} ASCII (en)" in row["detail"]
        assert "as recorded" in row["detail"]
    # the station: the demo's own model, golden set and images
    man = read_manifest(DEMO_MODEL)
    model = rows["station", "model"]
    assert model["status"] == "ok"
    assert model["detail"].startswith(f"{man.name} v{man.version} ({man.task}, ")
    assert "on CPUExecutionProvider" in model["detail"]
    golden = json.loads((DEMO_MODEL / "golden" / "expected.json").read_text())
    assert rows["station", "golden check"]["detail"] == (
        f"{len(golden['images'])} golden images reproduced on CPUExecutionProvider"
    )
    n_images = len(list(DEMO_IMAGES.glob("*.jpg")))
    assert f": {n_images} images, looping" in rows["station", "camera"]["detail"]
    assert rows["station", "data folder"]["status"] == "ok"
    assert rows["station", "free disk"]["status"] == "ok"
    assert rows["station", "sync"]["detail"] == "off (sync.enabled: false)"
    assert time.localtime().tm_zone in rows["clock", "time zone"]["detail"]
    # the table, for people
    r = S.kanjian("doctor", "--data-dir", str(tmp_path / "data"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("demo neu-det: can run as configured")
    assert not (tmp_path / "data").exists()  # the doctor looks; it makes nothing


def test_another_demo_by_name(tmp_path: Path) -> None:
    demo = get_demo("magnetic-tile")
    rc, report, rows = doctor("--demo", "magnetic-tile", "--data-dir", str(tmp_path / "d"))
    assert rc == 0 and report["config"] == "demo magnetic-tile", report
    man = read_manifest(demo.model)
    assert rows["station", "model"]["detail"].startswith(f"{man.name} v{man.version} (anomaly")
    assert rows["station", "golden check"]["status"] == "ok"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_station_that_cannot_run_is_named_row_by_row(tmp_path: Path, held_port: int) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cfg = station_config(
        a_file / "data",  # cannot be made: its parent is a file
        bundle=DEMO_MODEL,
        images=tmp_path / "no-images",
        model={"providers": ["cuda", "cpu"]},
        store={"min_free_mb": 10_000_000},  # ~9.5 TB
        api={"port": held_port},
        sync={"enabled": True, "mqtt": {"port": mosq.free_port()}},  # nothing listens
    )
    config = write_config(tmp_path / "station.yaml", cfg)
    rc, report, rows = doctor("-c", str(config))
    assert rc == 1 and report["ok"] is False
    failed = {k for k, c in rows.items() if c["status"] == "fail"}
    assert failed == {
        ("station", "camera.path"),
        ("station", "camera"),
        ("station", "model"),
        ("station", "data folder"),
        ("station", "free disk"),
        ("station", "api"),
    }, failed
    assert "does not exist" in rows["station", "camera.path"]["detail"]
    assert rows["station", "model"]["detail"].startswith(
        "execution provider CUDAExecutionProvider (first of model.providers) cannot run"
    )
    assert "model.allow_fallback: true" in rows["station", "model"]["detail"]
    for name in ("golden check", "rules"):
        assert rows["station", name]["status"] == "not checked"
    assert "Address already in use" in rows["station", "api"]["detail"]
    # a broker away is a warning: the station runs, its backlog grows
    assert rows["station", "mqtt broker"]["status"] == "warn"
    assert rows["onnxruntime", "CUDAExecutionProvider"]["status"] == "warn"
    r = S.kanjian("doctor", "-c", str(config), timeout=300)
    assert r.returncode == 1
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{config}: cannot run as configured (6 failed: ")


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    onnx = tmp_path / "bare" / "model.onnx"  # a bare .onnx: no golden set to replay
    onnx.parent.mkdir()
    shutil.copyfile(DEMO_MODEL / "model.onnx", onnx)
    broker = mosq.Mosquitto(tmp_path / "broker").start()
    try:
        cfg = station_config(
            tmp_path / "data",
            bundle=onnx,
            images=DEMO_IMAGES,
            model={"providers": ["tensorrt", "cuda", "cpu"], "allow_fallback": True},
            sync={"enabled": True, "mqtt": {"port": broker.port}},
        )
        rc, report, rows = doctor("-c", str(write_config(tmp_path / "station.yaml", cfg)))
    finally:
        broker.stop()
    assert rc == 0 and report["ok"] is True, [c for c in report["checks"] if c["status"] != "ok"]
    model = rows["station", "model"]
    assert model["status"] == "warn"
    assert "on CPUExecutionProvider, FALLBACK from TensorrtExecutionProvider: " in model["detail"]
    assert rows["station", "golden check"]["status"] == "warn"
    assert "bare .onnx" in rows["station", "golden check"]["detail"]
    assert rows["station", "mqtt broker"]["status"] == "ok"
    assert rows["station", "mqtt broker"]["detail"].startswith(f"127.0.0.1:{broker.port} reachable")
    for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if name in ort.get_available_providers():
            assert rows["onnxruntime", name]["status"] == "warn"
            assert "asked for in model.providers" in rows["onnxruntime", name]["detail"]


def test_an_invalid_config_fails_and_the_machine_is_still_described(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("model:\n  allow_fallbak: true\n")
    rc, report, rows = doctor("-c", str(config))
    assert rc == 1 and report["ok"] is False
    row = rows["station", "config"]
    assert row["status"] == "fail"
    assert "line 2: model.allow_fallbak" in row["detail"]
    assert "did you mean 'allow_fallback'" in row["detail"]
    assert rows["system", "python"]["status"] == "ok"
    assert ("station", "model") not in rows
    # usage errors are 2, as for every command
    both = S.kanjian("doctor", "-c", str(config), "--demo", "neu-det")
    assert both.returncode == 2 and "not both" in both.stderr
    unknown = S.kanjian("doctor", "--demo", "nope")
    assert unknown.returncode == 2 and "neu-det" in unknown.stderr


def test_a_running_station_is_named_and_its_port_is_not_a_failure(
    tmp_path: Path, held_port: int
) -> None:
    from kanjian.station.datalock import DataLock

    cfg = station_config(
        tmp_path / "data", bundle=DEMO_MODEL, images=DEMO_IMAGES, api={"port": held_port}
    )
    config = write_config(tmp_path / "station.yaml", cfg)
    lock = DataLock.acquire(tmp_path / "data", command="kanjian serve (this test)")
    try:
        rc, report, rows = doctor("-c", str(config))
    finally:
        lock.release()
    assert rc == 0, report
    running = rows["station", "running"]
    assert running["status"] == "info"
    assert f"PID {os.getpid()} (kanjian serve (this test))" in running["detail"]
    assert rows["station", "api"]["status"] == "info"


def _not_in(face: Path) -> str:
    """A hanzi the face has no glyph for (fontTools)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(face).getBestCmap()
    return next(chr(c) for c in range(0x4E00, 0xA000) if c not in cmap)


def test_the_font_check_finds_a_missing_glyph_a_changed_face_and_a_missing_one(
    tmp_path: Path,
) -> None:
    from kanjian.appliance_api.http.font_check import font_checks

    fonts = tmp_path / "fonts"
    shutil.copytree(FONTS, fonts)
    regular, bold = fonts / "KanjianSans-Regular.woff2", fonts / "KanjianSans-Bold.woff2"
    lacking = _not_in(regular)
    with (fonts / "charset.txt").open("a", encoding="utf-8") as f:
        f.write(f"U+{ord(lacking):04X} {lacking}\n")
    rows = {c.name: c for c in font_checks(fonts)}
    assert rows[regular.name].status == "warn"
    assert rows[regular.name].detail.endswith(f"ASCII characters of charset.txt: {lacking}")
    (fonts / "charset.txt").write_text((FONTS / "charset.txt").read_text(encoding="utf-8"))
    readme = fonts / "README.md"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace("`43e8635", "`0000000", 1), encoding="utf-8")
    bold.unlink()
    rows = {c.name: c for c in font_checks(fonts)}
    assert rows[regular.name].status == "warn"
    assert "NOT the one static/fonts/README.md records" in rows[regular.name].detail
    assert rows[bold.name].status == "warn" and "is missing" in rows[bold.name].detail
