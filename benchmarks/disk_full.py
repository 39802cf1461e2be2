"""The station on a real full disk for minutes: memory, rows, the last line, the exit.

Issue 12's measurement, repeatable: ``kanjian run`` (the embedded demo station, every
verdict saved as JPEG) with its data folder on a small real tmpfs. The disk fills by
itself (images), then a filler file takes every byte left, so rows stall too; the
filler is removed (the backlog must drain at once), put back, and the station is
stopped with SIGINT while the disk is full: the last line must name what was not
committed and the exit status must be 1. With ``--floor-mb`` > 0 (a retention floor)
there is no filler: retention must keep the disk from filling, and the exit be 0.

Needs root (``mount -t tmpfs``). Writes a markdown report::

    python -m benchmarks.disk_full --minutes 5 --out benchmarks/results/disk-full.md

Samples once a second: the RSS of the station and its child processes (MB, from
/proc; the store's writer process is one), rows committed (read-only SQLite), free
bytes of the tmpfs.
"""

from __future__ import annotations

import argparse
import os
import platform as std_platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KANJIAN = str(Path(sys.executable).parent / "kanjian")
MB = 1024 * 1024


@dataclass
class Sample:
    """One second of the run: seconds since start, RSS (MB), committed rows, free (MB)."""

    t: float
    rss_mb: float
    rows: int
    free_mb: float
    phase: str


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    exit_status: int | None = None
    last_lines: list[str] = field(default_factory=list)
    integrity: str = ""
    rows_final: int = 0
    images_final: int = 0
    output: str = ""


def _rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its child processes (the store's writer), MB."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _rss_mb(int(child))
    except OSError:
        pass
    return total


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        # read-only, no -shm writes needed beyond what WAL readers do; the disk may be full
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def _fill(filler: Path) -> None:
    """Take every free byte of the file system with ``filler`` (created empty at start:
    on a full tmpfs even a new empty file may be refused)."""
    fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
    try:
        for size in (MB, 4096, 512):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


def measure(minutes: float, size_mb: int, where: Path, floor_mb: float | None = 0.0) -> Run:
    """Run the station on a ``size_mb`` tmpfs at ``where`` for ``minutes``; see the module.

    ``floor_mb``: ``store.retention.min_free_mb`` (0: retention keeps no free floor, so
    the disk fills; > 0: retention deletes images, then rows, to keep it free; ``None``:
    retention as shipped, every setting at its default).
    """
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                   check=True)  # fmt: skip
    run = Run()
    try:
        data = where / "data"
        cfg = where.parent / "station.yaml"
        text = (
            f"store:\n  data_dir: {data}\n  save_images: [PASS, REVIEW, FAIL]\n  min_free_mb: 2\n"
        )
        if floor_mb is not None:
            text += f"  retention:\n    min_free_mb: {floor_mb:g}\n    interval_s: 5\n"
        cfg.write_text(text)
        filler = where / "filler.bin"
        filler.touch()
        total = minutes * 60
        # phases as fractions of the run: fill at 20 %, free at 70 %, fill again at 85 %
        # (with a retention floor there is no filler: the run shows the disk never fills)
        plan = [] if floor_mb else [(0.2, "fill"), (0.7, "free"), (0.85, "fill")]
        proc = subprocess.Popen(
            [KANJIAN, "run", "-c", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        t0 = time.monotonic()
        phase = "images fill the disk"
        while (now := time.monotonic() - t0) < total and proc.poll() is None:
            while plan and now >= plan[0][0] * total:
                _, what = plan.pop(0)
                if what == "fill":
                    _fill(filler)
                    phase = "disk full (filler)"
                else:
                    os.truncate(filler, 0)
                    phase = "space back"
            st = os.statvfs(where)
            free_mb = st.f_bavail * st.f_frsize / MB
            run.samples.append(
                Sample(now, _rss_mb(proc.pid), _rows(data / "kanjian.db"), free_mb, phase)
            )
            time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        run.exit_status = proc.returncode
        run.output = out
        run.last_lines = [ln for ln in out.splitlines() if ln.strip()][-3:]
        filler.unlink(missing_ok=True)
        conn = sqlite3.connect(str(data / "kanjian.db"))
        try:
            run.integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
            run.rows_final = int(conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
            q = "SELECT COUNT(*) FROM inspections WHERE image_path IS NOT NULL"
            run.images_final = int(conn.execute(q).fetchone()[0])
        finally:
            conn.close()
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
    return run


def _floor_arg(floor_mb: float | None) -> str:
    return "" if floor_mb is None else f" --floor-mb {floor_mb:g}"


def _retention_text(floor_mb: float | None) -> str:
    if floor_mb is None:
        return "retention at its defaults"
    return f"`retention: {{min_free_mb: {floor_mb:g}, interval_s: 5}}`"


def _scenario(floor_mb: float | None) -> str:
    if floor_mb:
        return "Retention keeps the floor free; SIGINT stops the station at the end."
    shipped = (
        "Retention as shipped: its 2 GiB floor deletes every image on this disk each pass, "
        "but no row of the last day. "
        if floor_mb is None
        else ""
    )
    return shipped + (
        "Images fill the disk; at 20 % of the run a filler file takes every byte left (rows "
        "stall), at 70 % it is removed, at 85 % it is put back, and SIGINT stops the station "
        "while the disk is full."
    )


def report(run: Run, minutes: float, size_mb: int, floor_mb: float | None) -> str:
    """The run as markdown: the summary, then one row per 10 s."""
    rss = [s.rss_mb for s in run.samples if s.rss_mb > 0]
    lines = [
        f"# Disk full for {minutes:g} minutes: `kanjian run`, every verdict saved",
        "",
        f"Data folder on a {size_mb} MB tmpfs; the demo station (embedded default model and "
        f"images) with `save_images: [PASS, REVIEW, FAIL]`, `min_free_mb: 2` and "
        f"{_retention_text(floor_mb)}. {_scenario(floor_mb)} "
        f"Host: {std_platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{std_platform.python_version()}. Reproduce (root): "
        f"`python -m benchmarks.disk_full --minutes {minutes:g}{_floor_arg(floor_mb)}`.",
        "",
        f"- exit status: {run.exit_status}",
        f"- RSS: first {rss[0] if rss else 0:.0f} MB, peak {max(rss, default=0):.0f} MB, "
        f"last {rss[-1] if rss else 0:.0f} MB",
        f"- rows committed at the end: {run.rows_final:,} ({run.images_final:,} with an image); "
        f"`integrity_check`: {run.integrity}",
        "- last lines:",
        *[f"  - `{ln}`" for ln in run.last_lines],
        "",
        "| t (s) | phase | RSS (MB) | rows committed | free (MB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for s in run.samples[::10]:
        lines.append(f"| {s.t:.0f} | {s.phase} | {s.rss_mb:.0f} | {s.rows:,} | {s.free_mb:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--size-mb", type=int, default=30)
    ap.add_argument(
        "--floor-mb",
        type=float,
        default=None,
        help="store.retention.min_free_mb, with interval_s 5 (default: retention as shipped)",
    )
    ap.add_argument("--log", type=Path, default=None, help="the station's whole output")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (else stdout)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kanjian-diskfull-") as tmp:
        where = Path(tmp) / "disk"
        where.mkdir()
        run = measure(args.minutes, args.size_mb, where, args.floor_mb)
    text = report(run, args.minutes, args.size_mb, args.floor_mb)
    if args.log:
        args.log.write_text(run.output)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
