"""A big station store, fast: N inspections with detections, feedback and outbox rows.

For the store-scale benchmark (``benchmarks/store_scale.py``) and the query-plan
tests. The database is created by the real schema migrations
(:func:`kanjian.station.store.open_db`), so it has every table, index and trigger
the station's has; the rows are then written with plain ``executemany`` in large
transactions (``synchronous=OFF``), **not** through :class:`ResultStore`: the
store's writer thread, JPEG path and per-row objects would make a million rows
take many minutes, and what is measured here is reading, not writing. The rows
have the columns and value formats :meth:`StoredInspection.row` writes
(:func:`utc_iso` times, JSON timings), the ``inspection_classes`` rows the store
adds (:func:`~kanjian.station.records.class_index_rows`), and the triggers the
migrations install (feedback_latest's) run as they do for the store's own inserts.

The mix (seeded, so a size always gives the same store):

- verdicts: PASS 90 %, FAIL 6 %, REVIEW 3 %, ERROR 0.7 %, MISSED 0.3 %;
- detections: 0-3 per judged inspection (PASS: 0-1 low-confidence boxes, FAIL /
  REVIEW: 1-3); class names from :data:`CLASSES`, where :data:`RARE_CLASS` is
  common on PASS rows and rare on FAIL rows (about one FAIL in 1,000), so
  "FAIL + scratches" is the rare combination that once took 18 s;
- one inspection a second from ``2026-01-01``, three model versions in turn;
- operator feedback on 3 % of FAIL / REVIEW rows and 0.05 % of PASS rows, some
  twice (the latest kind is what the API filters on);
- outbox rows for all, confirmed except the newest 100.

Run alone: ``python -m benchmarks.big_store --rows 1000000 --out /tmp/big``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kanjian.station.records import CLASS_INDEX_INSERT, class_index_rows, utc_iso
from kanjian.station.store import DB_NAME, open_db

CLASSES: tuple[str, ...] = (
    "crazing",
    "inclusion",
    "patches",
    "pitted_surface",
    "rolled-in_scale",
    "scratches",
)
#: common on PASS rows, rare on FAIL rows
RARE_CLASS = "scratches"
VERDICTS: tuple[str, ...] = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")
VERDICT_P = (0.90, 0.06, 0.03, 0.007, 0.003)
MODELS: tuple[tuple[str, str, str], ...] = tuple(
    ("neu-det", f"1.{k}", f"{k + 1:x}" * 64) for k in range(3)
)
FEEDBACK_KINDS = ("confirm_defect", "not_defect", "wrong_class")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)

_INSP_COLS = (
    "id, seq, station_id, source_id, frame_id, trigger_id, uri, captured_at, judged_at, "
    "verdict, reason, model_name, model_version, model_sha256, num_detections, top_class, "
    "top_confidence, width, height, image_path, timings_json, probs_json"
)
_DET_COLS = "inspection_id, idx, class_id, class_name, confidence, x1, y1, x2, y2, mask_area"


@dataclass(frozen=True)
class BigStore:
    """What :func:`build` made.

    Attributes:
        path: the database file. rows: inspections. detections, feedback: rows written.
        first_at, last_at: the first and last ``captured_at`` (:func:`utc_iso` text).
        build_s: seconds the build took.
    """

    path: Path
    rows: int
    detections: int
    feedback: int
    first_at: str
    last_at: str
    build_s: float


def _class_p(verdict: str) -> np.ndarray:
    """Class probabilities (float64, len(CLASSES)) for a verdict's boxes."""
    rare = CLASSES.index(RARE_CLASS)
    p = np.ones(len(CLASSES))
    if verdict == "PASS":
        p[rare] = 5.0  # the low-confidence box a PASS row keeps is often a scratch
    else:
        p[rare] = 0.0012 * (len(CLASSES) - 1) / 0.9988
    return p / p.sum()


def build(data_dir: Path, rows: int, seed: int = 0, chunk: int = 50_000) -> BigStore:
    """Write a store of ``rows`` inspections into ``data_dir`` (which must hold no store)."""
    t0 = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_NAME
    if path.exists():
        raise FileExistsError(path)
    open_db(path).conn.close()  # the real migrations: tables, indexes, triggers
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a benchmark fixture: rebuilt, not recovered
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
    rng = np.random.default_rng(seed)
    class_p = {v: _class_p(v) for v in VERDICTS}
    n_det = n_fb = 0
    fb_id = 0
    start_s = START.timestamp()
    for lo in range(0, rows, chunk):
        n = min(chunk, rows - lo)
        verdict_i = rng.choice(len(VERDICTS), size=n, p=VERDICT_P)
        uids = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        jitter = rng.random(n) * 0.3
        conf = rng.random((n, 3))
        boxes = rng.random((n, 3, 4)) * 600
        fb_roll = rng.random(n)
        cls_pass = rng.choice(len(CLASSES), size=(n, 3), p=class_p["PASS"])
        cls_defect = rng.choice(len(CLASSES), size=(n, 3), p=class_p["FAIL"])
        ins, dets, fbs, outbox = [], [], [], []
        classes: list[tuple[str, str, int]] = []
        for j in range(n):
            seq = lo + j + 1
            v = VERDICTS[verdict_i[j]]
            iid = str(uuid.UUID(int=(int(uids[j, 0]) << 64) | int(uids[j, 1]), version=4))
            t = start_s + seq + jitter[j]
            cap = utc_iso(datetime.fromtimestamp(t, timezone.utc))
            judged = utc_iso(datetime.fromtimestamp(t + 0.05, timezone.utc))
            mname, mver, msha = MODELS[min(len(MODELS) - 1, seq * len(MODELS) // (rows + 1))]
            if v == "PASS":
                k = int(conf[j, 0] < 0.3)
            elif v in ("FAIL", "REVIEW"):
                k = 1 + int(conf[j, 1] * 3) % 3
            else:
                k = 0
            top_c, top_s = None, None
            names: list[str | None] = []
            for d in range(k):
                cid = int(cls_pass[j, d] if v == "PASS" else cls_defect[j, d])
                s = float(0.2 + 0.3 * conf[j, d]) if v == "PASS" else float(0.5 + 0.5 * conf[j, d])
                x1, y1, x2, y2 = sorted(boxes[j, d, :2]) + sorted(boxes[j, d, 2:])
                dets.append((iid, d, cid, CLASSES[cid], s, x1, y1, x2, y2, None))
                names.append(CLASSES[cid])
                if top_s is None or s > top_s:
                    top_c, top_s = CLASSES[cid], s
            n_det += k
            classes += class_index_rows(v, seq, top_c, names)  # as the store writes them
            trig = f"plc-{seq}"
            img = f"images/{cap[:10]}/{iid}.jpg" if v in ("FAIL", "REVIEW") else None
            ins.append((
                iid, seq, "station-1", "cam0", seq, trig, None, cap, judged, v,
                "" if v == "PASS" else f"{v.lower()} rule", mname, mver, msha, k, top_c, top_s,
                1920, 1080, img, '{"preprocess": 2.1, "infer": 18.4, "postprocess": 0.6}', None,
            ))  # fmt: skip
            outbox.append((seq, iid, judged, None if seq > rows - 100 else judged, 1))
            p_fb = 0.03 if v in ("FAIL", "REVIEW") else 0.0005
            if fb_roll[j] < p_fb:
                kinds = [FEEDBACK_KINDS[int(fb_roll[j] / p_fb * 3) % 3]]
                if fb_roll[j] < p_fb / 5:  # changed their mind
                    kinds.append(FEEDBACK_KINDS[(FEEDBACK_KINDS.index(kinds[0]) + 1) % 3])
                for kind in kinds:
                    fb_id += 1
                    cls = CLASSES[seq % len(CLASSES)] if kind == "wrong_class" else None
                    fbs.append((fb_id, iid, kind, cls, None, "op", None, judged))
                n_fb += len(kinds)
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO inspections ({_INSP_COLS}) VALUES ({','.join('?' * 22)})", ins
        )
        conn.executemany(
            f"INSERT INTO detections ({_DET_COLS}) VALUES ({','.join('?' * 10)})", dets
        )
        conn.executemany(CLASS_INDEX_INSERT, classes)
        conn.executemany(
            "INSERT INTO outbox (seq, inspection_id, created_at, confirmed_at, attempts) "
            "VALUES (?,?,?,?,?)",
            outbox,
        )
        conn.executemany(
            "INSERT INTO feedback (id, inspection_id, kind, class_name, note, actor, token_id, "
            "created_at) VALUES (?,?,?,?,?,?,?,?)",
            fbs,
        )
        conn.execute("COMMIT")
    # no ANALYZE: the station never runs it, so the plans measured are the station's
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    first, last = conn.execute(
        "SELECT MIN(captured_at), MAX(captured_at) FROM inspections"
    ).fetchone()
    conn.close()
    return BigStore(path, rows, n_det, n_fb, first or "", last or "", time.perf_counter() - t0)


def cached(cache_dir: Path, rows: int, seed: int = 0) -> BigStore:
    """The store of ``rows`` rows under ``cache_dir`` (built once, then reused)."""
    data_dir = cache_dir / f"big-store-{rows}-s{seed}"
    meta = data_dir / "big_store.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return BigStore(**{**m, "path": Path(m["path"])})
    tmp = data_dir.with_name(data_dir.name + ".building")
    if tmp.exists():
        for p in tmp.iterdir():
            p.unlink()
    big = build(tmp, rows, seed)
    tmp.rename(data_dir)
    big = BigStore(data_dir / DB_NAME, *list(big.__dict__.values())[1:])
    meta.write_text(json.dumps({**big.__dict__, "path": str(big.path)}))
    return big


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="data folder (must hold no store)")
    a = ap.parse_args()
    big = build(a.out, a.rows, a.seed)
    print(f"{big.rows} inspections, {big.detections} detections, {big.feedback} feedback "
          f"in {big.build_s:.1f} s -> {big.path}")  # fmt: skip


if __name__ == "__main__":
    _main()
