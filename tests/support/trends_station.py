"""A station with known rows for the history and shift pages' tests (this module holds no tests).

:func:`start` writes about 800 inspections through the real :class:`ResultStore`
at chosen times over two and a half days of Shanghai local time (+08:00, across
two midnights and every shift start), some of them out of time order (frames
captured up to 90 min before the rows around them), with an hour where FAIL runs
away and hours with no row at all; then serves that store with ``kanjian serve``
in a process whose local time zone is ``Asia/Shanghai`` (so "local hours" and
shift starts are not UTC's), triggered mode (no new rows), and gives operator
feedback through the real API (some answers changed later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import httpx
import numpy as np

from tests.support import api as S
from tests.support.station_config import station_config, write_config

ZONE_NAME = "Asia/Shanghai"
ZONE = ZoneInfo(ZONE_NAME)
#: the rows span [FIRST, LAST) local time
FIRST = datetime(2026, 3, 2, 4, 0, tzinfo=ZONE)
LAST = datetime(2026, 3, 4, 9, 0, tzinfo=ZONE)
#: no row in this stretch (empty hours: the p-chart has no point there)
GAP = (datetime(2026, 3, 3, 2, 0, tzinfo=ZONE), datetime(2026, 3, 3, 4, 30, tzinfo=ZONE))
#: FAIL runs away in this hour, with a part every 30 s (a point above its UCL)
BURST = (datetime(2026, 3, 3, 10, 0, tzinfo=ZONE), datetime(2026, 3, 3, 11, 0, tzinfo=ZONE))
#: every LATE_EVERY-th row was captured LATE_BY before its neighbours (out of seq order)
LATE_EVERY, LATE_BY = 37, timedelta(minutes=90)
SHIFT_STARTS = ["06:00", "14:00", "22:00"]
CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
#: defect classes drawn with these weights, so the Pareto has a clear order
DEFECT_WEIGHTS = (0.08, 0.2, 0.25, 0.05, 0.02, 0.4)


@dataclass
class TrendStation:
    """The served station. ``tokens``: role -> bearer token; ``feedback``: (inspection id,
    kind, class) in the order given."""

    url: str
    served: Any
    db_path: Path
    tokens: dict[str, str]
    feedback: list[tuple[str, str, str | None]]

    def client(self, role: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return S.sql(self.db_path, query, args)


def _plan(rng: np.random.Generator) -> list[tuple[datetime, str, list[tuple[int, float]]]]:
    """(captured_at, verdict, [(class id, confidence)]) in commit order."""
    out = []
    t = FIRST
    k = 0
    while t < LAST:
        burst = BURST[0] <= t < BURST[1]
        t += timedelta(seconds=30) if burst else timedelta(seconds=float(rng.exponential(240)))
        if GAP[0] <= t < GAP[1] or t >= LAST:
            continue
        k += 1
        p = (0.3, 0.6, 0.08, 0.01, 0.01) if burst else (0.76, 0.1, 0.08, 0.04, 0.02)
        verdict = str(rng.choice(["PASS", "FAIL", "REVIEW", "ERROR", "MISSED"], p=p))
        boxes: list[tuple[int, float]] = []
        if verdict in ("FAIL", "REVIEW"):
            for _ in range(int(rng.integers(1, 3))):
                boxes.append((int(rng.choice(6, p=DEFECT_WEIGHTS)), float(rng.uniform(0.5, 0.95))))
        elif verdict == "PASS" and rng.random() < 0.3:
            boxes.append((int(rng.integers(0, 6)), float(rng.uniform(0.05, 0.2))))
        at = t - LATE_BY if k % LATE_EVERY == 0 else t
        out.append((at, verdict, boxes))
    return out


def write_rows(data: Path, seed: int = 13) -> int:
    """Write the plan's rows through the real store into ``data``; how many."""
    from kanjian.camera.frame import Frame
    from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
    from kanjian.station.store import ResultStore

    rng = np.random.default_rng(seed)
    from kanjian.station.config import DEMO_IMAGES

    # the demo's own NEU-DET pictures (shipped with the package), one per class
    images = {
        c: cv2.imread(str(next(DEMO_IMAGES.glob(f"{c}_*.jpg"))), cv2.IMREAD_COLOR) for c in CLASSES
    }
    model = ModelRef("neu-det-s4", "1.2", "c" * 64)
    store = ResultStore(data, min_free_mb=0)
    plan = _plan(rng)
    for i, (at, verdict, boxes) in enumerate(plan):
        cls = CLASSES[boxes[0][0]] if boxes else CLASSES[i % 6]
        xyxy = np.array(
            [[20 + 10 * j, 30, 120 + 10 * j, 150] for j in range(len(boxes))], np.float32
        )
        dets = (
            Detections(
                xyxy=xyxy.reshape(-1, 4),
                confidence=np.array([c for _, c in boxes], np.float32),
                class_id=np.array([k for k, _ in boxes], np.int32),
            )
            if boxes
            else Detections.empty()
        )
        frame = Frame(images[cls], i, "cam0", at.astimezone(ZoneInfo("UTC")), uri=f"{cls}.jpg")
        store.put(Inspection(frame, Verdict(verdict), "r", model, dets, CLASSES, timings_ms={}))
        if i % 100 == 99:  # every image saved: the queue never holds too many frames
            assert store.flush(120.0)
    assert store.flush(120.0)
    store.close()
    return len(plan)


def _tokens(db_path: Path) -> dict[str, str]:
    from kanjian.appliance_api.http.auth import Role, TokenStore
    from kanjian.station.store import open_db

    db = open_db(db_path)
    try:
        ts = TokenStore(db)
        return {r.value: ts.create(f"trends-{r.value}", r, "tests").secret for r in Role}
    finally:
        db.conn.close()


def _give_feedback(st: TrendStation) -> None:
    """Answers on rows spread over the days, by verdict; two FAIL answers changed later."""
    by_verdict: dict[str, list[str]] = {}
    for iid, verdict in st.sql("SELECT id, verdict FROM inspections ORDER BY seq"):
        by_verdict.setdefault(verdict, []).append(iid)

    def spread(verdict: str, n: int) -> list[str]:
        ids = by_verdict[verdict]
        return [ids[(k * len(ids)) // n] for k in range(n)]

    plan: list[tuple[str, str, str | None]] = []
    fails = spread("FAIL", 16)
    plan += [(i, "not_defect", None) for i in fails[:6]]
    plan += [(i, "confirm_defect", None) for i in fails[6:11]]
    plan += [(i, "wrong_class", "crazing") for i in fails[11:14]]
    plan += [(i, "confirm_defect", None) for i in fails[14:16]]
    plan += [(i, "not_defect", None) for i in fails[14:16]]  # changed: the latest counts
    reviews = spread("REVIEW", 5)
    plan += [(i, "not_defect", None) for i in reviews[:3]]
    plan += [(i, "confirm_defect", None) for i in reviews[3:]]
    passes = spread("PASS", 7)
    plan += [(i, "confirm_defect", None) for i in passes[:3]]
    plan += [(i, "wrong_class", "patches") for i in passes[3:5]]
    plan += [(i, "not_defect", None) for i in passes[5:]]
    plan += [(by_verdict["ERROR"][0], "confirm_defect", None)]
    for k, (iid, kind, cls) in enumerate(plan):
        role = "operator" if k % 2 else "engineer"
        body: dict[str, Any] = {"kind": kind}
        if cls:
            body["class_name"] = cls
        with st.client(role) as c:
            r = c.post(f"/api/inspections/{iid}/feedback", json=body)
            assert r.status_code in (200, 201), r.text
    st.feedback = plan


def start(tmp: Path) -> TrendStation:
    """Write the rows, serve them (local time: Shanghai), give the feedback."""
    from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL

    data = tmp / "data"
    write_rows(data)
    db_path = data / "kanjian.db"
    tokens = _tokens(db_path)
    images = tmp / "images"
    images.mkdir()
    first = sorted(DEMO_IMAGES.glob("*.jpg"))[0]
    (images / first.name).write_bytes(first.read_bytes())
    port = S.free_port()
    cfg = station_config(
        data,
        bundle=DEMO_MODEL,
        images=images,
        trigger={"mode": "triggered"},  # nothing judged unless triggered: the rows stay known
        store={"retention": {"enabled": False}},  # the rows are in March 2026: keep them
        api={"port": port, "shift_starts": SHIFT_STARTS},
    )
    config = write_config(tmp / "station.yaml", cfg)
    old = os.environ.get("TZ")
    # start_serve hands the environment to the server process; restored right after
    os.environ["TZ"] = ZONE_NAME
    try:
        served = S.start_serve(config, port, tmp)
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
    st = TrendStation(served.url, served, db_path, tokens, [])
    try:
        _give_feedback(st)
    except BaseException:
        served.stop()
        raise
    return st
