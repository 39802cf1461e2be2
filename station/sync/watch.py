"""What the sync worker reports on its own: camera and model changes, backlog high/normal,
what retention dropped.

Each change becomes one event (``camera_lost`` / ``camera_back``,
``model_activated``, ``provider_fallback``, ``sync_backlog_high`` /
``sync_backlog_normal``) handed to ``emit``; the worker calls :meth:`StationWatch.probe` about once a second and
:meth:`StationWatch.check_backlog` after each backlog count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kanjian.station.sync.config import RetentionConfig
from kanjian.station.sync.messages import event_message
from kanjian.station.sync.outbox import Outbox
from kanjian.station.sync.outbox_types import BacklogStats, RetentionResult, to_ranges
from kanjian.station.sync.status import age_s

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]

#: seconds a camera may take to connect after the start before it is said lost
CAMERA_GRACE_S = 10.0


class StationWatch:
    """Turns the station's camera state, active model and backlog into change events.

    Args:
        emit: queues one event (name, data).
        camera_state: probe of the camera state (``connected``, ``reconnecting``...).
        model_ref: probe of the active model (dict name/version/sha256).
        backlog_high: the backlog above which ``sync_backlog_high`` is said once
            (``sync_backlog_normal`` once it is back to half of it).
        fallback: probe of the active model's provider fallback: the event's data
            (``model``, ``requested``, ``provider``, ``cause``) while the model runs on
            another provider than the first asked for (``model.allow_fallback``), else
            ``None``. Said once per model and provider, from the first probe on: a
            station that starts on a fallback says so at once.
        shadow: probe of the running shadow's gate numbers (``shadow_agreement`` data,
            :func:`kanjian.station.sync.feedback_feed.shadow_probe`), None while none runs.
        shadow_every_s: the shadow is probed at most this often; its event goes out when
            its numbers changed (0: never).
        camera_grace_s: a camera not connected this long after the first probe is said
            lost, so a station that starts with its camera unplugged says so; a live
            source starts ``reconnecting`` until its first frame, which is not a loss.

    ``camera_back`` is said only after a ``camera_lost``: one pair per outage, the
    ``camera_back`` naming the state it left (``was``).
    """

    def __init__(
        self,
        emit: Emit,
        camera_state: Callable[[], str] | None,
        model_ref: Callable[[], dict[str, str]] | None,
        backlog_high: int,
        fallback: Callable[[], dict[str, Any] | None] | None = None,
        shadow: Callable[[], dict[str, Any] | None] | None = None,
        shadow_every_s: float = 60.0,
        camera_grace_s: float = CAMERA_GRACE_S,
    ) -> None:
        self.emit, self.camera_state, self.model_ref = emit, camera_state, model_ref
        self.fallback, self.shadow, self.shadow_every_s = fallback, shadow, shadow_every_s
        self._shadow_at = float("-inf")
        self._shadow_said: tuple[Any, ...] | None = None
        self._fallback_said: tuple[str, str] | None = None
        self.backlog_high = backlog_high
        self.model_lock = threading.Lock()  # held while the active model changes on purpose
        self.known_model: dict[str, str] | None = None
        self.camera_grace_s = camera_grace_s
        self._camera: str | None = None  # the state the last probe saw
        self._camera_since: float | None = None  # monotonic s of the first probe
        self._camera_was_up = False  # connected at some probe since the start
        self._camera_lost_said = False  # a camera_lost not yet answered by camera_back
        self._high = False

    def probe(self, connected: bool = True) -> None:
        """Look at the station once (about every second); ``connected``: the broker is
        reachable (a shadow report is only made then: the next one supersedes it)."""
        if self.camera_state is not None:
            self._probe_camera(self.camera_state)
        if self.model_ref is not None:
            with self.model_lock:
                ref = self.model_ref()
                if self.known_model is not None and ref != self.known_model:
                    self.emit(
                        "model_activated",
                        {"source": "station", "model": ref, "previous": self.known_model},
                    )
                self.known_model = ref
        if self.fallback is not None:
            data = self.fallback()
            key = None
            if data is not None:
                key = (str(data["model"]["sha256"]), str(data["provider"]))
                if key != self._fallback_said:
                    self.emit("provider_fallback", data)
            self._fallback_said = key
        if self.shadow is not None and self.shadow_every_s > 0 and connected:
            self._probe_shadow()

    def _probe_camera(self, read: Callable[[], str]) -> None:
        try:
            state = read()
        except Exception:
            state = "error"
        now = time.monotonic()
        if self._camera_since is None:
            self._camera_since = now
        if state == "connected":
            if self._camera_lost_said:
                self.emit("camera_back", {"state": state, "was": self._camera})
                self._camera_lost_said = False
            self._camera_was_up = True
        elif not self._camera_lost_said and (
            self._camera_was_up or now - self._camera_since >= self.camera_grace_s
        ):
            self.emit("camera_lost", {"state": state})
            self._camera_lost_said = True
        self._camera = state

    def _probe_shadow(self) -> None:
        now = time.monotonic()
        if now - self._shadow_at < self.shadow_every_s:
            return
        self._shadow_at = now
        try:
            data = self.shadow()  # type: ignore[misc]
        except Exception:  # a report is worth less than the sync's loop
            log.exception("shadow report: probe failed")
            return
        if data is None:
            return
        said = (data["session_id"], data["active"]["sha256"], data["frames"], data["agreed"],
                tuple(sorted(data["feedback"].items())))  # fmt: skip
        if said != self._shadow_said:
            self._shadow_said = said
            self.emit("shadow_agreement", data)

    def check_backlog(self, b: BacklogStats | None) -> None:
        if b is None:
            return
        data = {"backlog": b.backlog, "oldest_age_s": age_s(b.oldest_created_at)}
        if not self._high and b.backlog > self.backlog_high:
            self._high = True
            log.warning("sync backlog high: %d entries", b.backlog)
            self.emit("sync_backlog_high", {**data, "threshold": self.backlog_high})
        elif self._high and b.backlog <= self.backlog_high // 2:
            self._high = False
            self.emit("sync_backlog_normal", {**data, "threshold": self.backlog_high})


def apply_retention(
    ob: Outbox, cfg: RetentionConfig, stream: str, site: str, line: str, station: str
) -> RetentionResult:
    """Drop what retention gives up on; its counters and its ``sync_dropped`` event row
    commit together (:meth:`Outbox.apply_retention`)."""

    def report(res: RetentionResult) -> tuple[str, str, str, str]:
        data = {
            "stream": stream,
            "messages": res.messages,
            "images": res.images,
            "ranges": [list(x) for x in res.message_ranges[:10_000]],
            "total_messages": res.total_messages,
            "total_images": res.total_images,
        }
        eid, payload, at = event_message(
            "sync_dropped", data, site=site, line=line, station=station
        )
        return eid, "sync_dropped", payload, at

    return ob.apply_retention(cfg.max_age_h, cfg.max_backlog, cfg.max_images_pending, report)


def dropped_again(ob: Outbox, stream: str, ranges: list[tuple[int, int]]) -> dict[str, Any] | None:
    """The ``sync_dropped`` event data for the asked-for entries retention gave up on, if any.

    Said again because the first event may have been lost with a broker, so the
    platform stops seeing a gap.
    """
    dropped = to_ranges(ob.dropped_in(ranges))
    if not dropped:
        return None
    n = sum(b - a + 1 for a, b in dropped)
    return {"stream": stream, "messages": n, "images": 0,
            "ranges": [list(x) for x in dropped], "repeated": True}  # fmt: skip
