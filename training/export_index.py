"""``inspections.csv``: one row per image a station-log export wrote, in every layout.

The YOLO labels hold boxes only, and ``label_studio.json`` is written for ``detect``
alone; this index ties every exported image (detect, segment, classify) back to its
inspection and carries what the log said of it, the anomaly image score included.
Columns (:data:`INDEX_COLUMNS`; an empty cell: no value):

- ``image``: the image's path inside the dataset (``/``-separated);
- ``split``: ``train`` or ``val``, empty with no split;
- ``inspection_id``, ``captured_at`` (ISO 8601 UTC, as stored), ``verdict``;
- ``feedback``: the latest operator feedback kind, ``none`` without;
- ``model``: ``name version (sha256 prefix)`` of the model that judged it;
- ``top_confidence``: the top detection score (0-1) as logged;
- ``score``: anomaly models: the normalised image score (0-1, 0.5 = the model's
  fail point); empty for other models.

Written as items come (constant memory) under a temp name, renamed by
:meth:`IndexWriter.finish`, so a crash leaves no half index under the final name.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from kanjian.training.station_labels import ExportItem

INDEX_CSV = "inspections.csv"
INDEX_COLUMNS: tuple[str, ...] = (
    "image",
    "split",
    "inspection_id",
    "captured_at",
    "verdict",
    "feedback",
    "model",
    "top_confidence",
    "score",
)


def _number(x: float | None) -> str:
    """A score as the JSON files write it (6 decimals), or empty."""
    return "" if x is None else repr(round(float(x), 6))


class IndexWriter:
    """Appends one :data:`INDEX_COLUMNS` row per written image to ``output/inspections.csv``."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self._part = output / f".{INDEX_CSV}.part"
        self._file = self._part.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(INDEX_COLUMNS)

    def add(self, item: ExportItem, image: str, split: str) -> None:
        """The row of ``item``, written at ``image`` (relative, posix) in ``split`` ("": none)."""
        self._csv.writerow(
            (
                image,
                split,
                item.inspection_id,
                item.captured_at,
                item.verdict,
                item.feedback or "none",
                item.model or "",
                _number(item.top_confidence),
                _number(item.score),
            )
        )

    def finish(self) -> None:
        """Flush, fsync and rename the index to its final name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._part, self.output / INDEX_CSV)

    def abort(self) -> None:
        """Drop the unfinished index (after an error)."""
        self._file.close()
        self._part.unlink(missing_ok=True)
