"""Every command the README lists works in a runtime-only install, or says in one line
which extra it needs (issue 13, point 5).

A runtime-only install is ``scripts/start.sh``'s ``pip install -e .``: no torch, no
Ultralytics, no asyncua, no matplotlib. Building such a venv here would cost minutes
of CI; instead each command runs in a child process whose ``sitecustomize``
(tests/support/no_extras) makes those modules unimportable. The commands are read from
the README itself, so the test follows it.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NO_EXTRAS = REPO / "tests" / "support" / "no_extras"
KANJIAN = Path(sys.executable).with_name("kanjian")


def readme_commands() -> list[list[str]]:
    """The ``kanjian ...`` and ``python -m ...`` lines of the README's bash blocks, split
    into words, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["kanjian"] or words[:2] == ["python", "-m"]:
                out.append(words)
    return out


def _env() -> dict[str, str]:
    path = os.pathsep.join(
        p for p in (str(NO_EXTRAS), os.environ.get("PYTHONPATH", ""), str(REPO)) if p
    )
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", "NO_COLOR": "1"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, cwd=cwd, env=_env(), check=False
    )


@functools.cache
def _cli_tree() -> Any:
    """The ``kanjian`` command tree, as click sees it (built once)."""
    import typer

    cli = importlib.import_module("kanjian.appliance_api.cli.main")
    cli._register_commands()
    return typer.main.get_command(cli.app)


def _help_args(words: list[str]) -> list[str]:
    """``kanjian config validate station.yaml`` -> ``kanjian config validate --help``:
    the command path is the words that name (sub)commands in the CLI's own tree."""
    if words[0] == "python":
        return [sys.executable, "-m", words[2], "--help"]
    cmd = _cli_tree()  # typer's own click: groups have ``commands``
    path = []
    for w in words[1:]:
        if w not in getattr(cmd, "commands", {}):
            break
        cmd = cmd.commands[w]
        path.append(w)
    assert path, f"{' '.join(words)}: no such kanjian command"
    return [str(KANJIAN), *path, "--help"]


def test_the_readme_lists_commands() -> None:
    cmds = readme_commands()
    assert len(cmds) >= 10, cmds
    assert ["python", "-m", "benchmarks", "--quick"] in cmds
    assert ["kanjian", "plc", "map", "--markdown"] in cmds


def test_blocker_blocks() -> None:
    r = _run([sys.executable, "-c", "import asyncua"], REPO)
    assert r.returncode != 0 and "No module named 'asyncua'" in r.stderr
    r = _run([sys.executable, "-c", "import kanjian.station, numpy, cv2, fastapi"], REPO)
    assert r.returncode == 0, r.stderr  # the runtime itself imports


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w)[:60])
def test_readme_command_help_runs_without_the_extras(words: list[str], tmp_path: Path) -> None:
    r = _run(_help_args(words), REPO)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert "usage" in (r.stdout + r.stderr).lower()


def test_plc_map_markdown_needs_no_asyncua() -> None:
    r = _run([str(KANJIAN), "plc", "map", "--markdown"], REPO)
    assert r.returncode == 0, r.stderr
    assert "| holding_register | 0 |" in r.stdout  # the Modbus map, whole
    assert "pip install 'kanjian[plc]'" in r.stdout  # and one line about the OPC UA nodes
    assert "Traceback" not in r.stderr


def test_a_command_that_needs_an_extra_says_which_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images" / "val").mkdir(parents=True)
    (data / "data.yaml").write_text(
        f"path: {data}\ntrain: images/val\nval: images/val\nnames: {{0: a}}\n"
    )
    from kanjian.station.config import DEMO_IMAGES

    img = next(DEMO_IMAGES.glob("*.jpg"))
    (data / "images" / "val" / img.name).write_bytes(img.read_bytes())
    r = _run(
        [str(KANJIAN), "train", str(data / "data.yaml"), "--project", str(tmp_path / "runs")],
        tmp_path,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: this command needs the 'training' extra (no module ultralytics): "
        "pip install 'kanjian[training]'"
    ]
    r = _run([str(KANJIAN), "train", str(data), "--task", "anomaly", "--steps", "1"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: this command needs the 'training' extra (no module torch): "
        "pip install 'kanjian[training]'"
    ]
    r = _run([str(KANJIAN), "plc", "cert", str(tmp_path / "pki")], tmp_path)
    assert r.returncode == 2 and "pip install 'kanjian[plc]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_quick_benchmarks_run_without_the_extras(tmp_path: Path) -> None:
    # the README's `python -m benchmarks --quick`, made smaller (the sizes only)
    argv = [
        sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path), "--name", "run",
        "--infer-frames", "1", "--infer-rounds", "1",
        "--video-size", "320x240", "--e2e-rounds", "1", "--e2e-frames", "3", "--e2e-warm", "1",
        "--triggers", "3", "--trigger-gap-s", "0.01",
        "--store-inspections", "300", "--store-rounds", "1",
    ]  # fmt: skip
    r = _run(argv, REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    assert "the bundled demo model instead" in r.stdout
    assert "== preprocess: skipped, it compares with Ultralytics" in r.stdout
    assert "no chart.png: matplotlib is not installed" in r.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["results.json", "results.md"]


def test_benchmark_images_fall_back_to_the_demo_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(REPO))  # benchmarks/ is not installed: it runs from the checkout
    try:
        from benchmarks import assets
    finally:
        sys.path.remove(str(REPO))
    from kanjian.station.config import DEMO_IMAGES

    monkeypatch.setattr(assets, "NEU_DET", tmp_path / "none")
    monkeypatch.setattr(assets, "REPO", tmp_path)
    assert assets.neu_det_images() == sorted(DEMO_IMAGES.glob("*.jpg"))
    with pytest.raises(FileNotFoundError):
        assets.neu_det_images(tmp_path / "none")
