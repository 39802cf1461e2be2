"""``kanjian bench`` hands its arguments to the checkout's benchmark suite."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from kanjian.appliance_api.cli import bench as bench_cli

REPO = Path(__file__).resolve().parents[1]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """kanjian (test app)."""

    bench_cli.register(app)
    return app


def test_bench_finds_the_checkout(tmp_path: Path) -> None:
    assert bench_cli.find_checkout(tmp_path) == REPO  # editable install: beside the package


def test_bench_help_is_the_suites_help() -> None:
    result = CliRunner().invoke(_app(), ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("usage: kanjian bench")
    for option in ("--quick", "--out", "--model", "--skip", "--only", "--anomaly-model"):
        assert option in result.output
    listing = CliRunner().invoke(_app(), ["--help"])
    assert listing.exit_code == 0 and "bench" in listing.output


def test_bench_refuses_an_unknown_section_before_measuring() -> None:
    result = CliRunner().invoke(_app(), ["bench", "--quick", "--skip", "nope"])
    assert result.exit_code != 0
    assert "unknown section(s) nope" in result.output


def test_bench_refuses_a_missing_anomaly_model_before_measuring(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.onnx"
    result = CliRunner().invoke(
        _app(), ["bench", "--only", "anomaly", "--anomaly-model", str(missing)]
    )
    assert result.exit_code != 0
    assert f"anomaly model not found: {missing}" in result.output


def test_bench_refuses_an_unknown_anomaly_method_before_measuring() -> None:
    result = CliRunner().invoke(
        _app(), ["bench", "--only", "anomaly", "--anomaly-methods", "draem,nope"]
    )
    assert result.exit_code != 0
    assert (
        "unknown anomaly method(s) nope; choose from draem, draem-lite, patchknn" in result.output
    )
