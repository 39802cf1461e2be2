"""What the dataset import tests share: a small scene with known boxes, writers for it in
VOC and COCO, and readers that turn a written YOLO dataset back into comparable boxes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from kanjian.training.records import ImageRecord
from kanjian.training.yolo_source import read_yolo

CLASSES = ("dent", "scratch", "stain")
#: (file, width, height, [(class, x1, y1, x2, y2), ...]) in real pixels
SCENE = [
    ("a.jpg", 64, 48, [("dent", 4, 6, 30, 40), ("scratch", 35, 2, 60, 20)]),
    ("b.png", 80, 60, [("stain", 10, 10, 70, 50)]),
    ("c.jpg", 50, 50, [("scratch", 0, 0, 50, 25)]),
    ("d.jpg", 40, 30, []),  # background image
    ("e.jpg", 64, 64, [("dent", 8, 8, 24, 24), ("dent", 30, 30, 60, 62), ("stain", 1, 1, 9, 9)]),
    ("f.jpg", 72, 40, [("stain", 5, 5, 20, 35)]),
]


def write_image(path: Path, w: int, h: int) -> None:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def voc_xml(name: str, w: int, h: int, boxes: list[tuple[str, float, float, float, float]]) -> str:
    objs = "".join(
        f"<object><name>{c}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for c, x1, y1, x2, y2 in boxes
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def write_voc(root: Path, scene: list = SCENE) -> Path:  # type: ignore[type-arg]
    for name, w, h, boxes in scene:
        write_image(root / "images" / name, w, h)
        xml = root / "annotations" / f"{Path(name).stem}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(voc_xml(name, w, h, boxes))
    return root


def write_coco(root: Path) -> Path:
    """SCENE as one COCO file ``root/instances.json`` (image ids from 10) and its images."""
    for name, w, h, _ in SCENE:
        write_image(root / "images" / name, w, h)
    path = root / "instances.json"
    path.write_text(json.dumps(coco_dict(SCENE, 10)))
    return path


def read_back(out: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Boxes of the written dataset by image name, read with our YOLO reader."""
    result = read_yolo(out / "data.yaml")
    assert result.problems == ()
    return {r.image.name: record_boxes(r) for r in result.records}


def expected_boxes() -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {
        name: sorted((c, (float(x1), float(y1), float(x2), float(y2))) for c, x1, y1, x2, y2 in bs)
        for name, _, _, bs in SCENE
    }


def problems_by_file(lines: tuple[str, ...]) -> dict[str, set[str]]:
    """``{file name (before any #): {kind, ...}}`` from summary problem lines."""
    out: dict[str, set[str]] = {}
    for line in lines:
        file, kind, _ = line.split(": ", 2)
        out.setdefault(Path(file.split("#")[0]).name, set()).add(kind)
    return out


def yolo_line(cls: str, x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> str:
    return (
        f"{CLASSES.index(cls)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
    )


def record_boxes(record: ImageRecord) -> list[tuple[str, tuple[float, ...]]]:
    return sorted((b.class_name, tuple(round(v, 2) for v in b.xyxy)) for b in record.boxes)


def run_import_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kanjian"
    return subprocess.run(
        [str(exe), "dataset", "import", *args], capture_output=True, text=True, timeout=120
    )


def coco_dict(scene: list, first_id: int) -> dict[str, list[dict[str, object]]]:  # type: ignore[type-arg]
    """A COCO detection dict of ``scene`` (image ids from ``first_id``; category id = index + 1)."""
    images, anns = [], []
    for i, (name, w, h, boxes) in enumerate(scene, first_id):
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for c, x1, y1, x2, y2 in boxes:
            anns.append(
                {
                    "id": 100 * i + len(anns),
                    "image_id": i,
                    "category_id": CLASSES.index(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}
