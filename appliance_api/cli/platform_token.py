"""``kanjian platform token create|list|revoke``: the fleet page's access tokens.

The work lives in :mod:`kanjian.platform.web.tokens`; psycopg is imported inside the
commands. Tokens live in the platform's PostgreSQL (``platform_tokens``, migration 3;
the commands migrate the database first, as receivers do).
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kanjian.appliance_api.cli.platform_db import DbOpt, connect_migrated

console = Console(stderr=True)
out = Console()

token_app = typer.Typer(
    help="Platform tokens: each has a role (viewer, engineer, admin) and a scope (a firm, "
    "or sites; the whole cluster for an admin)."
)


def _connect(db: str) -> Any:
    return connect_migrated(db, "platform tokens live in the platform's PostgreSQL")


def _row(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "role": info.role.value,
        "scope": info.scope.describe(),
        "created_at": info.created_at.isoformat(),
        "created_by": info.created_by,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who or what holds it (1-64 characters)")],
    db: DbOpt,
    role: Annotated[str, typer.Option(help="viewer, engineer or admin")] = "viewer",
    firm: Annotated[str | None, typer.Option(help="scope: every site of this firm")] = None,
    sites: Annotated[str | None, typer.Option(help="scope: these sites, comma-separated")] = None,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="scope: the whole cluster (admin tokens only)")
    ] = False,
) -> None:
    """Make a token and print it once (only its hash is kept)."""
    from kanjian.platform.web.scope import PlatformRole, Scope
    from kanjian.platform.web.tokens import PlatformTokens

    try:
        r = PlatformRole(role)
    except ValueError:
        console.print(f"[red]error:[/] role {role!r}: use viewer, engineer or admin")
        raise typer.Exit(2) from None
    given = [x for x in (firm is not None, sites is not None, cluster) if x]
    if len(given) != 1:
        console.print("[red]error:[/] give exactly one scope: --firm FIRM, --sites A,B or "
                      "--cluster (admin only)")  # fmt: skip
        raise typer.Exit(2)
    site_list = tuple(s.strip() for s in (sites or "").split(",") if s.strip())
    if sites is not None and not site_list:
        console.print("[red]error:[/] --sites names no site")
        raise typer.Exit(2)
    try:
        scope = Scope(firm=firm, sites=site_list)
        conn = _connect(db)
        with conn:
            made = PlatformTokens(conn).create(name, r, scope, f"cli:{getpass.getuser()}")
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"token {made.info.id} ({made.info.role.value}, {scope.describe()}) for "
                  f"{name}; shown once, keep it:")  # fmt: skip
    out.print(made.secret, soft_wrap=True)


@token_app.command("list")
def token_list(
    db: DbOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every token: id, name, role, scope, created, revoked (never the secret)."""
    from kanjian.platform.web.tokens import PlatformTokens

    with _connect(db) as conn:
        rows = [_row(i) for i in PlatformTokens(conn).list()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table("id", "name", "role", "scope", "created", "revoked")
    for r in rows:
        t.add_row(r["id"], r["name"], r["role"], r["scope"], r["created_at"][:19],
                  (r["revoked_at"] or "")[:19])  # fmt: skip
    out.print(t)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (8 hex digits)")],
    db: DbOpt,
) -> None:
    """Revoke a token: the page refuses it from the next request on."""
    from kanjian.platform.web.tokens import PlatformTokens

    with _connect(db) as conn:
        info = PlatformTokens(conn).revoke(token_id)
    if info is None:
        console.print(f"[red]error:[/] no token {token_id!r} (kanjian platform token list)")
        raise typer.Exit(1)
    out.print(f"token {info.id} ({info.name}) revoked at {info.revoked_at}")
