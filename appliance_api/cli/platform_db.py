"""The platform's PostgreSQL for the ``kanjian platform`` commands: the ``--db`` option,
the URL check, and a connection to a migrated database (psycopg is imported on use)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

_err = Console(stderr=True)

DbOpt = Annotated[str, typer.Option(help="the platform's PostgreSQL: postgresql://user:pw@host/db")]


def need_pg(db: str, what: str) -> None:
    """Exit 2 naming ``db`` unless it is a PostgreSQL URL; ``what`` says what lives there."""
    if not db.startswith(("postgresql://", "postgres://")):
        _err.print(f"[red]error:[/] {db} is not a postgresql:// URL: {what}")
        raise typer.Exit(2)


def connect_migrated(db: str, what: str, autocommit: bool = False) -> Any:
    """A psycopg connection to ``db`` brought to the latest schema (as receivers do when
    they start); exit 1 with the reason when the schema is newer than this code knows."""
    import psycopg

    from kanjian.platform.schema import SchemaError, migrate

    need_pg(db, what)
    conn = psycopg.connect(db, autocommit=autocommit)
    try:
        migrate(conn)
    except SchemaError as e:
        conn.close()
        _err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    return conn
