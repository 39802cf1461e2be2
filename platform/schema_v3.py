"""PostgreSQL migration 3: the platform's own access tokens (the fleet page and its API),
and the index of the station list's state events.

A token belongs to a person or a program and says what it may do (``role``) and whose
data it may see (its scope)::

    platform_tokens(id PK (8 hex digits, public), name, role, firm, sites text[],
                    secret_sha256, created_at, created_by, revoked_at)

- ``role``: ``viewer`` (reads), ``engineer`` (reads, and acts on stations: rollouts),
  ``admin`` (everything, tokens included).
- scope: ``firm`` (every site the ``sites`` table gives that firm, whenever it was
  registered), or ``sites`` (those site names), or neither: the whole cluster, for an
  ``admin`` only (the table refuses a viewer or engineer without a scope).

And ``events_station_state``: a partial index of the events the station list reads
(camera lost/back, backlog high/normal), so each station's latest one is one index
step however many other events it sent.

Only the sha256 of the secret is kept (:mod:`kanjian.platform.web.tokens`); a token
shown once at creation is ``kjp_<id>_<secret>``.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    """CREATE TABLE platform_tokens (
        id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8}$'),
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
        role text NOT NULL CHECK (role IN ('viewer', 'engineer', 'admin')),
        firm text,
        sites text[],
        secret_sha256 text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        created_by text,
        revoked_at timestamptz,
        -- one kind of scope at a time; a list of sites is never empty
        CHECK (firm IS NULL OR sites IS NULL),
        CHECK (sites IS NULL OR (cardinality(sites) > 0 AND array_position(sites, NULL) IS NULL)),
        -- the whole cluster (no scope) is an admin's only
        CHECK (role = 'admin' OR firm IS NOT NULL OR sites IS NOT NULL))""",
    # the station list's camera and backlog columns: each station's latest state event,
    # found without walking back through all of its other events (a few, kept small)
    """CREATE INDEX events_station_state ON events (site, line, station, at)
        WHERE event IN ('camera_lost', 'camera_back', 'sync_backlog_high', 'sync_backlog_normal')""",
)
