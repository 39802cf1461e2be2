"""CLI commands ``kanjian serve`` and ``kanjian token create|list|revoke``.

Registered by :mod:`kanjian.appliance_api.cli.main` through ``register(app)``;
FastAPI and uvicorn are imported only inside the commands.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kanjian.appliance_api.cli.common import DemoOpt, load_station_config, start_refusals
from kanjian.appliance_api.cli.logs import setup_logging

console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="station YAML; default: the embedded demo station"),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="override store.data_dir (database and images)")
]


def _open_db(config: Path | None, data_dir: Path | None, demo: str | None = None) -> Any:
    from kanjian.station.schema import StoreTooNewError
    from kanjian.station.store import DB_NAME, open_db

    cfg = load_station_config(config, data_dir, demo)
    try:
        return open_db(cfg.store.data_dir / DB_NAME)
    except StoreTooNewError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line
        raise typer.Exit(2) from e


def _cli_actor() -> Any:
    from kanjian.station.state.audit import Actor

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}")


def serve(
    config: ConfigOpt = None,
    demo: DemoOpt = None,
    host: Annotated[str | None, typer.Option(help="listen address (default: api.host)")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="TCP port (default: api.port)")
    ] = None,
    data_dir: DataDirOpt = None,
    screen_token: Annotated[
        bool,
        typer.Option(help="on the first start (no tokens yet), make and print a screen token"),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the station and its web app (API, live view, operator screen) until stopped."""
    setup_logging(verbose, console, (out,))  # plain lines when stderr is the journal
    from kanjian.appliance_api.http.server import PortInUse
    from kanjian.appliance_api.http.server import serve as run_server

    cfg = load_station_config(config, data_dir, demo)
    api_update = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if api_update:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update=api_update)})

    def announce(line: str) -> None:
        out.print(line, highlight=False, soft_wrap=True)

    refusals: tuple[type[Exception], ...] = (PortInUse, *start_refusals())
    try:
        result = run_server(cfg, announce, screen_token)
    except refusals as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line
        raise typer.Exit(2) from e
    # exit 1 when judged inspections were not committed (the line names how many, and why)
    announce(f"stopped: {result.frames} inspections {result.verdicts}; {result.store.line()}")
    if not result.flushed:
        raise typer.Exit(1)


token_app = typer.Typer(help="Make, list and revoke API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="operator, engineer or admin")],
    name: Annotated[str, typer.Option(help="who or what holds it, e.g. 'panel-1' or 'alice'")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: DemoOpt = None,
) -> None:
    """Make a token and print it once (only its hash is stored)."""
    from kanjian.appliance_api.http.auth import Role, TokenStore
    from kanjian.station.state.audit import write_audit
    from kanjian.station.state.db import write_tx

    try:
        r = Role(role)
    except ValueError as e:
        console.print(f"[red]error:[/] role must be operator, engineer or admin, not {role!r}")
        raise typer.Exit(2) from e
    db = _open_db(config, data_dir, demo)
    actor = _cli_actor()
    try:
        with write_tx(db):
            new = TokenStore(db).create(name, r, actor.name)
            write_audit(db, actor, "token.create", new.info.id, {"name": name, "role": r.value})
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    finally:
        db.conn.close()
    console.print(f"token {new.info.id} ({r.value}, {name}); store it now, it is not shown again:")
    out.print(new.secret, highlight=False)


@token_app.command("list")
def token_list(config: ConfigOpt = None, data_dir: DataDirOpt = None, demo: DemoOpt = None) -> None:
    """List tokens (never their secrets)."""
    from kanjian.appliance_api.http.auth import TokenStore

    db = _open_db(config, data_dir, demo)
    try:
        tokens = TokenStore(db).list()
    finally:
        db.conn.close()
    table = Table("id", "name", "role", "created", "by", "revoked")
    for t in tokens:
        table.add_row(
            t.id, t.name, t.role.value, t.created_at, t.created_by or "", t.revoked_at or ""
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (8 hex digits)")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: DemoOpt = None,
) -> None:
    """Revoke a token at once."""
    from kanjian.appliance_api.http.auth import TokenStore
    from kanjian.station.state.audit import write_audit
    from kanjian.station.state.db import write_tx

    db = _open_db(config, data_dir, demo)
    try:
        with write_tx(db):
            info = TokenStore(db).revoke(token_id)
            if info is not None:
                write_audit(db, _cli_actor(), "token.revoke", token_id, {"name": info.name})
    finally:
        db.conn.close()
    if info is None:
        console.print(f"[red]error:[/] no token {token_id}")
        raise typer.Exit(1)
    out.print(f"token {token_id} ({info.name}) revoked at {info.revoked_at}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``token`` to the ``kanjian`` CLI."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
