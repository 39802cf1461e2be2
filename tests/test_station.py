"""The station end to end: ``kanjian run`` over real files, one row per frame, bad input."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import pytest

from kanjian.station.config import ConfigError, load_config
from tests.support.station_config import parse, station_config, write_config

KANJIAN = str(Path(sys.executable).parent / "kanjian")


def _kanjian(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "COLUMNS": "200"}
    return subprocess.run(
        [KANJIAN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _rows(data_dir: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "kanjian.db")
    return db.execute(
        "SELECT seq, verdict, reason, uri, frame_id, model_sha256 FROM inspections ORDER BY seq"
    ).fetchall()


def _folder(folder: Path, loop: bool = False) -> dict[str, Any]:
    return {"kind": "folder", "path": str(folder), "loop": loop}


def _write_cfg(path: Path, camera: dict[str, Any], model: Path, **sections: Any) -> Path:
    """A station reading ``camera``, its data in ``data/`` beside the config file."""
    return write_config(path, station_config(Path("data"), bundle=model, camera=camera, **sections))


@pytest.fixture()
def image_folder(tmp_path: Path, neu_det_dir: Path) -> tuple[Path, int]:
    """12 real NEU-DET images plus a truncated JPEG and a non-image file."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted((neu_det_dir / "images").glob("*.jpg"))[:12]
    for p in src:
        shutil.copy(p, folder / p.name)
    data = src[0].read_bytes()
    (folder / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zz_not_an_image.jpg").write_bytes(b"this is not a JPEG")
    return folder, len(src) + 2


def test_folder_gives_one_row_per_file_and_error_rows(
    detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path
) -> None:
    folder, n = image_folder
    cfg = _write_cfg(tmp_path / "s.yaml", _folder(folder), detect_model.onnx)
    r = _kanjian("run", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = _rows(tmp_path / "data")
    assert len(rows) == n
    assert [row[0] for row in rows] == list(range(1, n + 1))
    by_uri = {Path(row[3]).name: row for row in rows}
    trunc, garbage = by_uri["zz_truncated.jpg"], by_uri["zz_not_an_image.jpg"]
    assert trunc[1] == "ERROR" and "truncated" in trunc[2] and "zz_truncated.jpg" in trunc[2]
    assert garbage[1] == "ERROR" and "zz_not_an_image.jpg" in garbage[2]
    judged = [row for row in rows if row[1] != "ERROR"]
    assert len(judged) == n - 2
    assert {row[5] for row in judged} == {_sha(detect_model.onnx)}


def _sha(p: Path) -> str:
    from kanjian.inference.bundle import sha256_file

    return sha256_file(p)


def test_video_lossless_one_row_per_frame(
    detect_model: Any, neu_det_dir: Path, tmp_path: Path
) -> None:
    video = tmp_path / "line.avi"
    imgs = [cv2.imread(str(p)) for p in sorted((neu_det_dir / "images").glob("*.jpg"))[:8]]
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (416, 416))
    n = 37
    for i in range(n):
        w.write(imgs[i % len(imgs)])
    w.release()
    cfg = _write_cfg(tmp_path / "v.yaml", {"kind": "video", "path": str(video)}, detect_model.onnx)
    r = _kanjian("run", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = _rows(tmp_path / "data")
    assert len(rows) == n
    assert [row[4] for row in rows] == list(range(n))
    assert all(row[1] in ("PASS", "FAIL", "REVIEW") for row in rows)


def test_frames_limit(detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path) -> None:
    folder, _ = image_folder
    cfg = _write_cfg(tmp_path / "s.yaml", _folder(folder, loop=True), detect_model.onnx)
    r = _kanjian("run", "-c", str(cfg), "--frames", "40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(_rows(tmp_path / "data")) == 40


def test_missing_and_corrupt_model_stop_startup(
    tmp_path: Path, image_folder: tuple[Path, int]
) -> None:
    folder, _ = image_folder
    missing = tmp_path / "nope" / "model.onnx"
    cfg = _write_cfg(tmp_path / "a.yaml", _folder(folder), missing)
    r = _kanjian("run", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 2
    assert str(missing) in r.stderr.replace("\n", "")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    cfg = _write_cfg(tmp_path / "b.yaml", _folder(folder), corrupt)
    r = _kanjian("run", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 2
    assert "corrupt.onnx" in r.stderr
    assert not (tmp_path / "data" / "kanjian.db").exists()  # nothing ran, nothing logged


def test_rules_naming_a_class_the_model_lacks_stop_startup(
    detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path
) -> None:
    folder, _ = image_folder
    rules = {"classes": {"scratchez": {"fail_confidence": 0.3}}}  # a typo
    cfg = _write_cfg(tmp_path / "r.yaml", _folder(folder), detect_model.onnx, rules=rules)
    r = _kanjian("run", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    text = r.stderr.replace("\n", "")
    assert "scratchez" in text and "scratches" in text  # the typo and the real names
    assert not (tmp_path / "data" / "kanjian.db").exists()


def test_config_validate_names_key_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("station:\n  id: s1\nstore:\n  data_dir: d\n  batch_max_rowz: 10\n")
    r = _kanjian("config", "validate", str(cfg), cwd=tmp_path)
    assert r.returncode == 1
    assert "store.batch_max_rowz" in r.stderr and "line 5" in r.stderr
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert [(i.location, i.line) for i in e.value.issues] == [("store.batch_max_rowz", 5)]


def test_config_errors_inside_camera_union_and_values(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "camera:\n  kind: folder\n  path: x\n  lop: true\npolicy: sometimes\nmodel:\n  iou: 1.5\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    got = {(i.location, i.line) for i in e.value.issues}
    assert ("camera.lop", 4) in got
    assert ("policy", 5) in got
    assert ("model.iou", 7) in got
    good = tmp_path / "good.yaml"
    good.write_text("camera: {kind: folder, path: x}\n")
    (tmp_path / "x").mkdir()  # validate checks that the folder a config names exists
    r = _kanjian("config", "validate", str(good), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_opcua_sign_encrypt_needs_its_trusted_clients_named(tmp_path: Path) -> None:
    cfg = tmp_path / "ua.yaml"
    sec = "{mode: sign_encrypt, certificate: s.der, private_key: s.pem"
    cfg.write_text(f"plc: {{opcua: {{security: {sec}}}}}}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "trusted_clients" in str(e.value) and "trust_any_client" in str(e.value)
    cfg.write_text(f"plc: {{opcua: {{security: {sec}, trust_any_client: true}}}}}}\n")
    assert load_config(cfg).plc.opcua.security.trust_any_client


def test_camera_triggered_needs_triggered_mode(tmp_path: Path) -> None:
    cfg = tmp_path / "hw.yaml"
    cfg.write_text("trigger:\n  camera_triggered: true\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    [issue] = e.value.issues
    assert issue.location == "trigger" and "camera_triggered needs mode: triggered" in issue.message


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    cfg = site / "station.yaml"
    cfg.write_text(
        "camera: {kind: folder, path: images}\nmodel: {path: models/m}\n"
        "store: {data_dir: data}\n"
        "sync: {mqtt: {tls: true, ca_file: tls/ca.pem, cert_file: tls/c.pem, key_file: /k.pem}}\n"
        "plc: {opcua: {security: {mode: sign_encrypt, certificate: pki/s.der, "
        "private_key: pki/s.pem, trusted_clients: [pki/a.der, /etc/b.der]}}}\n"
    )
    c = load_config(cfg)
    site = site.resolve()
    assert (c.camera.path, c.model.path, c.store.data_dir) == (  # type: ignore[union-attr]
        site / "images",
        site / "models/m",
        site / "data",
    )
    m = c.sync.mqtt
    assert (m.ca_file, m.cert_file, m.key_file) == (site / "tls/ca.pem", site / "tls/c.pem",
                                                    Path("/k.pem"))  # fmt: skip
    sec = c.plc.opcua.security
    assert (sec.certificate, sec.private_key) == (site / "pki/s.der", site / "pki/s.pem")
    assert sec.trusted_clients == [site / "pki/a.der", Path("/etc/b.der")]


def test_inspect_prints_verdicts(
    detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path
) -> None:
    folder, _ = image_folder
    good = sorted(folder.glob("*.jpg"))[0]
    r = _kanjian("inspect", "--model", str(detect_model.onnx), str(good), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert good.name in r.stdout and any(v in r.stdout for v in ("PASS", "FAIL", "REVIEW"))
    r = _kanjian(
        "inspect", "--model", str(detect_model.onnx), str(folder / "zz_truncated.jpg"), cwd=tmp_path
    )
    assert r.returncode == 1 and "ERROR" in r.stdout and "truncated" in r.stdout


def test_every_command_has_help(tmp_path: Path) -> None:
    for cmd in (
        ["--help"],
        ["run", "--help"],
        ["inspect", "--help"],
        ["config", "validate", "--help"],
    ):
        r = _kanjian(*cmd, cwd=tmp_path)
        assert r.returncode == 0 and "Usage" in r.stdout, (cmd, r.stderr)


def test_triggered_mode_one_row_per_trigger(
    detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path
) -> None:
    from kanjian.station.pipeline import build_station

    folder, _ = image_folder
    cfg = parse(
        station_config(
            tmp_path / "data",
            bundle=detect_model.onnx,
            camera=_folder(folder, loop=True),
            trigger={"mode": "triggered", "when_busy": "queue", "queue_size": 64},
        )
    )
    station = build_station(cfg)
    import threading

    t = threading.Thread(target=station.run, daemon=True)
    t.start()
    futures = [station.trigger(f"plc-{i}") for i in range(25)]
    results = [f.result(timeout=120) for f in futures]
    station.stop()
    t.join(30)
    station.close()
    assert [r.frame.trigger_id for r in results] == [f"plc-{i}" for i in range(25)]
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    got = db.execute("SELECT trigger_id, id FROM inspections ORDER BY seq").fetchall()
    assert got == [(r.frame.trigger_id, str(r.inspection_id)) for r in results]
    for r in results:  # judged, or an ERROR for the two bad files the folder holds
        bad = Path(r.frame.uri or "").name in ("zz_truncated.jpg", "zz_not_an_image.jpg")
        assert r.verdict.value == "ERROR" if bad else r.verdict.value in ("PASS", "FAIL", "REVIEW")


def test_two_workers_keep_frame_order_and_count(
    detect_model: Any, image_folder: tuple[Path, int], tmp_path: Path
) -> None:
    folder, _ = image_folder
    cfg = _write_cfg(
        tmp_path / "w.yaml",
        _folder(folder, loop=True),
        detect_model.onnx,
        runtime={"inference_workers": 2},
    )
    r = _kanjian("run", "-c", str(cfg), "--frames", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = _rows(tmp_path / "data")
    assert len(rows) == 60 and len({row[3] + str(row[4]) for row in rows}) == 60
    assert [row[4] for row in rows] == list(range(60))  # frame ids in commit order


def test_workers_and_numba_threads_conflict_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runtime:\n  inference_workers: 2\n  numba_threads: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.issues[0].location == "runtime" and "numba_threads" in e.value.issues[0].message


def test_refuse_policy_has_no_gap_between_taking_a_trigger_and_being_busy() -> None:
    from kanjian.station.triggers import TriggerQueue

    q = TriggerQueue(4, "refuse")
    first, refusal = q.submit("a")
    assert refusal is None
    assert q.get(1.0) is first and q.busy.is_set()  # taken and busy in one step
    _, refusal = q.submit("b")  # arrives while "a" is being judged
    assert refusal is not None and "busy" in refusal
    q.busy.clear()
    assert q.submit("c")[1] is None and q.get(0.0) is not None
    assert q.get(0.05) is None  # nothing waiting: a timeout, not a hang
