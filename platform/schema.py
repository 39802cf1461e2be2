"""The platform database's schema: release 1's tables, and PostgreSQL's versioned migrations.

SQLite (the single-file reference receiver for benches and tests) keeps the
release-1 tables (:data:`V1_DDL`, times as text, detections inside
``payload_json``). PostgreSQL is the platform's database: :func:`migrate` brings it
to :data:`LATEST`, one transaction per migration, recorded in
``platform_migrations(version, name, applied_at)``:

1. ``receiver_v1``: the tables exactly as release 1's receiver made them
   (``CREATE ... IF NOT EXISTS``, so a database that release wrote passes as is).
2. ``typed``: the schema made for the fleet's questions (:mod:`kanjian.platform.schema_v2`):
   ``timestamptz`` times, a ``kanjian_verdict`` enum, UUID keys, a firm beside
   site/line/station (from the ``sites`` registry), ``detections`` as rows, an hourly
   ``station_hours`` roll-up and the indexes of the fleet page's queries. Rows already
   there are converted: text times parsed (unreadable ones become NULL;
   ``captured_at`` falls back to ``judged_at``, then ``received_at``), detections read
   from ``payload_json`` with the receiver's own parser.
3. ``platform_tokens``: the fleet page's access tokens, each with a role and a scope
   (a firm, or sites; the whole cluster for an admin), and a partial index of the
   station list's state events (:mod:`kanjian.platform.schema_v3`).
4. ``rollouts``: staged rollouts, the catalogue of bundles the platform uploaded and
   the platform's audit (:mod:`kanjian.platform.schema_rollout`).
5. ``feedback``: operator feedback and shadow agreement as typed rows, and the
   rollouts' margins for them (:mod:`kanjian.platform.schema_feedback`).

Receivers that start together wait for each other on an advisory lock; the first
migrates, the others find the work done. A database migrated further than this code
knows is refused (an older receiver must not write into a newer schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kanjian.platform import schema_feedback, schema_rollout, schema_v2, schema_v3

#: release 1's tables (SQLite and PostgreSQL): the reference receiver as first shipped
V1_DDL = [
    """CREATE TABLE IF NOT EXISTS inspections (
        inspection_id TEXT PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL,
        station TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
        captured_at TEXT, judged_at TEXT, verdict TEXT NOT NULL, reason TEXT,
        model_name TEXT, model_version TEXT, model_sha256 TEXT, num_detections INTEGER,
        image_bucket TEXT, image_key TEXT, received_at TEXT NOT NULL, payload_json TEXT,
        score DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS inspections_stream_seq ON inspections(stream, seq)",
    "CREATE INDEX IF NOT EXISTS inspections_station ON inspections(site, line, station)",
    """CREATE TABLE IF NOT EXISTS streams (
        stream TEXT PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL, station TEXT NOT NULL,
        through BIGINT NOT NULL DEFAULT 0, max_seq BIGINT NOT NULL DEFAULT 0,
        received BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0,
        first_seen TEXT, last_seen TEXT)""",
    """CREATE TABLE IF NOT EXISTS lost (
        stream TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
        reported_at TEXT, PRIMARY KEY (stream, first_seq))""",
    """CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY, site TEXT, line TEXT, station TEXT, event TEXT NOT NULL,
        at TEXT, payload_json TEXT, received_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS stations (
        site TEXT NOT NULL, line TEXT NOT NULL, station TEXT NOT NULL, availability TEXT,
        updated_at TEXT, PRIMARY KEY (site, line, station))""",
]

#: ``(table, column, SQL type)`` added to release 1's tables after they were first made
#: (a database without them gets them when opened; SQLite and PostgreSQL both read
#: ``DOUBLE PRECISION``)
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("inspections", "score", "DOUBLE PRECISION"),  # anomaly models' image score, 0-1
)

#: ``pg_advisory_xact_lock`` key held while migrating ("kanjian" in ASCII)
MIGRATION_LOCK = 0x6B616E6A69616E


class SchemaError(RuntimeError):
    """The database cannot be brought to this code's schema (the message says why and
    what to do)."""


@dataclass(frozen=True)
class Migration:
    """One step: ``apply(cursor)`` runs inside the migration's transaction."""

    version: int
    name: str
    apply: Callable[[Any], None]


def _v1(cur: Any) -> None:
    for ddl in V1_DDL:
        cur.execute(ddl)
    for table, col, sqltype in ADDED_COLUMNS:
        cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {sqltype}")


def _typed(cur: Any) -> None:
    _refuse_unconvertible(cur)
    for sql in schema_v2.DDL:
        cur.execute(sql)
    _backfill_detections(cur)
    _backfill_event_data(cur)
    for sql in schema_v2.BACKFILL:
        cur.execute(sql)


def _tokens(cur: Any) -> None:
    for sql in schema_v3.DDL:
        cur.execute(sql)


def _rollouts(cur: Any) -> None:
    for sql in schema_rollout.DDL:
        cur.execute(sql)


def _feedback(cur: Any) -> None:
    for sql in schema_feedback.DDL:
        cur.execute(sql)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "receiver_v1", _v1),
    Migration(2, "typed", _typed),
    Migration(3, "platform_tokens", _tokens),
    Migration(4, "rollouts", _rollouts),
    Migration(5, "feedback", _feedback),
)
LATEST = MIGRATIONS[-1].version

_UUID_RE = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def applied(conn: Any) -> list[int]:
    """Versions recorded in ``platform_migrations`` (empty if the table is not there)."""
    row = conn.execute("SELECT to_regclass('platform_migrations')").fetchone()
    if row[0] is None:
        return []
    return [int(r[0]) for r in conn.execute("SELECT version FROM platform_migrations ORDER BY 1")]


def migrate(conn: Any, target: int = LATEST) -> list[int]:
    """Apply the migrations up to ``target`` not yet applied; return the versions applied.

    ``conn`` is a psycopg connection outside any transaction. Each migration runs in a
    transaction of its own that also holds the advisory lock :data:`MIGRATION_LOCK`.
    """
    done: list[int] = []
    for m in MIGRATIONS:
        if m.version > target:
            break
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            conn.execute(
                "CREATE TABLE IF NOT EXISTS platform_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            have = applied(conn)
            if have and max(have) > LATEST:
                raise SchemaError(
                    f"the platform database is at schema version {max(have)}, newer than this "
                    f"kanjian knows ({LATEST}): run a kanjian at least as new as the one that "
                    "migrated it"
                )
            if m.version in have:
                continue
            with conn.cursor() as cur:
                m.apply(cur)
                cur.execute(
                    "INSERT INTO platform_migrations (version, name) VALUES (%s, %s)",
                    [m.version, m.name],
                )
            done.append(m.version)
    return done


def _refuse_unconvertible(cur: Any) -> None:
    """Name the rows migration 2 cannot type (release 1 stored any non-empty text)."""
    checks = (
        ("inspections", "inspection_id", f"inspection_id !~ '{_UUID_RE}'", "ids that are not UUIDs"),
        ("inspections", "inspection_id",
         "verdict NOT IN ('PASS', 'FAIL', 'REVIEW', 'ERROR', 'MISSED')",
         "verdicts outside PASS/FAIL/REVIEW/ERROR/MISSED"),
        ("events", "event_id", f"event_id !~ '{_UUID_RE}'", "event ids that are not UUIDs"),
    )  # fmt: skip
    for table, key, where, what in checks:
        cur.execute(f"SELECT count(*), array_agg({key}) FROM (SELECT {key} FROM {table} "
                    f"WHERE {where}) bad")  # fmt: skip
        n, keys = cur.fetchone()
        if n:
            raise SchemaError(
                f"{n} rows of {table} have {what} (e.g. {list(keys)[:3]}): kanjian stations "
                f"never send such values. Delete or fix those rows, then migrate again"
            )


def _batches(cur: Any, sql: str, size: int = 5000) -> Any:
    """Rows of ``sql`` in lists of ``size``, read with a server-side cursor of the
    cursor's connection (in its transaction)."""
    with cur.connection.cursor(name="kanjian_migrate") as named:
        named.execute(sql)
        while rows := named.fetchmany(size):
            yield rows


def _backfill_detections(cur: Any) -> None:
    """Detections rows and ``top_class``/``top_confidence`` from each stored message."""
    from kanjian.platform.inbound import detections_of
    from kanjian.platform.pg_writer import insert_detections

    sql = "SELECT inspection_id, payload_json FROM inspections WHERE num_detections > 0"
    for rows in _batches(cur, sql):
        found = []
        for iid, payload in rows:
            try:
                m = json.loads(payload) if payload else {}
            except ValueError:
                continue
            dets, top = detections_of(m if isinstance(m, dict) else {})
            if dets:
                found.append((iid, dets, top))
        if not found:
            continue
        insert_detections(cur, [(iid, dets) for iid, dets, _t in found])
        cur.execute(
            "UPDATE inspections i SET top_class = u.c, top_confidence = u.p "
            "FROM unnest(%s::uuid[], %s::text[], %s::real[]) AS u(id, c, p) "
            "WHERE i.inspection_id = u.id",
            [[f[0] for f in found],
             [t.class_name if t else None for *_x, t in found],
             [t.confidence if t else None for *_x, t in found]],
        )  # fmt: skip


def _backfill_event_data(cur: Any) -> None:
    """``events.data`` (jsonb) from each stored message's ``data``."""
    from kanjian.platform.inbound import clean_json

    for rows in _batches(cur, "SELECT event_id, payload_json FROM events"):
        ids, data = [], []
        for eid, payload in rows:
            try:
                m = json.loads(payload) if payload else {}
            except ValueError:
                continue
            d = m.get("data") if isinstance(m, dict) else None
            if isinstance(d, dict):
                ids.append(eid)
                data.append(json.dumps(clean_json(d)))
        if ids:
            cur.execute(
                "UPDATE events e SET data = u.d FROM unnest(%s::uuid[], %s::jsonb[]) "
                "AS u(id, d) WHERE e.event_id = u.id",
                [ids, data],
            )
