"""CLI command ``kanjian bench``: the benchmark suite of the source checkout.

The suite lives in the repository's ``benchmarks/`` folder, which is not
installed (it needs Ultralytics and matplotlib, and writes its results into
the checkout). ``kanjian bench`` finds that folder beside the installed
package (an editable install) or in the current directory, and runs
``benchmarks.suite.main`` with every argument passed through unchanged:
``kanjian bench --quick`` is ``python -m benchmarks --quick``.

Registered by :mod:`kanjian.appliance_api.cli.main` through ``register(app)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

_HELP = (
    "Run the benchmark suite (preprocessing, inference, NMS, end to end, trigger latency, "
    "SQLite sink, anomaly models beside YOLO) and write JSON, Markdown and a PNG chart under benchmarks/results/. "
    "Needs the source checkout (benchmarks/ is not installed). All arguments go to "
    "'python -m benchmarks'; 'kanjian bench --help' lists them, e.g. --quick."
)


def find_checkout(start: Path | None = None) -> Path | None:
    """The repository root whose ``benchmarks/suite.py`` this install can run, if any.

    Looks beside the package (editable install: ``<repo>/appliance_api/cli/``), then
    at ``start`` (default: the current directory) and its parents.
    """
    here = Path(__file__).resolve().parents[2]
    cwd = (start or Path.cwd()).resolve()
    for root in (here, cwd, *cwd.parents):
        if (root / "benchmarks" / "suite.py").is_file() and (
            root / "benchmarks" / "__init__.py"
        ).is_file():
            return root
    return None


def bench(ctx: typer.Context) -> None:
    root = find_checkout()
    if root is None:
        typer.echo(
            "kanjian bench needs the source checkout: its benchmarks/ folder is not installed. "
            "Run it inside the repository (or 'python -m benchmarks' there).",
            err=True,
        )
        raise typer.Exit(2)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.suite import main as suite_main  # the checkout's, not installed

    raise typer.Exit(suite_main(list(ctx.args), prog="kanjian bench"))


def register(app: typer.Typer) -> None:
    """Add ``kanjian bench`` to the CLI."""
    app.command(
        "bench",
        help=_HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(bench)
