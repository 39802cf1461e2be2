"""The receiver's writes into the typed PostgreSQL schema (migration 2), a batch at a time.

Every function runs on a cursor inside the caller's transaction and sends one
statement per table for the whole batch (arrays through ``unnest``), so a batch of
a thousand messages costs a handful of round trips. The firm of each row comes from
the ``sites`` registry in the same statement.

Idempotent by inspection UUID: ``ON CONFLICT DO NOTHING ... RETURNING`` says which
rows are new, and only those get detections and count in ``station_hours``, so a
message delivered twice (by one receiver or by two) is stored and counted once.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kanjian.platform.inbound import (
    DetectionRow,
    InspectionRow,
    clean_json,
    inspection_row,
    text,
    timestamp,
)
from kanjian.platform.pg_feedback import insert_typed

_COLS = (
    "inspection_id", "site", "line", "station", "stream", "seq", "captured_at", "judged_at",
    "verdict", "reason", "model_name", "model_version", "model_sha256", "num_detections",
    "top_class", "top_confidence", "score", "image_bucket", "image_key", "received_at",
    "payload_json",
)  # fmt: skip
_TYPES = (
    "uuid", "text", "text", "text", "text", "bigint", "timestamptz", "timestamptz",
    "kanjian_verdict", "text", "text", "text", "text", "integer", "text", "real",
    "float8", "text", "text", "timestamptz", "text",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO inspections (firm, {', '.join(_COLS)}) "
    # %b: arrays in binary; as text, every quote of every JSON payload is escaped (slow)
    f"SELECT s.firm, u.* FROM unnest({', '.join(f'%b::{t}[]' for t in _TYPES)}) "
    f"AS u({', '.join(_COLS)}) LEFT JOIN sites s ON s.site = u.site "
    "ON CONFLICT (inspection_id) DO NOTHING RETURNING inspection_id"
)
_VERDICT_COLS = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")


def insert_inspections(
    cur: Any, messages: Sequence[dict[str, Any]], received_at: datetime
) -> set[uuid.UUID]:
    """Insert the batch's inspections, their detections and hour counts; return the new ids.

    ``messages`` are messages :func:`kanjian.platform.inbound.problem` accepted.
    """
    rows = [inspection_row(m, received_at) for m in messages]
    payloads = [json.dumps(m, separators=(",", ":")) for m in messages]
    columns: list[list[Any]] = [[getattr(r, c) for r in rows] for c in _COLS[:-1]]
    cur.execute(_INSERT, [*columns, payloads])
    new = {r[0] for r in cur.fetchall()}
    fresh: dict[uuid.UUID, InspectionRow] = {}
    for r in rows:  # a UUID twice in one batch is one new row
        if r.inspection_id in new:
            fresh.setdefault(r.inspection_id, r)
    insert_detections(cur, [(r.inspection_id, r.detections) for r in fresh.values()])
    _count_hours(cur, list(fresh.values()))
    _touch_stations(cur, rows, received_at)
    return new


def insert_detections(
    cur: Any, per_inspection: Sequence[tuple[uuid.UUID, Sequence[DetectionRow]]]
) -> None:
    """``detections`` rows of inspections just inserted."""
    flat = [(iid, d) for iid, dets in per_inspection for d in dets]
    if not flat:
        return
    fields = ("n", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2", "mask_area")
    cur.execute(
        "INSERT INTO detections (inspection_id, n, class_id, class_name, confidence, "
        "x1, y1, x2, y2, mask_area) SELECT * FROM unnest(%b::uuid[], %b::integer[], "
        "%b::integer[], %b::text[], %b::real[], %b::real[], %b::real[], %b::real[], "
        "%b::real[], %b::integer[])",
        [[iid for iid, _d in flat], *([getattr(d, f) for _i, d in flat] for f in fields)],
    )


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)  # t is UTC (inbound.timestamp)


def _count_hours(cur: Any, rows: Sequence[InspectionRow]) -> None:
    """Add new inspections to ``station_hours`` (keys sorted: one lock order for all)."""
    counts: Counter[tuple[str, str, str, datetime, str]] = Counter(
        (r.site, r.line, r.station, _hour(r.captured_at), r.verdict) for r in rows
    )
    keys = sorted({k[:4] for k in counts})
    if not keys:
        return
    per = [[counts[(*k, v)] for k in keys] for v in _VERDICT_COLS]
    cur.execute(
        "INSERT INTO station_hours (site, line, station, hour, firm, pass, fail, review, "
        "error, missed) SELECT u.site, u.line, u.station, u.hour, s.firm, u.p, u.f, u.r, "
        "u.e, u.m FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], "
        "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) "
        "AS u(site, line, station, hour, p, f, r, e, m) LEFT JOIN sites s ON s.site = u.site "
        "ORDER BY 1, 2, 3, 4 "
        "ON CONFLICT (site, line, station, hour) DO UPDATE SET "
        "pass = station_hours.pass + excluded.pass, fail = station_hours.fail + excluded.fail, "
        "review = station_hours.review + excluded.review, "
        "error = station_hours.error + excluded.error, "
        "missed = station_hours.missed + excluded.missed",
        [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
         [k[3] for k in keys], *per],
    )  # fmt: skip


def _touch_stations(cur: Any, rows: Sequence[InspectionRow], at: datetime) -> None:
    """Put the batch's stations on the station list with the time they were last heard."""
    keys = sorted({(r.site, r.line, r.station) for r in rows})
    if not keys:
        return
    cur.execute(
        "INSERT INTO stations (site, line, station, firm, last_received_at) "
        "SELECT u.site, u.line, u.station, s.firm, %s FROM unnest(%s::text[], %s::text[], "
        "%s::text[]) AS u(site, line, station) LEFT JOIN sites s ON s.site = u.site "
        "ORDER BY 1, 2, 3 ON CONFLICT (site, line, station) DO UPDATE SET "
        "last_received_at = excluded.last_received_at, firm = excluded.firm",
        [at, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    )


def insert_event(
    cur: Any, m: dict[str, Any], where: tuple[str, str, str], received_at: datetime
) -> None:
    """Store an ``event`` message once (``where``: the topic's site, line, station, used
    when the message leaves them out), and its typed row (:mod:`.pg_feedback`). A usable
    ``shadow_agreement`` is kept as its typed row only: a station sends one a minute
    while a shadow runs, each holding every number of the ones before."""
    site, line, station = (text(m.get(k)) or w for k, w in zip(("site", "line", "station"),
                                                                 where, strict=True))  # fmt: skip
    data = m.get("data")
    at = timestamp(m.get("at")) or received_at
    typed = isinstance(data, dict) and bool(site and line and station) and insert_typed(
        cur, str(m["event"]), clean_json(data), (site, line, station), at, received_at)  # fmt: skip
    if typed and m["event"] == "shadow_agreement":
        return  # cumulative: its newest report (the typed row) says all the earlier ones did
    cur.execute(
        "INSERT INTO events (event_id, firm, site, line, station, event, at, data, "
        "payload_json, received_at) SELECT %s::uuid, (SELECT firm FROM sites WHERE site = %s), "
        "%s, %s, %s, %s, %s, %s::jsonb, %s, %s ON CONFLICT DO NOTHING",
        [m["event_id"], site, site, line, station, text(m["event"]), at,
         json.dumps(clean_json(data)) if isinstance(data, dict) else None,
         json.dumps(m, separators=(",", ":")), received_at],
    )  # fmt: skip


def record_availability(
    cur: Any, site: str, line: str, station: str, value: str, at: datetime
) -> None:
    cur.execute(
        "INSERT INTO stations (site, line, station, firm, availability, updated_at) "
        "VALUES (%s, %s, %s, (SELECT firm FROM sites WHERE site = %s), %s, %s) "
        "ON CONFLICT (site, line, station) DO UPDATE SET "
        "availability = excluded.availability, updated_at = excluded.updated_at",
        [site, line, station, site, value.replace("\x00", ""), at],
    )


def assign_site(conn: Any, site: str, firm: str) -> dict[str, int]:
    """Register ``site`` as ``firm``'s and relabel the rows already stored; counts by table.

    One short transaction per table (each idempotent), so a receiver writing meanwhile
    never waits on the whole relabelling; run it again to catch rows a receiver wrote
    with the old label in between.
    """
    changed: dict[str, int] = {}
    with conn.transaction():
        conn.execute(
            "INSERT INTO sites (site, firm) VALUES (%s, %s) ON CONFLICT (site) DO UPDATE "
            "SET firm = excluded.firm, updated_at = now()",
            [site, firm],
        )
    for table in ("stations", "station_hours", "events", "inspections", "feedback",
                  "shadow_reports"):  # fmt: skip
        with conn.transaction():
            cur = conn.execute(
                f"UPDATE {table} SET firm = %s WHERE site = %s AND firm IS DISTINCT FROM %s",
                [firm, site, firm],
            )
            changed[table] = cur.rowcount
    return changed
