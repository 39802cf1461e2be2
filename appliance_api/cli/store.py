"""CLI commands of the station's store: ``kanjian store vacuum``.

Registered by :mod:`kanjian.appliance_api.cli.main` through ``register(app)``; the work
is :func:`kanjian.station.retention_ops.full_vacuum`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kanjian.appliance_api.cli.common import DemoOpt, load_station_config

console = Console(stderr=True)
out = Console()

store_app = typer.Typer(help="The station's result store.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="station YAML; default: the embedded demo")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="override store.data_dir (database and images)")
]


@store_app.command("vacuum")
def vacuum(config: ConfigOpt = None, data_dir: DataDirOpt = None, demo: DemoOpt = None) -> None:
    """Rewrite the database so it can shrink after retention deletes (a store made before
    incremental vacuum). Run it once, with the station stopped; it needs about the
    database's size free."""
    from kanjian.station.datalock import DataFolderInUseError, DataLock
    from kanjian.station.retention_ops import db_file_bytes, full_vacuum
    from kanjian.station.schema import StoreTooNewError
    from kanjian.station.store import DB_NAME

    cfg = load_station_config(config, data_dir, demo)
    db_path = cfg.store.data_dir / DB_NAME
    if not db_path.is_file():
        console.print(f"[red]error:[/] no store at {db_path}")
        raise typer.Exit(2)
    size, free = db_file_bytes(db_path), shutil.disk_usage(db_path.parent).free
    if free < size:
        console.print(f"[red]error:[/] VACUUM needs about {size / 2**20:.0f} MB free in "
                      f"{db_path.parent}; {free / 2**20:.0f} MB are")  # fmt: skip
        raise typer.Exit(2)
    try:
        lock = DataLock.acquire(cfg.store.data_dir, "kanjian store vacuum")
    except DataFolderInUseError as e:
        console.print(f"[red]error:[/] {e}: stop the station first", soft_wrap=True)
        raise typer.Exit(2) from e
    try:
        before, after = full_vacuum(db_path)
    except StoreTooNewError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from e
    finally:
        lock.release()
    out.print(f"{db_path}: {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB; "
              "it now shrinks after each retention pass")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``kanjian store ...`` to the CLI."""
    app.add_typer(store_app, name="store")
