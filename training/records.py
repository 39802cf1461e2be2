"""What dataset readers hand on: images with boxes, and the problems they found."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ProblemKind(str, Enum):
    """Kinds of faults a reader reports; none of them stops an import."""

    UNREADABLE = "unreadable"  # annotation file cannot be parsed: file skipped
    MISSING_IMAGE = "missing_image"  # annotation names an image that is not there
    UNREADABLE_IMAGE = "unreadable_image"  # image exists but cannot be decoded
    SIZE_MISMATCH = "size_mismatch"  # stated size != real size: boxes rescaled
    BOX_OUTSIDE = "box_outside"  # box clipped to the image, or dropped if nothing is left
    BAD_BOX = "bad_box"  # degenerate or malformed box: dropped
    UNKNOWN_CLASS = "unknown_class"  # class not in the class list: box dropped
    DUPLICATE = "duplicate"  # a second annotation for the same image: ignored
    BAD_ENTRY = "bad_entry"  # malformed image/category entry (e.g. COCO row): entry skipped
    MISSING_MASK = "missing_mask"  # anomaly: a defect image without its mask: kept, no pixels
    UNREADABLE_MASK = "unreadable_mask"  # anomaly: the mask cannot be decoded: kept, no pixels
    EMPTY_MASK = "empty_mask"  # anomaly: a defect image whose mask marks no pixel: kept


@dataclass(frozen=True)
class Problem:
    """One fault in one input file.

    Attributes:
        kind: what went wrong.
        file: the file it is about (annotation or image).
        message: a sentence naming the value that is wrong and what was done.
    """

    kind: ProblemKind
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind.value}: {self.message}"


@dataclass(frozen=True)
class Box:
    """One labelled object.

    Attributes:
        class_name: label as written in the source.
        xyxy: ``x1, y1, x2, y2`` in pixels of the real image (float).
        polygon: optional outline ``((x, y), ...)`` in real-image pixels, for segmentation.
    """

    class_name: str
    xyxy: tuple[float, float, float, float]
    polygon: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image and its labels, in real-image pixels.

    Attributes:
        image: path to the image file.
        width, height: real size of the image in pixels (read from the file).
        boxes: labelled objects; empty means a background image.
        annotation: the annotation file it came from (None for an unlabelled image).
    """

    image: Path
    width: int
    height: int
    boxes: tuple[Box, ...]
    annotation: Path | None = None


@dataclass(frozen=True)
class ReadResult:
    """Everything a reader found in a source dataset.

    Attributes:
        records: usable images (possibly with repaired boxes).
        class_names: class list, index = class id.
        problems: every fault found, one per file and kind of fault.
        notes: counted remarks on what was left out on purpose (not faults), e.g.
            ``"voc: 3 difficult objects skipped (--drop-difficult)"``; they go to the summary's notes.
    """

    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    problems: tuple[Problem, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


class ProblemLog:
    """Problems kept in bounded memory: a count per kind, and the first examples of each.

    A long export may meet a fault on every row (a retention run deleted the
    frames); the summary needs how many of each kind and a few to look at, not a
    line per row. ``keep=None`` keeps every problem (the in-memory readers).
    """

    def __init__(self, keep: int | None = 20) -> None:
        self.keep = keep
        self.counts: dict[str, int] = {}
        self._examples: list[Problem] = []

    def append(self, problem: Problem) -> None:
        """Count ``problem``; keep it while its kind has fewer than ``keep`` examples."""
        n = self.counts.get(problem.kind.value, 0)
        self.counts[problem.kind.value] = n + 1
        if self.keep is None or n < self.keep:
            self._examples.append(problem)

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The kept examples, in the order they were met."""
        return tuple(self._examples)

    @property
    def left_out(self) -> int:
        """How many problems were counted but not kept as examples."""
        return sum(self.counts.values()) - len(self._examples)
