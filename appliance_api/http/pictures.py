"""Recent inspections' annotated pictures, by id, in memory: the screen's big picture.

The operator's screen shows one inspection at a time (verdict, picture, reason,
feedback buttons) and holds a defect for a few seconds, so the picture it shows is
never the live frame: it is the held inspection's own, fetched by id. An inspection
whose image the store does not save (PASS by default, or any verdict when the disk
is full) must still have one while the screen may show it, so the live hub keeps the
last few here.

Cost on the store's writer thread (:meth:`PictureCache.add`): keeping a reference,
no drawing. A picture is drawn and JPEG-encoded when first asked for, in each of the
screens' languages at once (its labels are display names: one screen may be in
Chinese, another in English); languages whose labels read the same (no display names,
or the same ones) share one drawing. The frame is then let go and only the JPEG bytes
stay. Two bounded pools, so a fast run
of PASS parts never pushes out the defects the screen's strip still shows: the
newest ``defects`` FAIL / REVIEW inspections, and the newest ``recent`` others (PASS,
ERROR, MISSED). Both together stay under ``max_bytes`` (an inspection not yet drawn
counts its frame's, masks' and anomaly map's bytes): the oldest entry of the pool
holding more bytes goes first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection, Verdict
from kanjian.station.store_health import pixel_bytes

DEFECTS = frozenset({Verdict.FAIL, Verdict.REVIEW})

#: draws one inspection for people with labels in a language (``zh`` / ``en``):
#: ``(H, W, 3)`` uint8 BGR at most ``max_side`` px, or ``None`` when it has no image
Drawer = Callable[[Inspection, str], "NDArray[np.uint8] | None"]
#: what an inspection's labels in a language depend on (its model's display names):
#: languages with equal values are drawn once
Variant = Callable[[Inspection, str], Hashable]
#: JPEG bytes of a BGR uint8 picture
Encoder = Callable[["NDArray[np.uint8]"], bytes]


@dataclass
class _Entry:
    insp: Inspection | None  # let go once encoded
    size: int  # bytes it holds now: the frame's pixels, then its JPEGs' lengths
    jpegs: dict[str, bytes] = field(default_factory=dict)  # by language, once drawn


class PictureCache:
    """The newest inspections' annotated JPEGs by inspection id (thread-safe).

    Args:
        draw: makes the picture of an inspection (the hub's annotation with the rules
            in force when it is first asked for).
        encode: JPEG-encodes it.
        recent: other inspections (PASS, ERROR, MISSED) kept, the newest (>= 1).
        defects: FAIL / REVIEW inspections kept, the newest (>= 0: 0 keeps them with the
            others).
        max_bytes: bound on what both pools hold together, bytes.
        languages: the languages pictures are drawn in (the first is the default).
        variant: languages whose values are equal for an inspection share one
            drawing (default: each language is drawn).
    """

    def __init__(
        self,
        draw: Drawer,
        encode: Encoder,
        recent: int = 16,
        defects: int = 32,
        max_bytes: int = 256 * 2**20,
        languages: Sequence[str] = ("zh", "en"),
        variant: Variant | None = None,
    ) -> None:
        if recent < 1 or defects < 0 or max_bytes < 1:
            raise ValueError(
                f"picture cache bounds must be recent >= 1, defects >= 0, max_bytes >= 1; "
                f"got {recent}, {defects}, {max_bytes}"
            )
        if not languages:
            raise ValueError("picture cache needs at least one language")
        self._draw = draw
        self._encode = encode
        self.languages = tuple(languages)
        self._variant: Variant = variant or (lambda _insp, lang: lang)
        self._limits = {False: recent, True: defects}
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # insertion order = commit order; True: the defects' pool
        self._pools: dict[bool, OrderedDict[str, _Entry]] = {
            False: OrderedDict(),
            True: OrderedDict(),
        }
        self._bytes = 0

    def add(self, insp: Inspection) -> None:
        """Keep ``insp`` (a committed inspection with a frame; others are ignored)."""
        if not isinstance(insp.frame, Frame):
            return
        defect = insp.verdict in DEFECTS and self._limits[True] > 0
        key = str(insp.inspection_id)
        entry = _Entry(insp, pixel_bytes(insp))  # frame, masks, anomaly map
        with self._lock:
            pool = self._pools[defect]
            if key in pool:
                return
            pool[key] = entry
            self._bytes += entry.size
            self._trim()

    def _trim(self) -> None:
        """Evict down to the bounds (caller holds the lock); the newest entry stays."""
        for defect, pool in self._pools.items():
            while len(pool) > self._limits[defect]:
                self._bytes -= pool.popitem(last=False)[1].size
        while self._bytes > self.max_bytes and len(self) > 1:
            # the pool holding more bytes gives its oldest first
            fuller = max(self._pools.values(), key=lambda p: sum(e.size for e in p.values()))
            if len(fuller) == 0:
                break
            self._bytes -= fuller.popitem(last=False)[1].size

    def __len__(self) -> int:
        return sum(len(p) for p in self._pools.values())

    @property
    def bytes_held(self) -> int:
        """What the kept frames and JPEGs take now, bytes."""
        with self._lock:
            return self._bytes

    def ids(self) -> list[str]:
        """The ids kept, oldest first within each pool (others, then defects)."""
        with self._lock:
            return [*self._pools[False], *self._pools[True]]

    def _find(self, key: str) -> _Entry | None:
        for pool in self._pools.values():
            if key in pool:
                return pool[key]
        return None

    def jpeg(self, inspection_id: str, lang: str | None = None) -> bytes | None:
        """The inspection's annotated JPEG with labels in ``lang`` (default: the first
        language), drawn on first request; ``None`` when it is not kept (too old, or no
        image). Blocking: CPU on the first call per id (one drawing per language whose
        labels differ)."""
        lang = lang or self.languages[0]
        if lang not in self.languages:
            raise ValueError(f"pictures are drawn in {', '.join(self.languages)}, not {lang!r}")
        with self._lock:
            entry = self._find(inspection_id)
            if entry is None:
                return None
            if entry.jpegs:
                return entry.jpegs[lang]
            insp = entry.insp
        assert insp is not None  # an entry lets go of its inspection only once it has bytes
        drawn: dict[Hashable, bytes] = {}
        jpegs: dict[str, bytes] = {}
        for each in self.languages:
            key = self._variant(insp, each)
            if key not in drawn:
                img = self._draw(insp, each)
                if img is None:
                    return None
                drawn[key] = self._encode(img)
            jpegs[each] = drawn[key]
        size = sum(len(b) for b in drawn.values())
        with self._lock:
            # it may have been evicted, or encoded by another request, meanwhile
            entry = self._find(inspection_id)
            if entry is not None and not entry.jpegs:
                self._bytes += size - entry.size
                entry.jpegs, entry.insp, entry.size = jpegs, None, size
            elif entry is not None:
                return entry.jpegs[lang]  # the same bytes every caller gets
        return jpegs[lang]
