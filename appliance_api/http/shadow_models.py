"""The shadow model's API shapes: the current shadow, the promotion gate, the requests."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kanjian.station.shadow.gate import GateCheck
from kanjian.station.shadow.service import ShadowStatus

__all__ = [
    "GateOut",
    "PromoteIn",
    "PromoteOut",
    "ShadowOut",
    "ShadowPut",
    "ShadowStateOut",
    "gate_out",
    "shadow_out",
]

_IN = ConfigDict(extra="forbid")


class ShadowOut(BaseModel):
    """The shadow model loaded now (``GET /api/shadow``, ``shadow`` in ``/api/status``)."""

    sha256: str = Field(description="sha256 of the shadow's model.onnx")
    name: str
    version: str
    task: str
    session_id: int = Field(description="its shadow_sessions row")
    started_at: str = Field(description="when it was loaded (UTC ISO 8601)")
    started_by: str = Field(description="who loaded it")
    child: Literal["starting", "running", "restarting"] = Field(
        description="its child process: loading the model, judging, or waiting out a "
        "back-off after an error"
    )
    child_pid: int | None = Field(description="the child process id while there is one")
    offered: int = Field(description="frames the active model judged since it was loaded")
    judged: int = Field(description="of those, judged by the shadow (a shadow_results row each)")
    skipped: int = Field(
        description="not judged: a newer frame took their place while the shadow was busy"
    )
    errors: int = Field(description="frames lost to a child crash or hang, and failed starts")
    mode: Literal["every frame", "sampling"] | None = Field(
        description="as measured over the last 200 frames offered: 'every frame' when none "
        "was skipped, 'sampling' when some were; null before the first"
    )
    judged_share: float | None = Field(description="share of those 200 frames judged, 0-1")
    latency_mean_ms: float | None = Field(description="the shadow's own judging time, mean, ms")
    latency_p95_ms: float | None = Field(description="and its 95th percentile, ms")
    last_error: str | None = Field(description="the newest child failure, if any")


class GateOut(BaseModel):
    """The promotion gate (``shadow`` in station.yaml) and, with a shadow, its numbers now."""

    min_frames: int = Field(description="shadow.promote_min_frames")
    min_agreement: float = Field(description="shadow.promote_min_agreement")
    no_worse_on_feedback: bool = Field(description="shadow.promote_no_worse_on_feedback")
    frames: int | None = Field(
        description="shadow results on inspections the active model judged (null: no shadow)"
    )
    agreed: int | None = Field(description="of those, the ones with the same verdict")
    agreement: float | None = Field(description="agreed / frames")
    feedback_frames: int | None = Field(description="of those, the ones an operator answered")
    active_wrong: int | None = Field(description="answered frames the active model got wrong")
    shadow_wrong: int | None = Field(description="answered frames the shadow got wrong")
    passed: bool | None = Field(description="whether a promotion would pass the gate now")
    failed: list[str] = Field(description="each condition not met, with its numbers")


class ShadowStateOut(BaseModel):
    """``GET /api/shadow``: the shadow (null: none loaded) and the promotion gate."""

    shadow: ShadowOut | None
    gate: GateOut


class ShadowPut(BaseModel):
    """Load a registered model as the shadow."""

    model_config = _IN
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of its model.onnx")


class PromoteIn(BaseModel):
    """Promote the shadow; ``force`` skips the gate (the golden check still runs)."""

    model_config = _IN
    force: bool = False


class PromoteOut(BaseModel):
    """What a promotion did."""

    sha256: str = Field(description="the promoted model, active now")
    name: str
    version: str
    replaced: str | None = Field(description="the model it replaced (a rollback restores it)")
    forced: bool
    gate: GateOut = Field(description="the gate as it stood when promoted")


def shadow_out(s: ShadowStatus) -> ShadowOut:
    c = s.counters
    return ShadowOut(
        sha256=s.sha256,
        name=s.name,
        version=s.version,
        task=s.task,
        session_id=s.session_id,
        started_at=s.started_at,
        started_by=s.started_by,
        child=s.child,
        child_pid=s.child_pid,
        offered=c.offered,
        judged=c.judged,
        skipped=c.skipped,
        errors=c.errors,
        mode=s.mode,
        judged_share=s.judged_share,
        latency_mean_ms=s.latency_mean_ms,
        latency_p95_ms=s.latency_p95_ms,
        last_error=s.last_error,
    )


def gate_out(
    min_frames: int, min_agreement: float, no_worse: bool, check: GateCheck | None
) -> GateOut:
    fb = check.feedback if check else None
    return GateOut(
        min_frames=min_frames,
        min_agreement=min_agreement,
        no_worse_on_feedback=no_worse,
        frames=check.frames if check else None,
        agreed=check.agreed if check else None,
        agreement=check.agreement if check else None,
        feedback_frames=fb.frames if fb else None,
        active_wrong=fb.active_wrong if fb else None,
        shadow_wrong=fb.shadow_wrong if fb else None,
        passed=check.passed if check else None,
        failed=list(check.failed) if check else [],
    )
