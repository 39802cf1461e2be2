"""``store.retention`` over HTTP: what is in force and what the last pass did; change it
(kept over restarts, audited), or go back to station.yaml's."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from kanjian.appliance_api.http.api_models import ErrorOut
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.state import ApiState
from kanjian.station.retention import Retention
from kanjian.station.retention_config import StoreRetentionConfig
from kanjian.station.store_health import free_bytes

router = APIRouter(tags=["config"])
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    503: {"model": ErrorOut, "description": "this station runs no retention"},
}


class RetentionOut(BaseModel):
    """The retention in force, where it comes from, and what it did."""

    config: StoreRetentionConfig
    source: Literal["config", "api"] = Field(
        description="api: set through PUT /api/settings/retention, kept across restarts "
        "until DELETE /api/settings/retention returns to station.yaml"
    )
    set_at: str | None
    set_by: str | None
    passes: int = Field(description="passes since start")
    errors: int = Field(description="failed passes since start")
    totals: dict[str, int] = Field(description="what all passes since start deleted")
    last: dict[str, int] | None = Field(description="what the last pass deleted")
    last_at: str | None
    last_seconds: float | None
    last_error: str | None
    images_bytes: int = Field(description="saved images after the last pass, bytes")
    db_bytes: int = Field(description="database file and WAL after the last pass, bytes")
    free_bytes: int = Field(description="free space of the data folder now, bytes")
    incremental_vacuum: bool = Field(
        description="false: the database file cannot shrink; run `kanjian store vacuum` once"
    )


def _retention(state: ApiState) -> Retention:
    ret = state.station.retention
    if ret is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "this station runs no retention")
    return ret


def _out(ret: Retention) -> RetentionOut:
    s = ret.status()
    return RetentionOut(
        config=s.config,
        source=s.source,
        set_at=s.set_at,
        set_by=s.set_by,
        passes=s.passes,
        errors=s.errors,
        totals=dataclasses.asdict(s.totals),
        last=None if s.last is None else dataclasses.asdict(s.last),
        last_at=s.last_at,
        last_seconds=s.last_seconds,
        last_error=s.last_error,
        images_bytes=s.images_bytes,
        db_bytes=s.db_bytes,
        free_bytes=free_bytes(ret.data_dir),
        incremental_vacuum=s.incremental_vacuum,
    )


@router.get("/api/settings/retention", responses=_ERR)
def get_retention(state: State, _: Reader) -> RetentionOut:
    """Images and rows retention in force, and what its passes deleted."""
    return _out(_retention(state))


@router.put("/api/settings/retention", responses=_ERR)
def put_retention(state: State, who: Engineer, body: StoreRetentionConfig) -> RetentionOut:
    """Replace ``store.retention`` (the whole section; a key it does not know is a 422).

    Kept in the station's database and put back in force after a restart, over
    station.yaml's, until ``DELETE /api/settings/retention``; audited with the old
    and new values. The next pass starts at once.
    """
    ret = _retention(state)
    ret.set(body, who.actor())
    return _out(ret)


@router.delete("/api/settings/retention", responses=_ERR)
def reset_retention(state: State, who: Engineer) -> RetentionOut:
    """Drop the API's retention: station.yaml's is in force again (audited)."""
    ret = _retention(state)
    ret.reset(who.actor())
    return _out(ret)
