"""The fleet page's questions, each confined to a token's :class:`~kanjian.platform.web.scope.Scope`
in its SQL.

The same questions as :mod:`kanjian.platform.fleet_sql` (and on the same indexes),
written for the page: each statement carries the scope's condition on its rows'
``site`` (``{scope}`` below, filled by :func:`scoped`), so what is outside the scope is
never read. Filters that are NULL mean "all" (within the scope). Hours are UTC hours
``[t0, t1)``; yield is PASS / (PASS + FAIL + REVIEW).
"""

from __future__ import annotations

from typing import Any, Literal

from kanjian.platform.schema_feedback import SHOWN
from kanjian.platform.web.scope import Scope

GroupBy = Literal["site", "line", "station", "hour"]

#: the key columns of each grouping of ``station_hours``
GROUPS: dict[GroupBy, tuple[str, ...]] = {
    "site": ("site",),
    "line": ("site", "line"),
    "station": ("site", "line", "station"),
    "hour": ("hour",),
}

_FILTERS = """(%(site)s::text IS NULL OR {p}site = %(site)s)
        AND (%(line)s::text IS NULL OR {p}line = %(line)s)
        AND (%(station)s::text IS NULL OR {p}station = %(station)s)"""

#: stations (one, or all in scope), with what the station list shows: availability (the
#: retained topic), the latest inspection's verdict and model, the latest camera event
#: and the latest backlog event. Laterals read inspections_station_time and
#: events_station_state (partial: those four events only) backwards, one entry per station.
STATIONS = f"""SELECT f.firm, s.site, s.line, s.station, s.availability, s.updated_at,
        s.last_received_at, l.inspection_id, l.captured_at, l.verdict, l.model_name,
        l.model_version, c.event, c.data, c.at, b.event, b.data, b.at
    FROM stations s
    LEFT JOIN sites f ON f.site = s.site
    LEFT JOIN LATERAL (
        SELECT i.inspection_id, i.captured_at, i.verdict, i.model_name, i.model_version
        FROM inspections i
        WHERE i.site = s.site AND i.line = s.line AND i.station = s.station
        ORDER BY i.captured_at DESC LIMIT 1) l ON true
    LEFT JOIN LATERAL (
        SELECT e.event, e.data, e.at FROM events e
        WHERE e.site = s.site AND e.line = s.line AND e.station = s.station
            AND e.event IN ('camera_lost', 'camera_back')
        ORDER BY e.at DESC LIMIT 1) c ON true
    LEFT JOIN LATERAL (
        SELECT e.event, e.data, e.at FROM events e
        WHERE e.site = s.site AND e.line = s.line AND e.station = s.station
            AND e.event IN ('sync_backlog_high', 'sync_backlog_normal')
        ORDER BY e.at DESC LIMIT 1) b ON true
    WHERE {{scope}} AND {_FILTERS.format(p="s.")}
    ORDER BY s.site, s.line, s.station"""

#: is there a station (or a line, or a site) by these names in scope: the existence check
#: behind every 404 (a name outside the scope and a name nobody uses answer alike)
EXISTS = f"""SELECT EXISTS (SELECT 1 FROM stations s WHERE {{scope}}
        AND {_FILTERS.format(p="s.")})"""


def counts_sql(by: GroupBy) -> str:
    """Verdict counts of ``station_hours`` in ``[t0, t1)`` grouped ``by``.

    Rows: the group's key columns, then pass, fail, review, error, missed.
    station_hours' primary key serves a site, line or station; station_hours_hour the rest.
    """
    cols = ", ".join(GROUPS[by])
    return f"""SELECT {cols}, sum(pass)::bigint, sum(fail)::bigint, sum(review)::bigint,
        sum(error)::bigint, sum(missed)::bigint
    FROM station_hours
    WHERE hour >= %(t0)s AND hour < %(t1)s AND {{scope}} AND {_FILTERS.format(p="")}
    GROUP BY {cols} ORDER BY {cols}"""


#: Pareto of a line's defects in ``[t0, t1)``: detections of its FAIL and REVIEW parts
#: by class, most frequent first, with the parts each appeared on (inspections_line_flagged)
PARETO = """SELECT d.class_name, count(*) AS detections, count(DISTINCT d.inspection_id)
    FROM inspections i JOIN detections d ON d.inspection_id = i.inspection_id
    WHERE i.site = %(site)s AND i.line = %(line)s AND i.verdict IN ('FAIL', 'REVIEW')
        AND i.captured_at >= %(t0)s AND i.captured_at < %(t1)s AND {scope}
    GROUP BY d.class_name ORDER BY 2 DESC, 1"""

#: events but operators' answers and shadow reports, newest first (ties by id): one
#: station's (events_station_shown) or all in scope (events_shown_at; an incremental sort
#: breaks ties in time)
EVENTS = f"""SELECT e.event_id, e.site, e.line, e.station, e.event, e.at, e.data
    FROM events e
    WHERE {{scope}} AND {_FILTERS.format(p="e.")} AND e.{SHOWN}
    ORDER BY e.at DESC, e.event_id DESC LIMIT %(limit)s"""

#: a station's latest FAIL parts that have a picture in object storage, newest first
FAIL_PICTURES = """SELECT inspection_id, captured_at, verdict, top_class, top_confidence,
        model_name, model_version, image_bucket, image_key
    FROM inspections
    WHERE site = %(site)s AND line = %(line)s AND station = %(station)s
        AND verdict = 'FAIL' AND image_key IS NOT NULL AND {scope}
    ORDER BY captured_at DESC LIMIT %(limit)s"""


def scoped(sql: str, scope: Scope, site_column: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """``sql`` with its ``{scope}`` placeholder filled for ``scope``, and all parameters.

    ``site_column``: the column of the rows' site (``s.site``, ``site``...). Filters
    (``site``, ``line``, ``station``) not given are NULL: all.
    """
    where, scope_params = scope.where(site_column)
    args = {"site": None, "line": None, "station": None, **params, **scope_params}
    return sql.replace("{scope}", where), args
