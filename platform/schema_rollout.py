"""PostgreSQL migration 4: staged rollouts, the bundle catalogue and the platform's audit.

Run inside one transaction by :func:`kanjian.platform.schema.migrate`. The engine
(:mod:`kanjian.platform.rollout_engine`) keeps all of a rollout's state in these
rows, so a watcher that restarts (or a second one) carries on from them::

    platform_bundles(archive_sha256 PK, bucket, key, model_sha256, name, version,
                     uploaded_at, uploaded_by)
        every bundle archive the platform put in object storage; a rollback deploys
        the archive of the model a station ran before (looked up by model_sha256)
    rollouts(rollout_id PK, state, created_at, created_by, updated_at,
             archive_sha256 FK, model_sha256, name, version, bucket, key,
             canary_count, window_s, min_inspections, max_fail_rate_increase,
             baseline_mode, baseline_fail, baseline_judged, answer_timeout_s, resend_s,
             window_start, canary_fail, canary_judged, reason, finished_at)
    rollout_stations(rollout_id FK, site, line, station PK, position, phase,
             state, model_before, deploy_command_id, deploy_sent_at, deploy_sends,
             answered_at, rollback_command_id, rollback_sent_at, rollback_sends,
             rollback_answered_at, reason)
    platform_audit(audit_id PK, at, actor, action, rollout_id, site, line, station,
                   detail jsonb)

States (text, checked): a rollout is ``canary`` → ``rest`` → ``done`` /
``incomplete``, or ``canary`` / ``rest`` → ``rolling_back`` → ``rolled_back`` /
``rollback_failed``. A station is ``pending`` → ``sent`` → ``active`` / ``rejected``
/ ``no_answer``, and on a rollback ``rollback_sent`` → ``rolled_back`` /
``rollback_failed``.
"""

from __future__ import annotations

ROLLOUT_STATES = ("canary", "rest", "done", "incomplete", "rolling_back", "rolled_back",
                  "rollback_failed")  # fmt: skip
STATION_STATES = ("pending", "sent", "active", "rejected", "no_answer", "rollback_sent",
                  "rolled_back", "rollback_failed")  # fmt: skip


def _check(column: str, values: tuple[str, ...]) -> str:
    return f"CHECK ({column} IN ({', '.join(repr(v) for v in values)}))"


DDL: tuple[str, ...] = (
    """CREATE TABLE platform_bundles (
        archive_sha256 text PRIMARY KEY CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
        bucket text NOT NULL, key text NOT NULL,
        model_sha256 text NOT NULL CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
        name text NOT NULL, version text NOT NULL,
        uploaded_at timestamptz NOT NULL DEFAULT now(), uploaded_by text NOT NULL)""",
    # a rollback's question: which archive holds the model this station ran before
    "CREATE INDEX platform_bundles_model ON platform_bundles (model_sha256, uploaded_at)",
    f"""CREATE TABLE rollouts (
        rollout_id text PRIMARY KEY,
        state text NOT NULL {_check("state", ROLLOUT_STATES)},
        created_at timestamptz NOT NULL DEFAULT now(), created_by text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        archive_sha256 text NOT NULL REFERENCES platform_bundles,
        model_sha256 text NOT NULL, name text NOT NULL, version text NOT NULL,
        bucket text NOT NULL, key text NOT NULL,
        canary_count integer NOT NULL CHECK (canary_count >= 1),
        window_s double precision NOT NULL CHECK (window_s >= 0),
        min_inspections integer NOT NULL CHECK (min_inspections >= 1),
        max_fail_rate_increase double precision NOT NULL
            CHECK (max_fail_rate_increase >= 0 AND max_fail_rate_increase <= 1),
        baseline_mode text NOT NULL CHECK (baseline_mode IN ('before', 'others')),
        baseline_fail bigint, baseline_judged bigint,
        answer_timeout_s double precision NOT NULL CHECK (answer_timeout_s > 0),
        resend_s double precision NOT NULL CHECK (resend_s > 0),
        window_start timestamptz, canary_fail bigint, canary_judged bigint,
        reason text, finished_at timestamptz)""",
    # the rollouts still moving (the watcher's question each tick), newest first for status
    "CREATE INDEX rollouts_created ON rollouts (created_at)",
    f"""CREATE TABLE rollout_stations (
        rollout_id text NOT NULL REFERENCES rollouts ON DELETE CASCADE,
        site text NOT NULL, line text NOT NULL, station text NOT NULL,
        position integer NOT NULL,
        phase text NOT NULL CHECK (phase IN ('canary', 'rest')),
        state text NOT NULL {_check("state", STATION_STATES)},
        model_before text NOT NULL,
        deploy_command_id text NOT NULL, deploy_sent_at timestamptz,
        deploy_sends integer NOT NULL DEFAULT 0, answered_at timestamptz,
        rollback_command_id text NOT NULL, rollback_sent_at timestamptz,
        rollback_sends integer NOT NULL DEFAULT 0, rollback_answered_at timestamptz,
        reason text,
        PRIMARY KEY (rollout_id, site, line, station),
        UNIQUE (rollout_id, position))""",
    """CREATE TABLE platform_audit (
        audit_id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        actor text NOT NULL, action text NOT NULL,
        rollout_id text, site text, line text, station text,
        detail jsonb NOT NULL DEFAULT '{}')""",
    # a rollout's history, in order
    "CREATE INDEX platform_audit_rollout ON platform_audit (rollout_id, audit_id)",
)
