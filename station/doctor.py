"""``kanjian doctor``'s look at one station config: what is missing to run it.

The model (loaded on the configured providers as the station would, then its golden
set replayed), the verdict rules against its classes, the PLC recipes' models, the
camera (as far as is cheap without taking it from a running station), the data
folder (writable, free space, a newer store, a station already on it), and the
peers: the API and PLC ports, the MQTT broker and the object store (a TCP connect
of a couple of seconds; nothing is sent).

A ``fail`` row means the station would not start, or not inspect, as configured.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import socket
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kanjian.station.doctor_types import Check, native_output_captured, nearest_existing

if TYPE_CHECKING:
    from kanjian.inference.model import OnnxModel
    from kanjian.station.config import StationConfig

#: the TCP connect a peer gets, seconds
CONNECT_TIMEOUT_S = 2.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def _connect(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """``None`` when a TCP connection to ``host:port`` opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def _bindable(host: str, port: int) -> str | None:
    """``None`` when ``host:port`` could be listened on now, else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def model_checks(cfg: StationConfig) -> tuple[list[Check], OnnxModel | None]:
    """Load the model as the station would; replay its golden set; check the rules
    against its classes. Returns the rows and the loaded model (``None``: it did not)."""
    not_loaded = [
        Check("station", name, "not checked", "the model did not load")
        for name in ("golden check", "rules")
    ]
    if importlib.util.find_spec("onnxruntime") is None:  # the base install has none
        from kanjian.inference.ort_install import NO_ORT_MESSAGE

        what, _, fix = NO_ORT_MESSAGE.partition(": ")
        return [Check("station", "model", "fail", f"cannot load: {what}", fix), *not_loaded], None
    from kanjian.inference.bundle import BundleError
    from kanjian.inference.golden import check_bundle
    from kanjian.inference.model import load_model
    from kanjian.inference.session import ModelLoadError, ProviderUnavailableError
    from kanjian.station.inspector import Inspector
    from kanjian.station.ruleset import RulesError

    mc = cfg.model
    out: list[Check] = []
    with native_output_captured():  # ONNX Runtime's own provider errors
        try:
            model = load_model(mc.path, mc.providers, mc.intra_op_threads, mc.allow_fallback)
        except ProviderUnavailableError as e:  # its text says the fix
            return [Check("station", "model", "fail", str(e)), *not_loaded], None
        except (ModelLoadError, BundleError, OSError) as e:
            return [Check("station", "model", "fail", str(e), "fix model.path"), *not_loaded], None
    i, si = model.info, model.session_info
    where = f"on {si.provider}"
    if si.fell_back:
        out.append(
            Check(
                "station",
                "model",
                "warn",
                f"{i.name} v{i.version} ({i.task}, {len(i.class_names)} classes) {where}, "
                f"FALLBACK from {si.requested[0]}: {si.fallback_cause}",
                "model.allow_fallback is on: the station runs, off the device asked for",
            )
        )
    else:
        desc = f"{i.name} v{i.version} ({i.task}, {len(i.class_names)} classes) {where}"
        out.append(Check("station", "model", "ok", f"{desc}; sha256 {i.sha256[:12]}…"))
    if model.manifest is None:
        out.append(
            Check(
                "station",
                "golden check",
                "warn",
                f"{mc.path} is a bare .onnx: no manifest hash or golden set to check",
                "package it as a bundle (kanjian train / the training docs)",
            )
        )
    else:
        with native_output_captured():
            report = check_bundle(Path(mc.path), tuple(mc.providers), mc.allow_fallback)
        if report.ok:
            text = f"{report.images} golden images reproduced on {report.provider}"
            out.append(Check("station", "golden check", "ok", text))
        else:
            text = "; ".join(report.problems[:5])
            out.append(Check("station", "golden check", "fail", text, "a bundle that passes"))
    try:
        Inspector(model, cfg.rules, mc.conf, mc.iou, mc.max_det, cfg.camera.mm_per_px)
        out.append(Check("station", "rules", "ok", "the verdict rules fit the model's classes"))
    except RulesError as e:
        out.append(Check("station", "rules", "fail", str(e), "fix rules in station.yaml"))
    if cfg.plc.enabled:
        for number, path in sorted(cfg.plc.recipes.items()):
            with native_output_captured():
                try:
                    m = load_model(path, mc.providers, mc.intra_op_threads, mc.allow_fallback)
                    row = Check(
                        "station",
                        f"recipe {number}",
                        "ok",
                        f"{m.info.name} v{m.info.version} on {m.session_info.provider}",
                    )
                except (ModelLoadError, BundleError, OSError) as e:
                    row = Check("station", f"recipe {number}", "fail", str(e))
            out.append(row)
    return out, model


def camera_check(cfg: StationConfig) -> Check:
    """The camera as far as is cheap: files listed, a video opened and read once, a
    device node present, a stream's host reachable; nothing a running station holds
    is opened."""
    from kanjian.camera.config import (
        DeviceSourceConfig,
        FolderSourceConfig,
        GigESourceConfig,
        StreamSourceConfig,
        VideoSourceConfig,
    )

    cam = cfg.camera
    if isinstance(cam, FolderSourceConfig):
        from kanjian.camera.files import list_images
        from kanjian.camera.source import SourceError

        try:
            files = list_images(cam)
        except SourceError as e:
            return Check("station", "camera", "fail", str(e), "fix camera.path")
        loop = ", looping" if cam.loop else ""
        return Check("station", "camera", "ok", f"folder {cam.path}: {len(files)} images{loop}")
    if isinstance(cam, VideoSourceConfig):
        import cv2

        cap = cv2.VideoCapture(str(cam.path))
        try:
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        finally:
            cap.release()
        if not ok or frame is None:
            return Check(
                "station",
                "camera",
                "fail",
                f"video {cam.path} does not open or has no frame",
                "a video file OpenCV's FFmpeg backend reads (MJPG, mp4v, H.264...)",
            )
        h, w = frame.shape[:2]
        return Check("station", "camera", "ok", f"video {cam.path}: {w}x{h}, {n} frames")
    if isinstance(cam, DeviceSourceConfig):
        node = cam.path or Path(f"/dev/video{cam.index}")
        if not node.exists():
            return Check(
                "station", "camera", "fail", f"{node} does not exist", "plug the camera in"
            )
        if not os.access(node, os.R_OK | os.W_OK):
            return Check(
                "station",
                "camera",
                "fail",
                f"{node} is not readable and writable by this user",
                "add the station's user to group video",
            )
        return Check(
            "station", "camera", "ok", f"{node} present (not opened: a running station holds it)"
        )
    if isinstance(cam, StreamSourceConfig):
        parts = urlsplit(cam.url)
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 554)
        why = _connect(host, port)
        shown = f"{parts.scheme}://{host}:{port}"  # never the credentials
        if why is not None:
            return Check(
                "station",
                "camera",
                "fail",
                f"stream {shown}: no TCP connection ({why})",
                "check the camera's power, network and camera.url",
            )
        return Check(
            "station", "camera", "ok", f"stream {shown} reachable (TCP; the stream is not opened)"
        )
    if isinstance(cam, GigESourceConfig):
        if importlib.util.find_spec("gi") is None:
            return Check(
                "station",
                "camera",
                "fail",
                "a GigE camera needs PyGObject and Aravis",
                "pip install 'kanjian[gige]' and apt-get install gir1.2-aravis-0.8",
            )
        return Check(
            "station",
            "camera",
            "not checked",
            f"GigE camera {cam.address}: not opened (a running station holds it; GVCP "
            "control is exclusive)",
        )
    return Check("station", "camera", "not checked", f"camera kind {cam.kind}")


def _lock_holder(data_dir: Path) -> str | None:
    """Who holds the data folder's lock now (a running station), else ``None``."""
    from kanjian.station.datalock import LOCK_NAME, read_holder

    lock = data_dir / LOCK_NAME
    if not lock.exists():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once by close
    except BlockingIOError:
        h = read_holder(data_dir)
        return f"PID {h.get('pid', '?')} ({h.get('command') or 'kanjian'})"
    finally:
        os.close(fd)
    return None


def data_dir_checks(cfg: StationConfig) -> list[Check]:
    """The data folder: writable (or can be made), free space against
    ``store.min_free_mb``, not written by a newer kanjian, a station already on it."""
    from kanjian.station.schema import StoreTooNewError, check_not_newer
    from kanjian.station.store import DB_NAME
    from kanjian.station.store_health import MB, free_bytes

    d = Path(cfg.store.data_dir)
    out: list[Check] = []
    base = nearest_existing(d)
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".kanjian-doctor-"):
            pass
        made = "" if base == d.absolute() else f" (will be made under {base})"
        out.append(Check("station", "data folder", "ok", f"{d} writable{made}"))
    except OSError as e:
        out.append(
            Check(
                "station",
                "data folder",
                "fail",
                f"{d}: cannot write in {base} ({e.strerror or e})",
                "give the station's user the folder (chown) or another store.data_dir",
            )
        )
    free = free_bytes(base)
    floor = cfg.store.min_free_mb
    low = floor > 0 and free < floor * MB
    out.append(
        Check(
            "station",
            "free disk",
            "fail" if low else "ok",
            f"{free / MB / 1024:.1f} GB free on {base} (store.min_free_mb {floor:g})",
            "free some space or lower store.min_free_mb" if low else "",
        )
    )
    db = d / DB_NAME
    if db.is_file():
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                check_not_newer(conn)
            finally:
                conn.close()
            out.append(Check("station", "store", "ok", f"{db} readable, schema known"))
        except StoreTooNewError as e:
            out.append(Check("station", "store", "fail", str(e)))
        except sqlite3.Error as e:
            out.append(Check("station", "store", "fail", f"{db}: {e}", "restore a backup"))
    holder = _lock_holder(d)
    if holder is not None:
        out.append(
            Check(
                "station",
                "running",
                "info",
                f"a station runs on this data folder: {holder} (a second one is refused)",
            )
        )
    return out


def peer_checks(cfg: StationConfig, running: bool) -> list[Check]:
    """The ports the station listens on (API, PLC) and the peers it connects to (MQTT
    broker, object store). ``running``: a station already holds the data folder, so its
    own ports are expectedly taken."""
    out: list[Check] = []
    listens = [("api", cfg.api.host, cfg.api.port, "kanjian serve")]
    if cfg.plc.enabled:
        if cfg.plc.modbus.enabled and cfg.plc.modbus.port:
            listens.append(("plc modbus", cfg.plc.modbus.host, cfg.plc.modbus.port, "the PLC"))
        if cfg.plc.opcua.enabled:
            listens.append(("plc opcua", cfg.plc.opcua.host, cfg.plc.opcua.port, "the PLC"))
        if (
            importlib.util.find_spec("pymodbus") is None
            or importlib.util.find_spec("asyncua") is None
        ):
            out.append(
                Check(
                    "station",
                    "plc",
                    "fail",
                    "plc.enabled needs pymodbus and asyncua",
                    "pip install 'kanjian[plc]'",
                )
            )
    for name, host, port, who in listens:
        why = _bindable(host, port)
        if why is None:
            out.append(Check("station", name, "ok", f"{host}:{port} free to listen on"))
        elif running:
            out.append(Check("station", name, "info", f"{host}:{port} taken ({why}): by it?"))
        else:
            out.append(
                Check(
                    "station",
                    name,
                    "fail",
                    f"{host}:{port} cannot be listened on ({why})",
                    f"free the port or pick another for {who}",
                )
            )
    s = cfg.sync
    if not s.enabled:
        out.append(Check("station", "sync", "info", "off (sync.enabled: false)"))
        return out
    m = s.mqtt
    why = _connect(m.host, m.port)
    out.append(
        Check(
            "station",
            "mqtt broker",
            "ok" if why is None else "warn",
            f"{m.host}:{m.port} "
            + (
                "reachable (TCP; login and TLS not checked)"
                if why is None
                else f"unreachable: {why}"
            ),
            "" if why is None else "the station runs; its backlog grows until the broker is back",
        )
    )
    if s.s3.enabled:
        url = urlsplit(s.s3.endpoint_url or "https://s3.amazonaws.com")
        port = url.port or (443 if url.scheme == "https" else 80)
        why = _connect(url.hostname or "", port)
        out.append(
            Check(
                "station",
                "object store",
                "ok" if why is None else "warn",
                f"{url.hostname}:{port} "
                + (
                    "reachable (TCP; bucket and keys not checked)"
                    if why is None
                    else f"unreachable: {why}"
                ),
                "" if why is None else "images wait on the station until it is back",
            )
        )
    return out


def station_checks(cfg: StationConfig) -> list[Check]:
    """Every station row for ``cfg`` (model, golden check, rules, recipes, camera, data
    folder, ports and peers)."""
    rows, _model = model_checks(cfg)
    rows.append(camera_check(cfg))
    data = data_dir_checks(cfg)
    rows += data
    running = any(c.name == "running" for c in data)
    rows += peer_checks(cfg, running)
    return rows


__all__ = ["camera_check", "data_dir_checks", "model_checks", "peer_checks", "station_checks"]
