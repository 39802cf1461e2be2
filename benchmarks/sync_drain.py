"""Drain rate of the outbox to a local Mosquitto, end to end, alone and while the station inspects.

Run: ``python -m benchmarks.sync_drain [--backlog 20000] [--model PATH] [--json out.json]``.

Real peers only: a Mosquitto process (Debian package, persistence on), the
reference receiver as its own process (``kanjian platform receive``, SQLite,
synchronous=FULL), the station's own SQLite store. Two phases:

1. **backlog alone**: ``--backlog`` synthetic inspections are committed while
   the broker is down; then broker and receiver start and we time (a) until
   every entry is acknowledged by the broker (PUBACK) and (b) until every entry
   is confirmed by the receiver (stored in its database). Rate = entries / time.
2. **while inspecting**: a real station (``build_station``: folder of NEU-DET
   images looping, the ONNX model, sync enabled) starts on top of a fresh
   backlog of the same size. We time the backlog's drain while the loop runs,
   and compare the loop's frames/s during the drain with its frames/s after
   (sync idle, same process, same model), and with sync disabled.

Rates are whole-run averages (entries / seconds), so one number per phase; the
machine's load average is printed with them (2-core machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, NEU_DET, REPO, system_info

sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "peers"))


@dataclass(frozen=True)
class DrainReport:
    """Results (rates in inspections per second, times in seconds)."""

    backlog: int
    alone_ack_s: float
    alone_confirm_s: float
    alone_ack_rate: float
    alone_confirm_rate: float
    inspect_drain_s: float
    inspect_drain_rate: float
    max_rate: float
    fps_during_drain: float
    fps_after_drain: float
    fps_sync_disabled: float
    model: str
    system: list[str]

    def markdown(self) -> str:
        return "\n".join(
            [
                "# Outbox drain to a local Mosquitto",
                "",
                *[f"- {line}" for line in self.system],
                "",
                "| phase | entries | seconds | inspections/s |",
                "|---|---:|---:|---:|",
                f"| backlog alone: broker PUBACK | {self.backlog} | {self.alone_ack_s:.2f} "
                f"| {self.alone_ack_rate:.0f} |",
                f"| backlog alone: receiver confirmed | {self.backlog} | "
                f"{self.alone_confirm_s:.2f} | {self.alone_confirm_rate:.0f} |",
                f"| while the station inspects (max_rate {self.max_rate:g}): confirmed "
                f"| {self.backlog} | "
                f"{self.inspect_drain_s:.2f} | {self.inspect_drain_rate:.0f} |",
                "",
                f"Station loop ({self.model}): {self.fps_during_drain:.1f} frames/s during the "
                f"drain, {self.fps_after_drain:.1f} after it (sync idle), "
                f"{self.fps_sync_disabled:.1f} with sync disabled (mean of a run before and one after).",
            ]
        )


def _fill(data_dir: Path, n: int) -> None:
    from kanjian.station.store import ResultStore
    from tests.support.sync import synthetic

    store = ResultStore(data_dir, save_verdicts=())
    for i in range(n):
        store.put(synthetic(i))
    store.flush(600)
    store.close()


def _receiver(port: int, db: Path, log: Path) -> Any:
    from tests.support.sync import ReceiverProcess

    return ReceiverProcess(port, db, log, gap_check_s=5.0).start()


MAX_RATE = 0.0  # sync.max_rate of the station in phase 2 (--max-rate)


def _sync_cfg(port: int, max_rate: float = 0.0) -> dict[str, Any]:
    return {"enabled": True, "mqtt": {"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1},
            "confirm_timeout_s": 10.0, "close_drain_s": 0.0, "max_rate": max_rate}  # fmt: skip


def phase_alone(tmp: Path, n: int) -> tuple[float, float]:
    from mosquitto import Mosquitto

    from kanjian.station.sync.config import SyncConfig
    from kanjian.station.sync.worker import Identity, SyncWorker

    data = tmp / "alone"
    _fill(data, n)
    broker = Mosquitto(tmp / "broker-alone")
    w = SyncWorker(data / "kanjian.db", data, SyncConfig.model_validate(_sync_cfg(broker.port)),
                   Identity("site", "line", "bench")).start()  # fmt: skip
    rec = None
    try:
        broker.start()
        rec = _receiver(broker.port, tmp / "alone-platform.db", tmp / "alone-receiver.log")
        time.sleep(0.5)  # the receiver subscribes before the station connects
        t0 = time.perf_counter()
        t_ack = None
        while True:
            s = w.status()
            if t_ack is None and s.acked >= n:
                t_ack = time.perf_counter() - t0
            if s.backlog == 0 and s.last_seq == n and t_ack is not None:
                return t_ack, time.perf_counter() - t0
            time.sleep(0.02)
    finally:
        w.stop(0)
        if rec is not None:
            rec.stop()
        broker.stop()


def _station_cfg(tmp: Path, model: Path, port: int | None, data: Path) -> Any:
    from kanjian.station.config import StationConfig

    return StationConfig.model_validate(
        {
            "station": {"id": "bench", "site": "site", "line": "line"},
            "camera": {"kind": "folder", "path": str(NEU_DET / "images"), "loop": True},
            "model": {"path": str(model), "providers": ["cpu"]},
            "store": {"data_dir": str(data)},
            "sync": _sync_cfg(port, MAX_RATE) if port else {"enabled": False},
        }
    )


def _fps(station: Any, seconds: float) -> float:
    f0, t0 = station.stats.frames, time.perf_counter()
    time.sleep(seconds)
    return (station.stats.frames - f0) / (time.perf_counter() - t0)


WINDOW_S = 8.0  # frames/s is measured over this many seconds (--window-s)


def _baseline(tmp: Path, model: Path, name: str) -> float:
    """Frames/s of the same station with sync disabled."""
    from kanjian.station.pipeline import build_station

    st = build_station(_station_cfg(tmp, model, None, tmp / name))
    runner = threading.Thread(target=st.run, daemon=True)
    runner.start()
    time.sleep(min(2.0, WINDOW_S))
    fps = _fps(st, WINDOW_S)
    st.stop()
    runner.join(30)
    st.close()
    return fps


def phase_inspecting(tmp: Path, n: int, model: Path) -> tuple[float, float, float, float]:
    """Drain time, fps during and after it, and fps without sync (before and after, averaged)."""
    from mosquitto import Mosquitto

    from kanjian.station.pipeline import build_station
    from kanjian.station.sync.service import SyncService  # (importing it registers "sync")

    fps_off = [_baseline(tmp, model, "nosync-before")]
    data = tmp / "inspecting"
    _fill(data, n)
    broker = Mosquitto(tmp / "broker-inspecting").start()
    rec = _receiver(broker.port, tmp / "insp-platform.db", tmp / "insp-receiver.log")
    time.sleep(0.5)
    st = build_station(_station_cfg(tmp, model, broker.port, data))
    assert st.channels.get(SyncService) is not None
    runner = threading.Thread(target=st.run, daemon=True)
    t0 = time.perf_counter()
    f0 = st.stats.frames
    runner.start()
    try:
        while True:  # the old backlog is drained when the receiver confirmed seq 1..n
            if _through(tmp / "insp-platform.db") >= n:
                break
            time.sleep(0.05)
        drain_s = time.perf_counter() - t0
        fps_during = (st.stats.frames - f0) / drain_s
        fps_after = _fps(st, WINDOW_S)
    finally:
        st.stop()
        runner.join(30)
        st.close()
        rec.stop()
        broker.stop()
    fps_off.append(_baseline(tmp, model, "nosync-after"))
    return drain_s, fps_during, fps_after, sum(fps_off) / 2


def _through(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute("SELECT MAX(through) FROM streams").fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _default_model() -> Path:
    found = sorted((REPO / ".cache" / "test-models").glob("detect-*/model.onnx"))
    if not found:
        raise SystemExit("no model: pass --model PATH (bundle dir or .onnx)")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backlog", type=int, default=20_000, help="entries to drain")
    parser.add_argument("--model", type=Path, default=None, help="bundle dir or .onnx")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--window-s", type=float, default=8.0, help="frames/s window, seconds")
    parser.add_argument(
        "--max-rate", type=float, default=0.0, help="sync.max_rate while inspecting (0: none)"
    )
    parser.add_argument("--skip-alone", action="store_true", help="only the second phase")
    args = parser.parse_args(argv)
    global WINDOW_S, MAX_RATE
    WINDOW_S, MAX_RATE = args.window_s, args.max_rate
    model = args.model or _default_model()
    info = system_info()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kanjian-sync-bench-") as d:
        tmp = Path(d)
        ack_s, conf_s = (float("nan"),) * 2 if args.skip_alone else phase_alone(tmp, args.backlog)
        drain_s, fps_during, fps_after, fps_off = phase_inspecting(tmp, args.backlog, model)
    lines = replace(info, loadavg_end=os.getloadavg()).lines()
    n = args.backlog
    report = DrainReport(
        backlog=n,
        alone_ack_s=ack_s,
        alone_confirm_s=conf_s,
        alone_ack_rate=n / ack_s,
        alone_confirm_rate=n / conf_s,
        inspect_drain_s=drain_s,
        inspect_drain_rate=n / drain_s,
        max_rate=args.max_rate,
        fps_during_drain=fps_during,
        fps_after_drain=fps_after,
        fps_sync_disabled=fps_off,
        model=str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        system=lines,
    )
    print(report.markdown())
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
