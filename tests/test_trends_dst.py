"""Hourly and shift counts across a daylight-saving change, against zoneinfo row by row.

The rows are written by the real store at a fixed step of real time through the nights
Europe/Berlin changes its clocks (2026-03-29: 02:00 CET is 03:00 CEST, the day has 23
hours; 2026-10-25: 03:00 CEST is 02:00 CET again, 02:xx happens twice). The expected
hours and shifts are built from the definition, not from the code under test: every
wall-clock hour of the night, kept once per offset it exists under (none in the gap,
two in the repeated hour), and each row put in the hour and shift its own local wall
clock (``zoneinfo``) says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from kanjian.appliance_api.http import trends as T
from tests.support import api as S
from tests.support import trends_oracle as O

ZONE = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
SHIFT_STARTS = ["06:00", "14:00", "22:00"]
#: (since, until) local: an evening to a morning around each change
NIGHTS = (
    (datetime(2026, 3, 28, 19, 0, tzinfo=ZONE), datetime(2026, 3, 29, 9, 0, tzinfo=ZONE)),
    (datetime(2026, 10, 24, 19, 0, tzinfo=ZONE), datetime(2026, 10, 25, 9, 0, tzinfo=ZONE)),
)
STEP = timedelta(minutes=4, seconds=7)  # rows land on every minute of an hour over time
VERDICTS = O.VERDICTS


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The store's file with a row every :data:`STEP` of real time through both nights
    (a little before and after each window too, so its edges are tested)."""
    from kanjian.camera.frame import Frame
    from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
    from kanjian.station.store import ResultStore

    data = tmp_path_factory.mktemp("dst") / "data"
    store = ResultStore(data, min_free_mb=0, save_verdicts=())
    rng = np.random.default_rng(29)
    image = np.zeros((16, 16), np.uint8)
    model = ModelRef("m", "1", "d" * 64)
    k = 0
    for since, until in NIGHTS:
        t = since.astimezone(UTC) - timedelta(minutes=37)
        while t < until.astimezone(UTC) + timedelta(minutes=37):
            verdict = str(rng.choice(VERDICTS, p=(0.7, 0.15, 0.1, 0.03, 0.02)))
            frame = Frame(image, k, "cam0", t)
            store.put(
                Inspection(
                    frame, Verdict(verdict), "r", model, Detections.empty(), ("x",), timings_ms={}
                )
            )
            k += 1
            t += STEP
    assert store.flush(120.0)
    store.close()
    yield data / "kanjian.db"


def _wall_hours(since: datetime, until: datetime) -> list[tuple[str, timedelta | None]]:
    """Every local hour in ``[since, until)`` as ``(wall clock "YYYY-MM-DDTHH", offset)``,
    oldest first: each wall-clock hour once per offset it exists under (a wall time in
    the spring gap does not come back from UTC unchanged; one in the autumn's repeated
    hour has two offsets, fold 0 first)."""
    out: list[tuple[str, timedelta | None]] = []
    wall = since.replace(tzinfo=None)
    while wall < until.replace(tzinfo=None):
        for fold in (0, 1):
            t = wall.replace(tzinfo=ZONE, fold=fold)
            back = t.astimezone(UTC).astimezone(ZONE)
            key = (wall.strftime("%Y-%m-%dT%H"), t.utcoffset())
            if back.replace(tzinfo=None) == wall and key not in out:
                out.append(key)
        wall += timedelta(hours=1)
    return out


def _rows(db: Path, since: datetime, until: datetime) -> list[tuple[datetime, str]]:
    return [
        (datetime.fromisoformat(at).astimezone(ZONE), v)
        for at, v in S.sql(
            db,
            "SELECT captured_at, verdict FROM inspections WHERE captured_at >= ? AND "
            "captured_at < ?",
            (O.utc(since), O.utc(until)),
        )
    ]


def _shift_of(t: datetime) -> tuple[str, str]:
    """(local date the shift starts on, its "HH:MM") from the row's wall clock."""
    hhmm = t.strftime("%H:%M")
    if hhmm < "06:00":
        return ((t.date() - timedelta(days=1)).isoformat(), "22:00")
    label = "22:00" if hhmm >= "22:00" else "14:00" if hhmm >= "14:00" else "06:00"
    return (t.date().isoformat(), label)


@pytest.mark.parametrize("night", NIGHTS, ids=["spring", "autumn"])
def test_hourly_and_shift_counts_follow_the_wall_clock_across_dst(
    db_path: Path, night: tuple[datetime, datetime]
) -> None:
    from kanjian.station.store import open_db

    since, until = night
    w = T.make_window(since + timedelta(minutes=13), until - timedelta(minutes=50), tz=ZONE)
    assert (w.local(w.since), w.local(w.until)) == (since, until)
    db = open_db(db_path)
    try:
        with T.snapshot(db) as conn:
            wc = T.window_counts(conn, w, SHIFT_STARTS)
    finally:
        db.conn.close()

    want_hours = _wall_hours(since, until)
    real_hours = (until.astimezone(UTC) - since.astimezone(UTC)) / timedelta(hours=1)
    assert len(want_hours) == real_hours != 14  # 13 in spring, 15 in autumn: a change is in it
    got_hours = [(w.local(s).strftime("%Y-%m-%dT%H"), w.local(s).utcoffset()) for s, _ in w.hours()]
    assert got_hours == want_hours
    hours: dict[tuple[str, timedelta | None], Counter[str]] = {}
    shifts: dict[tuple[str, str], Counter[str]] = {}
    rows = _rows(db_path, since, until)
    for t, verdict in rows:
        hours.setdefault((t.strftime("%Y-%m-%dT%H"), t.utcoffset()), Counter())[verdict] += 1
        shifts.setdefault(_shift_of(t), Counter())[verdict] += 1
    assert len(hours) == len(want_hours)  # every hour has rows: none is missed by both
    for key, got in zip(got_hours, wc.hours, strict=True):
        assert got == {v: hours[key][v] for v in VERDICTS}, key
    # the shifts: labels, starts by the wall clock, and lengths in real time (the night
    # shift has 7 hours in spring, 9 in autumn), counts by each row's wall clock
    got_shifts = {(r.start.astimezone(ZONE).date().isoformat(), r.label): r for r in wc.shifts}
    assert set(got_shifts) == set(shifts)
    for (day, label), r in got_shifts.items():
        hh, mm = (int(x) for x in label.split(":"))
        start = datetime.fromisoformat(day).replace(hour=hh, minute=mm, tzinfo=ZONE)
        nxt = SHIFT_STARTS[(SHIFT_STARTS.index(label) + 1) % len(SHIFT_STARTS)]
        end_day = start.date() + timedelta(days=1 if nxt < label else 0)
        end = datetime.fromisoformat(f"{end_day.isoformat()}T{nxt}").replace(tzinfo=ZONE)
        assert (r.start.astimezone(UTC), r.end.astimezone(UTC)) == (
            start.astimezone(UTC),
            end.astimezone(UTC),
        ), label
        assert r.counts == {v: shifts[(day, label)][v] for v in VERDICTS}, (day, label)
    night_shift = got_shifts[((since.date()).isoformat(), "22:00")]
    # (aware times in one zone subtract as wall clocks: the length is taken in UTC)
    length = night_shift.end.astimezone(UTC) - night_shift.start.astimezone(UTC)
    assert length / timedelta(hours=1) == real_hours - 6  # 7 h in spring, 9 h in autumn
    assert wc.totals == {v: sum(c[v] for c in shifts.values()) for v in VERDICTS}
    assert sum(wc.totals.values()) == len(rows) > 150
