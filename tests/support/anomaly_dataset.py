"""A small slice of the real magnetic-tile set, imported as an anomaly dataset.

The slice keeps the shared dataset's own layout (``MT_Free/``, ``MT_<Kind>/`` with a
``NAME.png`` mask beside each ``NAME.jpg``) so the import reads it as it reads the
whole set; the first images of each folder in name order, so every run sees the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kanjian.training.anomaly_data import import_anomaly_dataset

MAGNETIC_TILE = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "magnetic-tile"


def small_magnetic_tile(
    root: Path, *, good: int = 24, per_kind: int = 4, kinds: tuple[str, ...] = ("Blowhole", "Crack")
) -> Path:
    """Copy ``good`` good and ``per_kind`` images of each kind (with masks), import them.

    Returns the imported dataset folder (``root/data``): its split holds
    ``held_back=0.5`` of the good images back for calibration and validation.
    """
    src = root / "src"
    for folder, n in [("MT_Free", good)] + [(f"MT_{k}", per_kind) for k in kinds]:
        (src / folder).mkdir(parents=True)
        for jpg in sorted((MAGNETIC_TILE / folder).glob("*.jpg"))[:n]:
            shutil.copyfile(jpg, src / folder / jpg.name)
            png = jpg.with_suffix(".png")
            if png.exists():
                shutil.copyfile(png, src / folder / png.name)
    out = root / "data"
    import_anomaly_dataset(src, out, held_back=0.5, seed=0)
    return out
