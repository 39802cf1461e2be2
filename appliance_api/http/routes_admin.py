"""Tokens (admin) and the audit trail (engineer)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam

from kanjian.appliance_api.http.api_models import (
    AuditOut,
    AuditPage,
    ErrorOut,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
)
from kanjian.appliance_api.http.auth import Role, TokenInfo, TokenStore
from kanjian.appliance_api.http.deps import Admin, Engineer, State
from kanjian.station.state.audit import list_audit, write_audit
from kanjian.station.state.db import SQLITE_MAX_INT, write_tx

router = APIRouter()
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
}
TokenId = Annotated[str, PathParam(pattern="^[0-9a-f]{8}$", description="the token's public id")]


def token_out(t: TokenInfo) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        role=t.role.value,
        created_at=t.created_at,
        created_by=t.created_by,
        revoked_at=t.revoked_at,
    )


@router.get("/api/tokens", tags=["auth"], responses=_ERR)
def list_tokens(state: State, _: Admin) -> list[TokenOut]:
    """Every token (secrets are never shown again)."""
    return [token_out(t) for t in state.tokens().list()]


@router.post("/api/tokens", tags=["auth"], status_code=status.HTTP_201_CREATED, responses=_ERR)
def create_token(state: State, who: Admin, body: TokenCreateIn) -> TokenCreatedOut:
    """Make a token; the response is the only time its secret is shown."""
    db = state.pool.get()
    with write_tx(db):
        new = TokenStore(db).create(body.name, Role(body.role), who.name)
        write_audit(
            db, who.actor(), "token.create", new.info.id, {"name": body.name, "role": body.role}
        )
    return TokenCreatedOut(**token_out(new.info).model_dump(), token=new.secret)


@router.delete(
    "/api/tokens/{token_id}",
    tags=["auth"],
    responses={
        **_ERR,
        404: {"model": ErrorOut, "description": "no such token"},
        409: {"model": ErrorOut, "description": "it is the token making this request"},
    },
)
def revoke_token(state: State, who: Admin, token_id: TokenId) -> TokenOut:
    """Revoke a token at once (idempotent). The token making the request cannot revoke
    itself (an admin would lock themselves out); use another admin token or the CLI.
    """
    if token_id == who.token_id:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "a token cannot revoke itself; use another admin token or `kanjian token revoke`",
        )
    db = state.pool.get()
    with write_tx(db):
        info = TokenStore(db).revoke(token_id)
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
        write_audit(db, who.actor(), "token.revoke", token_id, {"name": info.name})
    return token_out(info)


@router.get("/api/audit", tags=["auth"], responses=_ERR)
def get_audit(
    state: State,
    _: Engineer,
    action: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, le=SQLITE_MAX_INT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Changes made to the station, newest first."""
    rows = list_audit(state.pool.get(), limit, before, action)
    items = [AuditOut(**r) for r in rows]
    return AuditPage(items=items, next_before=items[-1].id if len(items) == limit else None)
