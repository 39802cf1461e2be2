"""``kanjian doctor``'s look at the machine: Python and packages, ONNX Runtime's
providers (each tried on the configured model), GPU and driver, Numba CUDA, TensorRT,
the clock.

Each function returns :class:`~kanjian.station.doctor_types.Check` rows and never
raises for what it finds; commands it runs (``nvidia-smi``, ``timedatectl``) get a
few seconds and are "not checked" when absent or silent.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from kanjian.inference.ort_install import (
    NO_ORT_MESSAGE,
    ORT_DISTRIBUTIONS,
    conflict_message,
    ort_distributions,
)
from kanjian.station.doctor_types import Check, Status, native_output_captured

#: (distributions, any of which will do; the extra that brings it, "" = the runtime)
PACKAGES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("numpy",), ""),
    (("opencv-python", "opencv-python-headless", "opencv-contrib-python"), ""),
    (("numba",), ""),
    (ORT_DISTRIBUTIONS, ""),
    (("sqlite-utils",), ""),
    (("pydantic",), ""),
    (("PyYAML",), ""),
    (("pillow",), ""),
    (("typer",), ""),
    (("rich",), ""),
    (("fastapi",), ""),
    (("uvicorn",), ""),
    (("prometheus-client",), ""),
    (("paho-mqtt",), ""),
    (("boto3",), ""),
    (("pymodbus",), "plc"),
    (("asyncua",), "plc"),
    (("PyGObject",), "gige"),
    (("ultralytics",), "training"),
    (("torch",), "training"),
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """``cmd``'s stdout, or ``None`` when it is not installed, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def python_checks() -> list[Check]:
    """Python, kanjian, SQLite and every package the runtime and its extras use."""
    from kanjian.station.schema import kanjian_version

    py = platform.python_version()
    out = [
        Check(
            "system",
            "python",
            "ok" if sys.version_info >= (3, 10) else "fail",
            f"{py} ({sys.executable}); {platform.system()} {platform.machine()}",
            "" if sys.version_info >= (3, 10) else "kanjian needs Python 3.10 or newer",
        ),
        Check("system", "kanjian", "info", kanjian_version()),
        Check("system", "sqlite", "info", f"SQLite {sqlite3.sqlite_version}"),
    ]
    for dists, extra in PACKAGES:
        if dists == ORT_DISTRIBUTIONS:  # no extra of its own, and one build per target
            out.append(_ort_package_check())
            continue
        found = [(d, v) for d in dists if (v := _version(d)) is not None]
        name = dists[0] if not found else found[0][0]
        if not found:
            if extra:
                out.append(Check("system", name, "info", f"not installed (extra [{extra}])"))
            else:
                out.append(
                    Check(
                        "system",
                        name,
                        "fail",
                        "not installed (the runtime needs it)",
                        f"pip install {name} (or reinstall kanjian)",
                    )
                )
            continue
        text = ", ".join(f"{d} {v}" for d, v in found)
        if len(found) > 1:  # two wheels of one module: the last installed wins, silently
            out.append(
                Check(
                    "system",
                    name,
                    "warn",
                    f"{text}: installed together, they overwrite one module folder",
                    f"uninstall all but one (pip uninstall {' '.join(d for d, _ in found[1:])}) "
                    f"and reinstall {found[0][0]}",
                )
            )
        else:
            out.append(Check("system", name, "ok", text))
    return out


def _ort_package_check() -> Check:
    """The ONNX Runtime build: exactly one is right (kanjian[cpu], [cuda] or JetPack's)."""
    dists = ort_distributions()
    text = ", ".join(f"{k} {v}" for k, v in dists.items())
    if not dists:
        what, _, fix = NO_ORT_MESSAGE.partition(": ")
        return Check("system", "onnxruntime", "fail", f"{what} (the runtime needs one)", fix)
    clash = conflict_message(dists)
    if clash is not None:
        what, _, fix = clash.partition(": ")
        return Check("system", "onnxruntime", "warn", what, fix)
    return Check("system", "onnxruntime", "ok", text)


def _ort_error_line(lines: list[str]) -> str:
    """ONNX Runtime's own reason among what it printed (the last error-looking line)."""
    clean = [_ANSI.sub("", ln) for ln in lines]
    hits = [ln for ln in clean if "error" in ln.lower() or "fail" in ln.lower()]
    if not hits:
        return ""
    line = hits[-1]
    for marker in (" FAIL : ", "] "):  # drop ORT's timestamp and source-location prefix
        if marker in line:
            line = line.split(marker, 1)[1]
            break
    return line[:300]


def onnxruntime_checks(
    model_onnx: Path | None, providers: Sequence[str], allow_fallback: bool
) -> list[Check]:
    """ONNX Runtime's build and each provider it offers, tried on ``model_onnx``.

    Args:
        model_onnx: the configured model's ONNX file (``None``: it cannot be read, so no
            session is tried).
        providers: ``model.providers`` as configured (aliases like ``cuda`` allowed).
        allow_fallback: ``model.allow_fallback``.

    A provider the config names that does not run is ``warn`` here; whether the station
    can start anyway is the ``station / model`` row's to say.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        what, _, fix = NO_ORT_MESSAGE.partition(": ")
        return [Check("onnxruntime", "build", "fail", f"{what}: no provider can run", fix)]
    import onnxruntime as ort

    from kanjian.inference.providers import diagnose_provider
    from kanjian.inference.session import (
        PROVIDER_ALIASES,
        ModelLoadError,
        ProviderUnavailableError,
        create_session,
        expand_auto,
    )

    available = list(ort.get_available_providers())
    dists = ", ".join(f"{k} {v}" for k, v in ort_distributions().items()) or "unknown"
    wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in expand_auto(providers)]
    out = [
        Check(
            "onnxruntime",
            "build",
            "ok",
            f"{dists}; providers offered: {', '.join(available)}; model.providers: "
            f"{', '.join(providers)} (allow_fallback: {str(allow_fallback).lower()})",
        )
    ]
    for name in wanted:
        if name not in available:
            d = diagnose_provider(name)
            out.append(Check("onnxruntime", name, "warn", d.cause, d.fix))
    # Azure's provider runs nothing locally: nothing to try
    for name in (p for p in available if p != "AzureExecutionProvider"):
        asked = name in wanted
        if model_onnx is None:
            out.append(Check("onnxruntime", name, "not checked", "the model cannot be read"))
            continue
        with native_output_captured() as printed:
            try:
                create_session(model_onnx, [name], intra_op_threads=1)
                error = None
            except ProviderUnavailableError as e:
                error = e
            except ModelLoadError as e:
                out.append(Check("onnxruntime", name, "fail", str(e)))
                continue
            except OSError as e:  # e.g. a TensorRT cache folder that cannot be made
                out.append(Check("onnxruntime", name, "warn", f"cannot try it: {e}"))
                continue
        if error is None:
            out.append(Check("onnxruntime", name, "ok", f"runs {model_onnx.name}"))
            continue
        cause = error.diagnosis.cause
        if not error.diagnosis.causes and (said := _ort_error_line(printed)):
            cause = said
        how = "asked for in model.providers" if asked else "not asked for"
        out.append(
            Check(
                "onnxruntime",
                name,
                "warn" if asked else "info",
                f"does not run {model_onnx.name} ({how}): {cause}",
                error.diagnosis.fix if asked else "",
            )
        )
    return out


def gpu_checks(gpu_wanted: bool) -> list[Check]:
    """NVIDIA GPU and driver, Numba CUDA (the GPU preprocessing), TensorRT.

    ``gpu_wanted``: the config's providers start with CUDA or TensorRT (their absence
    then is worth a warning; otherwise it is a fact).
    """
    from kanjian.inference.providers import jetson

    miss: Status = "warn" if gpu_wanted else "info"
    out: list[Check] = []
    smi = _run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        timeout_s=10,
    )
    proc = Path("/proc/driver/nvidia/version")
    if smi:
        gpus = "; ".join(ln.strip() for ln in smi.splitlines() if ln.strip())
        out.append(Check("gpu", "nvidia", "ok", f"nvidia-smi: {gpus}"))
    elif proc.exists():
        first = proc.read_text(errors="replace").splitlines()[0:1]
        out.append(Check("gpu", "nvidia", "ok", f"driver: {' '.join(first)} (no nvidia-smi)"))
    elif jetson():
        rel = Path("/etc/nv_tegra_release")
        text = rel.read_text(errors="replace").splitlines()[0] if rel.exists() else "L4T"
        out.append(Check("gpu", "nvidia", "ok", f"Jetson: {text.strip()}"))
    else:
        out.append(
            Check(
                "gpu",
                "nvidia",
                miss,
                "no NVIDIA GPU or driver visible (no nvidia-smi, /proc/driver/nvidia, "
                "/dev/nvidia0 or Jetson release file)",
                "a CUDA/TensorRT station needs the GPU and its driver" if gpu_wanted else "",
            )
        )
    out.append(_numba_cuda(miss))
    out.append(_tensorrt())
    return out


def _numba_cuda(miss: Status) -> Check:
    try:
        from numba import cuda

        from kanjian.kernels.letterbox_cuda import cuda_available

        if not cuda_available():
            return Check(
                "gpu", "numba cuda", miss, "not available: frames are preprocessed on the CPU"
            )
        sim = "simulator (NUMBA_ENABLE_CUDASIM)" if getattr(cuda, "simulator", None) else ""
        names = ", ".join(
            f"{g.name.decode() if isinstance(g.name, bytes) else g.name} "
            f"(compute {'.'.join(map(str, g.compute_capability))})"
            for g in cuda.gpus
        )
        return Check("gpu", "numba cuda", "ok", sim or names or "available")
    except Exception as e:  # a broken CUDA install must not stop the doctor
        return Check("gpu", "numba cuda", "warn", f"not usable: {e}")


def _tensorrt() -> Check:
    version = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    lib = ctypes.util.find_library("nvinfer")
    if version is None and importlib.util.find_spec("tensorrt") is not None:
        version = "installed"  # Jetson's python3-libnvinfer: a module without metadata
    if version is None and lib is None:
        return Check("gpu", "tensorrt", "info", "not installed (libnvinfer not found)")
    parts = ([f"python tensorrt {version}"] if version else []) + ([lib] if lib else [])
    return Check("gpu", "tensorrt", "ok", ", ".join(parts))


def clock_checks() -> list[Check]:
    """The local time zone and UTC offset; NTP sync when ``timedatectl`` answers.

    Every row's time is UTC, but the screen's shifts and the history pages use the
    station's zone, and a clock off by minutes misorders rows from several stations.
    """
    now = time.localtime()
    off = now.tm_gmtoff
    sign = "+" if off >= 0 else "-"
    zone = f"{now.tm_zone} (UTC{sign}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d})"
    out = [Check("clock", "time zone", "info", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {zone}")]
    shown = _run(["timedatectl", "show", "-p", "NTPSynchronized", "-p", "NTP", "-p", "Timezone"])
    if shown is None:
        out.append(
            Check("clock", "ntp", "not checked", "timedatectl does not answer (no systemd?)")
        )
        return out
    props = dict(ln.split("=", 1) for ln in shown.splitlines() if "=" in ln)
    synced = props.get("NTPSynchronized") == "yes"
    detail = (
        f"synchronized: {props.get('NTPSynchronized', '?')}, NTP service: "
        f"{props.get('NTP', '?')}, zone {props.get('Timezone', '?')}"
    )
    fix = "" if synced else "enable time sync: timedatectl set-ntp true (and reach an NTP server)"
    out.append(Check("clock", "ntp", "ok" if synced else "warn", detail, fix))
    return out


__all__ = ["clock_checks", "gpu_checks", "onnxruntime_checks", "python_checks"]
