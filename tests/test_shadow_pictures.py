"""The shadow's kept pictures stay bounded over a long run: the newest ``keep`` per shadow
model, and the folders of the newest ``KEEP_MODELS`` models only (real JPEG files)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from kanjian.station.shadow.pictures import KEEP_MODELS, keep_picture, picture_dir, shadow_image


def test_pictures_are_bounded_per_model_and_across_models(tmp_path: Path) -> None:
    frame = np.full((40, 60, 3), 128, np.uint8)
    shas = [f"{i:02d}" * 32 for i in range(KEEP_MODELS + 2)]
    for n, sha in enumerate(shas):
        for seq in range(5):
            assert keep_picture(tmp_path, sha, seq, frame, keep=2) is not None
        folder = picture_dir(tmp_path, sha)
        os.utime(folder, (1_000_000 + n, 1_000_000 + n))  # the newest model is the last
        # this model's newest two, readable as the frame that was kept
        assert sorted(p.name for p in folder.glob("*.jpg")) == ["3.jpg", "4.jpg"]
        kept = shadow_image(tmp_path, sha, 4)
        assert kept is not None and cv2.imread(str(kept)).shape == frame.shape
        assert shadow_image(tmp_path, sha, 2) is None
    left = sorted(p.name for p in (tmp_path / "shadow").iterdir())
    assert left == sorted(picture_dir(tmp_path, s).name for s in shas[-KEEP_MODELS:])
    # keep 0 writes nothing
    assert keep_picture(tmp_path, shas[-1], 9, frame, keep=0) is None
