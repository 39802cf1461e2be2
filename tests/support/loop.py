"""Helpers of the learning-loop test (tests/test_learning_loop.py); this module holds no tests.

- :func:`first_bundle`: the station's first model, a bundle that carries its training
  weights (``weights.pt``), as ``kanjian train`` writes one;
- :func:`true_labels` / :func:`label_as_a_person`: the person who labels in Label
  Studio, stood in for by NEU-DET's ground truth (its VOC files), writing what Label
  Studio's "YOLO" export writes;
- :func:`recount`: the shadow report's numbers counted again, in SQL alone, on the
  station's database.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.support.station_config import DECODE_CONF

#: the verdict matrix's rows and columns, as the report orders them
LABELS = ("PASS", "FAIL", "REVIEW", "ERROR")


def first_bundle(detect_model: Any, dest: Path, name: str, version: str) -> Path:
    """The test detect model as a bundle with ``weights.pt`` (its training checkpoint), so
    ``kanjian train --model DEST`` can continue from it. Golden set from its val split."""
    from kanjian.inference.bundle import Thresholds, TrainingInfo
    from kanjian.training.package import write_bundle

    write_bundle(
        detect_model.onnx,
        dest,
        name=name,
        version=version,
        thresholds=Thresholds(conf=DECODE_CONF, iou=0.7, max_det=100),
        metrics={},
        training=TrainingInfo(command="tests/support/loop.py"),
        golden_candidates=detect_model.val_images,
        golden_count=3,
        weights=detect_model.pt,
    )
    return dest


def true_labels(xml: Path, names: list[str]) -> list[tuple[int, float, float, float, float]]:
    """``(class id, cx, cy, w, h)`` of every object in a NEU-DET VOC file, normalised by the
    size the file states (NEU-DET's files say 200x200 for larger images, and give the
    corners in that frame: dividing by the stated size is right whatever the real size)."""
    root = ET.parse(xml).getroot()
    size = root.find("size")
    assert size is not None, xml
    sw, sh = float(size.findtext("width", "0")), float(size.findtext("height", "0"))
    out = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        assert box is not None, xml
        x1, y1, x2, y2 = (float(box.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append(
            (
                names.index(obj.findtext("name", "")),
                (x1 + x2) / 2 / sw,
                (y1 + y2) / 2 / sh,
                (x2 - x1) / sw,
                (y2 - y1) / sh,
            )
        )
    return out


def source_of(db: Path, inspection_id: str) -> str:
    """The NEU-DET file name an inspection's frame came from: its ``uri`` is the file the
    folder camera read (``tests.support.api.copy_images`` named it ``NNNN_<original>``)."""
    ((uri,),) = sql(db, "SELECT uri FROM inspections WHERE id = ?", (inspection_id,))
    return Path(str(uri)).name.split("_", 1)[1]


def label_as_a_person(export: Path, db: Path, neu: Path, out: Path) -> Counter[str]:
    """Label every task of ``export/label_studio.json`` with its image's true boxes and write
    them as Label Studio's YOLO export does (``images/``, ``labels/``, ``classes.txt``,
    ``notes.json``). Returns the boxes written per class.

    Each task names its image (``data.image``: the local-files prefix + its path in the
    export) and its inspection (``data.inspection_id``); the inspection's ``uri`` names
    the NEU-DET file, whose VOC file holds the truth.
    """
    names = (export / "classes.txt").read_text(encoding="utf-8").split()
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    (out / "notes.json").write_text(
        json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(names)],
                    "info": {"contributor": "Label Studio"}}),
        encoding="utf-8",
    )  # fmt: skip
    boxes: Counter[str] = Counter()
    for task in json.loads((export / "label_studio.json").read_text(encoding="utf-8")):
        rel = unquote(str(task["data"]["image"]).split("?d=", 1)[1])
        image = export / rel
        xml = neu / "annotations" / f"{Path(source_of(db, task['data']['inspection_id'])).stem}.xml"
        rows = true_labels(xml, names)
        shutil.copyfile(image, out / "images" / image.name)
        (out / "labels" / f"{image.stem}.txt").write_text(
            "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
        )
        boxes.update(names[c] for c, *_ in rows)
    return boxes


def true_answer(db: Path, neu: Path, inspection_id: str) -> dict[str, Any]:
    """What an operator who knows the part says of an inspection: every NEU-DET image shows
    a defect, so ``confirm_defect`` when the model's top class is one of the image's
    true classes (a PASS: a missed defect), else ``wrong_class`` naming its most frequent
    true class."""
    ((top,),) = sql(db, "SELECT top_class FROM inspections WHERE id = ?", (inspection_id,))
    root = ET.parse(neu / "annotations" / f"{Path(source_of(db, inspection_id)).stem}.xml")
    truth = Counter(o.findtext("name", "") for o in root.getroot().iter("object"))
    if top in truth:
        return {"kind": "confirm_defect"}
    return {"kind": "wrong_class", "class_name": truth.most_common(1)[0][0]}


def sql(db: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def recount(db: Path, shadow: str, active: str) -> dict[str, Any]:
    """The shadow report's numbers, counted in SQL on the store: every frame the shadow
    judged that the active model judged too, and each one's latest answer (the feedback
    row with the highest id: read from ``feedback`` itself, not the report's
    ``feedback_latest``)."""
    pairs = "FROM shadow_results r JOIN inspections i ON i.seq = r.seq WHERE r.model_sha256 = ? AND i.model_sha256 = ?"  # fmt: skip
    args = (shadow, active)
    ((frames, first, last),) = sql(db, f"SELECT COUNT(*), MIN(r.seq), MAX(r.seq) {pairs}", args)
    matrix = [[0] * len(LABELS) for _ in LABELS]
    for a, s, n in sql(db, f"SELECT i.verdict, r.verdict, COUNT(*) {pairs} GROUP BY 1, 2", args):
        matrix[LABELS.index(a)][LABELS.index(s)] = n
    ((differ,),) = sql(db, f"SELECT COUNT(*) {pairs} AND i.verdict != r.verdict", args)
    a_boxes = dict(sql(db, f"SELECT d.class_name, COUNT(*) {pairs.replace('WHERE', 'JOIN detections d ON d.inspection_id = i.id WHERE')} GROUP BY 1", args))  # fmt: skip
    s_boxes = dict(sql(db, f"SELECT json_extract(j.value, '$[1]'), COUNT(*) {pairs.replace('WHERE', ', json_each(r.detections_json) j WHERE')} GROUP BY 1", args))  # fmt: skip
    answered = (
        f"{pairs.replace('WHERE', 'JOIN feedback f ON f.inspection_id = i.id WHERE')} "
        "AND f.id = (SELECT MAX(id) FROM feedback WHERE inspection_id = i.id)"
    )
    # a defect call is FAIL or REVIEW; an answer says defective unless it is not_defect;
    # a model's ERROR is not judged
    feedback = {}
    for key, col in (("a", "i.verdict"), ("b", "r.verdict")):
        call, said = f"{col} IN ('FAIL', 'REVIEW')", "f.kind != 'not_defect'"
        ((tp, fp, fn, tn),) = sql(
            db,
            f"SELECT TOTAL({call} AND {said}), TOTAL({call} AND NOT {said}), "
            f"TOTAL(NOT {call} AND {said}), TOTAL(NOT {call} AND NOT {said}) "
            f"{answered} AND {col} NOT IN ('ERROR', 'MISSED')",
            args,
        )
        feedback[key] = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}
    ((n_answered,),) = sql(db, f"SELECT COUNT(*) {answered}", args)
    return {
        "frames": frames,
        "first_seq": first,
        "last_seq": last,
        "matrix": matrix,
        "verdict_disagreements": differ,
        "a_boxes": a_boxes,
        "b_boxes": s_boxes,
        "feedback": feedback,
        "answered": n_answered,
    }
