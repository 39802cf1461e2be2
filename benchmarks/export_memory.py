"""``kanjian dataset export`` at growing sizes: peak RSS and items/s of a fresh process each.

Stores of N inspections are built by ``benchmarks/big_store.py`` (seed 7), and every
row gets a real JPEG on disk (64x36 noise), so every exportable row is exported with
its image. Each export runs as its own ``kanjian dataset export`` process; its peak
RSS is the child's ``ru_maxrss``. Constant memory means the peak does not grow with N::

    python -m benchmarks.export_memory --sizes 10000 100000 --out benchmarks/results/export-memory.md
"""

from __future__ import annotations

import argparse
import os
import platform as std_platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.big_store import CLASSES, build

KANJIAN = str(Path(sys.executable).parent / "kanjian")


def store_with_images(data: Path, rows: int) -> int:
    """Build a ``rows``-row store at ``data`` whose every row has its frame on disk;
    returns the number of image files written."""
    build(data, rows, seed=7)
    conn = sqlite3.connect(data / "kanjian.db")
    try:
        with conn:
            conn.execute(
                "UPDATE inspections SET image_path = "
                "'images/' || substr(captured_at, 1, 10) || '/' || id || '.jpg'"
            )
        paths = [str(r[0]) for r in conn.execute("SELECT image_path FROM inspections")]
    finally:
        conn.close()
    ok, jpeg = cv2.imencode(
        ".jpg", np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    )
    assert ok
    data_bytes = jpeg.tobytes()
    for p in paths:
        f = data / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data_bytes)
    return len(paths)


def export_once(data: Path, out: Path) -> tuple[float, float, int]:
    """One export in a fresh process: (peak RSS MiB, seconds, images exported)."""
    probe = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    cmd = [KANJIAN, "dataset", "export", str(data), str(out), "--label-conf", "0",
           "--classes", ",".join(CLASSES)]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    rc, maxrss_kb = (int(x) for x in res.stdout.split())
    if rc != 0:
        raise SystemExit(f"kanjian dataset export exited {rc}: {res.stderr[-2000:]}")
    images = sum(1 for _ in out.rglob("*.jpg"))
    return maxrss_kb / 1024, seconds, images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, default=None, help="markdown report (else stdout)")
    args = ap.parse_args()
    lines = [
        "# `kanjian dataset export`: peak RSS against the items exported",
        "",
        f"Host: {std_platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{std_platform.python_version()}. Each store built by `benchmarks/big_store.py` "
        "(seed 7) with a 64x36 JPEG on disk for every row; each export a fresh "
        "`kanjian dataset export DATA OUT --label-conf 0 --classes ...` process (peak RSS: "
        "its `ru_maxrss`). Reproduce: `python -m benchmarks.export_memory --sizes "
        f"{' '.join(map(str, args.sizes))}`.",
        "",
        "| rows | images exported | peak RSS (MiB) | seconds | images/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="kanjian-export-mem-") as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"store-{n}"
            store_with_images(data, n)
            rss, seconds, images = export_once(data, Path(tmp) / f"out-{n}")
            lines.append(
                f"| {n:,} | {images:,} | {rss:.0f} | {seconds:.1f} | {images / seconds:,.0f} |"
            )
            print(lines[-1], flush=True)
            shutil.rmtree(data)
            shutil.rmtree(Path(tmp) / f"out-{n}")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
