"""Camera events from :class:`StationWatch`: one ``camera_lost`` / ``camera_back`` pair per
outage, none for a live source's first connect, and a lost camera said for a station that
starts with its camera unplugged.

The camera's state is read by a probe (a function); these tests feed it the states a
real source goes through (``camera/live.py`` starts ``reconnecting`` until its first
frame). The real camera and broker are in ``test_sync_station.py`` and
``test_sync_events.py``.
"""

from __future__ import annotations

import time
from typing import Any

from kanjian.station.sync.watch import CAMERA_GRACE_S, StationWatch


def _watch(states: list[str], grace_s: float = CAMERA_GRACE_S) -> tuple[StationWatch, list[Any]]:
    said: list[tuple[str, dict[str, Any]]] = []
    feed = iter(states)
    w = StationWatch(lambda e, d: said.append((e, d)), lambda: next(feed), None, 10,
                     camera_grace_s=grace_s)  # fmt: skip
    return w, said


def _probe_all(w: StationWatch, n: int) -> None:
    for _ in range(n):
        w.probe()


def test_a_live_sources_first_connect_is_not_a_return() -> None:
    states = ["reconnecting", "reconnecting", "connected", "connected"]
    w, said = _watch(states)
    _probe_all(w, len(states))
    assert said == []


def test_one_pair_per_outage_naming_what_it_left() -> None:
    states = ["connected", "reconnecting", "error", "reconnecting", "connected", "connected",
              "reconnecting", "connected"]  # fmt: skip
    w, said = _watch(states)
    _probe_all(w, len(states))
    assert said == [
        ("camera_lost", {"state": "reconnecting"}),
        ("camera_back", {"state": "connected", "was": "reconnecting"}),
        ("camera_lost", {"state": "reconnecting"}),
        ("camera_back", {"state": "connected", "was": "reconnecting"}),
    ]


def test_a_camera_that_never_connects_is_said_lost_after_the_grace() -> None:
    w, said = _watch(["reconnecting"] * 4 + ["connected"], grace_s=0.2)
    _probe_all(w, 2)
    assert said == []  # within the grace: a live source still connecting
    time.sleep(0.25)
    _probe_all(w, 2)
    assert said == [("camera_lost", {"state": "reconnecting"})]  # said once, not per probe
    w.probe()
    assert said[1:] == [("camera_back", {"state": "connected", "was": "reconnecting"})]


def test_a_probe_that_raises_counts_as_an_error_state() -> None:
    broken = [False]

    def state() -> str:
        if broken[0]:
            raise RuntimeError("camera gone")
        return "connected"

    said: list[tuple[str, dict[str, Any]]] = []
    w = StationWatch(lambda e, d: said.append((e, d)), state, None, 10)
    w.probe()
    broken[0] = True
    w.probe()
    w.probe()
    assert said == [("camera_lost", {"state": "error"})]
