"""Moving rollouts on: one idempotent step per rollout, from its database rows alone.

:func:`tick` looks at every rollout still moving and does what its rows call for:
send the commands not sent yet (and again, with the same command id, those not
answered for a while), take the stations' answers from the ``events`` the receivers
stored (``model_activated`` / ``model_rejected`` carrying the command id), judge
the canaries against the baseline (their FAIL rate, and the share of their parts
operators said were judged wrong: ``feedback`` rows) and, from before the first
command, the shadow's agreement where the stations compared the new model with their
old one (``shadow_reports``), and go on to the rest or roll back.
Each rollout's step is one transaction holding its row (``FOR UPDATE SKIP
LOCKED``), so any number of watchers may run, and a watcher that dies mid-step
leaves the rows as they were: the next step sends again what it may have sent
(a station runs a command id once and answers a repeat from its record).

Times are the platform's clock (``received_at`` of events), never a station's,
except ``captured_at`` bounds that select a station's inspections through its
index: station clocks are taken to be within :data:`CLOCK_SLACK` of the platform's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kanjian.platform.bundles import BundleRef, bundle_by_archive, bundle_for_model
from kanjian.platform.rollout import (
    ACTIVE_STATES,
    StationKey,
    audit,
    shadow_agreement,
    window_counts,
)
from kanjian.station.sync.messages import deploy_message

log = logging.getLogger(__name__)

#: how far a station's clock may be from the platform's (bounds of inspection windows)
CLOCK_SLACK = timedelta(hours=1)

#: sends one ``deploy_model`` payload to a station; raises if the broker did not take it
Send = Callable[[StationKey, bytes], None]


@dataclass
class _Rollout:
    """The columns of ``rollouts`` a step reads."""

    rollout_id: str
    state: str
    created_at: datetime
    archive_sha256: str
    model_sha256: str
    canary_count: int
    window_s: float
    min_inspections: int
    max_fail_rate_increase: float
    baseline_mode: str
    baseline_fail: int | None
    baseline_judged: int | None
    baseline_wrong: int | None
    baseline_window_s: float | None
    baseline_wrong_judged: int | None
    max_feedback_increase: float
    min_agreement: float
    answer_timeout_s: float
    resend_s: float
    window_start: datetime | None
    shadow_frames: int | None
    shadow_agreed: int | None


@dataclass
class _Station:
    key: StationKey
    position: int
    phase: str
    state: str
    model_before: str
    deploy_command_id: str
    deploy_sent_at: datetime | None
    deploy_sends: int
    rollback_command_id: str
    rollback_sent_at: datetime | None
    rollback_sends: int


def tick(conn: Any, send: Send, actor: str, now: datetime | None = None) -> list[str]:
    """One step of every rollout still moving; returns the ids of those that changed state.

    ``conn``: psycopg connection in autocommit mode. ``send`` failing (broker down)
    rolls that rollout's step back; the next tick tries again.
    """
    ids = [r[0] for r in conn.execute(
        "SELECT rollout_id FROM rollouts WHERE state = ANY(%s) ORDER BY created_at",
        [list(ACTIVE_STATES)]).fetchall()]  # fmt: skip
    changed = []
    for rid in ids:
        try:
            with conn.transaction():
                if _step(conn, rid, send, actor, now or datetime.now(timezone.utc)):
                    changed.append(rid)
        except Exception:
            log.exception("rollout %s: step failed; it is tried again next tick", rid)
    return changed


def _load(conn: Any, rid: str) -> tuple[_Rollout, list[_Station]] | None:
    cols = ", ".join(_Rollout.__dataclass_fields__)
    row = conn.execute(
        f"SELECT {cols} FROM rollouts WHERE rollout_id = %s AND state = ANY(%s) "
        "FOR UPDATE SKIP LOCKED",
        [rid, list(ACTIVE_STATES)],
    ).fetchone()
    if row is None:  # another watcher holds it, or it finished meanwhile
        return None
    stations = [
        _Station((s[0], s[1], s[2]), *s[3:])
        for s in conn.execute(
            "SELECT site, line, station, position, phase, state, model_before, "
            "deploy_command_id, deploy_sent_at, deploy_sends, rollback_command_id, "
            "rollback_sent_at, rollback_sends FROM rollout_stations WHERE rollout_id = %s "
            "ORDER BY position",
            [rid],
        ).fetchall()
    ]
    return _Rollout(*row), stations


def _answer(
    conn: Any, key: StationKey, command_id: str
) -> tuple[bool, str | None, dict[str, Any], Any] | None:
    """The station's first answer to a command: ``(activated, the refusal's reason or None,
    data, received_at)``, or None before it answered."""
    row = conn.execute(
        "SELECT event, data, received_at FROM events WHERE site = %s AND line = %s "
        "AND station = %s AND event IN ('model_activated', 'model_rejected') "
        "AND data->>'command_id' = %s ORDER BY received_at LIMIT 1",
        [*key, command_id],
    ).fetchone()
    if row is None:
        return None
    data, ok = row[1] or {}, row[0] == "model_activated"
    return ok, None if ok else str(data.get("reason", "")), data, row[2]


def _set_station(conn: Any, rid: str, s: _Station, **cols: Any) -> None:
    sets = ", ".join(f"{k} = %s" for k in cols)
    conn.execute(
        f"UPDATE rollout_stations SET {sets} WHERE rollout_id = %s AND site = %s AND line = %s "
        "AND station = %s",
        [*cols.values(), rid, *s.key],
    )
    for k, v in cols.items():
        if hasattr(s, k):
            setattr(s, k, v)


def _set_rollout(conn: Any, r: _Rollout, **cols: Any) -> None:
    sets = ", ".join(f"{k} = %s" for k in cols)
    conn.execute(
        f"UPDATE rollouts SET {sets}, updated_at = now() WHERE rollout_id = %s",
        [*cols.values(), r.rollout_id],
    )
    for k, v in cols.items():
        if hasattr(r, k):
            setattr(r, k, v)


def _step(conn: Any, rid: str, send: Send, actor: str, now: datetime) -> bool:
    loaded = _load(conn, rid)
    if loaded is None:
        return False
    r, stations = loaded
    before = r.state
    bundle = bundle_by_archive(conn, r.archive_sha256)
    if r.state == "canary":
        _judge_shadow(conn, r, actor)
    if r.state == "rolling_back":
        _roll_back(conn, r, stations, send, actor, now)
    else:
        phase = [s for s in stations if s.phase == r.state]
        _deploy(conn, r, phase, bundle, send, actor, now)
        if r.state == "canary":
            _judge_canaries(conn, r, stations, actor, now)
        if r.state == "rest" and before == "canary":  # send the rest at once
            _deploy(conn, r, [s for s in stations if s.phase == "rest"], bundle, send, actor, now)
        if r.state == "rest" and all(s.state not in ("pending", "sent") for s in stations):
            ok = all(s.state == "active" for s in stations)
            final = "done" if ok else "incomplete"
            _set_rollout(conn, r, state=final, finished_at=now)
            audit(conn, actor, f"rollout.{final}", rid, counts=_counts(stations))
    return r.state != before


def _counts(stations: list[_Station]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in stations:
        out[s.state] = out.get(s.state, 0) + 1
    return out


def _due(sent_at: datetime | None, sends: int, every_s: float, now: datetime) -> bool:
    return sent_at is None or now >= sent_at + timedelta(seconds=every_s * sends)


def _deploy(
    conn: Any, r: _Rollout, phase: list[_Station], bundle: BundleRef, send: Send, actor: str,
    now: datetime,
) -> None:  # fmt: skip
    """Send this phase's commands, collect the answers; a canary's refusal or silence
    turns the rollout to rolling back."""
    rid = r.rollout_id
    for s in phase:
        if s.state == "sent":
            got = _answer(conn, s.key, s.deploy_command_id)
            if got is not None:
                ok, why, data, at = got
                _set_station(conn, rid, s, state="active" if ok else "rejected",
                             answered_at=at, reason=why)  # fmt: skip
                audit(conn, actor, "deploy.activated" if ok else "deploy.rejected", rid, s.key,
                      command_id=s.deploy_command_id, model=data.get("model"),
                      previous=data.get("previous"), reason=why)  # fmt: skip
                if not ok and s.phase == "canary":
                    _start_rollback(conn, r, actor, f"canary {'/'.join(s.key)} refused the "
                                    f"bundle: {why}")  # fmt: skip
                continue
            assert s.deploy_sent_at is not None
            if now >= s.deploy_sent_at + timedelta(seconds=r.answer_timeout_s):
                why = f"no answer {r.answer_timeout_s:g} s after the command was sent"
                _set_station(conn, rid, s, state="no_answer", reason=why)
                audit(conn, actor, "deploy.no_answer", rid, s.key,
                      command_id=s.deploy_command_id, sends=s.deploy_sends)  # fmt: skip
                if s.phase == "canary":
                    _start_rollback(conn, r, actor, f"canary {'/'.join(s.key)}: {why}")
                continue
        if r.state == "rolling_back":
            return
        if s.state == "pending" or (s.state == "sent" and _due(s.deploy_sent_at, s.deploy_sends,
                                                               r.resend_s, now)):  # fmt: skip
            send(s.key, deploy_message(s.deploy_command_id, bundle.key, bundle.archive_sha256,
                                       bundle.bucket, issued_by=f"rollout {rid}"))  # fmt: skip
            first = s.state == "pending"
            _set_station(conn, rid, s, state="sent", deploy_sends=s.deploy_sends + 1,
                         deploy_sent_at=now if first else s.deploy_sent_at)  # fmt: skip
            if first:
                audit(conn, actor, "deploy.sent", rid, s.key, command_id=s.deploy_command_id,
                      phase=s.phase, key=bundle.key, archive_sha256=bundle.archive_sha256)  # fmt: skip


def _start_rollback(conn: Any, r: _Rollout, actor: str, reason: str) -> None:
    if r.state == "rolling_back":
        return
    _set_rollout(conn, r, state="rolling_back", reason=reason)
    audit(conn, actor, "rollout.regression", r.rollout_id, reason=reason)
    log.warning("rollout %s: rolling back: %s", r.rollout_id, reason)


def _judge_shadow(conn: Any, r: _Rollout, actor: str) -> None:
    """Before any canary command and on every step of the canary phase: the shadow's
    agreement, where the rollout's stations compared the new model with their old one."""
    frames, agreed = shadow_agreement(conn, r.rollout_id, r.model_sha256)
    _set_rollout(conn, r, shadow_frames=frames, shadow_agreed=agreed)
    if r.min_agreement > 0 and frames >= r.min_inspections and agreed / frames < r.min_agreement:
        reason = (f"the shadow's verdicts agreed with the model before on {agreed / frames:.3f} "
                  f"of {frames} frames, below the least agreement {r.min_agreement:g}")  # fmt: skip
        audit(conn, actor, "canary.failed", r.rollout_id, shadow_frames=frames,
              shadow_agreed=agreed, agreement=agreed / frames, min_agreement=r.min_agreement)  # fmt: skip
        _start_rollback(conn, r, actor, reason)


def _judge_canaries(
    conn: Any, r: _Rollout, stations: list[_Station], actor: str, now: datetime
) -> None:
    """Once every canary runs the bundle: their FAIL rate and operators' feedback with it
    against the baseline."""
    rid = r.rollout_id
    frames, agreed = r.shadow_frames or 0, r.shadow_agreed or 0
    canaries = [s for s in stations if s.phase == "canary"]
    if any(s.state != "active" for s in canaries):
        return
    if r.window_start is None:
        last = conn.execute(
            "SELECT max(answered_at) FROM rollout_stations WHERE rollout_id = %s "
            "AND phase = 'canary'",
            [rid],
        ).fetchone()[0]
        _set_rollout(conn, r, window_start=last)
        audit(conn, actor, "canary.watching", rid, window_start=last, window_s=r.window_s)
    assert r.window_start is not None
    # the new model's inspections received since the rollout began (a retry of a bundle
    # rolled back before does not count the earlier run's)
    c = window_counts(conn, [s.key for s in canaries], r.created_at - CLOCK_SLACK,
                      received_since=r.created_at, model_sha256=r.model_sha256)  # fmt: skip
    base_fail, base_judged, base_wrong = r.baseline_fail, r.baseline_judged, r.baseline_wrong
    # the parts operators judge wrong against: the baseline's (FAIL is fixed at the start
    # for 'before'; answers to those parts may still come in, so they are counted again)
    w_judged = base_judged
    if r.baseline_mode == "before" and r.baseline_window_s is not None:
        again = window_counts(conn, [s.key for s in canaries],
                              r.created_at - timedelta(seconds=r.baseline_window_s),
                              captured_until=r.created_at)  # fmt: skip
        base_wrong, w_judged = again.wrong, again.judged
    if r.baseline_mode == "others":
        others = [s.key for s in stations if s.phase == "rest"]
        base_fail, base_judged, base_wrong, _ = window_counts(
            conn, others, r.window_start - CLOCK_SLACK, received_since=r.window_start,
            not_model=r.model_sha256,
        )  # fmt: skip
        w_judged = base_judged
    _set_rollout(conn, r, canary_fail=c.fail, canary_judged=c.judged, canary_wrong=c.wrong,
                 canary_answered=c.answered, baseline_fail=base_fail,
                 baseline_judged=base_judged, baseline_wrong=base_wrong,
                 baseline_wrong_judged=w_judged)  # fmt: skip
    if c.judged < r.min_inspections or not base_judged:
        return
    rate, base = c.fail / c.judged, (base_fail or 0) / base_judged
    wrong, base_w = c.wrong / c.judged, (base_wrong or 0) / (w_judged or base_judged)
    numbers: dict[str, Any] = {
        "canary_fail": c.fail, "canary_judged": c.judged, "canary_rate": rate,
        "baseline_fail": base_fail, "baseline_judged": base_judged, "baseline_rate": base,
        "max_fail_rate_increase": r.max_fail_rate_increase, "canary_wrong": c.wrong,
        "canary_answered": c.answered, "canary_wrong_rate": wrong, "baseline_wrong": base_wrong,
        "baseline_wrong_rate": base_w, "max_feedback_increase": r.max_feedback_increase,
        "shadow_frames": frames, "shadow_agreed": agreed,
    }  # fmt: skip
    reason = None
    if rate - base > r.max_fail_rate_increase:
        reason = (f"canary FAIL rate {rate:.3f} over {c.judged} parts is {rate - base:+.3f} "
                  f"against the baseline {base:.3f}, beyond the margin "
                  f"{r.max_fail_rate_increase:g}")  # fmt: skip
    elif wrong - base_w > r.max_feedback_increase:
        reason = (f"operators said the canaries judged {c.wrong} of {c.judged} parts wrong "
                  f"({wrong:.3f}, {wrong - base_w:+.3f} against the baseline {base_w:.3f}), "
                  f"beyond the margin {r.max_feedback_increase:g}")  # fmt: skip
    if reason is not None:
        audit(conn, actor, "canary.failed", rid, **numbers)
        _start_rollback(conn, r, actor, reason)
        return
    window_over = now >= r.window_start + timedelta(seconds=r.window_s)
    if window_over and (r.baseline_mode == "before" or base_judged >= r.min_inspections):
        _set_rollout(conn, r, state="rest")
        audit(conn, actor, "canary.passed", rid, **numbers)


def _roll_back(
    conn: Any, r: _Rollout, stations: list[_Station], send: Send, actor: str, now: datetime
) -> None:
    """Give every station that got (or may have got) the bundle its model from before."""
    rid = r.rollout_id
    for s in stations:
        if s.state in ("sent", "active", "no_answer"):
            if s.model_before == r.model_sha256:
                _set_station(conn, rid, s, state="rolled_back", reason="ran this model before")
                continue
            target = bundle_for_model(conn, s.model_before)
            if target is None:  # the catalogue lost it (start checked it was there)
                _set_station(conn, rid, s, state="rollback_failed",
                             reason=f"no archive of model {s.model_before} to roll back to")  # fmt: skip
                audit(conn, actor, "rollback.failed", rid, s.key, reason="no archive")
                continue
            _send_rollback(conn, r, s, target, send, actor, now, first=True)
        elif s.state == "rollback_sent":
            got = _answer(conn, s.key, s.rollback_command_id)
            if got is not None:
                ok, why, data, at = got
                _set_station(conn, rid, s, state="rolled_back" if ok else "rollback_failed",
                             rollback_answered_at=at, reason=why)  # fmt: skip
                audit(conn, actor, "rollback.done" if ok else "rollback.failed", rid, s.key,
                      command_id=s.rollback_command_id, model=data.get("model"), reason=why)  # fmt: skip
            elif s.rollback_sent_at is not None and now >= s.rollback_sent_at + timedelta(
                seconds=r.answer_timeout_s
            ):
                why = f"no answer {r.answer_timeout_s:g} s after the rollback was sent"
                _set_station(conn, rid, s, state="rollback_failed", reason=why)
                audit(conn, actor, "rollback.failed", rid, s.key, reason=why)
            elif _due(s.rollback_sent_at, s.rollback_sends, r.resend_s, now):
                target = bundle_for_model(conn, s.model_before)
                if target is not None:
                    _send_rollback(conn, r, s, target, send, actor, now, first=False)
    if all(s.state not in ("sent", "active", "no_answer", "rollback_sent") for s in stations):
        final = "rollback_failed" if any(s.state == "rollback_failed" for s in stations) else (
            "rolled_back")  # fmt: skip
        _set_rollout(conn, r, state=final, finished_at=now)
        audit(conn, actor, f"rollout.{final}", rid, counts=_counts(stations))


def _send_rollback(
    conn: Any, r: _Rollout, s: _Station, target: BundleRef, send: Send, actor: str,
    now: datetime, first: bool,
) -> None:  # fmt: skip
    send(s.key, deploy_message(s.rollback_command_id, target.key, target.archive_sha256,
                               target.bucket, issued_by=f"rollout {r.rollout_id} rollback"))  # fmt: skip
    _set_station(conn, r.rollout_id, s, state="rollback_sent",
                 rollback_sends=s.rollback_sends + 1,
                 rollback_sent_at=now if first else s.rollback_sent_at)  # fmt: skip
    if first:
        audit(conn, actor, "rollback.sent", r.rollout_id, s.key,
              command_id=s.rollback_command_id, model=target.model_sha256, key=target.key)  # fmt: skip
