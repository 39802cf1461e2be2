"""``kanjian dataset export``: the station's log back into a YOLO dataset.

Reads the station's SQLite store (``kanjian.db``: ``inspections``,
``detections``, ``feedback``) read-only, so it can run beside a live station,
and the saved frames under its data folder. Labels are the station's own
detections (pseudo-labels), corrected by the operators' latest feedback:

- ``not_defect``: the image is kept as a background image (no boxes);
- ``wrong_class``: every kept box takes the class the operator named;
- ``confirm_defect`` or none: the boxes are kept as detected.

Only inspections with a saved image can be exported; the rest are counted.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kanjian.training.checks import clip_box, image_size
from kanjian.training.layout import DatasetSummary, Task, write_yolo
from kanjian.training.records import Box, ImageRecord, Problem, ProblemKind, ReadResult

DB_NAME = "kanjian.db"  # the station store's file name (kanjian.station.store.DB_NAME)


@dataclass(frozen=True)
class ExportFilter:
    """Which inspections to export.

    Attributes:
        since, until: ISO 8601 UTC bounds on ``captured_at`` (inclusive, exclusive).
        model_sha256: only inspections judged by this model.
        reviewed_only: only inspections an operator gave feedback on.
        min_confidence: detections below this are not labels.
        verdicts: only these verdicts (empty: all).
    """

    since: str | None = None
    until: str | None = None
    model_sha256: str | None = None
    reviewed_only: bool = False
    min_confidence: float = 0.25
    verdicts: tuple[str, ...] = ()


def _connect(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: station database not found")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    return conn


def read_station_log(
    data_dir: Path, flt: ExportFilter, class_names: tuple[str, ...] | None = None
) -> tuple[ReadResult, dict[str, int]]:
    """Records for every exportable inspection, and counts of what was applied/skipped."""
    db_path = data_dir / DB_NAME if data_dir.is_dir() else data_dir
    root = db_path.parent
    conn = _connect(db_path)
    where, args = ["1=1"], []
    if flt.since:
        where.append("captured_at >= ?")
        args.append(flt.since)
    if flt.until:
        where.append("captured_at < ?")
        args.append(flt.until)
    if flt.model_sha256:
        where.append("model_sha256 = ?")
        args.append(flt.model_sha256)
    if flt.verdicts:
        where.append(f"verdict IN ({','.join('?' * len(flt.verdicts))})")
        args.extend(flt.verdicts)
    try:
        rows = conn.execute(
            f"SELECT id, image_path, width, height FROM inspections WHERE {' AND '.join(where)} "
            "ORDER BY seq",
            args,
        ).fetchall()
        feedback = {
            r["inspection_id"]: r
            for r in conn.execute(
                "SELECT inspection_id, kind, class_name FROM feedback ORDER BY id"
            ).fetchall()
        }  # later rows overwrite earlier ones: the latest feedback wins
        dets: dict[str, list[sqlite3.Row]] = {}
        for d in conn.execute(
            "SELECT inspection_id, class_name, confidence, x1, y1, x2, y2 FROM detections "
            "WHERE confidence >= ? ORDER BY inspection_id, idx",
            [flt.min_confidence],
        ):
            dets.setdefault(d["inspection_id"], []).append(d)
    finally:
        conn.close()

    counts: Counter[str] = Counter()
    problems: list[Problem] = []
    parsed: list[tuple[Path, int, int, list[Box], str]] = []
    for row in rows:
        fb = feedback.get(row["id"])
        if flt.reviewed_only and fb is None:
            counts["not_reviewed"] += 1
            continue
        if not row["image_path"]:
            counts["no_saved_image"] += 1
            continue
        where_txt = f"{db_path}#{row['id']}"
        img = root / row["image_path"]
        try:
            w, h = image_size(img)
        except OSError as e:
            fault = ProblemKind.MISSING_IMAGE if not img.exists() else ProblemKind.UNREADABLE_IMAGE
            problems.append(Problem(fault, where_txt, f"{img}: {e}; skipped"))
            continue
        sx = w / row["width"] if row["width"] else 1.0
        sy = h / row["height"] if row["height"] else 1.0
        if (sx, sy) != (1.0, 1.0):
            problems.append(
                Problem(
                    ProblemKind.SIZE_MISMATCH,
                    where_txt,
                    f"logged {row['width']}x{row['height']} but {img.name} is {w}x{h}; "
                    "boxes rescaled",
                )
            )
        boxes: list[Box] = []
        kind: str | None = fb["kind"] if fb is not None else None
        counts[f"feedback_{kind}" if kind else "no_feedback"] += 1
        if kind != "not_defect":
            for i, d in enumerate(dets.get(row["id"], [])):
                name = fb["class_name"] if fb is not None and kind == "wrong_class" else None
                xyxy = (d["x1"] * sx, d["y1"] * sy, d["x2"] * sx, d["y2"] * sy)
                clipped, problem = clip_box(xyxy, w, h, where_txt, f"detection {i}")
                if problem is not None:
                    problems.append(problem)
                if clipped is not None:
                    boxes.append(Box(name or d["class_name"], clipped))
        parsed.append((img, w, h, boxes, where_txt))

    names = class_names or tuple(sorted({b.class_name for *_, bs, _ in parsed for b in bs}))
    known = set(names)
    records = []
    for img, w, h, boxes, where_txt in parsed:
        kept = []
        for b in boxes:
            if b.class_name in known:
                kept.append(b)
            else:
                problems.append(
                    Problem(
                        ProblemKind.UNKNOWN_CLASS,
                        where_txt,
                        f"class {b.class_name!r} not in {list(names)}; box dropped",
                    )
                )
        records.append(ImageRecord(img, w, h, tuple(kept), None))
    return ReadResult(tuple(records), names, tuple(problems)), dict(sorted(counts.items()))


def export_station_log(
    data_dir: Path,
    output: Path,
    *,
    flt: ExportFilter = ExportFilter(),  # frozen: a shared default is safe
    class_names: tuple[str, ...] | None = None,
    task: Task = "detect",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSummary:
    """Write the station's saved frames and corrected labels as a YOLO dataset.

    Args:
        data_dir: the station's data folder (holding ``kanjian.db`` and ``images/``),
            or the database file itself.
        output: new folder for the dataset.
        flt: which inspections and detections to take.
        class_names: the class list (normally the model's); None: the classes found.
    """
    result, counts = read_station_log(data_dir, flt, class_names)
    summary = write_yolo(
        result,
        output,
        source=str(data_dir),
        source_format="station",
        task=task,
        val_fraction=val_fraction,
        seed=seed,
    )
    note = "station log: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    patched = DatasetSummary(**{**summary.__dict__, "notes": (*summary.notes, note)})
    (output / "summary.json").write_text(patched.to_json(), encoding="utf-8")
    return patched
