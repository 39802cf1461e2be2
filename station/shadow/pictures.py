"""Pictures of frames the shadow judged differently, kept when the store keeps none.

The store saves the frames of the verdicts in ``store.save_images`` (FAIL and REVIEW by
default), so a part the active model passed and the shadow failed would leave the
report nothing to show. The shadow's runner still holds that frame when the answer
comes back: it writes it here, ``<data_dir>/shadow/<shadow sha[:16]>/<seq>.jpg``, only
when the verdicts differ and the store kept no picture, and keeps the newest
``keep`` of each shadow model (``shadow.keep_pictures``), deleting older ones as it
writes, and the folders of the newest :data:`KEEP_MODELS` shadow models only (a
station tries many candidates over months): the folder is bounded by count whatever
retention does (retention deletes the rows; a picture whose row is gone is only ever
read through its row).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

FOLDER = "shadow"
#: JPEG quality of a kept picture (the store's own default)
QUALITY = 90
#: shadow models whose pictures are kept (the newest folders by modification time)
KEEP_MODELS = 3


def picture_dir(data_dir: Path, sha: str) -> Path:
    """Where shadow model ``sha``'s pictures are kept."""
    return data_dir / FOLDER / sha[:16]


def shadow_image(data_dir: Path, sha: str, seq: int) -> Path | None:
    """The kept picture of inspection ``seq`` for shadow model ``sha``, if there is one."""
    p = picture_dir(data_dir, sha) / f"{int(seq)}.jpg"
    return p if p.is_file() else None


def keep_picture(
    data_dir: Path, sha: str, seq: int, image: NDArray[np.uint8], keep: int
) -> Path | None:
    """Write ``image`` (``(H, W, 3)`` BGR or ``(H, W)`` grey uint8) as inspection ``seq``'s
    picture, then delete the oldest (lowest seq) beyond ``keep``. Never raises: a full
    disk or a bad frame costs the picture only (logged); ``keep`` 0 writes nothing."""
    if keep <= 0:
        return None
    folder = picture_dir(data_dir, sha)
    path = folder / f"{int(seq)}.jpg"
    try:
        if not folder.is_dir():  # a new shadow model: let the oldest models' go
            folder.mkdir(parents=True)
            _trim_models(folder.parent, KEEP_MODELS)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)  # a reader never sees half a file
        _trim(folder, keep)
    except (OSError, ValueError) as e:
        log.warning("shadow: could not keep the picture of inspection %d: %s", seq, e)
        return None
    return path


def _trim_models(root: Path, keep: int) -> None:
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def _trim(folder: Path, keep: int) -> None:
    seqs = sorted(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit())
    for seq in seqs[: max(0, len(seqs) - keep)]:
        (folder / f"{seq}.jpg").unlink(missing_ok=True)
