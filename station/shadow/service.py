"""The shadow channel: every station has one, idle until an engineer loads a shadow.

Registered as channel kind ``shadow`` (after the PLC and the sync in the fan-out): it
consumes committed inspections, so a verdict, its PLC answer and the operator's
screen never wait for it; its ``on_commit`` only swaps a reference. It offers the runner
(:mod:`.runner`) only the frames the active model judged: PASS, FAIL or REVIEW, with
a model and the frame's pixels (not MISSED, not ERROR — which covers model errors and
quality-gate rejects — and not a frame whose pixels the store dropped under its
memory bound). The API and the CLI reach it as ``station.channels.get(ShadowService)``.

Shadow results reach the PLC, the verdicts and the live screen never: they are rows
of ``shadow_results``. The platform gets only their sum, the gate's numbers, as a
``shadow_agreement`` event (:mod:`kanjian.station.sync.feedback_feed`), which its
staged rollouts watch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection
from kanjian.station.pipeline import register_channel
from kanjian.station.records import JUDGED_VERDICTS, utc_iso
from kanjian.station.ruleset import RuleSet
from kanjian.station.shadow.gate import GateCheck
from kanjian.station.shadow.keeper import ShadowError, ShadowKeeper
from kanjian.station.shadow.protocol import Job
from kanjian.station.shadow.results import Counters
from kanjian.station.shadow.runner import Runner, latency_summary
from kanjian.station.store_health import has_pixels

if TYPE_CHECKING:
    from kanjian.station.pipeline import Station

__all__ = ["ShadowError", "ShadowService", "ShadowStatus", "start_shadow"]


@dataclass(frozen=True)
class ShadowStatus:
    """The current shadow, as ``GET /api/shadow`` and ``/api/status`` show it.

    Attributes:
        sha256, name, version, task: the shadow model's (from the registry).
        session_id, started_at, started_by: its ``shadow_sessions`` row.
        child: ``starting`` (loading its model), ``running`` or ``restarting`` (after
            an error, waiting out its back-off).
        child_pid: the child process, while there is one.
        counters: offered / judged / skipped / errors since it was loaded.
        mode: ``every frame`` when no frame was skipped among the last 200 offered,
            ``sampling`` when some were; None before the first frame.
        judged_share: of the last 200 offered frames that were judged or skipped, the
            share judged (1.0 in ``every frame`` mode).
        latency_mean_ms, latency_p95_ms: the shadow's own judging time over its last
            1000 frames.
        last_error: the newest child failure, if any.
    """

    sha256: str
    name: str
    version: str
    task: str
    session_id: int
    started_at: str
    started_by: str
    child: str
    child_pid: int | None
    counters: Counters
    mode: str | None
    judged_share: float | None
    latency_mean_ms: float | None
    latency_p95_ms: float | None
    last_error: str | None


class ShadowService:
    """The shadow channel, its runner and its keeper.

    Attributes:
        keeper: load / clear / promote (thread-safe).
        runner: the feeder and the child.
    """

    name = "shadow"

    def __init__(self, station: Station) -> None:
        self.station = station
        cfg = station.config
        self.runner = Runner(
            station.state.pool,
            cfg.shadow.judge_timeout_s,
            lambda: self.keeper.activated_elsewhere(),
            cfg.store.data_dir,
            cfg.shadow.keep_pictures,
        )
        self.keeper = ShadowKeeper(
            station.state.pool, station.state.models, self.runner, cfg.shadow, cfg.camera.mm_per_px
        )
        self._rs: RuleSet | None = None
        self._rs_values: dict[str, Any] = {}

    # -- Channel -------------------------------------------------------------------
    def start(self) -> None:
        self.runner.start()
        self.keeper.restore()

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        if self.runner.target is None:
            return
        rs = self.station.inspector.ruleset
        if rs is not self._rs:  # dumped once per change, not per frame
            self._rs, self._rs_values = rs, rs.values()
        for insp in batch:
            f = insp.frame
            if (
                insp.model is None
                or insp.verdict not in JUDGED_VERDICTS
                or not isinstance(f, Frame)
                or not has_pixels(insp)
            ):
                continue
            job = Job(str(insp.inspection_id), f.image, f.frame_id, f.source_id,
                      utc_iso(f.captured_at), self._rs_values, insp.verdict.value)  # fmt: skip
            self.runner.offer(job, insp.model.sha256)

    def close(self) -> None:
        self.runner.close()

    # -- what the API shows --------------------------------------------------------
    def status(self) -> ShadowStatus | None:
        """The current shadow (None when none is loaded); in memory, cheap."""
        snap = self.runner.snapshot()
        session = self.keeper.session
        if snap is None or session is None:
            return None
        target, counters, live = snap
        entry = self.keeper.registry.get(target.sha256)
        recent = list(live.recent)
        lat = latency_summary(live.latency_ms)
        return ShadowStatus(
            sha256=target.sha256,
            name=entry.name if entry else str(live.model.get("name", "")),
            version=entry.version if entry else str(live.model.get("version", "")),
            task=entry.task if entry else str(live.model.get("task", "")),
            session_id=session.id,
            started_at=session.started_at,
            started_by=session.started_by,
            child=live.child,
            child_pid=live.pid,
            counters=counters,
            mode=None if not recent else ("every frame" if all(recent) else "sampling"),
            judged_share=sum(recent) / len(recent) if recent else None,
            latency_mean_ms=None if lat is None else lat[0],
            latency_p95_ms=None if lat is None else lat[1],
            last_error=live.last_error,
        )

    def gate(self) -> GateCheck | None:
        """The promotion gate measured now (None: no shadow)."""
        return self.keeper.gate()


def start_shadow(station: Station) -> ShadowService:
    """Every station gets the channel (idle without a shadow); one loaded before a
    restart is put back when it starts."""
    return ShadowService(station)


register_channel("shadow", start_shadow, order=200)
