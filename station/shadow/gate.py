"""The promotion gate: has the shadow seen enough, does it agree, is it no worse?

Measured over the shadow's stored results on inspections the *current* active model
judged (``shadow_results JOIN inspections ON seq``, the active model's sha on the
inspection): a comparison with an earlier active model says nothing about this one.

Feedback: the operator's latest answer on an inspection (``feedback_latest``) says
whether the part had a defect. :func:`is_wrong` and :func:`feedback_tally` are small
and pure, so the shadow report can count the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from kanjian.inference.agreement import DEFECT_CALLS, feedback_says_defect
from kanjian.station.shadow.config import ShadowConfig


def is_wrong(verdict: str, kind: str) -> bool:
    """Whether ``verdict`` contradicts the operator's answer ``kind``.

    FAIL or REVIEW on a part answered ``not_defect`` is wrong (a false alarm); PASS on a
    part answered ``confirm_defect`` or ``wrong_class`` is wrong (a missed defect); an
    ERROR (no judgement at all) is wrong whatever the answer. Anything else is right.
    """
    if verdict == "ERROR":
        return True
    # what the answer says of the part: the report's rule (inference.agreement)
    return (verdict in DEFECT_CALLS) != feedback_says_defect(kind)


@dataclass(frozen=True)
class FeedbackTally:
    """How often each model was wrong on the frames an operator answered.

    Attributes:
        frames: answered frames the shadow judged.
        active_wrong, shadow_wrong: of those, how many each model got wrong (:func:`is_wrong`).
    """

    frames: int
    active_wrong: int
    shadow_wrong: int

    @property
    def no_worse(self) -> bool:
        return self.shadow_wrong <= self.active_wrong


def feedback_tally(rows: Iterable[tuple[str, str, str]]) -> FeedbackTally:
    """Count ``(active verdict, shadow verdict, answer kind)`` rows."""
    n = aw = sw = 0
    for active, shadow, kind in rows:
        n += 1
        aw += is_wrong(active, kind)
        sw += is_wrong(shadow, kind)
    return FeedbackTally(n, aw, sw)


@dataclass(frozen=True)
class GateCheck:
    """The gate's numbers for one shadow model against the active one, and its verdict.

    Attributes:
        frames: shadow results on inspections the active model judged.
        agreed: of those, how many had the same verdict.
        agreement: ``agreed / frames`` (None with no frames).
        feedback: the answered frames' tally.
        min_frames, min_agreement, no_worse_on_feedback: the gate (``shadow`` in station.yaml).
        failed: one sentence per condition not met, with its numbers; empty: it passes.
    """

    frames: int
    agreed: int
    agreement: float | None
    feedback: FeedbackTally
    min_frames: int
    min_agreement: float
    no_worse_on_feedback: bool
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the audit row."""
        return {**asdict(self), "failed": list(self.failed)}


def measure(
    db: sqlite_utils.Database, shadow_sha: str, active_sha: str
) -> tuple[int, int, FeedbackTally]:
    """``(frames, agreed, feedback tally)`` of ``shadow_sha`` against ``active_sha``, in SQL."""
    frames, agreed = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(r.verdict = i.verdict), 0) FROM shadow_results r "
        "JOIN inspections i ON i.seq = r.seq "
        "WHERE r.model_sha256 = ? AND i.model_sha256 = ?",
        [shadow_sha, active_sha],
    ).fetchone()
    answered = db.execute(
        "SELECT i.verdict, r.verdict, f.kind FROM shadow_results r "
        "JOIN inspections i ON i.seq = r.seq JOIN feedback_latest f ON f.seq = r.seq "
        "WHERE r.model_sha256 = ? AND i.model_sha256 = ?",
        [shadow_sha, active_sha],
    ).fetchall()
    return (
        int(frames),
        int(agreed),
        feedback_tally((str(a), str(s), str(k)) for a, s, k in answered),
    )


def judge_gate(frames: int, agreed: int, fb: FeedbackTally, cfg: ShadowConfig) -> GateCheck:
    """Apply the gate to measured numbers; every failed condition is named with its numbers."""
    agreement = agreed / frames if frames else None
    failed: list[str] = []
    if frames < cfg.promote_min_frames:
        failed.append(f"frames seen {frames} < {cfg.promote_min_frames}")
    if cfg.promote_min_agreement > 0:
        if agreement is None:
            failed.append(f"agreement unknown (no frames judged) < {cfg.promote_min_agreement:g}")
        elif agreement < cfg.promote_min_agreement:
            failed.append(
                f"agreement {agreement:.4f} < {cfg.promote_min_agreement:g} "
                f"({agreed} of {frames} verdicts equal)"
            )
    if cfg.promote_no_worse_on_feedback and not fb.no_worse:
        failed.append(
            f"wrong on operator feedback {fb.shadow_wrong} > active model's {fb.active_wrong} "
            f"(of {fb.frames} answered frames)"
        )
    return GateCheck(
        frames=frames,
        agreed=agreed,
        agreement=agreement,
        feedback=fb,
        min_frames=cfg.promote_min_frames,
        min_agreement=cfg.promote_min_agreement,
        no_worse_on_feedback=cfg.promote_no_worse_on_feedback,
        failed=tuple(failed),
    )


def check_gate(
    db: sqlite_utils.Database, shadow_sha: str, active_sha: str, cfg: ShadowConfig
) -> GateCheck:
    """Measure and apply the gate."""
    return judge_gate(*measure(db, shadow_sha, active_sha), cfg)
