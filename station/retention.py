"""Store retention: a background thread that keeps the data folder within its bounds.

Each pass (every ``store.retention.interval_s``, and at start), in this order:

1. images older than ``images.max_age_days`` are deleted (oldest first);
2. while the images take more than ``images.max_total_mb``, or the disk has less
   than ``min_free_mb`` free, images are deleted in ``images.order``: every image of
   the first verdict (oldest first) before any of the next, so FAIL pictures are
   kept longest by default;
3. rows older than ``rows.max_age_days`` are deleted, oldest seq first (a row goes
   once it and every deletable row before it is past the age), with their image,
   detections, feedback and outbox entry, optionally archived first;
4. if the disk is still under the floor (no image left to delete), the oldest
   deletable rows go, a chunk at a time, until it is not;
5. the database file gives the freed pages back (``PRAGMA incremental_vacuum``).

Which rows are deletable: with sync on, a row the platform has not confirmed (its
outbox entry neither confirmed nor dropped by ``sync.retention``) is held, unless
``rows.delete_undelivered``: then it is deleted, counted in the sync's
``dropped_messages`` and reported with a ``sync_dropped`` event, in the deleting
transaction. With sync off there is no platform to wait for: rows go by age and are
counted as ``unsynced_deleted``. A deleted image leaves its row with ``image_path``
NULL and ``image_deleted_at`` set, so the API can say it was deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kanjian.station import captured_order
from kanjian.station import retention_ops as ops
from kanjian.station.images import IMAGES_DIR
from kanjian.station.records import utc_iso
from kanjian.station.retention_config import StoreRetentionConfig
from kanjian.station.retention_status import PassResult, RetentionStatus
from kanjian.station.state.audit import Actor, write_audit
from kanjian.station.state.db import ConnectionPool, stored_override, write_tx
from kanjian.station.store import open_db
from kanjian.station.store_health import MB, free_bytes
from kanjian.station.sync.messages import event_message

if TYPE_CHECKING:
    from kanjian.station.config import StationConfig
    from kanjian.station.state.service import StationState
    from kanjian.station.store import ResultStore

log = logging.getLogger(__name__)

#: the ``settings`` row holding a retention set through the API
KEY = "store.retention"
#: an older database (auto_vacuum NONE) smaller than this is converted at start
CONVERT_BELOW_BYTES = 64 * MB
#: images looked at per step of the size bound
_IMAGE_STEP = 200


class Retention:
    """Runs retention passes on its own thread and connection.

    Args:
        data_dir: the store's data folder (``images/``, ``archive/``).
        db_path: the store's database.
        cfg: station.yaml's ``store.retention`` (an API override replaces it: :meth:`restore`).
        sync_on: whether the platform sync runs (undelivered rows are then held).
        identity: ``(site, line, station)`` for the ``sync_dropped`` event.
        pool: connections for settings changes from other threads (the API's).
        synchronous: SQLite synchronous mode of this connection's commits.
    """

    def __init__(
        self,
        data_dir: Path,
        db_path: Path,
        cfg: StoreRetentionConfig,
        *,
        sync_on: bool,
        identity: tuple[str, str, str] = ("site-1", "line-1", "station-1"),
        pool: ConnectionPool | None = None,
        synchronous: str = "FULL",
    ) -> None:
        self.data_dir = data_dir
        self.db_path = db_path
        self.from_config = cfg
        self.sync_on = sync_on
        self.identity = identity
        self.pool = pool
        self.conn = open_db(db_path, synchronous).conn
        self.images = ops.ImageUsage(data_dir / IMAGES_DIR)
        self._cfg = cfg
        self._source: Literal["config", "api"] = "config"
        self._set: tuple[str | None, str | None] = (None, None)
        self._pass_lock = threading.Lock()  # one pass at a time (thread, tests, API)
        self._change_lock = threading.Lock()  # one settings change at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.totals = PassResult()
        self.passes = self.errors = 0
        self.last: PassResult | None = None
        self.last_at: str | None = None
        self.last_seconds: float | None = None
        self.last_error: str | None = None
        self._images_bytes = 0
        self._db_bytes = ops.db_file_bytes(db_path)
        self._vacuum_mode()

    # -- settings ------------------------------------------------------------------
    @property
    def config(self) -> StoreRetentionConfig:
        """The bounds in force."""
        return self._cfg

    def restore(self) -> StoreRetentionConfig | None:
        """At start-up: put a retention set through the API back in force (logged)."""
        got = stored_override(self.conn, KEY, StoreRetentionConfig, "store retention settings")
        if got is None:
            return None
        cfg, at, by = got
        self._cfg, self._source, self._set = cfg, "api", (at, by)
        log.warning("store retention set through the API on %s by %s overrides station.yaml's "
                    "(DELETE /api/settings/retention returns to it)", at, by)  # fmt: skip
        return cfg

    def set(self, new: StoreRetentionConfig, actor: Actor) -> StoreRetentionConfig:
        """Put ``new`` in force and keep it over restarts (settings row + audit row, one
        transaction); the next pass starts at once."""
        db = self._pool().get()
        at = utc_iso()
        with self._change_lock:
            with write_tx(db):
                write_audit(db, actor, "retention.set", KEY, {
                    "old": self._cfg.model_dump(mode="json"),
                    "new": new.model_dump(mode="json")})  # fmt: skip
                db.execute(
                    "INSERT INTO settings (key, value_json, set_at, set_by) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                    "set_at = excluded.set_at, set_by = excluded.set_by",
                    [KEY, new.model_dump_json(), at, actor.name],
                )
            self._cfg, self._source, self._set = new, "api", (at, actor.name)
        self.kick()
        return new

    def reset(self, actor: Actor) -> StoreRetentionConfig:
        """Drop the API's retention: station.yaml's is in force again (audited)."""
        db = self._pool().get()
        with self._change_lock:
            with write_tx(db):
                had = db.execute("DELETE FROM settings WHERE key = ?", [KEY]).rowcount > 0
                write_audit(db, actor, "retention.reset", KEY, {
                    "old": self._cfg.model_dump(mode="json"),
                    "new": self.from_config.model_dump(mode="json"), "had_override": had})  # fmt: skip
            self._cfg, self._source, self._set = self.from_config, "config", (None, None)
        self.kick()
        return self.from_config

    def _pool(self) -> ConnectionPool:
        if self.pool is None:
            raise RuntimeError("this Retention was built without a connection pool")
        return self.pool

    # -- the thread ------------------------------------------------------------------
    def start(self) -> None:
        """Run passes in the background: one now, then every ``interval_s``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-retention", daemon=True)
            self._thread.start()

    def kick(self) -> None:
        """Run the next pass now (after a settings change)."""
        self._wake.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread (a pass in progress stops after its current chunk) and close."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._pass_lock:
            self.conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._cfg.enabled:
                try:
                    self.run_pass()
                except Exception:  # counted in run_pass; the next pass tries again
                    log.exception("store retention pass failed")
            self._wake.wait(self._cfg.interval_s)
            self._wake.clear()

    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- one pass ------------------------------------------------------------------
    def run_pass(self) -> PassResult:
        """Apply the bounds once (on the calling thread); returns what it deleted."""
        with self._pass_lock:
            if self._stop.is_set() and self._thread is not None:
                return PassResult()
            cfg, res, t0 = self._cfg, PassResult(), time.monotonic()
            try:
                self._images_by_age(cfg, res)
                self._images_by_size(cfg, res)
                self._rows(cfg, res)
                res.pages_vacuumed += ops.shrink(self.conn, self.stopping)
                self._carry_captured_order()
            except Exception as e:
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                raise
            finally:
                self.passes += 1
                self.totals.add(res)
                self.last, self.last_at = res, utc_iso()
                self.last_seconds = time.monotonic() - t0
                self._images_bytes = self.images.total()
                self._db_bytes = ops.db_file_bytes(self.db_path)
            self.last_error = None
            if res.images_deleted or res.rows_deleted:
                log.info("store retention: %s", res)
            return res

    def _carry_captured_order(self) -> None:
        # housekeeping beside retention: the API's time filters read captured_at's
        # disorder up to the newest row (station/captured_order.py); carried forward
        # each pass, the first time-filtered query after a quiet spell reads few rows
        old = captured_order.load(self.conn)
        new = captured_order.extend(self.conn, old)
        if new != old:
            with ops.write_tx(self.conn):
                captured_order.save(self.conn, old, new)

    def status(self) -> RetentionStatus:
        return RetentionStatus(
            config=self._cfg,
            source=self._source,
            set_at=self._set[0],
            set_by=self._set[1],
            passes=self.passes,
            errors=self.errors,
            totals=dataclasses.replace(self.totals),
            last=self.last,
            last_at=self.last_at,
            last_seconds=self.last_seconds,
            last_error=self.last_error,
            images_bytes=self._images_bytes,
            db_bytes=self._db_bytes,
            incremental_vacuum=self._incremental,
        )

    def _floor_deficit(self, cfg: StoreRetentionConfig) -> int:
        """Bytes missing to the free-space floor (<= 0: above it)."""
        if cfg.min_free_mb <= 0:
            return 0
        return int(cfg.min_free_mb * MB) - free_bytes(self.data_dir)

    def _images_by_age(self, cfg: StoreRetentionConfig, res: PassResult) -> None:
        if cfg.images.max_age_days <= 0:
            return
        cutoff = _cutoff(cfg.images.max_age_days)
        while not self.stopping():
            rows = ops.oldest_images(self.conn, cfg.chunk_rows)
            old = [r for r in rows if r.captured_at < cutoff]
            self._delete_images(old, res)
            if len(old) < len(rows) or not rows:
                return

    def _images_by_size(self, cfg: StoreRetentionConfig, res: PassResult) -> None:
        over = 0  # bytes over the size bound
        if cfg.images.max_total_mb > 0:
            over = self.images.total() - int(cfg.images.max_total_mb * MB)
        for verdict in cfg.images.full_order():
            after = 0
            # the floor is measured again each step: the database may grow meanwhile
            while (need := max(over, self._floor_deficit(cfg))) > 0 and not self.stopping():
                rows = ops.oldest_images(self.conn, _IMAGE_STEP, verdict, after)
                if not rows:
                    break
                gone: list[int] = []
                for r in rows:
                    freed = ops.unlink_image(self.data_dir, r.image_path or "")
                    gone.append(r.seq)
                    res.image_bytes_freed += freed
                    need, over = need - freed, over - freed
                    if need <= 0:
                        break
                ops.forget_images(self.conn, gone)
                res.images_deleted += len(gone)
                after = gone[-1]

    def _delete_images(self, rows: list[ops.RowInfo], res: PassResult) -> None:
        for r in rows:
            res.image_bytes_freed += ops.unlink_image(self.data_dir, r.image_path or "")
        ops.forget_images(self.conn, [r.seq for r in rows])
        res.images_deleted += len(rows)

    def _rows(self, cfg: StoreRetentionConfig, res: PassResult) -> None:
        if cfg.rows.max_age_days > 0:
            res.rows_held = self._delete_oldest(cfg, res, _cutoff(cfg.rows.max_age_days), None)
        if self._floor_deficit(cfg) > 0:  # images are all gone: the oldest rows make room
            keep = cfg.rows.floor_keeps_hours
            log.warning("store retention: under the %g MB free-space floor with no image left "
                        "to delete: deleting the oldest rows (keeping the last %g h)",
                        cfg.min_free_mb, keep)  # fmt: skip
            young = _cutoff(keep / 24.0) if keep > 0 else None
            self._delete_oldest(cfg, res, young, lambda: self._floor_deficit(cfg) <= 0)

    def _delete_oldest(
        self,
        cfg: StoreRetentionConfig,
        res: PassResult,
        cutoff: str | None,
        enough: Callable[[], bool] | None,
    ) -> int:
        """Delete the oldest deletable rows, up to the first younger than ``cutoff``
        or until ``enough()`` (checked after each chunk, the file shrunk); returns the
        rows held back as undelivered."""
        after, held = 0, 0
        hold = self.sync_on and not cfg.rows.delete_undelivered
        while not self.stopping():
            rows = ops.oldest_rows(self.conn, after, cfg.chunk_rows)
            young = [
                i for i, r in enumerate(rows) if cutoff is not None and r.captured_at >= cutoff
            ]
            last_chunk = bool(young) or len(rows) < cfg.chunk_rows
            rows = rows[: young[0]] if young else rows
            if not rows:
                break
            after = rows[-1].seq
            und = ops.undelivered(self.conn, rows[0].seq, rows[-1].seq)
            dropped: list[int] = []
            if hold:
                held += sum(r.seq in und for r in rows)
                rows = [r for r in rows if r.seq not in und]
            elif self.sync_on:
                dropped = sorted(und)
            else:
                res.unsynced_deleted += len(und)
            if rows:
                self._delete_rows(cfg, rows, dropped, res)
            if enough is not None:
                res.pages_vacuumed += ops.shrink(self.conn, self.stopping)
                if enough():
                    break
            if last_chunk:
                break
        return held

    def _delete_rows(
        self, cfg: StoreRetentionConfig, rows: list[ops.RowInfo], dropped: list[int],
        res: PassResult,
    ) -> None:  # fmt: skip
        if cfg.rows.archive:
            archive = self.data_dir / ops.ARCHIVE_DIR
            ops.archive_rows(self.conn, archive, rows)
            res.rows_archived += len(rows)
            res.archive_files_deleted += ops.bound_archive(
                archive, int(cfg.rows.archive_max_mb * MB)
            )
        for r in rows:
            if r.image_path is not None:
                res.image_bytes_freed += ops.unlink_image(self.data_dir, r.image_path)
                res.images_deleted += 1
        ops.delete_rows(self.conn, rows, dropped, self._report)
        res.rows_deleted += len(rows)
        res.undelivered_dropped += len(dropped)

    def _report(self, n: int, ranges: list[tuple[int, int]]) -> tuple[str, str, str, str]:
        """The ``sync_dropped`` event row for ``n`` rows deleted before the platform had them
        (the shape of the sync's own retention event, with ``reason``)."""
        row = self.conn.execute("SELECT value FROM sync_state WHERE key = 'stream_id'").fetchone()
        total = self.conn.execute(
            "SELECT value FROM sync_state WHERE key = 'dropped_messages'"
        ).fetchone()
        data = {
            "stream": "" if row is None else str(row[0]),
            "messages": n,
            "images": 0,
            "ranges": [list(x) for x in ranges[:10_000]],
            "total_messages": 0 if total is None else int(total[0]),
            "reason": "store.retention deleted rows the platform had not confirmed",
        }
        site, line, station = self.identity
        eid, payload, at = event_message(
            "sync_dropped", data, site=site, line=line, station=station
        )
        return eid, "sync_dropped", payload, at

    # -- the file's vacuum mode ----------------------------------------------------
    def _vacuum_mode(self) -> None:
        """Make a small older database shrinkable (a full VACUUM, at start only); say how
        for a big one."""
        self._incremental = ops.incremental(self.conn)
        if self._incremental:
            return
        size = ops.db_file_bytes(self.db_path)
        if size < CONVERT_BELOW_BYTES:
            try:
                self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self.conn.execute("VACUUM")
            except Exception as e:  # e.g. busy: the file just stays as it was
                log.warning("could not switch %s to incremental vacuum: %s", self.db_path, e)
            self._incremental = ops.incremental(self.conn)
            if self._incremental:
                log.info("%s switched to incremental vacuum (%.1f MB)", self.db_path, size / MB)
                return
        log.warning(
            "%s (%.0f MB) was made without incremental vacuum: retention frees space inside "
            "it but the file does not shrink; stop the station and run `kanjian store vacuum` "
            "once (it needs about the file's size free)", self.db_path, size / MB,
        )  # fmt: skip


def start_retention(cfg: StationConfig, store: ResultStore, state: StationState) -> Retention:
    """``store.retention``'s background thread (an override set through the API restored)."""
    i = cfg.station
    ret = Retention(
        store.data_dir,
        store.db_path,
        cfg.store.retention,
        sync_on=cfg.sync.enabled,
        identity=(i.site, i.line, i.id),
        pool=state.pool,
        synchronous=cfg.store.synchronous,
    )
    ret.restore()
    ret.start()
    return ret


def _cutoff(days: float) -> str:
    """The store's time text of ``days`` ago: older rows compare below it."""
    return utc_iso(datetime.now(timezone.utc) - timedelta(days=days))
