"""Feeding the shadow child on spare capacity: one frame in flight, one waiting, newest wins.

The store's writer hands every committed batch to :meth:`Runner.offer` (via the shadow
channel), which only swaps a reference: the waiting slot holds at most one frame, and a
newer frame takes the place of one still waiting (that one is *skipped*). The feeder
thread takes the waiting frame, sends it to the child and waits for the answer; only
then does it take the next. So the shadow judges every frame while the child keeps up
with the line, and a sample (the newest frame each time it is free) when it does not;
never more than two frames are held, and nothing the station does waits for it.

A child that dies, hangs (``shadow.judge_timeout_s``) or fails to start is logged, its
frame counted as an error, and started again after a back-off (1 s, doubling to 60 s,
reset by the next judged frame); the station keeps running throughout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kanjian.station.records import utc_iso
from kanjian.station.shadow.pictures import keep_picture
from kanjian.station.shadow.protocol import Job
from kanjian.station.shadow.results import Counters, result_args, save_counters, write_results
from kanjian.station.shadow.worker import ChildFailed, ShadowChild
from kanjian.station.state.db import ConnectionPool, write_tx

log = logging.getLogger(__name__)

#: results are written in one transaction at most this often (s), or at this many rows
FLUSH_EVERY_S = 1.0
FLUSH_ROWS = 50
#: the session's counters are written this often (s), and when it ends
COUNTERS_EVERY_S = 5.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
#: frames whose fate (judged or skipped) decides ``mode``: the recent past, not all time
RECENT = 200


@dataclass
class Target:
    """What the runner feeds: one session's model.

    Attributes:
        session_id: its ``shadow_sessions`` row.
        sha256: the shadow model's.
        init: the child's ``init`` message (bundle path, providers...).
        counters: the session's counters (restored ones continue).
    """

    session_id: int
    sha256: str
    init: dict[str, Any]
    counters: Counters = field(default_factory=Counters)


@dataclass
class Live:
    """What the runner knows of the current session beyond its counters."""

    child: str = "starting"  # starting / running / restarting
    pid: int | None = None
    last_error: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # the child's ready answer
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT))  # True: judged


class Runner:
    """The feeder thread, the waiting slot and the child of the current shadow.

    Args:
        pool: connections to the station database (the feeder writes with its own).
        judge_timeout_s: a child that has not answered a frame by then is killed.
        on_activated: called on the feeder thread when the shadow model became the
            active one (activated by another path): the session must end.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        judge_timeout_s: float,
        on_activated: Callable[[], None],
        data_dir: Path | None = None,
        keep_pictures: int = 0,
    ) -> None:
        self.pool = pool
        self.judge_timeout_s = judge_timeout_s
        self.on_activated = on_activated
        self.data_dir = data_dir
        self.keep_pictures = keep_pictures
        self._cond = threading.Condition()
        self._target: Target | None = None
        self._live = Live()
        self._waiting: Job | None = None
        self._now_active = False
        self._stop = False
        self._child: ShadowChild | None = None
        self._child_for: Target | None = None
        self._pending: list[tuple[object, ...]] = []
        self._pending_since = 0.0
        self._saved_at = time.monotonic()
        self._saved: Counters | None = None  # the counters last written
        self._write_lock = threading.Lock()  # flushes come from the feeder and from promote
        self._thread = threading.Thread(target=self._run, name="shadow-feeder", daemon=True)

    # -- the station's side ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def set_target(self, target: Target | None, flush: bool = True) -> Counters | None:
        """Feed ``target`` from now on (``None``: stop); returns the replaced one's counters.

        The frame waiting for the old target is dropped; the old child is stopped by the
        feeder before it starts the new one. ``flush``: write the pending results first
        (off inside a transaction of the caller's thread: the feeder writes them then).
        """
        if flush:
            self.flush()
        with self._cond:
            old = self._target
            self._target = target
            self._live = Live()
            self._waiting = None
            self._now_active = False
            self._cond.notify_all()
        return None if old is None else old.counters

    @property
    def target(self) -> Target | None:
        return self._target

    def offer(self, job: Job, active_sha: str) -> None:
        """A frame the active model judged; the writer thread calls this: never blocks."""
        with self._cond:
            t = self._target
            if t is None:
                return
            if active_sha == t.sha256:  # activated through another path: nothing to compare
                self._now_active = True
                self._cond.notify_all()
                return
            t.counters.offered += 1
            if self._waiting is not None:
                t.counters.skipped += 1
                self._live.recent.append(False)
            self._waiting = job
            self._cond.notify_all()

    def snapshot(self) -> tuple[Target, Counters, Live] | None:
        """The target, a copy of its counters and what is known of its child."""
        with self._cond:
            t = self._target
            if t is None:
                return None
            live = self._live
            copy = Live(live.child, live.pid, live.last_error, dict(live.model),
                        deque(live.latency_ms, 1000), deque(live.recent, RECENT))  # fmt: skip
            return t, Counters(**vars(t.counters)), copy

    def close(self) -> None:
        """Stop the feeder and the child; write what is pending. Idempotent."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        child = self._child
        if child is not None:
            child.kill()  # a feeder blocked on the child wakes up at once
        if self._thread.ident is not None:
            self._thread.join(30)
        self.flush(counters=True)

    # -- writing -----------------------------------------------------------------------
    def flush(self, counters: bool = False) -> None:
        """Write the pending results (and the counters, when asked or due) in one transaction."""
        with self._write_lock:
            with self._cond:
                rows, self._pending = self._pending, []
                t = self._target
                snap = Counters(**vars(t.counters)) if t is not None else None
            due = counters or time.monotonic() - self._saved_at >= COUNTERS_EVERY_S
            if due:
                self._saved_at = time.monotonic()
            save = due and t is not None and snap is not None and snap != self._saved
            if not rows and not save:
                return
            db = self.pool.get()
            with write_tx(db):
                write_results(db, rows)
                if save and t is not None and snap is not None:
                    save_counters(db, t.session_id, snap)
                    self._saved = snap

    # -- the feeder thread -------------------------------------------------------------
    def _next(self) -> tuple[str, Target | None, Job | None]:
        """Wait for the next thing to do: ``stop``, ``drop`` (no target: let the child
        go), ``activated``, ``start`` (a child for the target), ``judge`` or ``flush``."""
        with self._cond:
            while True:
                if self._stop:
                    return "stop", None, None
                t = self._target
                if t is None:
                    if self._child is not None:
                        return "drop", None, None
                elif self._now_active:
                    self._now_active = False
                    return "activated", t, None
                elif self._child is None or self._child_for is not t:
                    return "start", t, None
                elif self._waiting is not None:
                    job, self._waiting = self._waiting, None
                    return "judge", t, job
                now = time.monotonic()
                if self._pending and now - self._pending_since >= FLUSH_EVERY_S:
                    return "flush", t, None
                if t is not None and now - self._saved_at >= COUNTERS_EVERY_S:
                    return "flush", t, None
                self._cond.wait(FLUSH_EVERY_S)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            action, target, job = self._next()
            if action == "stop":
                break
            if action == "drop":
                self._drop_child()
            elif action == "flush":
                self.flush()
            elif action == "activated":
                self._drop_child()
                self.on_activated()
            elif target is not None:
                ok = self._start_child(target) if job is None else self._judge(target, job)
                if ok:
                    backoff = BACKOFF_FIRST_S if job is not None else backoff
                else:
                    self._sleep(backoff, target)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._drop_child()

    def _sleep(self, seconds: float, target: Target) -> None:
        """Back off; a stop or another target ends the wait."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stop and self._target is target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _drop_child(self) -> None:
        child, self._child, self._child_for = self._child, None, None
        if child is not None:
            child.close()

    def _start_child(self, target: Target) -> bool:
        self._drop_child()
        self._set_live(target, child="starting", pid=None)
        try:
            child = ShadowChild(target.init)
            self._set_live(target, pid=child.pid)
            self._child = child  # close() can kill it while it loads
            ready = child.wait_ready()
        except ChildFailed as e:
            self._fail(target, str(e))
            self._drop_child()
            return False
        self._child_for = target
        self._set_live(target, child="running", model=ready)
        log.info("shadow model %s v%s (%s…) judges on spare capacity (child %d)",
                 ready.get("name"), ready.get("version"), target.sha256[:12], child.pid)  # fmt: skip
        return True

    def _judge(self, target: Target, job: Job) -> bool:
        child = self._child
        if child is None or self._child_for is not target:
            return True  # the target changed meanwhile
        try:
            result = child.judge(job, self.judge_timeout_s)
        except ChildFailed as e:
            child.kill()
            self._drop_child()
            self._fail(target, f"{e} (frame {job.inspection_id} lost)")
            return False
        row = result_args(target.sha256, result, utc_iso())
        if job.active_verdict and result.verdict != job.active_verdict:
            self._keep_picture(target, job)
        with self._cond:
            if self._target is not target:
                return True
            target.counters.judged += 1
            self._live.latency_ms.append(result.latency_ms)
            self._live.recent.append(True)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(row)
            due = len(self._pending) >= FLUSH_ROWS
        if due or time.monotonic() - self._pending_since >= FLUSH_EVERY_S:
            self.flush()
        return True

    def _keep_picture(self, target: Target, job: Job) -> None:
        """The frame of a disagreement, for the report, when the store kept none (one
        indexed read per disagreement; the feeder's thread, off the line's path)."""
        if self.data_dir is None or self.keep_pictures <= 0:
            return
        row = (
            self.pool.get()
            .execute("SELECT seq, image_path FROM inspections WHERE id = ?", [job.inspection_id])
            .fetchone()
        )
        if row is not None and row[1] is None:
            keep_picture(self.data_dir, target.sha256, int(row[0]), job.image, self.keep_pictures)

    def _fail(self, target: Target, message: str) -> None:
        if self._stop:  # close() killed the child: the station is closing, not failing
            return
        log.error("shadow model %s…: %s; the station keeps running, the shadow restarts",
                  target.sha256[:12], message)  # fmt: skip
        with self._cond:
            if self._target is target:
                target.counters.errors += 1
                self._live.last_error = message
                self._live.child = "restarting"

    def _set_live(self, target: Target, **values: Any) -> None:
        with self._cond:
            if self._target is target:
                for k, v in values.items():
                    setattr(self._live, k, v)


def latency_summary(values: deque[float]) -> tuple[float, float] | None:
    """``(mean, p95)`` of the recent shadow latencies, ms; None before the first."""
    if not values:
        return None
    a = np.fromiter(values, float)
    return float(a.mean()), float(np.percentile(a, 95))
