"""One station alone on the benchmark video, for profiling (py-spy) and quick checks.

    python -m benchmarks.station_loop --workers 2 --intra 1 --frames 150
    py-spy record --threads --idle -f raw -o loop.txt -- \\
        .venv/bin/python -m benchmarks.station_loop --frames 150

Builds the same station as the end-to-end benchmark (looping 1080p MJPG video,
``lossless``, SQLite ``FULL`` in a temp dir), runs ``--warm`` frames, then
``--frames`` timed ones, and prints FPS, process CPU ms per frame and the
per-stage medians. ``--model-only`` runs the model-alone contender instead.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import assets
from benchmarks.common import offline_env
from benchmarks.e2e import StationSetting, _ModelRunner, _StationRunner, station_config


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--workers", type=int, default=1, help="runtime.inference_workers")
    p.add_argument("--intra", type=int, default=2, help="model.intra_op_threads")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--warm", type=int, default=8)
    p.add_argument("--model", type=Path, default=None, help="default: the reference YOLO11n 640")
    p.add_argument("--model-only", action="store_true", help="time session.run alone")
    args = p.parse_args(argv)
    offline_env()
    from kanjian.kernels import configure_threads

    configure_threads(None, layer="workqueue")
    model = args.model or assets.reference_model()
    video = assets.make_video(110)
    setting = StationSetting(args.workers, args.intra)
    tmp = Path(tempfile.mkdtemp(prefix="kanjian-bench-loop-"))
    try:
        runner = (
            _ModelRunner(model, setting)
            if args.model_only
            else _StationRunner(station_config(model, video, tmp / "st", setting))
        )
        runner.block(args.warm, record=False)
        t0, c0 = time.perf_counter(), time.process_time()
        runner.block(args.frames, record=True)
        c1, t1 = time.process_time(), time.perf_counter()
        runner.settle()
        runner.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = "model alone" if args.model_only else "station"
    print(
        f"{what}, {setting.label}: {args.frames / (t1 - t0):.2f} FPS, "
        f"{(c1 - c0) * 1e3 / args.frames:.1f} CPU ms per frame"
    )
    for k, v in runner.stages.items():
        print(f"  {k}: median {np.median(v):.2f} ms, p99 {np.percentile(v, 99):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
