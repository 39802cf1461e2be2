"""Helpers for the sync tests (no tests here): receivers, producers, a topic recorder."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.store import DB_NAME

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
MODEL = ModelRef("synthetic", "1", "a" * 64)
NAMES = ("crazing", "scratches")


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Poll ``pred`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def synthetic(i: int) -> Inspection:
    """A small inspection: every 7th FAIL with two boxes, the rest PASS."""
    img = np.full((32, 48, 3), i % 256, np.uint8)
    frame = Frame(img, i, "cam0", datetime.now(timezone.utc), uri=f"frame-{i}.jpg")
    fail = i % 7 == 0
    n = 2 if fail else 0
    dets = Detections(
        xyxy=np.tile(np.array([[1, 2, 30, 20]], np.float32), (n, 1)),
        confidence=np.linspace(0.9, 0.6, n).astype(np.float32),
        class_id=np.arange(n, dtype=np.int32) % 2,
    )
    verdict = Verdict.FAIL if fail else Verdict.PASS
    return Inspection(frame, verdict, "r", MODEL, dets, NAMES, timings_ms={"infer": 1.0})


@dataclass
class Producer:
    """Puts ``n`` inspections into a store at ``rate`` per second on a thread (the 'loop').

    ``put_ms`` records how long each ``put`` took; the loop is 'blocked' if one waited.
    """

    store: Any
    n: int
    rate: float
    made: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Producer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(self.n):
            insp = synthetic(i)
            self.store.put(insp)
            self.made.append(str(insp.inspection_id))
            ahead = t0 + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def join(self, timeout_s: float = 120) -> None:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "producer did not finish"


class ReceiverProcess:
    """``kanjian platform receive`` as a real subprocess (so it can be SIGKILLed)."""

    def __init__(self, port: int, db: Path, log: Path, gap_check_s: float = 1.0) -> None:
        self.args = [
            sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "receive",
            "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
            "--client-id", "test-receiver", "--gap-check-s", str(gap_check_s),
        ]  # fmt: skip
        self.db, self.log = db, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReceiverProcess:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def ids(self) -> list[str]:
        """Every inspection id in the receiver's database (duplicates would repeat)."""
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return [r[0] for r in con.execute("SELECT inspection_id FROM inspections")]
        except sqlite3.OperationalError:
            return []  # tables not made yet
        finally:
            con.close()


def station_ids(data_dir: Path) -> list[str]:
    """Every inspection id the station committed, in seq order."""
    con = sqlite3.connect(data_dir / DB_NAME, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT id FROM inspections ORDER BY seq")]
    finally:
        con.close()


class Recorder:
    """Subscribes to ``kanjian/v1/#`` and keeps every message (topic, payload, retain)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe("kanjian/v1/#", qos=1)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def leaf(self, leaf: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith("/" + leaf)]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _t, p, _r in self.leaf("events")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def schema_validator(name: str) -> Any:
    """A ``jsonschema`` validator for ``schemas/<name>.v1.json`` (formats checked)."""
    import jsonschema

    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
