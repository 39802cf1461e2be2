"""The store's migrations from 040 on (issue 12 and later), split from ``schema.py``.

``schema.MIGRATIONS`` lists them in order; each runs once, inside a transaction.
Append new ones here; never edit one that has been released.
"""

from __future__ import annotations

import sqlite_utils

from kanjian.station import captured_order


def m040_counters(db: sqlite_utils.Database) -> None:
    # issue 12: numbers unique per station forever (trigger ids plc-N); ``next`` is the
    # first number no run has reserved (station/counters.py reserves them in blocks)
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL)")


def m041_api_sessions(db: sqlite_utils.Database) -> None:
    # issue 12: the screen's cookie holds a session id, never a token. Only the id's
    # sha256 is stored (like a token's secret); revoking the token revokes its rows.
    db.execute(
        "CREATE TABLE api_sessions (id_sha256 TEXT PRIMARY KEY, "
        "token_id TEXT NOT NULL REFERENCES api_tokens(id), role TEXT NOT NULL, "
        "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, revoked_at TEXT)"
    )
    db.execute("CREATE INDEX api_sessions_token ON api_sessions(token_id)")
    db.execute("CREATE INDEX api_sessions_expiry ON api_sessions(expires_at)")


def m042_store_meta(db: sqlite_utils.Database) -> None:
    # issue 12 (upgrades): which kanjian version last opened the store to write, and
    # its newest migration; an older release that finds migrations it does not know
    # names that version in its refusal (check_not_newer). Stamped by migrate().
    db.execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def m043_query_indexes(db: sqlite_utils.Database) -> None:
    # issue 12: the API's list filters, each answerable newest-first from an index,
    # so a page costs O(page) however rare the combination (a filter checked per row
    # of a seq scan took 18 s at 7k rows when FAIL + a class was rare).
    db.execute("CREATE INDEX inspections_verdict_seq ON inspections(verdict, seq)")
    db.execute("CREATE INDEX inspections_model_seq ON inspections(model_sha256, seq)")
    db.execute(
        "CREATE INDEX inspections_model_verdict_seq ON inspections(model_sha256, verdict, seq)"
    )
    # The classes an inspection shows (its boxes' and its top class), with its verdict
    # and seq: "class X" and "verdict V + class X" read in seq order. Kept by triggers,
    # so whichever code inserts the rows (the store, an import) keeps it whole; rows
    # are never updated or deleted.
    db.execute(
        "CREATE TABLE inspection_classes (class_name TEXT NOT NULL, verdict TEXT NOT NULL, "
        "seq INTEGER NOT NULL, PRIMARY KEY (class_name, verdict, seq)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX inspection_classes_seq ON inspection_classes(class_name, seq)")
    db.execute(
        "CREATE TRIGGER inspection_classes_top AFTER INSERT ON inspections "
        "WHEN NEW.top_class IS NOT NULL BEGIN "
        "INSERT OR IGNORE INTO inspection_classes (class_name, verdict, seq) "
        "VALUES (NEW.top_class, NEW.verdict, NEW.seq); END"
    )
    db.execute(
        "CREATE TRIGGER inspection_classes_det AFTER INSERT ON detections "
        "WHEN NEW.class_name IS NOT NULL BEGIN "
        "INSERT OR IGNORE INTO inspection_classes (class_name, verdict, seq) "
        "SELECT NEW.class_name, i.verdict, i.seq FROM inspections i "
        "WHERE i.id = NEW.inspection_id; END"
    )
    db.execute(
        "INSERT OR IGNORE INTO inspection_classes (class_name, verdict, seq) "
        "SELECT top_class, verdict, seq FROM inspections WHERE top_class IS NOT NULL"
    )
    db.execute(
        "INSERT OR IGNORE INTO inspection_classes (class_name, verdict, seq) "
        "SELECT d.class_name, i.verdict, i.seq FROM detections d "
        "JOIN inspections i ON i.id = d.inspection_id WHERE d.class_name IS NOT NULL"
    )
    # Each inspection's latest feedback (the kind the API filters on), by seq; few
    # rows next to the inspections, so "with feedback" is read from here.
    db.execute(
        "CREATE TABLE feedback_latest (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
        "verdict TEXT NOT NULL, feedback_id INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX feedback_latest_kind ON feedback_latest(kind, seq)")
    latest = (
        "INSERT INTO feedback_latest (seq, kind, verdict, feedback_id) "
        "SELECT i.seq, {kind}, i.verdict, {fid} FROM {src} WHERE {where} "
        "ON CONFLICT (seq) DO UPDATE SET kind = excluded.kind, "
        "feedback_id = excluded.feedback_id WHERE excluded.feedback_id > feedback_id"
    )
    db.execute(
        "CREATE TRIGGER feedback_latest_ins AFTER INSERT ON feedback BEGIN "
        + latest.format(
            kind="NEW.kind", fid="NEW.id", src="inspections i", where="i.id = NEW.inspection_id"
        )
        + "; END"
    )
    db.execute(
        latest.format(
            kind="f.kind",
            fid="f.id",
            src="feedback f JOIN inspections i ON i.id = f.inspection_id",
            where="f.id IN (SELECT MAX(id) FROM feedback GROUP BY inspection_id)",
        )
    )


def m044_class_index_by_writers(db: sqlite_utils.Database) -> None:
    # issue 12 (the sink): 043's triggers cost SQLite more per row than the insert
    # itself (a per-box lookup of the inspection by id); the writers now add the
    # inspection_classes rows in the inspection's own transaction, one executemany
    # per batch (records.class_index_rows). The table 043 filled stays as it is.
    db.execute("DROP TRIGGER IF EXISTS inspection_classes_top")
    db.execute("DROP TRIGGER IF EXISTS inspection_classes_det")


def m045_retention(db: sqlite_utils.Database) -> None:
    # issue 12 (retention): store.retention deletes images and rows (station/retention.py).
    # 043's comment ("rows are never updated or deleted") no longer holds: retention
    # deletes an inspection's inspection_classes / feedback_latest / detections /
    # feedback / outbox rows in the same transaction as the inspection itself.
    # image_deleted_at: when retention deleted the row's JPEG (image_path is then NULL),
    # so the API says "deleted" instead of "never saved". ADD COLUMN rewrites nothing.
    db.execute("ALTER TABLE inspections ADD COLUMN image_deleted_at TEXT")
    # The rows that still have an image: few next to all rows (PASS is not saved by
    # default), so the oldest image overall, or of one verdict, is one index step away.
    db.execute(
        "CREATE INDEX inspections_image_seq ON inspections(seq) WHERE image_path IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX inspections_image_verdict_seq ON inspections(verdict, seq) "
        "WHERE image_path IS NOT NULL"
    )


def m046_captured_order(db: sqlite_utils.Database) -> None:
    # issue 12: a time filter read as a seq range (station/captured_order.py). One
    # pass over the existing rows in seq order: ~1.4 s a million rows, once.
    db.execute(
        "CREATE TABLE captured_order (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "up_to_seq INTEGER NOT NULL, max_at TEXT, disorder_s REAL NOT NULL)"
    )
    db.execute("INSERT INTO captured_order VALUES (1, 0, NULL, 0.0)")
    old = captured_order.load(db.conn)
    captured_order.save(db.conn, old, captured_order.extend(db.conn, old))


def m047_audit_target(db: sqlite_utils.Database) -> None:
    # issue 13 (history): an inspection's audit trail (feedback given, changed, undone),
    # newest first, for the history page's engineer view (GET
    # /api/inspections/{id}/audit); without it each look read the whole audit table
    db.execute("CREATE INDEX audit_target ON audit(target, id)")


#: the ``feedback_latest`` insert trigger, as 043 wrote it (048 rebuilds its table)
_FEEDBACK_LATEST_TRIGGER = (
    "CREATE TRIGGER feedback_latest_ins AFTER INSERT ON feedback BEGIN "
    "INSERT INTO feedback_latest (seq, kind, verdict, feedback_id) "
    "SELECT i.seq, NEW.kind, i.verdict, NEW.id FROM inspections i "
    "WHERE i.id = NEW.inspection_id "
    "ON CONFLICT (seq) DO UPDATE SET kind = excluded.kind, "
    "feedback_id = excluded.feedback_id WHERE excluded.feedback_id > feedback_id; END"
)


def m048_feedback_ids_never_reused(db: sqlite_utils.Database) -> None:
    # issue 13 (review): undoing an answer deletes its row, and a plain INTEGER PRIMARY
    # KEY hands the highest id out again, so the audit could name one feedback id for
    # two answers (also when retention deletes the newest row). AUTOINCREMENT never
    # reuses an id. Undo stays a delete rather than a soft delete (an undone_at
    # column): every reader of feedback (the API, trends, retention's archive, the
    # training export in training/station_log.py) would have to skip undone rows, and
    # one that did not would turn a mistaken tap into a label; the audit keeps the
    # undone answer whole (feedback.undo). SQLite cannot add AUTOINCREMENT to a table:
    # it is rebuilt (few rows: a handful per answered inspection), same columns, ids,
    # index and trigger.
    db.execute(
        'CREATE TABLE "feedback_048" ('
        '"id" INTEGER PRIMARY KEY AUTOINCREMENT, '
        '"inspection_id" TEXT NOT NULL REFERENCES "inspections"("id"), '
        '"kind" TEXT NOT NULL, "class_name" TEXT, "note" TEXT, "actor" TEXT NOT NULL, '
        '"token_id" TEXT, "created_at" TEXT NOT NULL)'
    )
    cols = "id, inspection_id, kind, class_name, note, actor, token_id, created_at"
    db.execute(f"INSERT INTO feedback_048 ({cols}) SELECT {cols} FROM feedback ORDER BY id")
    db.execute("DROP TABLE feedback")  # its index and feedback_latest_ins go with it
    db.execute('ALTER TABLE feedback_048 RENAME TO "feedback"')
    db.execute('CREATE INDEX "idx_feedback_inspection_id_id" ON "feedback" ("inspection_id", "id")')
    db.execute(_FEEDBACK_LATEST_TRIGGER)
    # ids undone before this migration are gone from the table but named in the audit:
    # the sequence starts above them too
    named = db.execute(
        "SELECT MAX(MAX(COALESCE(json_extract(detail_json, '$.id'), 0), "
        "COALESCE(json_extract(detail_json, '$.new.id'), 0), "
        "COALESCE(json_extract(detail_json, '$.old.id'), 0), "
        "COALESCE(json_extract(detail_json, '$.undone.id'), 0))) FROM audit "
        "WHERE action LIKE 'feedback.%' AND json_valid(detail_json)"
    ).fetchone()[0]
    top = max(
        int(named or 0), int(db.execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()[0])
    )
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'feedback'")
    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('feedback', ?)", [top])


def m049_quality(db: sqlite_utils.Database) -> None:
    # issue 15 (image quality gate): each inspection's quality numbers, when the gate was on
    # (JSON: focus, mean, dark, bright, rows, reference_diff); NULL when it was off
    db.execute("ALTER TABLE inspections ADD COLUMN quality_json TEXT")


def m050_shadow(db: sqlite_utils.Database) -> None:
    # issue 15 (shadow models): a candidate model judges the frames the active model
    # judged, in a child process, without touching verdicts (station/shadow/). Its
    # results sit beside the active model's, keyed by the inspection's seq (retention
    # deletes them by seq ranges with the inspection); the open session (ended_at NULL)
    # is the current shadow, put back after a restart.
    db.execute(
        "CREATE TABLE shadow_results (seq INTEGER NOT NULL, model_sha256 TEXT NOT NULL, "
        "inspection_id TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT, top_class TEXT, "
        "top_confidence REAL, score REAL, detections_json TEXT NOT NULL, probs_json TEXT, "
        "latency_ms REAL NOT NULL, judged_at TEXT NOT NULL, PRIMARY KEY (model_sha256, seq))"
    )
    db.execute("CREATE INDEX shadow_results_seq ON shadow_results(seq)")
    db.execute(
        "CREATE TABLE shadow_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "model_sha256 TEXT NOT NULL, started_at TEXT NOT NULL, started_by TEXT NOT NULL, "
        "ended_at TEXT, ended_by TEXT, end_reason TEXT, "
        "offered INTEGER NOT NULL DEFAULT 0, judged INTEGER NOT NULL DEFAULT 0, "
        "skipped INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0)"
    )
