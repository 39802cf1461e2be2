"""What the HTTP app works with: the running station and the services built around it."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kanjian.appliance_api.http.annotate import rules_keep
from kanjian.appliance_api.http.auth import TokenStore
from kanjian.appliance_api.http.live import LiveHub, ShiftCounter
from kanjian.appliance_api.http.metrics import StationMetrics
from kanjian.appliance_api.http.usage import FolderSize, RecentRate
from kanjian.station.api_config import ApiConfig
from kanjian.station.images import IMAGES_DIR
from kanjian.station.pipeline import Station
from kanjian.station.shadow import service as _shadow  # noqa: F401  registers "shadow"
from kanjian.station.state.db import ConnectionPool
from kanjian.station.state.models import ModelRegistry
from kanjian.station.state.service import StationState

log = logging.getLogger(__name__)


class LoopThread:
    """Runs :meth:`Station.run` on a background thread (the server owns the main one)."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inspection-loop", daemon=True)

    def _run(self) -> None:
        try:
            stats = self.station.run()
            log.info("inspection loop ended after %d inspections", stats.frames)
        except BaseException as e:  # shown in /status; the API keeps serving the log
            self.error = e
            log.exception("the inspection loop stopped with an error")

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Ask the loop to finish the frame in flight; ``True`` when it has ended."""
        self.station.stop()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()


class ProgressClock:
    """When the loop's progress counter last moved, sampled at each probe.

    A probe that finds the counter where the previous probe left it counts the
    time since it last moved; the first probe starts the clock (a station just
    started gets one window of grace).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: int | None = None
        self._moved_at = 0.0

    def seconds_since_move(self, progress: int, now: float) -> float:
        """Seconds since ``progress`` last changed (0.0 when it just did)."""
        with self._lock:
            if progress != self._value:
                self._value, self._moved_at = progress, now
            return max(0.0, now - self._moved_at)


@dataclass
class ApiState:
    """The station and its API services; one per app.

    Attributes:
        station: the built station (its loop may run on another thread).
        pool: per-thread database connections (the station state's).
        hub: live results and pictures.
        registry: model bundles and activation (the station state's).
        metrics: Prometheus metrics.
        loop: the inspection loop's thread (started by the caller).
        rate: inspections per second over the last 10 s.
        images_size: the saved images' total size, recounted in the background.
        started_at: ``time.monotonic()`` at start.
        health_clock: when the loop last advanced, for ``GET /api/health``.
    """

    station: Station
    pool: ConnectionPool
    hub: LiveHub
    registry: ModelRegistry
    metrics: StationMetrics
    loop: LoopThread
    rate: RecentRate = field(default_factory=RecentRate)
    images_size: FolderSize | None = None
    started_at: float = field(default_factory=time.monotonic)
    health_clock: ProgressClock = field(default_factory=ProgressClock)

    @property
    def kept(self) -> StationState:
        """What the station keeps: models, rules, audit (every change goes through it)."""
        return self.station.state

    @property
    def cfg(self) -> ApiConfig:
        return self.station.config.api

    def tokens(self) -> TokenStore:
        return TokenStore(self.pool.get())


def start_services(station: Station) -> ApiState:
    """Build the API's services around a built station and hook them to its store.

    The model and rules set before a restart are already back in force
    (``build_station`` restored them). Call before the inspection loop starts,
    so no commit is missed; then ``state.loop.start()``.
    """
    pool = station.state.pool
    db = pool.get()
    shift = ShiftCounter(station.config.api.shift_starts)
    shift.load(db)
    hub = LiveHub(
        set(station.config.store.save_images),
        shift,
        max_side=station.config.api.live_max_side,
        keep=lambda: rules_keep(station.inspector.rules_in_force()),  # the rules in force now
        pictures_defects=station.config.api.screen_pictures,
        pictures_mb=station.config.api.screen_pictures_mb,
        # labels by the judging model's display names: in the station's language, or
        # the screen's (GET /api/screen/picture/{id}?lang=)
        names=station.state.names.for_language,
        language=station.config.api.language,
    )
    loop = LoopThread(station)
    metrics = StationMetrics(station, loop.alive)
    registry = station.state.models
    rate = RecentRate()
    for channel in (hub, metrics, rate):  # after the station's own (triggers, PLC, sync)
        station.channels.add(channel)
    store = station.store
    images = FolderSize(store.data_dir / IMAGES_DIR, written=lambda: store.image_bytes_saved)
    return ApiState(station, pool, hub, registry, metrics, loop, rate, images)
