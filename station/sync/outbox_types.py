"""The records the outbox hands out and takes in, and small helpers over seq ranges.

:mod:`kanjian.station.sync.outbox` reads and marks the ``outbox`` rows; these are the
values that flow between it, the sync worker, the uploader and the receiver
(which uses the range helpers on its own database).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kanjian.station.records import StoredInspection


@dataclass(frozen=True)
class OutboxEntry:
    """An inspection as committed in the store, with its outbox entry's state.

    Attributes:
        inspection: the stored inspection, detections included.
        attempts: times the broker acknowledged it so far.
        image_state: the outbox's image plan: None (not yet), pending, done...
        image_key: the object key its image is (to be) uploaded to.
    """

    inspection: StoredInspection
    attempts: int
    image_state: str | None = None
    image_key: str | None = None

    @property
    def seq(self) -> int:
        """The outbox seq, which is the inspection's seq."""
        return self.inspection.seq


@dataclass(frozen=True)
class ImageTodo:
    """An outbox entry whose image is to be examined or uploaded."""

    seq: int
    inspection_id: str
    verdict: str
    image_path: str | None
    captured_at: str
    image_key: str | None


@dataclass(frozen=True)
class BacklogStats:
    """How far behind the sync is (from the database).

    Attributes:
        backlog: entries not yet confirmed by the platform (and not dropped).
        unacked: of those, entries the broker has never acknowledged.
        oldest_created_at: creation time of the oldest backlog entry (ISO UTC), or None.
        images_pending: images waiting for upload.
        oldest_image_created_at: creation time of the oldest of those, or None.
        last_seq: the newest outbox seq.
    """

    backlog: int
    unacked: int
    oldest_created_at: str | None
    images_pending: int
    oldest_image_created_at: str | None
    last_seq: int


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass dropped. Ranges are inclusive ``(first, last)`` seqs."""

    message_ranges: tuple[tuple[int, int], ...]
    messages: int
    images: int
    total_messages: int = 0  # the persistent counters after this pass
    total_images: int = 0


def to_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges of integers: ``[1,2,3,7] -> [(1,3),(7,7)]``."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


@dataclass
class PendingWrites:
    """Marks gathered during one worker step, written in one transaction (:meth:`Outbox.apply`).

    Fewer, shorter write transactions leave the store's writer the lock more often.
    """

    published: list[int] = field(default_factory=list)
    retry_at: float = 0.0
    acked: list[int] = field(default_factory=list)
    confirms: list[tuple[list[tuple[int, int]], int | None]] = field(default_factory=list)
    resends: list[list[tuple[int, int]]] = field(default_factory=list)
    events_new: list[tuple[str, str, str, str]] = field(default_factory=list)
    events_sent: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.published or self.acked or self.confirms or self.resends
                    or self.events_new or self.events_sent)  # fmt: skip
