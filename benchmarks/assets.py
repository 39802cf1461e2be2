"""What the benchmarks run on: the reference model and a 1080p test video.

Both are made on first use and kept under ``<repo>/.cache/bench`` (git-ignored).

- The reference model is YOLO11n at 640x640, built from ``yolo11n.yaml`` with
  random weights (seeded) and exported to ONNX by Ultralytics, offline, in a
  child process (export imports torch and changes process-wide settings).
  Random weights cost exactly what trained ones cost to run, but give almost
  no detections, so NMS has little to do in the end-to-end runs; the
  decode + NMS benchmark feeds synthetic head outputs with a controlled number
  of candidates instead.
- The video is MJPG (the only encoder the opencv wheel has besides mp4v) at
  1920x1080, made of NEU-DET images upscaled with ``cv2.INTER_LINEAR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import CACHE, NEU_DET, REPO, offline_env

_EXPORT = """
import json, sys, torch
torch.manual_seed(0)
from ultralytics import YOLO
model = YOLO(sys.argv[1])
kw = dict(format="onnx", imgsz=int(sys.argv[2]), dynamic=False, nms=False, device="cpu")
try:
    out = model.export(simplify=True, **kw)
except Exception:  # no onnxslim (an offline GPU machine): the graph runs the same unsimplified
    out = model.export(simplify=False, **kw)
print("EXPORTED " + json.dumps(str(out)))
"""


def reference_model(imgsz: int = 640, arch: str = "yolo11n.yaml", cache: Path = CACHE) -> Path:
    """The ONNX file of ``arch`` with random weights at ``imgsz`` (exported once, cached).

    Raises:
        RuntimeError: the export failed (its output is in the message).
    """
    stem = f"{Path(arch).stem}-{imgsz}-random"
    target = cache / "models" / f"{stem}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f"{stem}.work"
    work.mkdir(exist_ok=True)
    offline_env()
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT, arch, str(imgsz)],
        cwd=work, capture_output=True, text=True, timeout=900, env=dict(os.environ),
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("EXPORTED ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"exporting {arch} at {imgsz} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    exported = Path(json.loads(line[len("EXPORTED ") :]))
    if not exported.is_absolute():
        exported = work / exported
    exported.replace(target)
    return target


def neu_det_images(root: Path | None = None) -> list[Path]:
    """NEU-DET's JPEG files, sorted by name.

    Looks in ``root``, else beside the checkout (``<repo>/../shared/datasets/neu-det``),
    else inside it (``<repo>/shared/datasets/neu-det``, what travels to a lent GPU machine),
    else takes the 12 NEU-DET images shipped with the demo (``station/demo/images``,
    saying so once: a video of them repeats images, which costs the same to decode).

    Raises:
        FileNotFoundError: naming the folders when none holds images.
    """
    roots = [root] if root is not None else [NEU_DET, REPO / "shared" / "datasets" / "neu-det"]
    for r in roots:
        files = sorted((r / "images").glob("*.jpg"))
        if files:
            return files
    if root is None:
        from kanjian.station.config import DEMO_IMAGES

        files = sorted(DEMO_IMAGES.glob("*.jpg"))
        if files:
            print(f"NEU-DET not found beside the checkout: the {len(files)} demo images in "
                  f"{DEMO_IMAGES} instead")  # fmt: skip
            return files
    raise FileNotFoundError(
        "no NEU-DET images in "
        + " or ".join(str(r / "images") for r in roots)
        + ": shared/datasets/neu-det must sit beside the checkout"
    )


def make_video(
    n_frames: int,
    size_wh: tuple[int, int] = (1920, 1080),
    fps: float = 30.0,
    cache: Path = CACHE,
    images: list[Path] | None = None,
) -> Path:
    """An MJPG ``.avi`` of ``n_frames`` NEU-DET images upscaled to ``size_wh`` (cached).

    Consecutive frames are different images (the classes interleave), so the
    decoder and the model never see a repeated frame.
    """
    import cv2

    w, h = size_wh
    path = cache / "videos" / f"neu-det-{w}x{h}-{n_frames}f-mjpg.avi"
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    files = images if images is not None else neu_det_images()
    # interleave the six classes (files are sorted by class name)
    step = max(1, len(files) // 6)
    order = [files[(i % 6) * step + (i // 6) % step] for i in range(n_frames)]
    tmp = path.with_suffix(".tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {tmp}")
    try:
        for f in order:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise RuntimeError(f"cannot read {f}")
            writer.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
    finally:
        writer.release()
    tmp.replace(path)
    return path
