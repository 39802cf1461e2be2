"""Helpers shared by the API, serve and web tests (this module holds no tests).

Test files load it with :func:`load` (pytest's importlib mode does not put
``tests/`` on ``sys.path``). Expensive things are cached on disk, so loading it
twice costs nothing.

Two distinct real bundles: ``a`` is the ``detect_model`` fixture's ONNX, ``b``
the same checkpoint exported again by our training code at a size 64 px
larger (another graph, another sha256). Both carry golden sets written by
``kanjian.training.package.write_bundle``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import scores as scores_mod
from tests.support.station_config import DECODE_CONF, station_config, write_config

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "test-models"
NEU_IMAGES = REPO.parent / "shared" / "datasets" / "neu-det" / "images"
KANJIAN = Path(sys.executable).with_name("kanjian")
CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Bundles:
    """Two bundles of the detect test model and what ``a`` scores on NEU-DET.

    Attributes:
        scores: NEU-DET file name -> bundle ``a``'s top detection confidence (0.0 if
            none), measured by :func:`tests.support.scores.measure`.
    """

    a: Path
    b: Path
    sha_a: str
    sha_b: str
    scores: dict[str, float]

    def rules_for(self, images: Path) -> dict[str, Any]:
        """Rules under which bundle ``a`` passes, reviews and fails about a third each
        of the images :func:`copy_images` put in ``images``."""
        names = [scores_mod.original_name(p) for p in sorted(images.glob("*.jpg"))]
        return scores_mod.rules_for(self.scores, names, DECODE_CONF)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_bundles(detect_model: Any) -> Bundles:
    """Bundles ``a`` and ``b`` of the test detect model and ``a``'s scores on every
    NEU-DET image (cached by the ONNX's sha256 and the scoring code).

    Made in a subprocess: running the model here would start Numba's thread pool
    in the test process before ``build_station`` chooses its threading layer.
    """
    from kanjian.inference.bundle import read_manifest

    h = hashlib.sha256(Path(detect_model.onnx).read_bytes())
    h.update(scores_mod.MEASURED_WITH.encode())
    key = h.hexdigest()[:16]
    folder = CACHE / f"api-bundles-{key}"
    with _locked(CACHE / f"api-bundles-{key}.lock"):
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    str(folder),
                    str(detect_model.onnx),
                    str(detect_model.pt),
                    str(detect_model.imgsz),
                    *(str(p) for p in detect_model.val_images),
                ],
                check=True,
                capture_output=True,
                cwd=folder,
                # the script imports tests.support.*: the checkout's root goes on its path
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, (str(REPO), os.environ.get("PYTHONPATH")))
                    ),
                },
                timeout=900,
            )
            (folder / "done").write_text("ok")
    a, b = folder / "a", folder / "b"
    return Bundles(
        a,
        b,
        read_manifest(a).onnx_sha256,
        read_manifest(b).onnx_sha256,
        scores_mod.load(folder / "scores.json"),
    )


def _write_bundles(folder: Path, onnx: Path, pt_src: Path, imgsz: int, val: list[Path]) -> None:
    from kanjian.inference.bundle import Thresholds, TrainingInfo
    from kanjian.training.export import export_onnx
    from kanjian.training.package import write_bundle

    # export from a copy: Ultralytics writes the ONNX beside the checkpoint, and the
    # fixture's own model.onnx lives there
    pt = folder / "model.pt"
    shutil.copyfile(pt_src, pt)
    alt = export_onnx(pt, folder / "alt.onnx", imgsz + 64)
    for name, model, version in (("a", onnx, "1.0"), ("b", alt, "1.1")):
        write_bundle(
            model,
            folder / name,
            name="neu-detect",
            version=version,
            thresholds=Thresholds(conf=DECODE_CONF, iou=0.7, max_det=100),
            metrics={},
            training=TrainingInfo(command="tests/support/api.py"),
            golden_candidates=val,
            golden_count=3,
        )
    scores_mod.measure(
        folder / "a" / "model.onnx", sorted(NEU_IMAGES.glob("*.jpg")), folder / "scores.json"
    )


def looping_station(tmp: Path, bundle: Path, n_images: int, step: int) -> tuple[Path, Path, int]:
    """A station.yaml under ``tmp`` whose folder camera loops over ``n_images`` NEU-DET
    images (every ``step``-th) on a free API port: ``(config, data folder, port)``."""
    port = free_port()
    images = copy_images(tmp / "images", n_images, step=step)
    cfg = station_config(
        tmp / "data", bundle=bundle, images=images, camera={"loop": True}, api={"port": port}
    )
    return write_config(tmp / "station.yaml", cfg), tmp / "data", port


def start_station(
    tmp: Path, n_images: int, bundles: Bundles, **sections: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """A station judging ``n_images`` NEU-DET images with bundle ``a`` under rules made
    from its scores (:meth:`Bundles.rules_for`), its API services started and its loop
    running. ``sections`` go to :func:`~tests.support.station_config.station_config`.

    Returns ``(station, state, config)``.
    """
    from kanjian.appliance_api.http.state import start_services
    from kanjian.station.config import load_config
    from kanjian.station.pipeline import build_station

    images = copy_images(tmp / "images", n_images)
    cfg = station_config(
        tmp / "data", bundle=bundles.a, images=images, rules=bundles.rules_for(images), **sections
    )
    station = build_station(load_config(write_config(tmp / "station.yaml", cfg)))
    state = start_services(station)
    state.loop.start()
    return station, state, cfg


def pack(bundle: Path, fmt: str = "zip") -> bytes:
    """A ``.zip`` or ``.tar.gz`` of a bundle folder, with the folder at the top."""
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(bundle.rglob("*")):
                zf.write(p, f"bundle/{p.relative_to(bundle)}")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            tf.add(bundle, arcname="bundle")
    return buf.getvalue()


def copy_images(dest: Path, n: int, step: int = 7) -> Path:
    """``n`` NEU-DET images (every ``step``-th, so all classes appear) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(NEU_IMAGES.glob("*.jpg"))[::step][:n]
    for i, f in enumerate(files):
        shutil.copyfile(f, dest / f"{i:04d}_{f.name}")
    return dest


def kanjian(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``kanjian ARGS`` in a subprocess, output captured as text, 200 columns wide (so
    rich does not wrap the lines a test reads)."""
    return subprocess.run(
        [str(KANJIAN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def sql(db_path: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``query``'s rows, read through a fresh connection to the store's database."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """The real app on a real uvicorn, on a thread of the test process."""

    def __init__(self, state: Any) -> None:
        import uvicorn

        from kanjian.appliance_api.http.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(state),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self.state = state
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 90
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.state.hub.close()
        self.server.should_exit = True
        self.thread.join(15)


@dataclass
class Served:
    """A ``kanjian serve`` subprocess and what it printed."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[str]
    token: str | None

    def stop(self, timeout: float = 60, sig: int = signal.SIGTERM) -> str:
        """Send ``sig`` (SIGTERM, or SIGINT as Ctrl-C does), wait, and return
        everything it printed (killed after ``timeout`` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return "".join(self.lines)


def start_serve(
    config: Path | None, port: int, cwd: Path, timeout: float = 90, args: Sequence[str] = ()
) -> Served:
    """Start ``kanjian serve -c config`` (no config: the embedded default on ``port``),
    plus ``args`` (e.g. ``--demo NAME``), and wait until its API answers."""
    import httpx

    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    where = ["-c", str(config)] if config else ["--port", str(port)]
    proc = subprocess.Popen(
        [str(KANJIAN), "serve", *where, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError("kanjian serve exited:\n" + "".join(lines))
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("kanjian serve did not answer:\n" + "".join(lines))
        time.sleep(0.2)
    # stdout is a pipe here, so the first start's link is not printed: the path of the
    # 0600 file holding it is (kanjian.appliance_api.http.server.FIRST_START_NOTE)
    token = None
    for line in lines:
        if "with an operator token is in " in line:
            link = Path(line.strip().rsplit(" is in ", 1)[1]).read_text().strip()
            token = link.split("#token=")[1]
    return Served(proc, url, lines, token)


def make_token(data_dir: Path, role: str, name: str) -> str:
    """A token made with the real CLI (``kanjian token create``)."""
    out = subprocess.run(
        [
            str(KANJIAN),
            "token",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


def walk_pages(c: Any, path: str, limit: int) -> tuple[list[Any], int]:
    """Every item id of a paged list (``c``: an httpx.Client), following ``next_before``;
    and how many pages."""
    seen: list[Any] = []
    params: dict[str, Any] = {"limit": limit}
    pages = 0
    while True:
        page = c.get(path, params=params).json()
        seen += [i["id"] for i in page["items"]]
        pages += 1
        if page["next_before"] is None:
            return seen, pages
        params["before"] = page["next_before"]


def wait_for(pred: Any, timeout: float = 30.0, every: float = 0.1, what: str = "condition") -> Any:
    """Poll ``pred()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


if __name__ == "__main__":
    _write_bundles(
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
        [Path(p) for p in sys.argv[5:]],
    )
