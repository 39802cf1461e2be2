"""The deleting half of store retention: images, rows, archives, and the file's shrinking.

Everything here runs on the retention thread's own connection, in short
``BEGIN IMMEDIATE`` transactions of at most ``chunk_rows`` rows, so the store's
writer never waits long for the write lock. An image file is unlinked *before*
the transaction that forgets it: a crash in between leaves a row naming a missing
file (the next pass finishes the job), never a file no row names.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanjian.station.images import IMAGES_DIR
from kanjian.station.records import utc_iso
from kanjian.station.sync.outbox_types import to_ranges

log = logging.getLogger(__name__)

#: where archived rows are written, inside the data folder
ARCHIVE_DIR = "archive"
#: pages given back per ``PRAGMA incremental_vacuum`` step (4 KiB pages: 8 MiB)
VACUUM_STEP_PAGES = 2048
#: ``(count, seq ranges) -> event row`` for rows dropped before the platform had them
Reporter = Callable[[int, list[tuple[int, int]]], tuple[str, str, str, str]]


@dataclass(frozen=True)
class RowInfo:
    """What deleting one inspection row needs to know of it."""

    seq: int
    id: str
    verdict: str
    top_class: str | None
    image_path: str | None
    captured_at: str


_ROW_COLS = "seq, id, verdict, top_class, image_path, captured_at"


def _rows(cur: Iterable[Sequence[Any]]) -> list[RowInfo]:
    return [RowInfo(int(r[0]), str(r[1]), str(r[2]), r[3], r[4], str(r[5])) for r in cur]


def folder_bytes(path: str) -> int:
    """Bytes of the plain files directly in ``path`` (an images day folder)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                try:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # deleted meanwhile
                    pass
    except FileNotFoundError:
        pass
    return total


class ImageUsage:
    """Total bytes under ``images/``, rescanning only the day folders that changed.

    A day folder's mtime changes whenever a file is created, renamed into it or
    removed (the store writes ``.tmp`` then renames), so an unchanged mtime means
    an unchanged total: a pass stats today's folder, not every image ever saved.
    """

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir
        self._days: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, bytes)

    def total(self) -> int:
        seen: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.images_dir))
        except FileNotFoundError:
            entries = []
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
                mtime = e.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue
            had = self._days.get(e.name)
            seen[e.name] = had if had and had[0] == mtime else (mtime, folder_bytes(e.path))
        self._days = seen
        return sum(b for _, b in seen.values())


def _image_file(data_dir: Path, rel: str) -> Path | None:
    """The image's path, or ``None`` for a path that is not the store's (never deleted)."""
    parts = Path(rel).parts
    if len(parts) < 2 or parts[0] != IMAGES_DIR or ".." in parts or Path(rel).is_absolute():
        return None
    return data_dir / rel


def unlink_image(data_dir: Path, rel: str) -> int:
    """Delete one saved image; returns the bytes freed (0 when it was already gone)."""
    path = _image_file(data_dir, rel)
    if path is None:
        log.warning("retention leaves %r alone: not a path under %s/", rel, IMAGES_DIR)
        return 0
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


@contextmanager
def write_tx(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def forget_images(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Mark the rows' images deleted (``image_path`` NULL, ``image_deleted_at`` now); an
    upload still pending for one of them is given up (``image_state`` dropped), in the
    same transaction, so the uploader never looks for it."""
    at = utc_iso()
    with write_tx(conn):
        conn.executemany(
            "UPDATE inspections SET image_path = NULL, image_deleted_at = ? WHERE seq = ?",
            [(at, s) for s in seqs],
        )
        conn.executemany(
            "UPDATE outbox SET image_state = 'dropped' WHERE seq = ? AND image_state = 'pending'",
            [(s,) for s in seqs],
        )


def oldest_images(
    conn: sqlite3.Connection, limit: int, verdict: str | None = None, after: int = 0
) -> list[RowInfo]:
    """The rows with an image, oldest (lowest seq) first, of one verdict or any."""
    if verdict is None:
        q = (f"SELECT {_ROW_COLS} FROM inspections INDEXED BY inspections_image_seq "
             "WHERE image_path IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?")  # fmt: skip
        return _rows(conn.execute(q, [after, limit]))
    q = (f"SELECT {_ROW_COLS} FROM inspections INDEXED BY inspections_image_verdict_seq "
         "WHERE image_path IS NOT NULL AND verdict = ? AND seq > ? ORDER BY seq LIMIT ?")  # fmt: skip
    return _rows(conn.execute(q, [verdict, after, limit]))


def oldest_rows(conn: sqlite3.Connection, after: int, limit: int) -> list[RowInfo]:
    """Rows with ``seq > after``, oldest first."""
    q = f"SELECT {_ROW_COLS} FROM inspections WHERE seq > ? ORDER BY seq LIMIT ?"
    return _rows(conn.execute(q, [after, limit]))


def undelivered(conn: sqlite3.Connection, first: int, last: int) -> set[int]:
    """Seqs in ``[first, last]`` whose outbox entry is neither confirmed nor dropped."""
    q = (
        "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ? "
        "AND confirmed_at IS NULL AND dropped_at IS NULL"
    )  # fmt: skip (outbox_backlog index)
    return {int(r[0]) for r in conn.execute(q, [first, last])}


def _in_chunks(ids: Sequence[str], n: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def delete_rows(
    conn: sqlite3.Connection,
    rows: Sequence[RowInfo],
    dropped: Sequence[int] = (),
    report: Reporter | None = None,
) -> None:
    """Delete inspection rows and everything keyed by them, in one transaction.

    Their detections, feedback, ``feedback_latest``, ``shadow_results`` (every shadow
    model's, by seq) and ``inspection_classes`` rows and outbox entries go with them (``inspection_classes`` by its primary key: the
    classes are read from the rows themselves, as they were put in). ``dropped``:
    the seqs among them the platform never confirmed; they are counted in the sync's
    ``dropped_messages`` counter and ``report(n, ranges)`` (a ``sync_dropped`` event
    row) is stored in the same transaction, as the sync's own retention does.
    """
    if not rows:
        return
    ids = [r.id for r in rows]
    ranges = to_ranges(r.seq for r in rows)
    with write_tx(conn):
        verdict = {r.id: (r.verdict, r.seq) for r in rows}
        classes = {(r.top_class, r.verdict, r.seq) for r in rows if r.top_class is not None}
        for part in _in_chunks(ids):
            q = ("SELECT DISTINCT inspection_id, class_name FROM detections WHERE "
                 f"class_name IS NOT NULL AND inspection_id IN ({','.join('?' * len(part))})")  # fmt: skip
            for iid, name in conn.execute(q, list(part)):
                classes.add((name, *verdict[iid]))
        conn.executemany(
            "DELETE FROM inspection_classes WHERE class_name = ? AND verdict = ? AND seq = ?",
            sorted(classes),
        )
        for part in _in_chunks(ids):
            marks = ",".join("?" * len(part))
            conn.execute(f"DELETE FROM feedback WHERE inspection_id IN ({marks})", list(part))
            conn.execute(f"DELETE FROM detections WHERE inspection_id IN ({marks})", list(part))
        for table in ("feedback_latest", "outbox", "shadow_results", "inspections"):
            conn.executemany(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", ranges)
        if dropped:
            conn.execute(
                "INSERT INTO sync_state (key, value) VALUES ('dropped_messages', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
                [str(len(dropped)), len(dropped)],
            )
            if report is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO sync_events (event_id, event, payload_json, "
                    "created_at) VALUES (?, ?, ?, ?)",
                    report(len(dropped), to_ranges(dropped)),
                )


def archive_rows(
    conn: sqlite3.Connection, archive_dir: Path, rows: Sequence[RowInfo]
) -> Path | None:
    """Write the rows (every column, with ``detections`` and ``feedback``) as one
    ``rows-<first seq>-<last seq>.jsonl.gz`` file, durable (fsync'd, renamed) before it
    returns, so the rows are never deleted before their archive exists."""
    if not rows:
        return None
    archive_dir.mkdir(parents=True, exist_ok=True)
    name = f"rows-{rows[0].seq:012d}-{rows[-1].seq:012d}.jsonl.gz"
    path = archive_dir / name
    tmp = path.with_suffix(".tmp")
    children: dict[str, dict[str, list[dict[str, Any]]]] = {r.id: {} for r in rows}
    ids = list(children)
    for table in ("detections", "feedback"):
        for part in _in_chunks(ids):
            cur = conn.execute(
                f"SELECT * FROM {table} WHERE inspection_id IN ({','.join('?' * len(part))})",
                list(part),
            )
            names = [d[0] for d in cur.description]
            for r in cur:
                d = dict(zip(names, r, strict=True))
                children[str(d["inspection_id"])].setdefault(table, []).append(d)
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", filename=name[:-3]) as gz:
            for a, b in to_ranges(r.seq for r in rows):
                cur = conn.execute("SELECT * FROM inspections WHERE seq BETWEEN ? AND ? "
                                   "ORDER BY seq", [a, b])  # fmt: skip
                names = [d[0] for d in cur.description]
                for r in cur:
                    d = dict(zip(names, r, strict=True))
                    kids = children.get(str(d["id"]), {})
                    d["detections"] = kids.get("detections", [])
                    d["feedback"] = kids.get("feedback", [])
                    gz.write((json.dumps(d, default=str) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    tmp.replace(path)
    _fsync_dir(archive_dir)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bound_archive(archive_dir: Path, max_bytes: int) -> int:
    """Delete the oldest archive files (lowest seqs) while the archive is over
    ``max_bytes``; returns how many files were deleted."""
    files = sorted(archive_dir.glob("rows-*.jsonl.gz")) if archive_dir.is_dir() else []
    sizes = [f.stat().st_size for f in files]
    total, gone = sum(sizes), 0
    for f, size in zip(files, sizes, strict=True):
        if total <= max_bytes:
            break
        f.unlink(missing_ok=True)
        total -= size
        gone += 1
    return gone


def incremental(conn: sqlite3.Connection) -> bool:
    """Whether the database can give pages back to the file system (auto_vacuum=INCREMENTAL)."""
    return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2


def shrink(conn: sqlite3.Connection, stop: Callable[[], bool]) -> int:
    """Give the free pages back in bounded steps (each its own short write), then
    checkpoint so the main file is truncated; returns the pages given back."""
    if not incremental(conn):
        return 0
    given = 0
    while not stop():
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free == 0:
            break
        conn.execute(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES})").fetchall()
        given += min(free, VACUUM_STEP_PAGES)
    # PASSIVE never blocks the store's writer; the file shrinks once the WAL's frames
    # are copied back (the next passive checkpoint at the latest)
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return given


def db_file_bytes(db_path: Path) -> int:
    """The database's size on disk: the main file and its WAL."""
    total = 0
    for p in (db_path, db_path.with_name(db_path.name + "-wal")):
        with suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def full_vacuum(db_path: Path) -> tuple[int, int]:
    """Rewrite the database with ``auto_vacuum=INCREMENTAL`` (``VACUUM``), so that later
    retention passes can shrink it; ``(bytes before, bytes after)``.

    Only with the station stopped (the caller holds the data folder's lock): it needs
    about the file's size free and holds the write lock throughout.
    """
    from kanjian.station.store import open_db  # the one opener: checks and migrates

    before = db_file_bytes(db_path)
    db = open_db(db_path)
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.conn.close()
    return before, db_file_bytes(db_path)
