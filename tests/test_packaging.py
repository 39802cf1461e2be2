"""Each install variant, in a fresh venv, from the checkout's wheel (issue 17, point 2).

The base install names no ONNX Runtime; one extra per target brings exactly one build:
``[cpu]`` onnxruntime, ``[cuda]`` onnxruntime-gpu, ``[jetson]`` none (JetPack's wheel
is installed beside it). Per target, one venv (``python -m venv --without-pip``, filled
by this interpreter's pip with ``--python``), built once per session from a wheel built
once per session: which distributions own the ``onnxruntime`` module (read from every
installed distribution's RECORD, not from kanjian's own list of names), ``kanjian
--help``, and ``kanjian doctor --json`` on the embedded demo.

Not here: ``[training]`` (torch + Ultralytics: a 6.5 GB venv, ~100 s); the suite's own
venv is exactly ``.[training,test]`` (scripts/test.sh) and every training test runs in
it. ``[cuda]`` is installed whole (onnxruntime-gpu's wheel is ~250 MB, ~20 s here from
pip's cache or PyPI): it lists CUDA and TensorRT even without a GPU, which is checked;
running on them needs a GPU (tests/test_gpu_inference.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kanjian.inference.ort_install import NO_ORT_MESSAGE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: the checkout's package folders -> their import names (pyproject's package-dir)
PACKAGE_DIRS = (
    "camera",
    "kernels",
    "inference",
    "station",
    "training",
    "appliance_api",
    "platform",
)
#: the data files pyproject ships (package-data), under these folders
DATA_DIRS = ("station/demo", "appliance_api/http/static", "platform/web/static")
#: a CPU onnxruntime older than the newest, from the machine's index: JetPack's stand-in
STAND_IN_ORT = "onnxruntime==1.30.0"

#: which installed distributions own the ``onnxruntime`` module: their RECORDs say
OWNERS = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "d.metadata['Name'] for d in m.distributions() "
    "if any(str(f) == 'onnxruntime/__init__.py' for f in (d.files or [])))))"
)


def _env() -> dict[str, str]:
    """The environment of a venv's commands: nothing of this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return {**env, "NUMBA_THREADING_LAYER": "workqueue", "NO_COLOR": "1", "COLUMNS": "200"}


def _run(
    args: list[str | Path], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(),
        check=False,
    )


def _pip(venv: Path, *args: str | Path) -> None:
    """``pip install`` into ``venv`` with this interpreter's pip (the venv has none):
    pip's cache and the machine's index settings apply; no bytecode, to save time."""
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
    r = _run([*pip, "-q", "--no-compile", "--disable-pip-version-check", *args], cwd=venv)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kanjian's wheel, built (pip wheel, build isolation) from a copy of the package
    folders, so that the checkout gets no build/ or egg-info."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in PACKAGE_DIRS:
        shutil.copytree(REPO / d, src / d, ignore=junk)
    r = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", src],
        cwd=root,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = (root / "dist").glob("kanjian-*.whl")
    return whl


@pytest.fixture(scope="session")
def venv_for(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """``venv_for("cpu,plc")``: a fresh venv with ``kanjian[cpu,plc]`` from the wheel,
    made once per session; removed at its end (0.7-1.2 GB each, and pytest keeps its
    last three temporary folders)."""
    made: dict[str, Path] = {}

    def get(extras: str) -> Path:
        if extras not in made:
            venv = tmp_path_factory.mktemp("venv-" + extras.replace(",", "-"))
            r = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
            assert r.returncode == 0, r.stderr
            _pip(venv, f"{wheel}[{extras}]")
            made[extras] = venv
        return made[extras]

    yield get
    for venv in made.values():
        shutil.rmtree(venv, ignore_errors=True)


def owners(venv: Path) -> list[str]:
    """The distributions that installed files of the ``onnxruntime`` module."""
    r = _run([venv / "bin" / "python", "-c", OWNERS], cwd=venv)
    assert r.returncode == 0, r.stderr
    names: list[str] = json.loads(r.stdout)
    return names


def doctor(venv: Path, cwd: Path) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    """``kanjian doctor --json`` in ``venv`` on the embedded demo: exit status and the
    rows by (section, name)."""
    r = _run([venv / "bin" / "kanjian", "doctor", "--json"], cwd=cwd)
    assert r.stdout.strip(), r.stderr[-3000:]
    report = json.loads(r.stdout)
    return r.returncode, {(c["section"], c["name"]): c for c in report["checks"]}


def _help_ok(venv: Path) -> None:
    r = _run([venv / "bin" / "kanjian", "--help"], cwd=venv)
    assert r.returncode == 0, r.stderr
    assert all(c in r.stdout for c in ("serve", "run", "doctor", "train"))


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    """Every .py of the package folders and every shipped data file, named as pyproject
    maps them (``kanjian.<folder>``); a subpackage left out of pyproject's list fails."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for d in PACKAGE_DIRS:
        for p in (REPO / d).rglob("*.py"):
            if "__pycache__" not in p.parts:
                expected.add("kanjian/" + p.relative_to(REPO).as_posix())
    for d in DATA_DIRS:
        for p in (REPO / d).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                expected.add("kanjian/" + p.relative_to(REPO).as_posix())
    assert sorted(expected - names) == []
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/")) or n.endswith(".pyc")]


def test_cpu_install_has_onnxruntime_alone_and_runs(
    venv_for: Callable[[str], Path], tmp_path: Path
) -> None:
    """``kanjian[cpu,plc,gige]``: the CPU build and nothing else over the module; the PLC
    and GigE extras importable; the doctor loads the demo model and replays its golden
    set on the CPU."""
    venv = venv_for("cpu,plc,gige")
    assert owners(venv) == ["onnxruntime"]
    _help_ok(venv)
    r = _run([venv / "bin" / "python", "-c", "import asyncua, pymodbus, gi"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, rows = doctor(venv, tmp_path)
    assert rows[("system", "onnxruntime")]["status"] == "ok"
    assert rows[("system", "onnxruntime")]["detail"].startswith("onnxruntime ")
    for extra_package in ("pymodbus", "asyncua", "PyGObject"):
        assert rows[("system", extra_package)]["status"] == "ok", extra_package
    assert rows[("onnxruntime", "CPUExecutionProvider")]["status"] == "ok"
    assert rows[("station", "model")]["status"] == "ok"
    assert rows[("station", "golden check")]["status"] == "ok"


def test_cuda_install_has_onnxruntime_gpu_alone_and_a_second_build_is_named(
    venv_for: Callable[[str], Path], wheel: Path, tmp_path: Path
) -> None:
    """``kanjian[cuda]``: the GPU build alone, offering CUDA and TensorRT (which run only
    with a GPU); the demo still loads (``auto`` picks the CPU without one). Then the
    mistake the extras exist to prevent: ``[cpu]`` on top puts a second build over the
    module, and the doctor names both and the fix."""
    venv = venv_for("cuda")
    assert owners(venv) == ["onnxruntime-gpu"]
    _help_ok(venv)
    r = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import onnxruntime as o; print(o.get_available_providers())",
        ],
        cwd=tmp_path,
    )
    assert "CUDAExecutionProvider" in r.stdout and "TensorrtExecutionProvider" in r.stdout
    _, rows = doctor(venv, tmp_path)
    assert rows[("system", "onnxruntime")]["status"] == "ok"
    assert rows[("system", "onnxruntime")]["detail"].startswith("onnxruntime-gpu ")
    assert "CUDAExecutionProvider" in rows[("onnxruntime", "build")]["detail"]
    assert rows[("station", "model")]["status"] != "fail"

    _pip(venv, f"{wheel}[cpu]")
    assert owners(venv) == ["onnxruntime", "onnxruntime-gpu"]
    _, rows = doctor(venv, tmp_path)
    row = rows[("system", "onnxruntime")]
    assert row["status"] == "warn"
    assert "onnxruntime " in row["detail"] and "onnxruntime-gpu " in row["detail"]
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in row["fix"]


def test_jetson_install_brings_no_onnxruntime_and_says_what_to_install(
    venv_for: Callable[[str], Path], wheel: Path, tmp_path: Path
) -> None:
    """``kanjian[jetson]``: no ONNX Runtime from PyPI. What needs one says so in one
    line (the CLI, an import, the doctor), and the rest of the doctor still runs. With a
    build installed beside it (a CPU one standing in for JetPack's, older than PyPI's
    newest), even an eager upgrade of kanjian[jetson] leaves it as it is."""
    venv = venv_for("jetson")
    assert owners(venv) == []
    _help_ok(venv)

    data = tmp_path / "data"
    r = _run([venv / "bin" / "kanjian", "run", "--frames", "1", "--data-dir", data], cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {NO_ORT_MESSAGE}"
    assert "Traceback" not in r.stderr and not data.exists()

    r = _run([venv / "bin" / "python", "-c", "import kanjian.inference.session"], cwd=tmp_path)
    assert r.stderr.strip().splitlines()[-1] == f"ModuleNotFoundError: {NO_ORT_MESSAGE}"

    status, rows = doctor(venv, tmp_path)
    assert status == 1
    for key in (("system", "onnxruntime"), ("onnxruntime", "build"), ("station", "model")):
        assert rows[key]["status"] == "fail", key
        assert "pip install 'kanjian[cpu]'" in rows[key]["fix"], key
    assert rows[("station", "camera")]["status"] == "ok"  # the rest still looked at
    assert rows[("screen", "KanjianSans-Regular.woff2")]["status"] == "ok"

    _pip(venv, STAND_IN_ORT)
    _pip(venv, "--upgrade", "--upgrade-strategy", "eager", f"{wheel}[jetson]")
    assert owners(venv) == ["onnxruntime"]
    r = _run(
        [venv / "bin" / "python", "-c", "import onnxruntime as o; print(o.__version__)"],
        cwd=tmp_path,
    )
    assert r.stdout.strip() == STAND_IN_ORT.split("==")[1]
    _, rows = doctor(venv, tmp_path)
    assert rows[("system", "onnxruntime")]["status"] == "ok"
    assert rows[("station", "golden check")]["status"] == "ok"
