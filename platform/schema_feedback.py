"""PostgreSQL migration 5: operator feedback and shadow agreement, and what rollouts watch of them.

The stations send both as events (``feedback``, ``shadow_agreement``;
:mod:`kanjian.station.sync.feedback_feed`); the receiver keeps each answer whole in
``events`` and, in the same transaction, as a typed row here; a shadow report only as
its typed row (cumulative: the newest says all the earlier ones did; one whose data is
unusable stays in ``events``)::

    feedback(inspection_id uuid, feedback_id, firm, site, line, station, kind,
             class_name, note, actor, created_at, verdict, model_sha256, captured_at,
             wrong, received_at)  PK (inspection_id, feedback_id)
        one operator answer; ``verdict`` / ``model_sha256`` / ``captured_at`` are the
        inspection's as the station had it; ``wrong``: the answer says the verdict was
        wrong (a FAIL or REVIEW answered not_defect, a PASS answered confirm_defect or
        wrong_class, any ERROR: the station's own rule,
        :func:`kanjian.station.shadow.gate.is_wrong`). An inspection's latest answer
        (highest ``feedback_id``) is the one that counts.
    shadow_reports(site, line, station, active_sha256, shadow_sha256 PK, firm,
                   session_id, shadow_name, shadow_version, frames, agreed,
                   feedback_frames, active_wrong, shadow_wrong, at, received_at)
        the newest report of each station's shadow against its active model
        (the counts are cumulative on the station, so the newest says it all).

The fleet's event lists (``events_shown_at``, ``events_station_shown``) leave both
out; ``events_station_answers`` finds a station's answers to commands.

``rollouts`` gains what its canaries are judged on besides the FAIL rate: the
margin of the feedback-wrong rate (``max_feedback_increase``), the least shadow
agreement (``min_agreement``, 0: not watched), and the numbers measured.
"""

from __future__ import annotations

#: the events the fleet's event lists show (the condition of their partial indexes)
SHOWN = "event NOT IN ('feedback', 'shadow_agreement')"

DDL: tuple[str, ...] = (
    """CREATE TABLE feedback (
        inspection_id uuid NOT NULL, feedback_id bigint NOT NULL,
        firm text, site text NOT NULL, line text NOT NULL, station text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('confirm_defect', 'not_defect', 'wrong_class')),
        class_name text, note text, actor text, created_at timestamptz,
        verdict kanjian_verdict, model_sha256 text, captured_at timestamptz,
        wrong boolean NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (inspection_id, feedback_id))""",
    # a station's answers over a time range (the fleet's and an engineer's question);
    # a rollout reaches them from its inspections through the primary key
    "CREATE INDEX feedback_station_captured ON feedback (site, line, station, captured_at)",
    """CREATE TABLE shadow_reports (
        site text NOT NULL, line text NOT NULL, station text NOT NULL,
        active_sha256 text NOT NULL, shadow_sha256 text NOT NULL,
        firm text, session_id bigint, shadow_name text, shadow_version text,
        frames bigint NOT NULL CHECK (frames >= 0),
        agreed bigint NOT NULL CHECK (agreed >= 0 AND agreed <= frames),
        feedback_frames bigint NOT NULL DEFAULT 0, active_wrong bigint NOT NULL DEFAULT 0,
        shadow_wrong bigint NOT NULL DEFAULT 0,
        at timestamptz NOT NULL, received_at timestamptz NOT NULL,
        PRIMARY KEY (site, line, station, active_sha256, shadow_sha256))""",
    # the fleet's event lists leave answers and shadow reports out (they would push
    # every other event off them, and an answer's note is not for every viewer): their
    # own partial indexes, newest first, as events_at / events_station_at were
    f"CREATE INDEX events_shown_at ON events (at) WHERE {SHOWN}",
    f"CREATE INDEX events_station_shown ON events (site, line, station, at) WHERE {SHOWN}",
    # a rollout waiting for a station's answer to its command: the few answers only
    """CREATE INDEX events_station_answers ON events (site, line, station, received_at)
        WHERE event IN ('model_activated', 'model_rejected')""",
    # rollouts started before this migration keep the plan they were started with:
    # feedback and agreement not watched (1 and 0); new ones always give both
    """ALTER TABLE rollouts
        ADD COLUMN max_feedback_increase double precision NOT NULL DEFAULT 1
            CHECK (max_feedback_increase >= 0 AND max_feedback_increase <= 1),
        ADD COLUMN min_agreement double precision NOT NULL DEFAULT 0
            CHECK (min_agreement >= 0 AND min_agreement <= 1),
        ADD COLUMN baseline_window_s double precision CHECK (baseline_window_s > 0),
        ADD COLUMN baseline_wrong bigint, ADD COLUMN baseline_wrong_judged bigint,
        ADD COLUMN canary_wrong bigint,
        ADD COLUMN canary_answered bigint,
        ADD COLUMN shadow_frames bigint, ADD COLUMN shadow_agreed bigint""",
)
