"""Triggered mode through the API, with reads opened by the config (``api.open_reads``)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import api as S  # the servers and bundles tests share


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Iterator[Any]:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("trigger")
    station, state, _ = S.start_station(
        tmp,
        6,
        bundles,
        camera={"loop": True},
        trigger={"mode": "triggered"},
        policy="latest",
        api={"open_reads": True},
    )
    server = S.ServerThread(state)
    token = TokenStore(state.pool.get()).create("plc-panel", Role.OPERATOR, "tests").secret
    try:
        yield server, token, station.store.db_path
    finally:
        server.stop()
        state.loop.stop()
        station.close()
        state.pool.close_all()


def _collect_events(
    url: str, out: list[dict[str, Any]], ready: threading.Event, stop: threading.Event
) -> None:
    with httpx.Client(timeout=30) as c, c.stream("GET", url + "/api/events") as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append({"event": event, **json.loads(line[6:])})
                if event == "hello":
                    ready.set()
            if stop.is_set():
                return


def test_open_reads_still_guard_mutations(served: Any) -> None:
    server, _, _ = served
    assert httpx.get(server.url + "/api/status").status_code == 200  # no token needed
    assert httpx.get(server.url + "/api/whoami").json()["open_reads"] is True
    r = httpx.post(server.url + "/api/trigger", json={})
    assert r.status_code == 401


def test_software_trigger_returns_the_committed_row_and_pushes_it(served: Any) -> None:
    server, token, db_path = served
    events: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(
        target=_collect_events, args=(server.url, events, ready, stop), daemon=True
    )
    t.start()
    assert ready.wait(30)
    auth = {"Authorization": f"Bearer {token}"}
    got = []
    for i in range(3):
        r = httpx.post(
            server.url + "/api/trigger", json={"trigger_id": f"plc-{i}"}, headers=auth, timeout=60
        )
        assert r.status_code == 200, r.text
        got.append(r.json())
    auto = httpx.post(server.url + "/api/trigger", headers=auth, timeout=60).json()
    assert auto["trigger_id"].startswith("api-")
    assert [g["trigger_id"] for g in got] == ["plc-0", "plc-1", "plc-2"]
    for g in got:
        assert g["verdict"] in ("PASS", "FAIL", "REVIEW") and g["model"]["sha256"]
    # the row is committed before the answer
    con = sqlite3.connect(db_path)
    rows = con.execute("SELECT id, trigger_id FROM inspections ORDER BY seq").fetchall()
    con.close()
    assert rows == [(g["id"], g["trigger_id"]) for g in [*got, auto]]
    pushed = S.wait_for(
        lambda: (
            [e["inspection"]["id"] for e in events if e["event"] == "inspection"]
            if sum(e["event"] == "inspection" for e in events) >= 4
            else None
        ),
        30,
        what="four inspection events",
    )
    stop.set()
    assert pushed == [r[0] for r in rows]
    bad = httpx.post(server.url + "/api/trigger", json={"trigger_id": "no spaces"}, headers=auth)
    assert bad.status_code == 422
