"""Time drawing a labelled 640x640 frame for the screen: OpenCV's labels (as before issue
13) against Pillow/FreeType labels in the shipped font, English and Chinese, round-robin
in one process (the machine is noisy: compare side by side).

    PYTHONPATH=.mypy .venv/bin/python scripts/label_draw_ms.py [--fresh]

Six boxes with labels and the verdict border (``annotate.draw``). By default the labels'
confidences repeat every 100 frames (rendered labels are cached, as on a line where the
same classes and scores recur); ``--fresh`` makes every label new (nothing cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# the checkout's code, also without an install (.mypy/kanjian links to the top-level folders)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".mypy"))

from kanjian.appliance_api.http.annotate import Box, draw
from kanjian.inference.heads import drawing

EN = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
ZH = ["龟裂", "夹杂", "斑块", "麻点", "压入氧化皮", "划痕"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fresh", action="store_true", help="a new label text every frame")
    ap.add_argument("--frames", type=int, default=600)
    args = ap.parse_args()
    img = np.random.default_rng(0).integers(0, 255, (640, 640, 3), np.uint8)
    real = drawing.put_label

    def opencv_only(*_: object, **__: object) -> bool:
        return False  # drawing.draw_boxes then draws the label with OpenCV, as before

    def boxes(names: list[str], r: int) -> list[Box]:
        conf = (lambda i: f"{r}.{i}") if args.fresh else (lambda i: f"0.{(r * 7 + i) % 100:02d}")
        return [
            Box((40.0 + 90 * i, 60.0 + 80 * i, 120.0 + 90 * i, 160.0 + 80 * i), i, f"{n} {conf(i)}")
            for i, n in enumerate(names)
        ]

    cases = {
        "opencv, en (before)": (EN, opencv_only),
        "pillow, en": (EN, real),
        "pillow, zh": (ZH, real),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.frames):
        for k, (names, put) in cases.items():
            drawing.put_label = put  # type: ignore[assignment]
            b = boxes(names, r)
            t0 = time.perf_counter()
            draw(img, b, "FAIL")
            times[k].append((time.perf_counter() - t0) * 1e3)
    drawing.put_label = real
    for k, v in times.items():
        v = v[100:]  # after the font's first load and the first glyphs
        print(f"{k:20s} median {statistics.median(v):.3f} ms, p90 {np.percentile(v, 90):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
