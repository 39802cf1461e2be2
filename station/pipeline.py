"""The running station: source → inspector → store → outward channels, with start-up and shutdown.

The app starts as a short, linear list of steps (:func:`build_station`). Every
inspection goes to the store; everything that consumes committed inspections
(trigger answers, PLC, sync, the API's live view and metrics) is a
:class:`~kanjian.station.channels.Channel` in the station's fan-out. Channels
built from the config come from a registry keyed by kind
(:func:`register_channel`): the PLC and sync modules register theirs, so this
module never imports them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from kanjian.camera import Frame, FrameFailure, open_source
from kanjian.camera.pump import FramePump
from kanjian.inference.model import OnnxModel, load_model
from kanjian.inference.types import Inspection
from kanjian.kernels import warmup as kernels_warmup
from kanjian.kernels.warmup import cache_is_cold as kernel_cache_is_cold
from kanjian.station.channels import Channel, Channels
from kanjian.station.config import StationConfig
from kanjian.station.datalock import DataLock
from kanjian.station.inspector import Inspector
from kanjian.station.retention import Retention, start_retention
from kanjian.station.runtime import configure_threads
from kanjian.station.state.service import StationState
from kanjian.station.store import ResultStore
from kanjian.station.store_health import StoreCloseResult, check_free_space
from kanjian.station.triggers import (
    STOPPING_UNJUDGED,
    Trigger,
    TriggerAnswers,
    TriggerQueue,
    queue_numbers,
    refused_failure,
)

log = logging.getLogger(__name__)


class StationClosedError(RuntimeError):
    """A trigger reached a station that is closed: no row can be written for it."""


@dataclass
class LoopStats:
    """Live counters of the inspection loop (mutated by the loop thread only)."""

    frames: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.monotonic)
    recent_ms: dict[str, deque[float]] = field(default_factory=dict)
    last: Inspection | None = None
    #: waits that found nothing to do (no trigger, no frame within the timeout)
    idle_waits: int = 0

    @property
    def progress(self) -> int:
        """Moves while the loop works or idles healthily; stuck while it hangs
        (systemd's watchdog pings only while it moves: station/notify.py)."""
        return self.frames + self.idle_waits

    def record(self, insp: Inspection) -> None:
        self.frames += 1
        self.verdicts[insp.verdict.value] += 1
        self.last = insp
        for k, v in insp.timings_ms.items():
            self.recent_ms.setdefault(k, deque(maxlen=1000)).append(v)

    def percentiles(self, q: float) -> dict[str, float]:
        """Per-stage latency percentile ``q`` (0-100) over the last 1000 frames, ms."""
        return {k: float(np.percentile(list(v), q)) for k, v in self.recent_ms.items() if v}

    @property
    def fps(self) -> float:
        dt = time.monotonic() - self.started_at
        return self.frames / dt if dt > 0 else 0.0


@dataclass
class Station:
    """A built station: everything :meth:`run` needs, and what it ran with."""

    config: StationConfig
    pump: FramePump
    inspector: Inspector
    store: ResultStore
    startup_ms: dict[str, float]
    state: StationState  # models, rules, audit: what the station keeps beyond inspections
    data_lock: DataLock | None = None  # one station per data folder; freed by close()
    retention: Retention | None = None  # store.retention's thread; closed before the store
    stats: LoopStats = field(default_factory=LoopStats)
    stop_event: threading.Event = field(default_factory=threading.Event)
    triggers: TriggerQueue = field(init=False)
    #: everything that consumes committed inspections; the trigger answers come first
    channels: Channels = field(init=False)

    def __post_init__(self) -> None:
        t = self.config.trigger
        self.triggers = TriggerQueue(t.queue_size, t.when_busy, queue_numbers(self.store))
        self._answers = TriggerAnswers()
        self.channels = Channels()
        self.channels.add(self._answers)
        self.store.add_listener(self.channels.on_commit)  # the store's one commit listener
        self._emit_lock = threading.Lock()
        # Triggers and shutdown: ``_intake_lock`` orders every trigger's row before
        # the store closes (``_closed`` is set under it); ``_serve_lock`` is held
        # while the loop takes and judges a trigger, so close() waits for that row.
        self._intake_lock = threading.RLock()
        self._serve_lock = threading.Lock()
        self._closed = False

    # -- triggers ----------------------------------------------------------------
    def trigger(self, trigger_id: str | None = None) -> Future[Inspection]:
        """Ask for one inspection (triggered mode). Thread-safe.

        The future resolves with the inspection once its row is committed. A
        refused trigger resolves with a MISSED inspection, also logged; so does
        one that arrives once the station is stopping (:meth:`stop`), and one
        still queued when it stops. After :meth:`close` no row can be written:
        the future fails with :class:`StationClosedError`.
        """
        with self._intake_lock:
            if self._closed:
                return self._closed_answer(trigger_id)
            trig, refusal = self.triggers.submit(trigger_id, stopping=self.stop_event.is_set())
            if refusal is not None:
                failure = refused_failure(trig, refusal, self.pump.source_id)
                self._emit(self.inspector.inspect(failure), trig.result)
        result: Future[Inspection] = trig.result
        return result

    def refuse(self, trigger_id: str, reason: str) -> Future[Inspection]:
        """Log a trigger refused before it reached the queue (issue 6: the PLC's result
        buffer is full) as a MISSED row; resolves after commit. Thread-safe."""
        trig = Trigger(trigger_id, datetime.now(timezone.utc))
        with self._intake_lock:
            if self._closed:
                return self._closed_answer(trigger_id)
            self.triggers.count_refused()  # so /metrics and /status count it too
            failure = refused_failure(trig, reason, self.pump.source_id)
            self._emit(self.inspector.inspect(failure), trig.result)
        result: Future[Inspection] = trig.result
        return result

    def _closed_answer(self, trigger_id: str | None) -> Future[Inspection]:
        log.error("trigger %s after the station closed: no row written", trigger_id)
        fut: Future[Inspection] = Future()
        fut.set_exception(StationClosedError(f"trigger {trigger_id}: the station is closed"))
        return fut

    def _answer_unjudged(self) -> None:
        """Give every trigger still queued its MISSED row (the station is stopping)."""
        with self._intake_lock:
            left = self.triggers.drain()
            for trig in left:
                failure = refused_failure(trig, STOPPING_UNJUDGED, self.pump.source_id)
                self._emit(self.inspector.inspect(failure), trig.result)
        if left:
            log.warning("station stopping: %d queued triggers answered MISSED", len(left))

    def _emit(self, insp: Inspection, result: Future[Inspection] | None = None) -> None:
        if result is not None:
            self._answers.expect(insp.inspection_id, result)
        with self._emit_lock:  # loop thread and trigger callers share the stats and the queue
            self.stats.record(insp)
            self.store.put(insp)  # the channels get it once its row is committed

    # -- the loop ----------------------------------------------------------------
    def run(
        self,
        max_frames: int | None = None,
        on_inspection: Callable[[Inspection], None] | None = None,
    ) -> LoopStats:
        """Inspect until the source ends, ``max_frames`` inspections, or :meth:`stop`.

        Free-run mode judges every frame the pump hands on; triggered mode
        judges one fresh frame per trigger.
        """
        if self.config.trigger.mode == "triggered":
            while not self.stop_event.is_set():
                if max_frames is not None and self.stats.frames >= max_frames:
                    break
                insp = self._serve_trigger(0.2)
                if insp is None:
                    self.stats.idle_waits += 1
                if insp is not None and on_inspection is not None:
                    on_inspection(insp)
            if self.stop_event.is_set():
                # nobody judges them now: answer them while the PLC can still read it
                # (after max_frames they stay queued for a later run(), or close())
                self._answer_unjudged()
            return self.stats
        run = FreeRun(self, max_frames, on_inspection)
        workers = [
            threading.Thread(target=run.work, name=f"inspect-{i}", daemon=True)
            for i in range(self.config.runtime.inference_workers - 1)
        ]
        for w in workers:
            w.start()
        run.work()  # the calling thread is worker 0
        for w in workers:
            w.join()
        return self.stats

    def _serve_trigger(self, wait_s: float) -> Inspection | None:
        with self._serve_lock:
            if self.stop_event.is_set():  # close() may be past its wait for this lock
                return None
            return self._serve_one(wait_s)

    def _serve_one(self, wait_s: float) -> Inspection | None:
        trig = self.triggers.get(wait_s)
        if trig is None:
            return None
        self.triggers.busy.set()
        try:
            tc = self.config.trigger
            # a hardware-triggered camera's frame may arrive before the trigger does
            after = trig.received_mono - tc.camera_lead_ms / 1e3 if tc.camera_triggered else None
            item = self.pump.grab_fresh(trig.trigger_id, tc.frame_timeout_s, arrived_after=after)
            insp = self.inspector.inspect(item)
            self._emit(insp, trig.result)
            self.triggers.counters.served += 1
        finally:
            self.triggers.busy.clear()
        return insp

    def stop(self) -> None:
        """Ask :meth:`run` to return after the frame in flight.

        From then on a trigger is refused (a MISSED row); in triggered mode
        :meth:`run` answers the triggers still queued MISSED before it returns.
        Only sets a flag, so a signal handler may call it.
        """
        self.stop_event.set()

    def close(self) -> StoreCloseResult:
        """Stop the source, commit everything queued, close the store.

        Every trigger received gets its row first: the one being judged is
        waited for, the ones still queued are answered MISSED, and triggers
        arriving meanwhile are refused with a MISSED row. Returns what the store
        committed and what it could not (a full disk): the caller's last line.
        """
        self.stop_event.set()
        # the trigger in flight, if the loop still runs: bounded by the frame timeout
        wait_s = self.config.trigger.frame_timeout_s + 60.0
        if self._serve_lock.acquire(timeout=wait_s):
            self._serve_lock.release()
        else:
            log.error("the trigger in flight did not finish within %.0f s", wait_s)
        self._answer_unjudged()  # before the PLC servers stop, so they can still show it
        self.channels.stop_triggers()  # the PLC servers stop taking triggers first
        self.pump.close()
        with self._intake_lock:  # nothing enters after this; the stragglers get rows
            self.triggers.close()  # refused from now on
            self._answer_unjudged()  # queued while the servers stopped
            self._closed = True
        if self.retention is not None:  # its deletes end before the store's last commit
            self.retention.close()
        result = self.store.close()
        # after the last commit, so every channel saw it (the sync can still send it)
        self.channels.close()
        self.state.close()  # after the deployer, the last to write its rows
        if self.data_lock is not None:
            self.data_lock.release()  # nothing of ours writes to the folder any more
        return result


class FreeRun:
    """Free-run inspection by one or more worker threads, emitted in frame order.

    Each worker takes the next frame from the pump together with a ticket
    (under one lock, so tickets follow frame order), judges it outside the lock
    — ONNX Runtime and the Numba kernels release the GIL, so workers overlap —
    and hands the result to an in-order emitter: a frame's row is never
    written before the rows of the frames ahead of it.
    """

    def __init__(
        self,
        station: Station,
        max_frames: int | None,
        on_inspection: Callable[[Inspection], None] | None,
    ) -> None:
        self.st = station
        self.max_frames = max_frames
        self.on_inspection = on_inspection
        self.take_lock = threading.Lock()
        self.order_lock = threading.Lock()
        self.issued = 0
        self.next_emit = 0
        self.ready: dict[int, Inspection] = {}
        self.done = False

    def _take(self) -> tuple[int, Frame | FrameFailure] | None:
        st = self.st
        timeout = st.config.runtime.queue_timeout_s
        with self.take_lock:
            while not (self.done or st.stop_event.is_set()):
                if self.max_frames is not None and self.issued >= self.max_frames:
                    break
                item = st.pump.get(timeout)
                if item is None:
                    break  # the source ended (file replay done) or the pump closed
                if isinstance(item, FrameFailure) and item.missed and item.frame_id < 0:
                    # no frame within the timeout in free-run: no trigger is owed
                    # a row; the camera state (reconnecting...) shows in status.
                    st.stats.idle_waits += 1  # the loop is alive: the watchdog may ping
                    continue
                ticket = self.issued
                self.issued += 1
                return ticket, item
            self.done = True
            return None

    def work(self) -> None:
        while (taken := self._take()) is not None:
            ticket, item = taken
            insp = self.st.inspector.inspect(item)
            with self.order_lock:
                self.ready[ticket] = insp
                while self.next_emit in self.ready:
                    out = self.ready.pop(self.next_emit)
                    self.next_emit += 1
                    self.st._emit(out)
                    if self.on_inspection is not None:
                        self.on_inspection(out)


def build_station(cfg: StationConfig) -> Station:
    """Start-up, in order: threads, model (+ warm-up), store, station state, camera.

    The station state puts back the model and rules activated or set (API,
    platform, PLC) before a restart, for ``kanjian run`` and ``kanjian serve``
    alike. Raises ModelLoadError / BundleError naming the model file when it is
    missing or corrupt, and RulesError when the verdict rules name a class the
    model lacks — before any camera is opened or any row is written. First of all it
    takes the data folder's lock (held until :meth:`Station.close`): a second station
    on the folder raises DataFolderInUseError at once.
    """
    lock = DataLock.acquire(cfg.store.data_dir)
    try:
        # a full disk is refused before anything loads (LowDiskSpaceError)
        check_free_space(cfg.store.data_dir, cfg.store.min_free_mb)
        return _build_station(cfg, lock)
    except BaseException:
        lock.release()  # idempotent: a station closed on failure released it already
        raise


def _build_station(cfg: StationConfig, lock: DataLock) -> Station:
    t = {}
    t0 = time.perf_counter()
    configure_threads(cfg.runtime)
    mc = cfg.model
    model: OnnxModel = load_model(mc.path, mc.providers, mc.intra_op_threads, mc.allow_fallback)
    t["load_model"] = (time.perf_counter() - t0) * 1e3
    si, mi = model.session_info, model.info
    fb = f" (FALLBACK from {si.requested[0]}: model.allow_fallback is on)" if si.fell_back else ""
    log.log(logging.WARNING if fb else logging.INFO, "model %s v%s (%s, %d classes) on %s%s",
            mi.name, mi.version, mi.task, len(mi.class_names), si.provider, fb)  # fmt: skip
    t1 = time.perf_counter()
    # JIT-compile (or load from Numba's cache) the preprocessing kernels now, so
    # compile time never lands on the first inspection. A cold cache takes seconds:
    # say so before, not after a silent wait.
    if kernel_cache_is_cold():
        log.info("compiling the Numba preprocessing kernels (once per install, ~15-30 s)")
    jit = kernels_warmup(model.info.imgsz)
    t["kernels_jit"] = (time.perf_counter() - t1) * 1e3
    if jit.cache_misses:
        log.info(
            "compiled %d kernel signatures in %.1f s (cached on disk for the next start)",
            jit.cache_misses,
            jit.seconds,
        )
    t["warmup"] = model.warmup()
    # the rules are checked against the model's classes before anything is opened
    inspector = Inspector(model, cfg.rules, mc.conf, mc.iou, mc.max_det, cfg.camera.mm_per_px)
    t1 = time.perf_counter()
    store = ResultStore(
        cfg.store.data_dir,
        station_id=cfg.station.id,
        save_verdicts=tuple(cfg.store.save_images),
        jpeg_quality=cfg.store.jpeg_quality,
        batch_max_rows=cfg.store.batch_max_rows,
        batch_max_delay_ms=cfg.store.batch_max_delay_ms,
        queue_size=cfg.store.queue_size,
        synchronous=cfg.store.synchronous,
        queue_max_mb=cfg.store.queue_max_mb,
        min_free_mb=cfg.store.min_free_mb,
        writer=cfg.store.writer,
    )
    t["open_store"] = (time.perf_counter() - t1) * 1e3
    t1 = time.perf_counter()
    state = StationState(cfg, inspector, store.db_path)
    try:
        state.startup()
    except Exception:
        store.close()
        state.close()
        raise
    t["restore_state"] = (time.perf_counter() - t1) * 1e3
    t2 = time.perf_counter()
    source = open_source(cfg.camera, source_id="cam0")
    # Triggered: every frame read ahead of a trigger is stale and thrown away, and
    # decoding it steals CPU from the inspection in flight — keep one at most.
    pump = FramePump(source, cfg.policy, queue_size=1 if cfg.trigger.mode == "triggered" else 8)
    t["open_camera"] = (time.perf_counter() - t2) * 1e3
    station = Station(
        config=cfg,
        pump=pump,
        inspector=inspector,
        store=store,
        startup_ms=t,
        state=state,
        data_lock=lock,
    )
    try:  # the channels the config asks for (PLC servers, sync...); on failure close it all
        station.retention = start_retention(cfg, store, state)
        for kind, factory in _channel_factories(cfg):
            channel = factory(station)
            if channel is not None:
                station.channels.add(channel)
                log.info("channel %s (%s) started", channel.name, kind)
    except Exception:
        station.close()
        raise
    return station


# -- the registry of channel kinds built from the config -------------------------------

ChannelFactory = Callable[[Station], Channel | None]
"""Builds a channel for a built station, or ``None`` when the config leaves it off."""

_CHANNEL_KINDS: dict[str, tuple[int, ChannelFactory]] = {}


def register_channel(kind: str, factory: ChannelFactory, order: int = 100) -> None:
    """Build a ``kind`` channel for every station from now on (``factory`` reads the config).

    The module that implements a kind registers it when imported (``plc``:
    :mod:`kanjian.station.plc.service`, ``sync``: :mod:`kanjian.station.sync.service`);
    the entry points import those modules. Channels are built (and get each
    commit) by ascending ``order``, then registration order, whatever order the
    modules happened to be imported in.
    """
    _CHANNEL_KINDS[kind] = (order, factory)


def unregister_channel(kind: str) -> None:
    """Forget ``kind`` (tests that register a kind of their own clean up with this)."""
    _CHANNEL_KINDS.pop(kind, None)


def channel_kinds() -> tuple[str, ...]:
    """The registered channel kinds, in build order."""
    return tuple(k for k, _ in _ordered())


def _ordered() -> list[tuple[str, ChannelFactory]]:
    items = sorted(enumerate(_CHANNEL_KINDS.items()), key=lambda e: (e[1][1][0], e[0]))
    return [(kind, factory) for _, (kind, (_, factory)) in items]


#: the config sections that ask for a channel kind, and the module that registers it
_KIND_MODULES = {"plc": "kanjian.station.plc.service", "sync": "kanjian.station.sync.service"}


def _channel_factories(cfg: StationConfig) -> list[tuple[str, ChannelFactory]]:
    """The registered factories; refuses a config that enables a kind nobody registered
    (a station told to serve a PLC must not start silently without it)."""
    enabled = {"plc": cfg.plc.enabled, "sync": cfg.sync.enabled}
    missing = [k for k, on in enabled.items() if on and k not in _CHANNEL_KINDS]
    if missing:
        raise RuntimeError(
            f"the config enables {', '.join(missing)} but no such channel kind is registered "
            f"(known: {', '.join(_CHANNEL_KINDS) or 'none'}); import "
            + ", ".join(_KIND_MODULES[k] for k in missing)
            + " before build_station"
        )
    return _ordered()
