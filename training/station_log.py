"""Reading the station's SQLite log for ``kanjian dataset export``.

Opens the station's store (``kanjian.db``: ``inspections``, ``detections``,
``feedback``, ``models``) read-only, so it can run beside a live station; selects
the inspections an :class:`~kanjian.training.export_filter.ExportFilter` asks for,
corrects their detections by the operators' latest feedback, settles the class
list from the model bundles in the station's registry
(:mod:`kanjian.training.export_classes`), and reads the saved frames' sizes. The
rules are in :mod:`kanjian.training.station_export`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kanjian.station.records import (
    DETECTION_COLUMNS,
    FEEDBACK_COLUMNS,
    INSPECTION_COLUMNS,
    StoredFeedback,
    StoredInspection,
    columns,
    group_detections,
    utc_iso,
)
from kanjian.station.schema import check_not_newer
from kanjian.training.export_classes import ModelCounts, count_model, resolve_classes
from kanjian.training.export_filter import ExportFilter
from kanjian.training.records import Problem, ProblemKind, ProblemLog, ReadResult
from kanjian.training.station_labels import (
    ExportItem,
    class_reason,
    export_item,
    f32,
    feedback_labels,
    read_record,
    without_labels,
)

__all__ = ["CHUNK", "DB_NAME", "ExportItem", "StationLog", "StationLogStream"]

DB_NAME = "kanjian.db"  # the station store's file name (kanjian.station.store.DB_NAME)


@dataclass(frozen=True)
class StationLog:
    """What :func:`read_station_log_items` found.

    Attributes:
        items: exportable inspections, in store order.
        class_names: the class list, index = class id.
        problems: faults per inspection (missing image, unknown class ...).
        counts: how many inspections each rule applied to or left out, by name.
        notes: where the class list came from, and other remarks for the summary.
    """

    items: tuple[ExportItem, ...]
    class_names: tuple[str, ...]
    problems: tuple[Problem, ...]
    counts: dict[str, int]
    notes: tuple[str, ...]


def _connect(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: station database not found")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        check_not_newer(conn)  # a newer release's tables may mean what we cannot read
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row  # the registry's rows are read by name
    return conn


def _select_list(have: set[str]) -> str:
    """:data:`INSPECTION_COLUMNS` as a SELECT list, ``NULL AS`` those not in ``have``.

    The export opens the store read-only and migrates nothing: a store last opened by
    an older release has no ``score`` column (the anomaly head adds it when a station
    opens the store).
    """
    return ", ".join(c if c in have else f"NULL AS {c}" for c in INSPECTION_COLUMNS)


def _sql_condition(flt: ExportFilter, has_score: bool = True) -> tuple[str, list[str | float]]:
    """The SQL ``WHERE`` condition on ``inspections`` that ``flt`` asks for, and its parameters.

    The store writes every time as fixed-width UTC text (:func:`utc_iso`), so comparing
    the text compares the times, exactly, on the indexed column. ``has_score``: whether
    the table has the ``score`` column (without it no row has a score).
    """
    where: list[str] = ["1=1"]
    args: list[str | float] = []
    since, until = flt.since_utc, flt.until_utc
    if since is not None:
        where.append("captured_at >= ?")
        args.append(utc_iso(since))
    if until is not None:
        where.append("captured_at < ?")
        args.append(utc_iso(until))
    if flt.model_sha256:
        where.append("model_sha256 = ?")
        args.append(flt.model_sha256)
    # the bounds on what the model said; --include-reviewed lifts them for answered rows
    bounds: list[str] = []
    bound_args: list[str | float] = []
    if flt.verdicts:
        bounds.append(f"verdict IN ({','.join('?' * len(flt.verdicts))})")
        bound_args.extend(flt.verdicts)
    # top_confidence is the largest detection score (NULL when there is none: 0)
    if flt.min_conf is not None:
        bounds.append("COALESCE(top_confidence, 0.0) >= ?")
        bound_args.append(f32(flt.min_conf))
    if flt.max_conf is not None:
        bounds.append("COALESCE(top_confidence, 0.0) <= ?")
        bound_args.append(f32(flt.max_conf))
    # the anomaly image score (float32 too): NULL, no score, fails either bound
    for bound, op in ((flt.min_score, ">="), (flt.max_score, "<=")):
        if bound is None:
            continue
        if has_score:
            bounds.append(f"score {op} ?")
            bound_args.append(f32(bound))
        else:
            bounds.append("0")  # no such column: no row has a score
    if bounds and flt.include_reviewed:
        # one index lookup per row (feedback(inspection_id, id)), as the latest-feedback
        # subquery of the scan already makes
        where.append(
            f"(({' AND '.join(bounds)}) OR EXISTS (SELECT 1 FROM feedback f "
            "WHERE f.inspection_id = inspections.id))"
        )
    else:
        where.extend(bounds)
    args.extend(bound_args)
    return " AND ".join(where), args


#: rows between two progress reports, and inspections whose detections are read at once
CHUNK = 2_000

Progress = Callable[[int, int], None]
"""Called as rows are read: (rows read so far, rows selected in all)."""


class StationLogStream:
    """The station's log as a stream of exportable inspections, in store order.

    Opening it reads the selected rows once (pass 1) to settle the class list from
    the models that judged the inspections to export; :meth:`items` reads them again
    (pass 2) and yields each exportable one. Both passes run in one read
    transaction (one snapshot: a row committed meanwhile has no say) and hold at
    most :data:`CHUNK` rows at a time, so memory does not grow with the log nor
    with what is exported. Use as a context manager (the store stays open).

    Attributes:
        class_names: the class list, index = class id.
        notes: where the class list came from.
        total: rows selected; progress counts ``2 * total`` steps (both passes).
        counts: how many inspections each rule applied to or left out, by name
            (filled by :meth:`items`).
        problems: faults per inspection (missing image, unknown class ...).
    """

    def __init__(
        self,
        data_dir: Path,
        flt: ExportFilter,
        class_names: tuple[str, ...] | None = None,
        progress: Progress | None = None,
        problems: ProblemLog | None = None,
    ) -> None:
        """Open the store and settle the class list; args as :func:`read_station_log_items`.

        Raises:
            FileNotFoundError / ValueError: as :func:`read_station_log_items`.
        """
        self.db_path = data_dir / DB_NAME if data_dir.is_dir() else data_dir
        self.root = self.db_path.parent
        self.flt = flt
        self.progress = progress
        self.counts: Counter[str] = Counter()
        self.problems = problems if problems is not None else ProblemLog(None)
        self._conn = _connect(self.db_path)
        try:
            self._conn.execute("BEGIN")  # one snapshot for both passes
            have = {str(r[1]) for r in self._conn.execute("PRAGMA table_info(inspections)")}
            self._select = _select_list(have)
            where, args = _sql_condition(flt, "score" in have)
            self._where, self._args = where, args
            self.total = int(
                self._conn.execute(
                    f"SELECT COUNT(*) FROM inspections WHERE {where}", args
                ).fetchone()[0]
            )
            # only the inspections that can be exported settle the class list: one left
            # out by a filter, or whose frame is gone, has no say (its model may be unknown)
            models: ModelCounts = {}
            seen: dict[str, dict[int, str]] = {}
            for row, _ in self._kept(Counter(), None, 0):
                count_model(models, row)
                if row.model_sha256:
                    for d in row.detections:
                        seen.setdefault(row.model_sha256, {})[d.class_id] = d.class_name
            given = tuple(class_names) if class_names else None
            names, notes = resolve_classes(self._conn, self.root, models, seen, given)
            missing = [c for c in flt.has_classes if c not in set(names)]
            if missing:
                raise ValueError(
                    f"has_classes: {', '.join(missing)} not in the class list {list(names)}"
                )
        except BaseException:
            self.close()
            raise
        self.class_names: tuple[str, ...] = names
        self.notes: tuple[str, ...] = tuple(notes)

    def close(self) -> None:
        """End the read transaction and close the store."""
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")
        self._conn.close()

    def __enter__(self) -> StationLogStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kept(
        self, counts: Counter[str], problems: ProblemLog | None, done: int
    ) -> Iterator[tuple[StoredInspection, StoredFeedback | None]]:
        """The selected inspections that ``flt``'s feedback rules keep and whose frame is there.

        One pass in store order, :data:`CHUNK` rows at a time: each row's latest
        feedback is looked up by the ``feedback(inspection_id, id)`` index, and
        detections are read only for the rows kept. How many each rule left out is
        added to ``counts``; an image saved but gone (deleted, retention) to
        ``problems`` (None: not reported). Progress is told ``done`` + rows read.
        """
        cur = self._conn.execute(
            f"SELECT {self._select}, (SELECT MAX(f.id) FROM feedback f "
            "WHERE f.inspection_id = inspections.id) AS latest_feedback "
            f"FROM inspections WHERE {self._where} ORDER BY seq",
            self._args,
        )
        n = 0
        while chunk := cur.fetchmany(CHUNK):
            fb_ids = [r["latest_feedback"] for r in chunk if r["latest_feedback"] is not None]
            fbs = {
                f.inspection_id: f
                for f in map(
                    StoredFeedback.from_row,
                    self._conn.execute(
                        f"SELECT {columns(FEEDBACK_COLUMNS)} FROM feedback "
                        f"WHERE id IN ({','.join('?' * len(fb_ids))})",
                        fb_ids,
                    ),
                )
            }
            keep: list[sqlite3.Row] = []
            for raw in chunk:
                fb = fbs.get(raw[0])
                reason = _not_selected(
                    raw["image_path"], fb.kind if fb is not None else None, self.flt
                )
                if reason is not None:
                    counts[reason] += 1
                    continue
                img = self.root / str(raw["image_path"])
                if not img.is_file():
                    if problems is not None:
                        problems.append(
                            Problem(
                                ProblemKind.MISSING_IMAGE,
                                f"{self.db_path}#{raw[0]}",
                                f"{img}: not found; skipped",
                            )
                        )
                    continue
                keep.append(raw)
            dets = group_detections(
                self._conn.execute(
                    f"SELECT {columns(DETECTION_COLUMNS)} FROM detections "
                    f"WHERE inspection_id IN ({','.join('?' * len(keep))}) "
                    "ORDER BY inspection_id, idx",
                    [r[0] for r in keep],
                )
            )
            for raw in keep:
                yield StoredInspection.from_row(raw, dets.get(raw[0], ())), fbs.get(raw[0])
            n += len(chunk)
            if self.progress is not None:
                self.progress(done + n, 2 * self.total)
        if self.progress is not None and n == 0:
            self.progress(done, 2 * self.total)

    def items(self, taken: Callable[[str], bool]) -> Iterator[ExportItem]:
        """Pass 2: apply feedback and ``flt`` to each kept inspection, in order; read its image.

        ``taken(name)`` says whether an image of that file name was already exported
        (output files are named after the source file): the second is left out as a
        duplicate. The consumer must have written (or noted) each item before asking
        for the next. Fills :attr:`counts` and :attr:`problems`.
        """
        has = set(self.flt.has_classes)
        names = self.class_names
        for row, fb in self._kept(self.counts, self.problems, self.total):
            kind: str | None = fb.kind if fb is not None else None
            where_txt = f"{self.db_path}#{row.id}"
            logged = row.detections
            labelled, box_names = feedback_labels(logged, fb, self.flt.label_conf)
            reason = class_reason(
                box_names, names, has, where_txt, self.problems
            ) or without_labels(row, kind, logged, labelled)
            if reason is not None:
                self.counts[reason] += 1
                continue
            img = self.root / str(row.image_path)  # _kept yields only rows with an image
            if taken(img.name):
                self.problems.append(
                    Problem(
                        ProblemKind.DUPLICATE, where_txt, f"{img.name} already exported; skipped"
                    )
                )
                continue
            read = read_record(img, row, labelled, box_names, where_txt, self.problems)
            if read is None:
                continue
            record, scores = read
            if labelled and not record.boxes:
                self.counts["left_out_boxes_outside_image"] += 1
                continue
            self.counts[f"feedback_{kind}" if kind else "no_feedback"] += 1
            yield export_item(row, kind, record, scores)


def read_station_log_items(
    data_dir: Path,
    flt: ExportFilter,
    class_names: tuple[str, ...] | None = None,
    progress: Progress | None = None,
) -> StationLog:
    """Select inspections, correct their labels by feedback, and read their images.

    Every item and problem is kept in memory; :class:`StationLogStream` is the
    bounded-memory form ``kanjian dataset export`` uses.

    Args:
        data_dir: the station's data folder (holding ``kanjian.db``), or the database file.
        flt: which inspections and detections to take.
        class_names: the class list (index = class id); None: the model's, from the
            station's model registry, settled only by the inspections to export (those
            ``flt``'s feedback rules keep, with their frame saved and still there).
        progress: told (steps done, steps in all) every :data:`CHUNK` rows; a step is
            a row read, and every selected row is read twice (class list, then items).

    Raises:
        FileNotFoundError: no database there.
        ValueError: the class list cannot be settled (unknown model, models with
            different lists, a ``has_classes`` name outside the list).
    """
    with StationLogStream(data_dir, flt, class_names, progress) as log:
        used: set[str] = set()
        items: list[ExportItem] = []
        for item in log.items(used.__contains__):
            used.add(item.record.image.name)
            items.append(item)
        return StationLog(
            tuple(items),
            log.class_names,
            log.problems.problems,
            dict(sorted(log.counts.items())),
            log.notes,
        )


def _not_selected(image_path: str | None, kind: str | None, flt: ExportFilter) -> str | None:
    """Why ``flt``, or a frame that was not saved, leaves the inspection out; None: it does not.

    ``image_path`` is the inspection's saved frame (None: not saved), ``kind`` its
    latest feedback kind (None: no feedback); the reason is a ``counts`` key.
    """
    if flt.reviewed_only and kind is None:
        return "not_reviewed"
    if flt.feedback and (kind or "none") not in flt.feedback:
        return "feedback_not_selected"
    if not image_path:
        return "no_saved_image"
    return None


def read_station_log(
    data_dir: Path, flt: ExportFilter, class_names: tuple[str, ...] | None = None
) -> tuple[ReadResult, dict[str, int]]:
    """Records for every exportable inspection, and counts of what was applied/left out."""
    log = read_station_log_items(data_dir, flt, class_names)
    records = tuple(i.record for i in log.items)
    return ReadResult(records, log.class_names, log.problems), log.counts
