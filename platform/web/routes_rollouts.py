"""The fleet page's view of staged rollouts: ``GET /api/rollouts``.

What a rollout is and how it moves is :mod:`kanjian.platform.rollout`'s; this route
shows :func:`~kanjian.platform.rollout.rollout_status` for the rollouts a token may
see. A rollout is in a token's scope only when **every** station it targets is: its
numbers (the canaries' FAIL rate, the baseline) and its audit trail are made of all of
its stations, so a rollout that spans firms is shown to cluster-wide tokens only,
never in part. The scope is in the SQL that picks the rollouts, as on every route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from kanjian.platform.rollout import rollout_status
from kanjian.platform.web.deps import Db, Viewer

router = APIRouter(prefix="/api", tags=["rollouts"])

_IN_SCOPE = (
    "SELECT r.rollout_id FROM rollouts r WHERE NOT EXISTS (SELECT 1 FROM rollout_stations rs "
    "WHERE rs.rollout_id = r.rollout_id AND NOT ({where})) "
    "ORDER BY r.created_at DESC LIMIT %(limit)s"
)


@router.get("/rollouts")
def rollouts(
    who: Viewer, conn: Db, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[dict[str, Any]]:
    """The newest rollouts whose stations are all in the token's scope, newest first:
    state, bundle (name, version, model sha256), canaries and window, the canaries' FAIL
    rate against the baseline, each station's state, and the audit trail (as
    ``kanjian platform rollout status --json`` prints them)."""
    where, args = who.scope.where("rs.site")
    ids = [r[0] for r in conn.execute(_IN_SCOPE.format(where=where), {**args, "limit": limit})]
    return [row for rid in ids for row in rollout_status(conn, rid, limit=1)]
