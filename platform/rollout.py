"""Staged rollouts: start one, abort one, and read their state (the fleet page's panel).

A rollout deploys one bundle archive to a list of stations with the stations' own
``deploy_model`` command: first to the canaries (the first ``canary_count`` of the
list), which are watched for a window; then to the rest. A canary that refuses the
bundle, does not answer, whose FAIL rate or share of parts operators said were judged
wrong rises more than its margin above the baseline, or a shadow on the rollout's
stations that agrees too seldom with the old model stops the rollout and rolls the canaries back (each gets the archive of
the model it ran before, from the catalogue in :mod:`kanjian.platform.bundles`).
:mod:`kanjian.platform.rollout_engine` moves rollouts on from the database rows
(:mod:`kanjian.platform.schema_rollout`); every step writes a ``platform_audit`` row.

All functions take a psycopg connection in autocommit mode and run their own
transaction.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, NamedTuple

from kanjian.platform.bundles import BundleRef, bundle_for_model, record_bundle

StationKey = tuple[str, str, str]
#: rollout states that still move (the watcher acts on them)
ACTIVE_STATES = ("canary", "rest", "rolling_back")
#: verdicts that judged a part (FAIL rate = FAIL / these), as in the fleet's yield
JUDGED = ("PASS", "FAIL", "REVIEW")


class RolloutRefused(ValueError):
    """A rollout cannot start or change as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class RolloutPlan:
    """What to roll out where, and when to stop.

    Attributes:
        stations: ``(site, line, station)`` in order; the first ``canary_count`` are canaries.
        canary_count: stations that get the bundle first (at least 1, fewer than all
            unless the rollout has one station).
        window_s: how long the canaries are watched after the last one activated it, s.
        min_inspections: judged inspections (PASS/FAIL/REVIEW) the canaries must have
            made with the new model before their FAIL rate counts (also the least the
            baseline needs).
        max_fail_rate_increase: stop when the canaries' FAIL rate exceeds the baseline's
            by more than this (absolute, 0-1: 0.05 = five percentage points).
        baseline_mode: ``before``: the canaries' own FAIL rate over ``baseline_window_s``
            before the start; ``others``: the other stations' (still on their old model)
            over the same window as the canaries.
        baseline_window_s: ``before`` looks back this far, s.
        answer_timeout_s: a station that has not answered a command this long after it
            was first sent counts as refusing it, s.
        resend_s: a command not yet answered is sent again this often (same command id:
            the station runs it once), s.
        max_feedback_increase: stop when the share of the canaries' judged parts that
            operators said were judged wrong (their latest answer contradicts the verdict)
            exceeds the baseline's share by more than this (absolute, 0-1).
        min_agreement: where the stations' shadow compared the new model with the one
            each ran before (either way round: the new one as shadow before the rollout,
            or the old one as shadow beside it), stop when, over at least
            ``min_inspections`` frames, their verdicts agree less often than this (0-1;
            0: not watched). Without such a shadow it is not watched.
    """

    stations: tuple[StationKey, ...]
    canary_count: int = 1
    window_s: float = 600.0
    min_inspections: int = 50
    max_fail_rate_increase: float = 0.05
    baseline_mode: Literal["before", "others"] = "before"
    baseline_window_s: float = 3600.0
    answer_timeout_s: float = 300.0
    resend_s: float = 60.0
    max_feedback_increase: float = 0.05
    min_agreement: float = 0.95

    def __post_init__(self) -> None:
        if not self.stations:
            raise RolloutRefused("no stations to roll out to")
        if len(set(self.stations)) != len(self.stations):
            raise RolloutRefused("a station is listed twice")
        if not 1 <= self.canary_count <= len(self.stations):
            raise RolloutRefused(
                f"canary count {self.canary_count}: give 1 to {len(self.stations)} "
                f"(the number of stations)"
            )
        if self.baseline_mode == "others" and self.canary_count == len(self.stations):
            raise RolloutRefused(
                "baseline 'others' needs stations besides the canaries: use fewer canaries "
                "or --baseline before"
            )
        for name in ("max_fail_rate_increase", "max_feedback_increase", "min_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RolloutRefused(f"{name.replace('_', ' ')} is a fraction from 0 to 1")
        if self.min_inspections < 1 or self.window_s < 0 or self.answer_timeout_s <= 0:
            raise RolloutRefused("min inspections >= 1, window >= 0, answer timeout > 0")
        if self.resend_s <= 0 or self.baseline_window_s <= 0:
            raise RolloutRefused("resend interval and baseline window must be > 0")


def canaries_for_share(n_stations: int, share: float) -> int:
    """Canary count for a share of ``n_stations`` (rounded up, at least 1)."""
    if not 0.0 < share <= 1.0:
        raise RolloutRefused(f"canary share {share}: give a fraction above 0, up to 1")
    return max(1, math.ceil(share * n_stations))


def parse_duration(text: str) -> float:
    """``"90"``/``"90s"``, ``"10m"``, ``"2h"`` -> seconds."""
    t = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(t[-1:])
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise RolloutRefused(f"duration {text!r}: write e.g. 90s, 10m or 2h") from None
    if value < 0 or not math.isfinite(value):
        raise RolloutRefused(f"duration {text!r} must be a finite number >= 0")
    return value * (scale or 1.0)


def parse_stations(text: str) -> tuple[StationKey, ...]:
    """``"site/line/station,site/line/station"`` -> keys, in order."""
    keys = []
    for item in (x.strip() for x in text.split(",")):
        parts = item.split("/")
        if len(parts) != 3 or not all(parts) or any(c in item for c in "+#"):
            raise RolloutRefused(f"station {item!r}: write site/line/station (no wildcards)")
        keys.append((parts[0], parts[1], parts[2]))
    return tuple(keys)


def stations_of_group(conn: Any, group: str) -> tuple[StationKey, ...]:
    """The stations on the platform's list under ``site`` or ``site/line``, sorted."""
    parts = group.split("/")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise RolloutRefused(f"group {group!r}: write site or site/line")
    rows = conn.execute(
        "SELECT site, line, station FROM stations WHERE site = %s "
        "AND (%s::text IS NULL OR line = %s) ORDER BY site, line, station",
        [parts[0], parts[1] if len(parts) == 2 else None, parts[1] if len(parts) == 2 else None],
    ).fetchall()
    if not rows:
        raise RolloutRefused(f"no station of {group} is on the platform's list yet")
    return tuple((str(a), str(b), str(c)) for a, b, c in rows)


def audit(
    conn: Any, actor: str, action: str, rollout_id: str | None = None,
    where: StationKey | None = None, **detail: Any,
) -> None:  # fmt: skip
    """One ``platform_audit`` row (in the caller's transaction)."""
    site, line, station = where or (None, None, None)
    conn.execute(
        "INSERT INTO platform_audit (actor, action, rollout_id, site, line, station, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [actor, action, rollout_id, site, line, station, json.dumps(detail, default=str)],
    )


class Counts(NamedTuple):
    """A window's judged inspections: FAIL, judged (PASS/FAIL/REVIEW), and of the judged
    ones, how many an operator answered (``answered``) and said were judged wrong
    (``wrong``: the latest answer on the part; ``feedback.wrong``)."""

    fail: int
    judged: int
    wrong: int
    answered: int


def window_counts(
    conn: Any, stations: list[StationKey], captured_since: datetime, *,
    captured_until: datetime | None = None, received_since: datetime | None = None,
    model_sha256: str | None = None, not_model: str | None = None,
) -> Counts:  # fmt: skip
    """:class:`Counts` of the stations' inspections captured in ``[captured_since,
    captured_until)`` (a station's clock: the index range), received since
    ``received_since`` (the platform's clock), only by / not by one model.

    Per station, one range of ``inspections_station_time`` and, hashed against it, each
    answered part's latest answer from one range of ``feedback_station_captured`` (an
    answer carries its inspection's capture time): answers are few beside the parts."""
    total = Counts(0, 0, 0, 0)
    judged = "i.verdict IN ('PASS', 'FAIL', 'REVIEW')"
    until = "(%(t1)s::timestamptz IS NULL OR {p}captured_at < %(t1)s)"
    for site, line, station in stations:
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE i.verdict = 'FAIL'), count(*) FILTER (WHERE {judged}), "
            f"count(*) FILTER (WHERE {judged} AND f.wrong), "
            f"count(*) FILTER (WHERE {judged} AND f.wrong IS NOT NULL) FROM inspections i "
            "LEFT JOIN (SELECT DISTINCT ON (inspection_id) inspection_id, wrong FROM feedback "
            "WHERE site = %(site)s AND line = %(line)s AND station = %(station)s "
            f"AND captured_at >= %(t0)s AND {until.format(p='')} "
            "ORDER BY inspection_id, feedback_id DESC) f ON f.inspection_id = i.inspection_id "
            "WHERE i.site = %(site)s AND i.line = %(line)s AND i.station = %(station)s "
            f"AND i.captured_at >= %(t0)s AND {until.format(p='i.')} "
            "AND (%(rs)s::timestamptz IS NULL OR i.received_at >= %(rs)s) "
            "AND (%(model)s::text IS NULL OR i.model_sha256 = %(model)s) "
            "AND (%(not)s::text IS NULL OR i.model_sha256 IS DISTINCT FROM %(not)s)",
            {"site": site, "line": line, "station": station, "t0": captured_since,
             "t1": captured_until, "rs": received_since, "model": model_sha256,
             "not": not_model},
        ).fetchone()  # fmt: skip
        total = Counts(*(a + int(b) for a, b in zip(total, row, strict=True)))
    return total


#: shadow reports older than this (their shadow stopped long ago) are not evidence
SHADOW_REPORT_MAX_AGE = timedelta(days=30)


def shadow_agreement(conn: Any, rollout_id: str, model_sha256: str) -> tuple[int, int]:
    """``(frames, agreed)`` of the rollout's stations' shadow reports that compared
    ``model_sha256`` with the model each station ran before the rollout, either way round
    (the newest report per station and pair: the counts are cumulative), received within
    :data:`SHADOW_REPORT_MAX_AGE`. Models are told apart by their ONNX sha256, as a
    station's registry tells them (rules travel with the model's bundle)."""
    row = conn.execute(
        "SELECT coalesce(sum(r.frames), 0), coalesce(sum(r.agreed), 0) FROM rollout_stations s "
        "JOIN shadow_reports r ON r.site = s.site AND r.line = s.line AND r.station = s.station "
        "AND ((r.shadow_sha256 = %s AND r.active_sha256 = s.model_before) OR "
        "(r.active_sha256 = %s AND r.shadow_sha256 = s.model_before)) "
        "WHERE s.rollout_id = %s AND r.received_at >= now() - %s",
        [model_sha256, model_sha256, rollout_id, SHADOW_REPORT_MAX_AGE],
    ).fetchone()
    return int(row[0]), int(row[1])


def _model_before(conn: Any, key: StationKey) -> str | None:
    row = conn.execute(
        "SELECT model_sha256 FROM inspections WHERE site = %s AND line = %s AND station = %s "
        "AND model_sha256 IS NOT NULL ORDER BY captured_at DESC LIMIT 1",
        list(key),
    ).fetchone()
    return None if row is None else row[0]


def start_rollout(
    conn: Any, bundle: BundleRef, plan: RolloutPlan, by: str,
    rollback_bundles: tuple[BundleRef, ...] = (),
) -> str:  # fmt: skip
    """Check and record a rollout; the watcher sends its first commands. Returns its id.

    Refused (:class:`RolloutRefused`, nothing written) when a station is in another
    rollout still moving, when the platform does not know which model a station runs
    (no inspection yet) or has no archive of it to roll back to (catalogue it with
    ``rollback_bundles``), or when the baseline has fewer judged inspections than
    ``plan.min_inspections``.
    """
    now = datetime.now(timezone.utc)
    rid = f"r-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    with conn.transaction():
        for ref in (bundle, *rollback_bundles):
            record_bundle(conn, ref, by)
        busy = conn.execute(
            "SELECT r.rollout_id, r.state, s.site, s.line, s.station FROM rollouts r "
            "JOIN rollout_stations s USING (rollout_id) WHERE r.state = ANY(%s) "
            "AND (s.site, s.line, s.station) IN (SELECT * FROM unnest(%s::text[], %s::text[], "
            "%s::text[]))",
            [list(ACTIVE_STATES), *(list(col) for col in zip(*plan.stations, strict=True))],
        ).fetchall()
        if busy:
            r, state, *key = busy[0]
            raise RolloutRefused(
                f"{'/'.join(key)} is in rollout {r} ({state}): wait for it to finish or abort "
                f"it (kanjian platform rollout abort {r})"
            )
        problems, before = [], []
        for key in plan.stations:
            sha, name = _model_before(conn, key), "/".join(key)
            if sha is None:
                problems.append(
                    f"{name}: no judged inspection stored yet, so the platform does not know "
                    "which model it runs (and could not roll it back)"
                )
            elif bundle_for_model(conn, sha) is None:
                problems.append(
                    f"{name} runs model {sha[:12]}…, of which the platform has no archive to "
                    "roll back to: give its bundle with --rollback-bundle"
                )
            before.append(sha)
        if problems:
            raise RolloutRefused("cannot start the rollout:\n  " + "\n  ".join(problems))
        canaries = list(plan.stations[: plan.canary_count])
        base: tuple[int | None, int | None, int | None] = (None, None, None)
        if plan.baseline_mode == "before":
            since = now - timedelta(seconds=plan.baseline_window_s)
            base = window_counts(conn, canaries, since)[:3]
            if (base[1] or 0) < plan.min_inspections:
                raise RolloutRefused(
                    f"the canaries judged {base[1]} parts in the last "
                    f"{plan.baseline_window_s:g} s, fewer than --min-inspections "
                    f"{plan.min_inspections}: widen --baseline-window, lower "
                    "--min-inspections, or use --baseline others"
                )
        conn.execute(
            "INSERT INTO rollouts (rollout_id, state, created_at, created_by, updated_at, "
            "archive_sha256, model_sha256, name, version, bucket, key, canary_count, window_s, "
            "min_inspections, max_fail_rate_increase, baseline_mode, baseline_fail, "
            "baseline_judged, answer_timeout_s, resend_s, max_feedback_increase, min_agreement, "
            "baseline_wrong, baseline_window_s) VALUES (%s, 'canary', %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [rid, now, by, now, bundle.archive_sha256, bundle.model_sha256, bundle.name,
             bundle.version, bundle.bucket, bundle.key, plan.canary_count, plan.window_s,
             plan.min_inspections, plan.max_fail_rate_increase, plan.baseline_mode, base[0],
             base[1], plan.answer_timeout_s, plan.resend_s, plan.max_feedback_increase,
             plan.min_agreement, base[2], plan.baseline_window_s],
        )  # fmt: skip
        for i, (key, sha) in enumerate(zip(plan.stations, before, strict=True)):
            conn.execute(
                "INSERT INTO rollout_stations (rollout_id, site, line, station, position, "
                "phase, state, model_before, deploy_command_id, rollback_command_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s)",
                [rid, *key, i, "canary" if i < plan.canary_count else "rest", sha,
                 f"{rid}.{i}.deploy", f"{rid}.{i}.rollback"],
            )  # fmt: skip
        audit(conn, by, "rollout.start", rid, bundle=asdict(bundle),
              plan={**asdict(plan), "stations": ["/".join(k) for k in plan.stations]},
              baseline={"fail": base[0], "judged": base[1], "wrong": base[2]})  # fmt: skip
    return rid


def abort_rollout(conn: Any, rollout_id: str, by: str, why: str = "") -> None:
    """Stop a rollout still moving and roll back every station that got the bundle."""
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM rollouts WHERE rollout_id = %s FOR UPDATE", [rollout_id]
        ).fetchone()
        if row is None:
            raise RolloutRefused(f"no rollout {rollout_id}")
        if row[0] not in ("canary", "rest"):
            raise RolloutRefused(f"rollout {rollout_id} is {row[0]}: nothing to abort")
        reason = f"aborted by {by}" + (f": {why}" if why else "")
        conn.execute(
            "UPDATE rollouts SET state = 'rolling_back', reason = %s, updated_at = now() "
            "WHERE rollout_id = %s",
            [reason, rollout_id],
        )
        audit(conn, by, "rollout.abort", rollout_id, reason=reason)


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _rate(fail: int | None, judged: int | None) -> float | None:
    return None if not judged or fail is None else fail / judged


_ROLLOUT_COLS = (
    "rollout_id, state, created_at, created_by, updated_at, archive_sha256, model_sha256, name, "
    "version, bucket, key, canary_count, window_s, min_inspections, max_fail_rate_increase, "
    "baseline_mode, baseline_fail, baseline_judged, answer_timeout_s, window_start, "
    "canary_fail, canary_judged, reason, finished_at, max_feedback_increase, min_agreement, "
    "baseline_wrong, canary_wrong, canary_answered, shadow_frames, shadow_agreed, "
    "baseline_window_s, baseline_wrong_judged"
)
_STATION_COLS = (
    "site, line, station, position, phase, state, model_before, deploy_command_id, "
    "deploy_sent_at, deploy_sends, answered_at, rollback_command_id, rollback_sent_at, "
    "rollback_answered_at, reason"
)


def rollout_status(
    conn: Any, rollout_id: str | None = None, limit: int = 20, audit_rows: int = 50
) -> list[dict[str, Any]]:
    """The newest rollouts (or one), JSON-ready, newest first.

    Each dict: the ``rollouts`` columns (times as ISO 8601 strings), ``active``
    (still moving), ``baseline_rate`` / ``canary_rate`` (FAIL / judged, or None),
    ``baseline_wrong_rate`` / ``canary_wrong_rate`` (judged wrong by operators' feedback /
    judged), ``agreement`` (the shadow's agreed / frames: None without a shadow report),
    ``window_ends`` (when the canaries' window closes, once it opened), ``counts``
    (stations per state), ``stations`` (the ``rollout_stations`` rows in order) and
    ``audit`` (its last ``audit_rows`` audit rows, oldest first: at, actor, action,
    site, line, station, detail).
    """
    rows = conn.execute(
        f"SELECT {_ROLLOUT_COLS} FROM rollouts WHERE (%s::text IS NULL OR rollout_id = %s) "
        "ORDER BY created_at DESC LIMIT %s",
        [rollout_id, rollout_id, limit],
    ).fetchall()
    out = []
    names = [c.strip() for c in _ROLLOUT_COLS.split(",")]
    snames = [c.strip() for c in _STATION_COLS.split(",")]
    for row in rows:
        r = {k: _iso(v) for k, v in zip(names, row, strict=True)}
        rid = r["rollout_id"]
        stations = [
            {k: _iso(v) for k, v in zip(snames, s, strict=True)}
            for s in conn.execute(
                f"SELECT {_STATION_COLS} FROM rollout_stations WHERE rollout_id = %s "
                "ORDER BY position",
                [rid],
            ).fetchall()
        ]
        counts: dict[str, int] = {}
        for s in stations:
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        trail = conn.execute(
            "SELECT at, actor, action, site, line, station, detail FROM (SELECT * FROM "
            "platform_audit WHERE rollout_id = %s ORDER BY audit_id DESC LIMIT %s) a "
            "ORDER BY audit_id",
            [rid, audit_rows],
        ).fetchall()
        ws = row[names.index("window_start")]
        r.update(
            active=r["state"] in ACTIVE_STATES,
            baseline_rate=_rate(r["baseline_fail"], r["baseline_judged"]),
            canary_rate=_rate(r["canary_fail"], r["canary_judged"]),
            baseline_wrong_rate=_rate(r["baseline_wrong"],
                                      r["baseline_wrong_judged"] or r["baseline_judged"]),
            canary_wrong_rate=_rate(r["canary_wrong"], r["canary_judged"]),
            agreement=_rate(r["shadow_agreed"], r["shadow_frames"]),
            window_ends=None if ws is None else _iso(ws + timedelta(seconds=r["window_s"])),
            counts=counts,
            stations=stations,
            audit=[
                dict(zip(("at", "actor", "action", "site", "line", "station", "detail"),
                         (_iso(v) for v in a), strict=True))
                for a in trail
            ],
        )  # fmt: skip
        out.append(r)
    return out
