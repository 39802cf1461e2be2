"""The fleet page's questions, as SQL over the typed schema (PostgreSQL, migration 2).

Each query names its parameters (psycopg ``%(name)s``) and the index that answers
it (``tests/test_platform_queries.py`` checks the plan on a grown database and the
answer against Python over the same rows). Times are ``timestamptz``; ``hour``
buckets are UTC hours. A NULL filter (site, line, station, firm) means "all".

Yield is PASS / (PASS + FAIL + REVIEW): ERROR and MISSED judged no part.
"""

from __future__ import annotations

from dataclasses import dataclass

from kanjian.platform.schema_feedback import SHOWN


@dataclass(frozen=True)
class FleetQuery:
    """One question: its SQL and the index its plan is meant to use."""

    name: str
    sql: str
    index: str


#: Yield and FAIL rate per station and hour in ``[t0, t1)``, optionally for one firm,
#: site, line or station (sum the rows for a line's or site's figure). station_hours'
#: primary key serves a site, line or station; station_hours_hour the whole fleet.
HOURS = FleetQuery(
    "hours",
    """SELECT site, line, station, hour, pass, fail, review, error, missed,
        pass::float8 / nullif(pass + fail + review, 0) AS yield,
        fail::float8 / nullif(pass + fail + review, 0) AS fail_rate
    FROM station_hours
    WHERE hour >= %(t0)s AND hour < %(t1)s
        AND (%(firm)s::text IS NULL OR firm = %(firm)s)
        AND (%(site)s::text IS NULL OR site = %(site)s)
        AND (%(line)s::text IS NULL OR line = %(line)s)
        AND (%(station)s::text IS NULL OR station = %(station)s)
    ORDER BY site, line, station, hour""",
    "station_hours_pkey",
)

#: FAIL rate of the whole fleet (or a firm) per hour in ``[t0, t1)``
FAIL_RATE = FleetQuery(
    "fail_rate",
    """SELECT hour, sum(fail) AS fail, sum(pass + fail + review) AS judged,
        sum(fail)::float8 / nullif(sum(pass + fail + review), 0) AS fail_rate
    FROM station_hours
    WHERE hour >= %(t0)s AND hour < %(t1)s AND (%(firm)s::text IS NULL OR firm = %(firm)s)
    GROUP BY hour ORDER BY hour""",
    "station_hours_hour",
)

#: Pareto of a line's defects in ``[t0, t1)``: detections of its FAIL and REVIEW parts
#: by class, most frequent first, with the number of parts each appeared on
PARETO = FleetQuery(
    "pareto",
    """SELECT d.class_name, count(*) AS detections,
        count(DISTINCT d.inspection_id) AS parts
    FROM inspections i JOIN detections d ON d.inspection_id = i.inspection_id
    WHERE i.site = %(site)s AND i.line = %(line)s AND i.verdict IN ('FAIL', 'REVIEW')
        AND i.captured_at >= %(t0)s AND i.captured_at < %(t1)s
    GROUP BY d.class_name ORDER BY detections DESC, d.class_name""",
    "inspections_line_flagged",
)

#: A line's latest FAIL and REVIEW parts (with their images), newest first
FLAGGED = FleetQuery(
    "flagged",
    """SELECT inspection_id, station, captured_at, verdict, top_class, top_confidence,
        image_bucket, image_key
    FROM inspections
    WHERE site = %(site)s AND line = %(line)s AND verdict IN ('FAIL', 'REVIEW')
    ORDER BY captured_at DESC LIMIT %(limit)s""",
    "inspections_line_flagged",
)

#: Every station on the list with its availability and its latest inspection
LATEST = FleetQuery(
    "latest",
    """SELECT s.firm, s.site, s.line, s.station, s.availability, s.updated_at,
        s.last_received_at, l.inspection_id, l.captured_at, l.verdict
    FROM stations s LEFT JOIN LATERAL (
        SELECT i.inspection_id, i.captured_at, i.verdict FROM inspections i
        WHERE i.site = s.site AND i.line = s.line AND i.station = s.station
        ORDER BY i.captured_at DESC LIMIT 1) l ON true
    WHERE (%(firm)s::text IS NULL OR s.firm = %(firm)s)
    ORDER BY s.site, s.line, s.station""",
    "inspections_station_time",
)

#: A station's events but operators' answers and shadow reports, newest first
STATION_EVENTS = FleetQuery(
    "station_events",
    f"""SELECT event_id, event, at, data FROM events
    WHERE site = %(site)s AND line = %(line)s AND station = %(station)s AND {SHOWN}
    ORDER BY at DESC LIMIT %(limit)s""",
    "events_station_shown",
)

QUERIES: tuple[FleetQuery, ...] = (HOURS, FAIL_RATE, PARETO, FLAGGED, LATEST, STATION_EVENTS)
