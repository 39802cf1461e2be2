"""Where the store keeps an inspection's picture, and the temp files a killed writer leaves."""

from __future__ import annotations

import re
from pathlib import Path

from kanjian.inference.types import Inspection
from kanjian.station.records import utc_iso

#: the images' folder inside the data folder
IMAGES_DIR = "images"


def image_relpath(insp: Inspection) -> str:
    """Where an inspection's image is saved, relative to the data folder (by UTC capture date)."""
    day = utc_iso(insp.frame.captured_at)[:10]
    return f"{IMAGES_DIR}/{day}/{insp.inspection_id}.jpg"


#: the temp files :meth:`ResultStore._save_image` writes before the rename: ``<uuid>.tmp``
_TMP_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp")


def remove_leftover_tmp(images_dir: Path) -> int:
    """Delete the temp images a killed writer left (``images/<day>/<uuid>.tmp``); how many.

    An image is written to ``<uuid>.tmp`` and renamed to ``<uuid>.jpg``; a kill
    between the two leaves the temp file, which no row names. Only files of
    exactly that name pattern, one folder deep, are removed.
    """
    removed = 0
    if not images_dir.is_dir():
        return 0
    for path in images_dir.glob("*/*.tmp"):
        if _TMP_NAME.fullmatch(path.name) and not path.is_symlink() and path.is_file():
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed
