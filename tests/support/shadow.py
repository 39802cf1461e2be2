"""Shadow-model test helpers: a station judging NEU-DET with the test detect model (bundle
``a``), the repository's demo model (another real detect model of the same classes,
trained apart) registered to be its shadow, and oracles that run a model directly on
the frames the station judged. This module holds no tests."""

from __future__ import annotations

import json
import sqlite3
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kanjian.station.config import DEMO_MODEL
from tests.support import api as S
from tests.support.station_config import station_config, write_config

#: the shadow in these tests: a different trained model than the active one
SHADOW_BUNDLE = DEMO_MODEL


def config(tmp: Path, bundles: Any, n_images: int = 12, **sections: Any) -> dict[str, Any]:
    """station.yaml (as a dict) judging ``n_images`` NEU-DET images with bundle ``a``
    under rules made from its scores; ``sections`` merged over it."""
    images = S.copy_images(tmp / "images", n_images)
    return station_config(
        tmp / "data", bundle=bundles.a, images=images, rules=bundles.rules_for(images), **sections
    )


def build(tmp: Path, cfg: dict[str, Any]) -> Any:
    """A station built from ``cfg`` (the shadow channel registered)."""
    from kanjian.station.config import load_config
    from kanjian.station.pipeline import build_station
    from kanjian.station.shadow import service as _shadow  # noqa: F401  registers "shadow"

    return build_station(load_config(write_config(tmp / "station.yaml", cfg)))


def run_loop(station: Any) -> threading.Thread:
    t = threading.Thread(target=station.run, name="test-loop", daemon=True)
    t.start()
    return t


def zip_bundle(bundle: Path, dest: Path) -> Path:
    """``bundle`` packed as a station takes an upload (one folder at the top)."""
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(bundle.rglob("*")):
            zf.write(p, f"bundle/{p.relative_to(bundle)}")
    return dest


def register(station: Any, bundle: Path, tmp: Path) -> str:
    """Register ``bundle`` in the station's model registry (golden check and all)."""
    from kanjian.station.state.audit import Actor

    entry, _ = station.state.models.ingest(zip_bundle(bundle, tmp / "shadow.zip"), Actor("test"))
    return str(entry.sha256)


def service(station: Any) -> Any:
    from kanjian.station.shadow.service import ShadowService

    svc = station.channels.get(ShadowService)
    assert svc is not None, "the shadow channel is not attached"
    return svc


def read_frame(uri: str) -> np.ndarray[Any, Any]:
    """The frame the folder camera gave for ``uri``, decoded as it decodes it."""
    import cv2

    data = np.frombuffer(Path(uri).read_bytes(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert image is not None, uri
    return image


def oracle(model: Any, image: np.ndarray[Any, Any], rules: Any, conf: float | None) -> Any:
    """``(verdict, reason, [[class_id, class_name, confidence, x1, y1, x2, y2], ...])`` of
    ``model`` on ``image``, computed directly (no station, no child)."""
    from kanjian.inference.reason_where import place_reason

    pred = model.predict(image, conf, None, None)
    r = place_reason(model.judge(pred, rules), (image.shape[1], image.shape[0]), None)
    d = pred.detections
    names = model.info.class_names
    boxes = [
        [int(c), names[int(c)], float(s), *map(float, b)]
        for c, s, b in zip(d.class_id, d.confidence, d.xyxy, strict=True)
    ]
    return r.verdict.value, r.reason, boxes


def same_boxes(got: list[list[Any]], want: list[list[Any]]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if g[0] != w[0] or g[1] != w[1]:
            return False
        if not np.allclose(g[2:], w[2:], atol=1e-3, rtol=0):
            return False
    return True


def shadow_rows(db: Path, sha: str) -> list[dict[str, Any]]:
    """The shadow model's rows joined with their inspections, by seq."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        q = (
            "SELECT r.*, i.id AS insp_id, i.uri, i.verdict AS active_verdict "
            "FROM shadow_results r JOIN inspections i ON i.seq = r.seq "
            "WHERE r.model_sha256 = ? ORDER BY r.seq"
        )
        out = [dict(r) for r in con.execute(q, [sha])]
    finally:
        con.close()
    for r in out:
        r["detections"] = json.loads(r["detections_json"])
    return out


def active_boxes(db: Path, inspection_id: str) -> list[list[Any]]:
    rows = S.sql(
        db,
        "SELECT class_id, class_name, confidence, x1, y1, x2, y2 FROM detections "
        "WHERE inspection_id = ? ORDER BY idx",
        (inspection_id,),
    )
    return [list(r) for r in rows]
