"""PostgreSQL migration 2: the platform schema made for the fleet's questions.

The statements run in order inside one transaction (:func:`kanjian.platform.schema.migrate`);
:data:`DDL` converts release 1's tables in place (one rewrite each) and adds the new
ones, :data:`BACKFILL` fills the roll-up and the station list from the rows there.
Between the two, Python fills ``detections`` and ``events.data`` from the stored
messages with the receiver's own parser.

The contract the fleet page reads (keys are text; ``firm`` is NULL until the site is
registered with ``kanjian platform site``)::

    sites(site PK, firm, updated_at)
    stations(site, line, station PK, firm, availability, updated_at, last_received_at)
    inspections(inspection_id uuid PK, firm, site, line, station, stream, seq,
                captured_at timestamptz NOT NULL, judged_at, verdict kanjian_verdict,
                reason, model_name, model_version, model_sha256, num_detections,
                top_class, top_confidence real, score, image_bucket, image_key,
                received_at timestamptz, payload_json)
    detections(inspection_id uuid FK, n, class_id, class_name, confidence real,
               x1, y1, x2, y2 real (pixels), mask_area)          PK (inspection_id, n)
    station_hours(site, line, station, hour timestamptz, firm, pass, fail, review,
                  error, missed)                                  PK (site, line, station, hour)
    events(event_id uuid PK, firm, site, line, station, event, at timestamptz NOT NULL,
           data jsonb, payload_json, received_at timestamptz)
    streams, lost                                                 (the receiver's own)

Each index below says which question it answers; :mod:`kanjian.platform.fleet_sql`
holds those questions as SQL and the tests check their plans.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    "CREATE TYPE kanjian_verdict AS ENUM ('PASS', 'FAIL', 'REVIEW', 'ERROR', 'MISSED')",
    # release 1 kept times as text; this reads them for the conversion only (dropped
    # below). The offset is required: a time without one would be read in the
    # session's time zone, i.e. guessed.
    r"""CREATE FUNCTION pg_temp.kanjian_ts(t text) RETURNS timestamptz
        LANGUAGE plpgsql STABLE AS $$
        BEGIN
            IF t IS NULL OR t !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
            THEN RETURN NULL; END IF;
            RETURN t::timestamptz;
        EXCEPTION WHEN others THEN RETURN NULL;  -- e.g. month 13: unreadable, not fatal
        END $$""",
    # the registry of sites: which firm each belongs to. A site name is unique in the
    # whole cluster already (it is a topic level every station of it publishes under).
    """CREATE TABLE sites (
        site text PRIMARY KEY, firm text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now())""",
    """ALTER TABLE inspections
        ALTER COLUMN inspection_id TYPE uuid USING inspection_id::uuid,
        ALTER COLUMN captured_at TYPE timestamptz USING coalesce(
            pg_temp.kanjian_ts(captured_at), pg_temp.kanjian_ts(judged_at),
            pg_temp.kanjian_ts(received_at), now()),
        ALTER COLUMN captured_at SET NOT NULL,
        ALTER COLUMN judged_at TYPE timestamptz USING pg_temp.kanjian_ts(judged_at),
        ALTER COLUMN received_at TYPE timestamptz
            USING coalesce(pg_temp.kanjian_ts(received_at), now()),
        ALTER COLUMN verdict TYPE kanjian_verdict USING verdict::kanjian_verdict,
        ADD COLUMN firm text,
        ADD COLUMN top_class text,
        ADD COLUMN top_confidence real""",
    # superseded by inspections_station_time (same leading columns)
    "DROP INDEX IF EXISTS inspections_station",
    # the latest inspection of each station (a backward scan, LIMIT 1, per station);
    # a station's inspections in a time window (drill-down, hours not rolled up);
    # verdict included so counting by verdict reads the index only
    """CREATE INDEX inspections_station_time
        ON inspections (site, line, station, captured_at) INCLUDE (verdict)""",
    # Pareto of a line's defects, a line's latest FAIL/REVIEW parts with their images:
    # only flagged parts (a few percent of the rows), newest last
    """CREATE INDEX inspections_line_flagged
        ON inspections (site, line, captured_at) INCLUDE (verdict, top_class)
        WHERE verdict IN ('FAIL', 'REVIEW')""",
    # (inspections_stream_seq (stream, seq) stays: confirmations' `through`, gap checks)
    """CREATE TABLE detections (
        inspection_id uuid NOT NULL REFERENCES inspections ON DELETE CASCADE,
        n integer NOT NULL, class_id integer, class_name text, confidence real,
        x1 real, y1 real, x2 real, y2 real, mask_area integer,
        PRIMARY KEY (inspection_id, n))""",
    # yield per site/line/station/hour, FAIL rate over time: the receiver adds each new
    # inspection to its station's UTC hour in the same transaction, so these counts
    # equal a GROUP BY over inspections (the tests check that) at a few rows per
    # station and hour. The primary key serves a site's, line's or station's hours.
    """CREATE TABLE station_hours (
        site text NOT NULL, line text NOT NULL, station text NOT NULL,
        hour timestamptz NOT NULL, firm text,
        pass bigint NOT NULL DEFAULT 0, fail bigint NOT NULL DEFAULT 0,
        review bigint NOT NULL DEFAULT 0, error bigint NOT NULL DEFAULT 0,
        missed bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (site, line, station, hour))""",
    # the whole fleet's (or a firm's) hours in a time window
    "CREATE INDEX station_hours_hour ON station_hours (hour)",
    """ALTER TABLE events
        ALTER COLUMN event_id TYPE uuid USING event_id::uuid,
        ALTER COLUMN at TYPE timestamptz USING coalesce(
            pg_temp.kanjian_ts(at), pg_temp.kanjian_ts(received_at), now()),
        ALTER COLUMN at SET NOT NULL,
        ALTER COLUMN received_at TYPE timestamptz
            USING coalesce(pg_temp.kanjian_ts(received_at), now()),
        ADD COLUMN firm text,
        ADD COLUMN data jsonb""",
    # a station's events, newest first
    "CREATE INDEX events_station_at ON events (site, line, station, at)",
    # the fleet's latest events
    "CREATE INDEX events_at ON events (at)",
    """ALTER TABLE streams
        ALTER COLUMN first_seen TYPE timestamptz USING pg_temp.kanjian_ts(first_seen),
        ALTER COLUMN last_seen TYPE timestamptz USING pg_temp.kanjian_ts(last_seen)""",
    """ALTER TABLE lost
        ALTER COLUMN reported_at TYPE timestamptz USING pg_temp.kanjian_ts(reported_at)""",
    """ALTER TABLE stations
        ALTER COLUMN updated_at TYPE timestamptz USING pg_temp.kanjian_ts(updated_at),
        ADD COLUMN firm text,
        ADD COLUMN last_received_at timestamptz""",
    "DROP FUNCTION pg_temp.kanjian_ts(text)",
)

BACKFILL: tuple[str, ...] = (
    """INSERT INTO station_hours (site, line, station, hour, pass, fail, review, error, missed)
        SELECT site, line, station, date_trunc('hour', captured_at, 'UTC'),
            count(*) FILTER (WHERE verdict = 'PASS'), count(*) FILTER (WHERE verdict = 'FAIL'),
            count(*) FILTER (WHERE verdict = 'REVIEW'),
            count(*) FILTER (WHERE verdict = 'ERROR'),
            count(*) FILTER (WHERE verdict = 'MISSED')
        FROM inspections GROUP BY 1, 2, 3, 4""",
    # every station that sent inspections is on the station list, with when it last did
    """INSERT INTO stations (site, line, station, last_received_at)
        SELECT site, line, station, max(received_at) FROM inspections GROUP BY 1, 2, 3
        ON CONFLICT (site, line, station)
        DO UPDATE SET last_received_at = excluded.last_received_at""",
    "ANALYZE inspections",
    "ANALYZE detections",
    "ANALYZE station_hours",
    "ANALYZE events",
)
