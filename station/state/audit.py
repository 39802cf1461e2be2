"""The audit trail: one row per change (model activated, thresholds set, token made...).

The one writer of ``audit`` rows, for the API, the CLI, platform deploys and PLC
recipes alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from kanjian.station.records import utc_iso


def now_iso() -> str:
    """Current UTC time in the store's format (:func:`kanjian.station.records.utc_iso`)."""
    return utc_iso()


@dataclass(frozen=True)
class Actor:
    """Who did something: a token's holder, the CLI, the platform, the PLC or the station.

    Attributes:
        name: token name, ``cli:<user>``, ``platform:<command id>``, ``plc`` or ``station``.
        token_id: the token used, if any.
        role: its role value, if any.
        remote_addr: client address for HTTP requests.
    """

    name: str
    token_id: str | None = None
    role: str | None = None
    remote_addr: str | None = None


def write_audit(
    db: sqlite_utils.Database,
    actor: Actor,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append an audit row; returns its id.

    Call it inside the same transaction as the change where there is one, so a
    change is never without its row.
    """
    cur = db.execute(
        "INSERT INTO audit (at, actor, token_id, role, action, target, detail_json, remote_addr) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            now_iso(),
            actor.name,
            actor.token_id,
            actor.role,
            action,
            target,
            json.dumps(detail or {}, sort_keys=True, default=str),
            actor.remote_addr,
        ],
    )
    return int(cur.lastrowid or 0)


def list_audit(
    db: sqlite_utils.Database,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated by ``before_id``."""
    where: list[str] = []
    args: list[Any] = []
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    if action is not None:
        where.append("action = ?")
        args.append(action)
    sql = "SELECT * FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    rows = []
    for r in db.query(sql, [*args, limit]):
        r = dict(r)
        r["detail"] = json.loads(r.pop("detail_json") or "{}")
        rows.append(r)
    return rows
