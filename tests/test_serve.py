"""``kanjian serve`` as a real process: model swap under load, shutdown, tokens, restart.

The station inspects a looping folder of NEU-DET images while a second bundle
is uploaded, activated and rolled back. Afterwards the database must hold one
row per frame (no frame lost or judged twice), and each row must name the
model that judged it, in the order the swaps happened.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as S  # the servers and bundles tests share
from tests.support.station_config import station_config, write_config


@dataclass
class Site:
    tmp: Path
    config: Path
    port: int
    data: Path
    bundles: Any


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Site:
    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("serve")
    images = S.copy_images(tmp / "images", 30, step=11)
    port = S.free_port()
    config = write_config(
        tmp / "station.yaml",
        station_config(
            tmp / "data",
            bundle=bundles.a,
            images=images,
            camera={"loop": True},
            rules=bundles.rules_for(images),
            api={"port": port},
        ),
    )
    return Site(tmp, config, port, tmp / "data", bundles)


@pytest.fixture
def serve(site: Site) -> Iterator[Any]:
    procs: list[Any] = []

    def start() -> Any:
        s = S.start_serve(site.config, site.port, site.tmp)
        procs.append(s)
        return s

    yield start
    for p in procs:
        print(f"--- kanjian serve (exit {p.proc.returncode}) ---\n" + p.stop())


def _rows(site: Site) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(site.data / "kanjian.db")
    try:
        return con.execute(
            "SELECT seq, frame_id, model_sha256, verdict FROM inspections ORDER BY seq"
        ).fetchall()
    finally:
        con.close()


def _count(c: httpx.Client, sha: str) -> int:
    page = c.get("/api/inspections", params={"model_sha256": sha, "limit": 500}).json()
    return len(page["items"])


def test_model_swap_under_load_loses_and_repeats_nothing(site: Site, serve: Any) -> None:
    a, b = site.bundles.sha_a, site.bundles.sha_b
    s = serve()
    assert s.token, "the first start prints a screen token"
    engineer = S.make_token(site.data, "engineer", "eng-1")
    op = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120)
    eng = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {engineer}"}, timeout=300)
    S.wait_for(lambda: op.get("/api/status").json()["frames"] >= 20, 60, what="20 frames")
    r = eng.post("/api/models", content=S.pack(site.bundles.b))
    assert r.status_code == 201, r.text
    assert eng.post(f"/api/models/{b}/activate").status_code == 200
    S.wait_for(lambda: _count(op, b) >= 20, 60, what="20 rows judged by bundle b")
    assert eng.post("/api/models/rollback").json()["sha256"] == a
    n_a = _count(op, a)
    S.wait_for(lambda: _count(op, a) >= n_a + 20, 60, what="20 more rows by bundle a")
    # a tampered upload is refused while the loop runs, and bundle a keeps judging
    files = {p: p.read_bytes() for p in site.bundles.b.rglob("*") if p.is_file()}
    bad = site.tmp / "tampered"
    for p, data in files.items():
        q = bad / p.relative_to(site.bundles.b)
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if p.name == "model.onnx" else data)
    r = eng.post("/api/models", content=S.pack(bad))
    assert r.status_code == 422 and "sha256" in r.json()["detail"]
    frames = op.get("/api/status").json()["frames"]
    S.wait_for(
        lambda: op.get("/api/status").json()["frames"] >= frames + 10,
        60,
        what="the loop to go on after the refusal",
    )
    assert op.get("/api/status").json()["model"]["sha256"] == a
    out = s.stop()
    assert s.proc.returncode == 0, out
    last = [line for line in out.splitlines() if line.startswith("stopped:")][-1]
    n = int(last.split()[1])
    assert "store flushed" in last
    rows = _rows(site)
    assert len(rows) == n  # every frame the loop judged is a row
    assert [r[1] for r in rows] == list(range(n))  # and each frame exactly once
    assert all(r[2] in (a, b) for r in rows)
    runs = [k for k, _ in groupby(r[2] for r in rows)]
    assert runs == [a, b, a]  # each frame judged by one model, switching where we swapped
    con = sqlite3.connect(site.data / "kanjian.db")
    acts = con.execute("SELECT action, sha256 FROM model_activations ORDER BY id").fetchall()
    audit = con.execute(
        "SELECT action, actor FROM audit WHERE action LIKE 'model.%' ORDER BY id"
    ).fetchall()
    con.close()
    assert acts == [("boot", a), ("start", a), ("activate", b), ("rollback", a)]
    assert audit == [
        ("model.upload", "eng-1"),
        ("model.activate", "eng-1"),
        ("model.rollback", "eng-1"),
        ("model.upload_refused", "eng-1"),
    ]


def test_activation_survives_restart_and_tokens_from_the_cli(site: Site, serve: Any) -> None:
    """The model activated and the thresholds set through the API outlive a restart;
    tokens made and revoked with the CLI. Alone or after the swap test (same data
    folder): it registers bundle b itself when that test has not."""
    a, b = site.bundles.sha_a, site.bundles.sha_b
    engineer = S.make_token(site.data, "engineer", "eng-2")
    s = serve()
    assert s.token is None  # a token exists: no new screen token
    eng = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {engineer}"}, timeout=300)
    assert eng.get("/api/status").json()["model"]["sha256"] == a
    if b not in {m["sha256"] for m in eng.get("/api/models").json()["models"]}:
        r = eng.post("/api/models", content=S.pack(site.bundles.b, "tar"))
        assert r.status_code == 201, r.text
    assert eng.post(f"/api/models/{b}/activate").status_code == 200
    yaml_thr = eng.get("/api/thresholds").json()
    tuned = {"conf": 0.3, "iou": 0.6, "max_det": 40, "rules": {"default": {"fail_confidence": 0.7}}}
    assert eng.put("/api/thresholds", json=tuned).status_code == 200
    out = s.stop()
    assert s.proc.returncode == 0, out
    s2 = serve()
    assert eng.get(s2.url + "/api/status").json()["model"]["sha256"] == b
    # the engineer's thresholds outlive the restart, saying where they come from
    thr = eng.get(s2.url + "/api/thresholds").json()
    assert (thr["source"], thr["set_by"], thr["conf"], thr["max_det"]) == ("api", "eng-2", 0.3, 40)
    assert thr["rules"]["default"]["fail_confidence"] == 0.7
    assert "override station.yaml" in "".join(s2.lines)
    back = eng.delete(s2.url + "/api/thresholds").json()
    assert back == {**yaml_thr, "source": "station.yaml"}
    con = sqlite3.connect(site.data / "kanjian.db")
    assert con.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 0
    con.close()
    listed = subprocess.run(
        [str(S.KANJIAN), "token", "list", "--data-dir", str(site.data)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    tid = engineer.split("_")[1]
    assert tid in listed and "eng-2" in listed and engineer not in listed
    subprocess.run(
        [str(S.KANJIAN), "token", "revoke", tid, "--data-dir", str(site.data)],
        check=True,
        capture_output=True,
    )
    assert eng.get(s2.url + "/api/status").status_code == 401  # revoked at once
    s2.stop()
    assert s2.proc.returncode == 0


def test_ctrl_c_stops_cleanly_and_flushes(site: Site, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) while the loop runs: exit 0, and every frame judged is a row."""
    port = S.free_port()
    images = S.copy_images(tmp_path / "images", 8, step=13)
    config = write_config(
        tmp_path / "station.yaml",
        station_config(
            tmp_path / "data",
            bundle=site.bundles.a,
            images=images,
            camera={"loop": True},
            api={"port": port},
        ),
    )
    s = S.start_serve(config, port, tmp_path)
    try:
        with httpx.Client(
            base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=60
        ) as op:
            S.wait_for(lambda: op.get("/api/status").json()["frames"] >= 5, 60, what="5 frames")
            frames = op.get("/api/status").json()["frames"]
    finally:
        out = s.stop(sig=signal.SIGINT)
    assert s.proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    last = [line for line in out.splitlines() if line.startswith("stopped:")][-1]
    assert "store flushed" in last
    n = int(last.split()[1])
    assert n >= frames  # the loop went on until the signal, never backwards
    con = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    try:
        ids = [r[0] for r in con.execute("SELECT frame_id FROM inspections ORDER BY seq")]
    finally:
        con.close()
    assert ids == list(range(n))  # every frame judged before Ctrl-C is a row, once


def test_port_in_use_is_a_clear_error(site: Site) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [str(S.KANJIAN), "serve", "-c", str(site.config), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert r.returncode == 2
    assert f"127.0.0.1:{port} is in use" in r.stdout + r.stderr


def test_no_arguments_runs_the_embedded_demo(tmp_path: Path) -> None:
    """The README's first command: demo images, bundled model, data folder in the cwd."""
    from kanjian.station.config import DEMO_IMAGES

    port = S.free_port()
    s = S.start_serve(None, port, tmp_path)
    try:
        out = "".join(s.lines)
        assert f"operator screen: http://127.0.0.1:{port}/" in out
        assert s.token and s.token not in out  # stdout is a pipe: the token is in a file
        op = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"})
        S.wait_for(lambda: op.get("/api/status").json()["frames"] > 0, 60, what="a frame")
        st = op.get("/api/status").json()
        assert st["disk"]["path"] == str(tmp_path / "kanjian-data")
        first = op.get("/api/inspections", params={"limit": 1}).json()["items"][0]
        assert Path(first["uri"]).parent == DEMO_IMAGES
        assert httpx.get(s.url + "/").status_code == 200
    finally:
        out = s.stop()
    assert s.proc.returncode == 0 and "store flushed" in out
    assert (tmp_path / "kanjian-data" / "kanjian.db").is_file()
