"""CLI commands of the station's platform sync: ``kanjian sync status|drain``.

Registered by :mod:`kanjian.appliance_api.cli.main` through ``register(app)``; paho,
boto3 and the database drivers are imported inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kanjian.appliance_api.cli.common import DemoOpt, load_station_config

console = Console(stderr=True)
out = Console()

sync_app = typer.Typer(help="The station's outbox to the platform: status, drain.")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="station YAML; default: the embedded demo")
]


def print_status(s: Any) -> None:
    """A people-readable block of a :class:`~kanjian.station.sync.status.SyncStatus`."""

    def age(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} s"

    conn = "[green]connected[/]" if s.connected else "[red]not connected[/]"
    if s.state_age_s is not None and s.state_age_s >= 15:  # sync_status.STATE_STALE_S
        conn += f" (the sync worker last wrote its state {s.state_age_s:.0f} s ago: not running?)"
    out.print(f"sync {'enabled' if s.enabled else '[yellow]disabled[/]'}: broker {s.broker} {conn}")
    out.print(f"  backlog       {s.backlog} unconfirmed ({s.unacked} never acknowledged), "
              f"oldest {age(s.oldest_backlog_age_s)}")  # fmt: skip
    out.print(f"  images        {s.images_pending} waiting, oldest {age(s.oldest_image_age_s)}, "
              f"object storage {s.s3_state}")  # fmt: skip
    out.print(f"  last delivery {s.last_ack_at or '-'} (PUBACK); last confirmation "
              f"{s.last_confirm_at or '-'}")  # fmt: skip
    out.print(f"  last seq      {s.last_seq}  stream {s.stream}")
    dropped = f"{s.dropped_messages} messages, {s.dropped_images} images"
    out.print(("  [red]dropped[/]       " if s.dropped_messages or s.dropped_images
               else "  dropped       ") + dropped + " (retention)")  # fmt: skip
    if s.last_error:
        out.print(f"  last problem  {s.last_error}")


@sync_app.command("status")
def sync_status(
    config: ConfigOpt = None,
    demo: DemoOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the backlog, last delivery and connection state (from the station's database)."""
    from kanjian.station.schema import StoreTooNewError
    from kanjian.station.store import DB_NAME
    from kanjian.station.sync.status import status_from_db

    cfg = load_station_config(config, demo=demo)
    db = cfg.store.data_dir / DB_NAME
    if not db.is_file():
        console.print(f"[red]error:[/] no station database at {db}")
        raise typer.Exit(1)
    try:
        s = status_from_db(db, cfg.sync.enabled, f"{cfg.sync.mqtt.host}:{cfg.sync.mqtt.port}")
    except StoreTooNewError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line
        raise typer.Exit(2) from e
    if as_json:
        out.print_json(json.dumps(s.as_dict()))
    else:
        print_status(s)


@sync_app.command("drain")
def sync_drain(
    config: ConfigOpt = None,
    demo: DemoOpt = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600.0,
) -> None:
    """Run only the sync worker (no camera, no model) until the backlog is confirmed.

    For a station that is not running (its own worker would send the same entries):
    it takes the data folder's lock, so it refuses (exit 2) beside a running station.
    """
    from kanjian.station.datalock import DataFolderInUseError, DataLock
    from kanjian.station.store import DB_NAME
    from kanjian.station.sync.worker import Identity, SyncWorker

    cfg = load_station_config(config, demo=demo)
    if not (cfg.store.data_dir / DB_NAME).is_file():
        console.print(f"[red]error:[/] no station database at {cfg.store.data_dir / DB_NAME}")
        raise typer.Exit(1)
    try:  # the outbox has one writer: the station, or this drain
        lock = DataLock.acquire(cfg.store.data_dir)
    except DataFolderInUseError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from e
    try:
        w = SyncWorker(
            cfg.store.data_dir / DB_NAME,
            cfg.store.data_dir,
            cfg.sync,
            Identity(cfg.station.site, cfg.station.line, cfg.station.id),
        ).start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                time.sleep(0.5)
                s = w.status()
                if s.backlog == 0 and s.images_pending == 0 and s.last_seq > 0:
                    break
        finally:
            w.stop(drain_s=0)
    finally:
        lock.release()
    print_status(w.status())
    if s.backlog or s.images_pending:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``sync`` command group to the ``kanjian`` CLI."""
    app.add_typer(sync_app, name="sync")
