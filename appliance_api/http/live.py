"""Live results for the screen: committed inspections fanned out to asyncio subscribers.

The hub is one of the station's outward channels (:mod:`kanjian.station.channels`):
:meth:`LiveHub.on_commit` runs on the store's writer
thread after each durable commit, so the screen never shows a result the
store could still lose, and the inspection loop never waits for a viewer.
It only keeps references and hands events over with
``loop.call_soon_threadsafe``; JPEG drawing and encoding happen later, on
request, at most ``api.live_fps`` times a second, and once per frame however
many viewers there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlite_utils
from numpy.typing import NDArray
from pydantic import Field

from kanjian.appliance_api.http.annotate import Keep, annotate_inspection, encode_jpeg, placeholder
from kanjian.appliance_api.http.api_models import (
    DetectionOut,
    LiveInspection,
    ModelRefOut,
    ShiftOut,
)
from kanjian.appliance_api.http.pictures import PictureCache
from kanjian.appliance_api.http.quality_models import QualityOut
from kanjian.appliance_api.http.shifts import local_now, shift_bounds
from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import ReasonCode, ReasonParams, explain_reason
from kanjian.station.records import JUDGED_VERDICTS, utc_iso

log = logging.getLogger(__name__)

JUDGED = tuple(v.value for v in JUDGED_VERDICTS)


class LiveInspectionEvent(LiveInspection):
    """What the ``inspection`` and ``hello`` events carry: the inspection plus its reason
    as a code and parameters, which the screen translates (``reason`` stays English).

    Only the server-sent events use these two fields; an endpoint declaring
    :class:`LiveInspection` answers without them.
    """

    reason_code: ReasonCode | None = Field(
        description="stable code of the reason (inference/verdict.py ReasonCode); "
        "null when the reason is not one the verdict rules make: show `reason`"
    )
    reason_params: ReasonParams = Field(
        description="the reason's facts: class, confidence, box, more, detail; detect "
        "reasons also where (top_left, top, top_right, left, centre, right, bottom_left, "
        "bottom, bottom_right: the 3x3 cell of the frame the box's centre is in) and, "
        "with camera.mm_per_px, size_mm ([w, h] in mm, one decimal)"
    )


def live_inspection(insp: Inspection, save_verdicts: set[str]) -> LiveInspectionEvent:
    """The screen's view of an inspection (no image bytes)."""
    d = insp.detections
    names = insp.class_names
    dets = []
    for i in range(len(d)):
        cid = int(d.class_id[i])
        x1, y1, x2, y2 = (round(float(v), 2) for v in d.xyxy[i])
        dets.append(
            DetectionOut(
                idx=i,
                class_id=cid,
                class_name=names[cid] if 0 <= cid < len(names) else str(cid),
                confidence=round(float(d.confidence[i]), 4),
                xyxy=(x1, y1, x2, y2),
                mask_area=None if d.masks is None else int(d.masks[i].sum()),
            )
        )
    m = insp.model
    frame_wh = insp.frame.resolution_wh if isinstance(insp.frame, Frame) else None
    code, params = explain_reason(insp.verdict, insp.reason, frame_wh)
    return LiveInspectionEvent(
        id=str(insp.inspection_id),
        frame_id=insp.frame.frame_id,
        source_id=insp.frame.source_id,
        trigger_id=insp.frame.trigger_id,
        captured_at=utc_iso(insp.frame.captured_at),
        verdict=insp.verdict.value,
        reason=insp.reason,
        reason_code=code,
        reason_params=params,
        model=ModelRefOut(
            name=m.name if m else None,
            version=m.version if m else None,
            sha256=m.sha256 if m else None,
        ),
        detections=dets,
        timings_ms={k: round(v, 3) for k, v in insp.timings_ms.items()},
        image_saved=insp.verdict.value in save_verdicts and isinstance(insp.frame, Frame),
        score=None if insp.score is None else round(insp.score, 6),
        quality=None if insp.quality is None else QualityOut(**insp.quality.values()),
    )


class ShiftCounter:
    """Verdict counts of the current shift; rolls over at each shift start."""

    def __init__(self, starts: list[str]) -> None:
        self.starts = starts
        self._lock = threading.Lock()
        self.start, self.end = shift_bounds(local_now(), starts)
        self.counts: Counter[str] = Counter()

    def load(self, db: sqlite_utils.Database) -> None:
        """Count the rows already stored for the current shift (at start-up)."""
        # one count per verdict, each a range of the (verdict, captured_at) index alone:
        # no table row is read, so a long shift at a fast line still starts quickly
        since = utc_iso(self.start)
        q = "SELECT COUNT(*) FROM inspections WHERE verdict = ? AND captured_at >= ?"
        counts = {v.value: int(db.execute(q, [v.value, since]).fetchone()[0]) for v in Verdict}
        with self._lock:
            self.counts = Counter({v: n for v, n in counts.items() if n})

    def _roll(self) -> None:
        now = local_now()
        if now >= self.end:
            self.start, self.end = shift_bounds(now, self.starts)
            self.counts = Counter()

    def add(self, batch: Sequence[Inspection]) -> None:
        with self._lock:
            self._roll()
            for insp in batch:
                if insp.frame.captured_at >= self.start:
                    self.counts[insp.verdict.value] += 1

    def snapshot(self) -> ShiftOut:
        with self._lock:
            self._roll()
            counts = {v.value: self.counts.get(v.value, 0) for v in Verdict}
            judged = sum(counts[v] for v in JUDGED)
            passed = counts[Verdict.PASS.value]
            return ShiftOut(
                start=self.start.isoformat(timespec="seconds"),
                end=self.end.isoformat(timespec="seconds"),
                counts=counts,
                total=sum(counts.values()),
                yield_pct=None if judged == 0 else round(100.0 * passed / judged, 2),
            )


class LiveHub:
    """Fans committed inspections out to SSE subscribers and serves the live picture
    (the station's ``live`` channel).

    Args:
        save_verdicts: verdicts whose images the store keeps (for ``image_saved``).
        shift: the shift counter to update.
        max_side: live pictures are shrunk to this longest side, px.
        keep: which detections the live picture draws (default: all).
        names: display names by class name for the labels, given the judging model's
            sha256 and a language (default: class names).
        language: the station's language (``api.language``): the labels' language
            where a caller names none.
        queue_size: events buffered per subscriber; a viewer that falls further
            behind loses the oldest and then gets a ``resync`` event (the screen reloads
            its list of defects from the log).
        pictures_recent / pictures_defects / pictures_mb: bounds of :attr:`pictures`,
            the recent inspections' annotated pictures the screen shows by id
            (:class:`~kanjian.appliance_api.http.pictures.PictureCache`).
    """

    def __init__(
        self,
        save_verdicts: set[str],
        shift: ShiftCounter,
        max_side: int = 960,
        queue_size: int = 256,
        keep: Callable[[], Keep] | None = None,
        pictures_recent: int = 16,
        pictures_defects: int = 32,
        pictures_mb: float = 256.0,
        names: Callable[[str | None, str], Mapping[str, str]] | None = None,
        language: str = "en",
    ) -> None:
        self.keep = keep
        self.names = names
        self.language = language
        self.save_verdicts = save_verdicts
        self.shift = shift
        self.max_side = max_side
        self.queue_size = queue_size
        self.closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._lock = threading.Lock()
        self._last: Inspection | None = None
        self._last_picture: Inspection | None = None
        self._last_quality: Inspection | None = None  # the newest the quality gate measured
        self._counter = 0
        self._jpeg_lock = threading.Lock()
        self._jpeg: dict[str, tuple[object, bytes]] = {}  # by language
        languages = (language, *(x for x in ("zh", "en") if x != language))
        self.pictures = PictureCache(
            self.draw,
            encode_jpeg,
            recent=pictures_recent,
            defects=pictures_defects,
            max_bytes=int(pictures_mb * 2**20),
            languages=languages,
            variant=self.label_names,
        )

    name = "live"

    def draw(self, insp: Inspection, lang: str | None = None) -> NDArray[np.uint8] | None:
        """``insp`` annotated for people (the detections the rules in force count), its
        labels in ``lang`` (default: the station's), at most ``max_side`` px; ``None``
        for a failure (no image)."""
        keep = self.keep() if self.keep is not None else None
        sha = insp.model.sha256 if insp.model else None
        names = self.names(sha, lang or self.language) if self.names is not None else None
        return annotate_inspection(insp, self.max_side, keep, names)

    def label_names(self, insp: Inspection, lang: str) -> tuple[tuple[str, str], ...]:
        """What ``insp``'s labels in ``lang`` depend on: its model's display names."""
        if self.names is None:
            return ()
        sha = insp.model.sha256 if insp.model else None
        return tuple(sorted(self.names(sha, lang).items()))

    # -- wiring ------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to start: :meth:`attach` binds the server's loop when it runs."""

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (call from inside it, at start-up)."""
        self._loop = loop

    def close(self) -> None:
        """Make every stream end (server shutdown)."""
        self.closing.set()

    # -- writer thread side ------------------------------------------------------------
    def on_commit(self, batch: Sequence[Inspection]) -> None:
        """Channel: remember the newest, count the shift, notify subscribers."""
        if not batch:
            return
        self.shift.add(batch)
        for insp in batch[-64:]:  # a huge batch (a stall drained): only its tail is shown
            self.pictures.add(insp)
        with self._lock:
            self._last = batch[-1]
            for insp in reversed(batch):
                if isinstance(insp.frame, Frame):
                    self._last_picture = insp
                    break
            for insp in reversed(batch):
                if insp.quality is not None:
                    self._last_quality = insp
                    break
            self._counter += len(batch)
            subs = list(self._subs)
        loop = self._loop
        if loop is None or not subs or loop.is_closed():
            return
        events = [
            {"type": "inspection", "inspection": live_inspection(i, self.save_verdicts)}
            for i in batch[-32:]  # a huge batch means viewers only need its tail
        ]
        events[-1]["shift"] = self.shift.snapshot()
        skipped = len(batch) > len(events)
        # the loop may close between the check and the call (shutdown)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, subs, events, skipped)

    def _deliver(
        self, subs: list[asyncio.Queue[dict[str, Any]]], events: list[Any], skipped: bool = False
    ) -> None:
        for q in subs:
            lost = skipped
            for ev in events:
                if q.full():
                    q.get_nowait()  # drop the oldest for this slow viewer only
                    lost = True
                q.put_nowait(ev)
            if lost:  # it missed inspections: tell it to reload what it shows from the log
                if q.full():
                    q.get_nowait()
                q.put_nowait({"type": "resync"})

    # -- server side -------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        with self._lock:
            self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    @property
    def last(self) -> Inspection | None:
        with self._lock:
            return self._last

    @property
    def last_picture(self) -> Inspection | None:
        """The newest committed inspection that has a frame (the one the live view shows)."""
        with self._lock:
            return self._last_picture

    @property
    def last_quality(self) -> Inspection | None:
        """The newest committed inspection with image-quality numbers (GET /api/quality)."""
        with self._lock:
            return self._last_quality

    def picture_key(self) -> object:
        """Changes whenever a newer picture is available."""
        with self._lock:
            p = self._last_picture
        return None if p is None else p.inspection_id

    def jpeg(self, lang: str | None = None) -> bytes:
        """The newest judged frame, annotated with labels in ``lang`` (default: the
        station's language), as JPEG (cached per frame and language). Blocking: CPU."""
        lang = lang or self.language
        with self._lock:
            insp = self._last_picture
        key = None if insp is None else insp.inspection_id
        with self._jpeg_lock:
            had = self._jpeg.get(lang)
            if had is not None and had[0] == key:
                return had[1]
            # the screen asks for the same picture by id: draw and encode it once for both
            data = None if key is None else self.pictures.jpeg(str(key), lang)
            if data is None:
                img = self.draw(insp, lang) if insp is not None else None
                # a wordless placeholder: the screen says "waiting" in the operator's language
                data = encode_jpeg(img if img is not None else placeholder())
            self._jpeg[lang] = (key, data)
            return data
