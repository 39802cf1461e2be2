"""Rollout rows for the fleet page's tests, written straight into the platform database.

The rollout engine's own runs are tests/test_platform_rollout*.py; here only the page's
view of them matters: what a token may see. Three rollouts: one over acme's stations
only, one over borealis' only, one that spans both (visible to cluster tokens only).
Idempotent: seeding twice writes nothing more.
"""

from __future__ import annotations

import psycopg

SHA = "ab" * 32
#: rollout id -> the sites its stations are on
ROLLOUTS: dict[str, tuple[str, ...]] = {
    "ro-acme": ("sz-01", "sz-02"),
    "ro-borealis": ("wx-01", "wx-02"),
    "ro-mixed": ("sz-01", "wx-01"),
}


def seed(url: str) -> dict[str, tuple[str, ...]]:
    """Write :data:`ROLLOUTS` (each on line L1, station L1-a of its sites) with an audit
    row per station; returns :data:`ROLLOUTS`."""
    with psycopg.connect(url) as c:
        c.execute(
            "INSERT INTO platform_bundles (archive_sha256, bucket, key, model_sha256, name, "
            "version, uploaded_by) VALUES (%s, 'kanjian', 'bundles/x.zip', %s, 'neu-det', '2', "
            "'tests') ON CONFLICT DO NOTHING",
            [SHA, SHA],
        )
        for rid, sites in ROLLOUTS.items():
            done = c.execute(
                "INSERT INTO rollouts (rollout_id, state, created_by, archive_sha256, "
                "model_sha256, name, version, bucket, key, canary_count, window_s, "
                "min_inspections, max_fail_rate_increase, baseline_mode, answer_timeout_s, "
                "resend_s, baseline_fail, baseline_judged, baseline_wrong, canary_fail, "
                "canary_judged, canary_wrong, canary_answered, shadow_frames, shadow_agreed) "
                "VALUES (%s, 'canary', 'tests', %s, %s, 'neu-det', '2', 'kanjian', "
                "'bundles/x.zip', 1, 600, 50, 0.05, 'before', 300, 60, 2, 50, 1, 3, 60, 6, 9, "
                "200, 190) "
                "ON CONFLICT DO NOTHING",
                [rid, SHA, SHA],
            ).rowcount
            if not done:
                continue
            for i, site in enumerate(sites):
                c.execute(
                    "INSERT INTO rollout_stations (rollout_id, site, line, station, position, "
                    "phase, state, model_before, deploy_command_id, rollback_command_id) "
                    "VALUES (%s, %s, 'L1', 'L1-a', %s, %s, 'sent', %s, %s, %s)",
                    [rid, site, i, "canary" if i == 0 else "rest", "cd" * 32,
                     f"{rid}.{i}.deploy", f"{rid}.{i}.rollback"],
                )  # fmt: skip
                c.execute(
                    "INSERT INTO platform_audit (actor, action, rollout_id, site, line, station) "
                    "VALUES ('tests', 'rollout.deploy_sent', %s, %s, 'L1', 'L1-a')",
                    [rid, site],
                )
    return ROLLOUTS
