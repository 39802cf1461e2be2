"""Database schema of the station's store, as an ordered list of migrations.

Each migration runs once, inside a transaction, and is recorded in
``_migrations``; later issues append migrations, never edit applied ones.
Migrations 040 on live in ``schema_migrations.py``.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import sqlite_utils

from kanjian.inference.heads import task_columns
from kanjian.station import schema_migrations as m

Migration = Callable[[sqlite_utils.Database], None]


def _m001_inspections(db: sqlite_utils.Database) -> None:
    db["inspections"].create(  # type: ignore[union-attr]
        {
            "id": str,  # inspection UUID (hex with dashes)
            "seq": int,  # per-station sequence, 1, 2, 3 ... in commit order
            "station_id": str,
            "source_id": str,
            "frame_id": int,
            "trigger_id": str,
            "uri": str,
            "captured_at": str,  # ISO 8601 UTC
            "judged_at": str,  # ISO 8601 UTC
            "verdict": str,
            "reason": str,
            "model_name": str,
            "model_version": str,
            "model_sha256": str,
            "num_detections": int,
            "top_class": str,
            "top_confidence": float,
            "width": int,
            "height": int,
            "image_path": str,  # relative to data_dir, or null
            "timings_json": str,  # {"preprocess": ms, ...}
            "probs_json": str,  # classify: list of probabilities
        },
        pk="id",
        not_null={"seq", "station_id", "verdict", "captured_at", "judged_at"},
    )
    db["inspections"].create_index(["seq"], unique=True)  # type: ignore[union-attr]
    db["inspections"].create_index(["captured_at"])  # type: ignore[union-attr]
    db["inspections"].create_index(["verdict", "captured_at"])  # type: ignore[union-attr]
    db["detections"].create(  # type: ignore[union-attr]
        {
            "inspection_id": str,
            "idx": int,
            "class_id": int,
            "class_name": str,
            "confidence": float,
            "x1": float,
            "y1": float,
            "x2": float,
            "y2": float,
            "mask_area": int,
        },
        pk=("inspection_id", "idx"),
        foreign_keys=[("inspection_id", "inspections", "id")],
    )
    db["detections"].create_index(["class_name", "confidence"])  # type: ignore[union-attr]
    # The outbox row is written in the same transaction as its inspection, so a
    # committed inspection is never missing from the platform sync.
    db["outbox"].create(  # type: ignore[union-attr]
        {
            "seq": int,
            "inspection_id": str,
            "created_at": str,
            "sent_at": str,
            "confirmed_at": str,
            "attempts": int,
        },
        pk="seq",
        not_null={"inspection_id", "created_at"},
        defaults={"attempts": 0},
    )
    db["outbox"].create_index(["confirmed_at"])  # type: ignore[union-attr]


# -- issue 4: API tokens, audit, operator feedback, model registry -----------------


def _m010_api_tokens(db: sqlite_utils.Database) -> None:
    # Only a hash of each secret is stored; the secret is shown once at creation.
    db["api_tokens"].create(  # type: ignore[union-attr]
        {
            "id": str,  # public token id (part of the token string)
            "name": str,  # who or what holds it ("panel-1", "alice")
            "role": str,  # operator / engineer / admin
            "secret_sha256": str,
            "created_at": str,
            "created_by": str,
            "revoked_at": str,
        },
        pk="id",
        not_null={"name", "role", "secret_sha256", "created_at"},
    )


def _m011_audit(db: sqlite_utils.Database) -> None:
    db["audit"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "at": str,  # ISO 8601 UTC
            "actor": str,  # token name, or "cli:<user>"
            "token_id": str,
            "role": str,
            "action": str,  # e.g. "model.activate", "feedback.create"
            "target": str,  # what it acted on (inspection id, model sha, token id)
            "detail_json": str,
            "remote_addr": str,
        },
        pk="id",
        not_null={"at", "actor", "action"},
    )
    db["audit"].create_index(["at"])  # type: ignore[union-attr]


def _m012_feedback(db: sqlite_utils.Database) -> None:
    db["feedback"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "inspection_id": str,
            "kind": str,  # confirm_defect / not_defect / wrong_class
            "class_name": str,  # wrong_class: the right class
            "note": str,
            "actor": str,
            "token_id": str,
            "created_at": str,
        },
        pk="id",
        not_null={"inspection_id", "kind", "actor", "created_at"},
        foreign_keys=[("inspection_id", "inspections", "id")],
    )
    db["feedback"].create_index(["inspection_id", "id"])  # type: ignore[union-attr]


def _m013_model_registry(db: sqlite_utils.Database) -> None:
    db["models"].create(  # type: ignore[union-attr]
        {
            "sha256": str,  # of model.onnx, as recorded in inspections.model_sha256
            "name": str,
            "version": str,
            "task": str,
            "path": str,  # bundle dir (absolute, or relative to data_dir)
            "origin": str,  # config / upload
            "size_bytes": int,
            "golden_images": int,
            "added_at": str,
            "added_by": str,
        },
        pk="sha256",
        not_null={"name", "version", "path", "origin", "added_at"},
    )
    # Append-only history; the active model is the top of the stack it describes
    # (activate / start push, rollback pops).
    db["model_activations"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "sha256": str,
            "action": str,  # start / activate / rollback
            "at": str,
            "actor": str,
        },
        pk="id",
        not_null={"sha256", "action", "at"},
    )


def _m014_settings(db: sqlite_utils.Database) -> None:
    # Settings changed at run time (through the API) that must outlive a restart;
    # they override station.yaml until reset. value_json is validated on load.
    db.execute(
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value_json TEXT NOT NULL, "
        "set_at TEXT NOT NULL, set_by TEXT)"
    )


def _m030_sync(db: sqlite_utils.Database) -> None:
    # issue 7: the sync worker's state on each outbox entry. next_attempt_at is
    # unix seconds (NULL: never published); image_state: NULL (not examined yet),
    # none / pending / done / missing / dropped; dropped_at: retention gave up.
    for col, typ in (
        ("next_attempt_at", "REAL"),
        ("image_state", "TEXT"),
        ("image_key", "TEXT"),
        ("image_attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("image_done_at", "TEXT"),
        ("dropped_at", "TEXT"),
    ):
        db.execute(f"ALTER TABLE outbox ADD COLUMN {col} {typ}")
    # Partial indexes: the backlog is small next to the history, so each stays small.
    db.execute(
        "CREATE INDEX outbox_backlog ON outbox(seq) "
        "WHERE confirmed_at IS NULL AND dropped_at IS NULL"
    )
    db.execute(
        "CREATE INDEX outbox_due ON outbox(next_attempt_at) "
        "WHERE confirmed_at IS NULL AND dropped_at IS NULL"
    )
    db.execute("CREATE INDEX outbox_image_new ON outbox(seq) WHERE image_state IS NULL")
    db.execute("CREATE INDEX outbox_image_pending ON outbox(seq) WHERE image_state = 'pending'")
    db.execute("CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # the stream id tells a receiver that seq numbers restarted (a new database)
    db.execute("INSERT INTO sync_state (key, value) VALUES ('stream_id', ?)", [str(uuid.uuid4())])
    db.execute(
        "CREATE TABLE sync_events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "event_id TEXT NOT NULL UNIQUE, event TEXT NOT NULL, payload_json TEXT NOT NULL, "
        "created_at TEXT NOT NULL, sent_at TEXT)"
    )
    db.execute("CREATE INDEX sync_events_unsent ON sync_events(id) WHERE sent_at IS NULL")
    # platform commands seen, so a redelivered command is answered, not re-run
    db.execute(
        "CREATE TABLE sync_commands (command_id TEXT PRIMARY KEY, command TEXT NOT NULL, "
        "received_at TEXT NOT NULL, outcome TEXT, detail_json TEXT)"
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_inspections", _m001_inspections),
    ("010_api_tokens", _m010_api_tokens),
    ("011_audit", _m011_audit),
    ("012_feedback", _m012_feedback),
    ("013_model_registry", _m013_model_registry),
    ("014_settings", _m014_settings),
    ("030_sync", _m030_sync),  # issue 7
    ("040_counters", m.m040_counters),  # issue 12
    ("041_api_sessions", m.m041_api_sessions),  # issue 12 (web edges)
    ("042_store_meta", m.m042_store_meta),  # issue 12 (upgrades)
    ("043_query_indexes", m.m043_query_indexes),  # issue 12 (the log at scale)
    ("044_class_index_by_writers", m.m044_class_index_by_writers),  # issue 12 (the sink)
    ("045_retention", m.m045_retention),  # issue 12 (retention and quotas)
    ("046_captured_order", m.m046_captured_order),  # issue 12 (time filters at scale)
    ("047_audit_target", m.m047_audit_target),  # issue 13 (history: an inspection's audit)
    ("048_feedback_ids_never_reused", m.m048_feedback_ids_never_reused),  # issue 13 (review)
    ("049_quality", m.m049_quality),  # issue 15 (image quality gate)
    ("050_shadow", m.m050_shadow),  # issue 15 (shadow models)
]


class StoreTooNewError(RuntimeError):
    """The store was written by a newer kanjian: its schema has migrations this code lacks.

    An older release must not write to it (nor guess at its tables); the message,
    one line, names the database, both versions and the way out.

    Attributes:
        db_path: the database file.
        unknown: the migration names this code does not know, in order.
        store_version: the kanjian version recorded in the store (``None``: not recorded).
        code_version: this code's version.
    """

    def __init__(
        self, db_path: str, unknown: list[str], store_version: str | None, code_version: str
    ) -> None:
        self.db_path = db_path
        self.unknown = unknown
        self.store_version = store_version
        self.code_version = code_version
        if not store_version:
            newer = "a newer kanjian"
        elif store_version == code_version:  # a development build ahead of its release
            newer = f"a newer build of kanjian {store_version}"
        else:
            newer = f"kanjian {store_version}"
        super().__init__(
            f"{db_path} was written by {newer}, newer than this kanjian {code_version} "
            f"(its schema has {', '.join(unknown)}, which this version does not know): "
            f"install {newer} again, or restore a backup of the data folder made "
            f"with kanjian {code_version} or older"
        )


def kanjian_version() -> str:
    """This code's version: the installed package's, else pyproject.toml's, else ``unknown``."""
    try:
        return metadata.version("kanjian")
    except metadata.PackageNotFoundError:
        pass
    # a checkout run without installing it: pyproject.toml sits beside the packages
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    except OSError:
        m = None
    return m.group(1) if m else "unknown"


def check_not_newer(conn: sqlite3.Connection) -> None:
    """Raise :class:`StoreTooNewError` if a newer release migrated this database.

    Reads only (a read-only connection will do); a database without ``_migrations``
    (new, or empty) passes.
    """
    if not _has_table(conn, "_migrations"):
        return
    known = {name for name, _ in MIGRATIONS}
    rows = conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
    unknown = [str(r[0]) for r in rows if r[0] not in known]
    if not unknown:
        return
    version = None
    if _has_table(conn, "store_meta"):
        row = conn.execute("SELECT value FROM store_meta WHERE key = 'version'").fetchone()
        version = None if row is None else str(row[0])
    path = conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
    raise StoreTooNewError(path, unknown, version, kanjian_version())


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(q, [name]).fetchone() is not None


def _stamp(db: sqlite_utils.Database) -> None:
    # written only when it changes: an open that finds its own stamp writes nothing
    want = {"version": kanjian_version(), "schema": MIGRATIONS[-1][0]}
    have = dict(db.execute("SELECT key, value FROM store_meta").fetchall())
    if all(have.get(k) == v for k, v in want.items()):
        return
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO store_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [*want.items(), ("stamped_at", _now_iso(db))],
        )


def _now_iso(db: sqlite_utils.Database) -> str:
    return str(db.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations this database has not seen; return their names.

    Raises :class:`StoreTooNewError`, before writing anything, when a newer release
    migrated the database; afterwards records this code's version in ``store_meta``.
    """
    check_not_newer(db.conn)
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {r[0] for r in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", [name]
            )
        applied.append(name)
    _task_columns(db)
    _stamp(db)
    return applied


def _task_columns(db: sqlite_utils.Database) -> None:
    # a registered task head may keep columns of its own (inference.heads): not
    # migrations, since adding a task must not mean editing this list
    have = set(db["inspections"].columns_dict)
    for col, sqltype in task_columns().items():
        if col not in have:
            db.execute(f"ALTER TABLE inspections ADD COLUMN {col} {sqltype}")
