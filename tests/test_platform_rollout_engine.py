"""The rollout engine's state machine on a real PostgreSQL, step by step.

The stations' side is played by the receiver's own writer (:class:`ReceiverDB`): the
inspections and the ``model_activated`` / ``model_rejected`` events it stores are
exactly what the engine reads. Commands are collected (and checked against the
deploy_model schema) instead of published; time is passed to :func:`tick`, so
timeouts and re-sends are checked without waiting. The same engine against real
station processes: ``tests/test_platform_rollout.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kanjian.platform.bundles import BundleRef, record_bundle
from kanjian.platform.receiver_db import ReceiverDB
from kanjian.platform.rollout import (
    RolloutPlan,
    RolloutRefused,
    abort_rollout,
    rollout_status,
    start_rollout,
    stations_of_group,
)
from kanjian.platform.rollout_engine import tick
from kanjian.station.sync.messages import DeployModelIn
from tests.peers import postgres as pgpeer
from tests.support import sync as sup

ST = [("site-a", "line-1", f"st-{i}") for i in (1, 2, 3)]


def _ref(tag: str) -> BundleRef:
    h = lambda s: __import__("hashlib").sha256(s.encode()).hexdigest()  # noqa: E731
    return BundleRef(h("archive" + tag), "kanjian", f"bundles/m/{tag}.tar.gz", h("model" + tag),
                     "m", tag)  # fmt: skip


A, B = _ref("1.0"), _ref("1.1")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgpeer.Postgres]:
    server = pgpeer.Postgres(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


class Fleet:
    """A fresh platform database, written through the receiver's own code."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rdb = ReceiverDB(url)  # migrates
        self.conn = psycopg.connect(url, autocommit=True)
        self.seq: dict[tuple[str, str, str], int] = {}
        self.sent: list[tuple[tuple[str, str, str], DeployModelIn]] = []
        self.schema = sup.schema_validator("deploy_model")

    def feed(self, key: tuple[str, str, str], verdicts: str, model: BundleRef) -> list[str]:
        """One inspection per letter of ``verdicts`` (P, F, R, E), judged by ``model``;
        returns their ids."""
        msgs = []
        now = datetime.now(timezone.utc).isoformat()
        names = {"P": "PASS", "F": "FAIL", "R": "REVIEW", "E": "ERROR"}
        for v in verdicts:
            self.seq[key] = self.seq.get(key, 0) + 1
            msgs.append({"type": "inspection", "version": 1, "inspection_id": str(uuid.uuid4()),
                         "site": key[0], "line": key[1], "station": key[2],
                         "stream": "/".join(key), "seq": self.seq[key], "captured_at": now,
                         "judged_at": now, "verdict": names[v], "detections": [],
                         "model": {"name": model.name, "version": model.version,
                                   "sha256": model.model_sha256}})  # fmt: skip
        self.rdb.store(msgs)
        return [str(m["inspection_id"]) for m in msgs]

    def answer(self, key: tuple[str, str, str], command_id: str, ok: bool) -> None:
        data = {"command_id": command_id, "source": "platform"}
        data.update({"model": {"sha256": "x"}} if ok else {"reason": "golden check failed"})
        self.rdb.record_event({"type": "event", "version": 1, "event_id": str(uuid.uuid4()),
                               "event": "model_activated" if ok else "model_rejected",
                               "at": datetime.now(timezone.utc).isoformat(), "site": key[0],
                               "line": key[1], "station": key[2], "data": data})  # fmt: skip

    def send(self, key: tuple[str, str, str], payload: bytes) -> None:
        self.schema.validate(json.loads(payload))
        self.sent.append((key, DeployModelIn.model_validate_json(payload)))

    def tick(self, now: datetime | None = None) -> list[str]:
        return tick(self.conn, self.send, "test-watch", now)

    def status(self, rid: str) -> dict[str, Any]:
        [s] = rollout_status(self.conn, rid)
        return s

    def states(self, rid: str) -> list[str]:
        return [s["state"] for s in self.status(rid)["stations"]]

    def actions(self, rid: str) -> list[tuple[str, str | None]]:
        return [(a["action"], a["station"]) for a in self.status(rid)["audit"]]


@pytest.fixture
def fleet(pg: pgpeer.Postgres, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    f = Fleet(pg.url.rsplit("/", 1)[0] + "/" + name)
    with f.conn.transaction():
        record_bundle(f.conn, A, "test")
    for key in ST:
        f.feed(key, "PPPPPPPPPF", A)  # 10 % FAIL before
    yield f
    f.rdb.close()
    f.conn.close()


def _plan(**kw: Any) -> RolloutPlan:
    base: dict[str, Any] = {"stations": tuple(ST), "canary_count": 1, "window_s": 60.0,
                            "min_inspections": 10, "max_fail_rate_increase": 0.05,
                            "answer_timeout_s": 300.0, "resend_s": 30.0}  # fmt: skip
    return RolloutPlan(**{**base, **kw})


def test_a_canary_regression_rolls_it_back_and_the_rest_never_get_it(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(), "alice")
    s = fleet.status(rid)
    assert (s["state"], s["baseline_fail"], s["baseline_judged"]) == ("canary", 1, 10)
    t0 = datetime.now(timezone.utc)
    fleet.tick(t0)
    [(key, cmd)] = fleet.sent
    assert key == ST[0] and (cmd.key, cmd.sha256, cmd.bucket) == (B.key, B.archive_sha256, B.bucket)
    fleet.tick(t0 + timedelta(seconds=10))
    assert len(fleet.sent) == 1  # not due again yet
    fleet.tick(t0 + timedelta(seconds=31))  # unanswered: sent again, same command id
    assert [c.command_id for _k, c in fleet.sent] == [cmd.command_id] * 2
    fleet.answer(ST[0], cmd.command_id, ok=True)
    fleet.tick(t0 + timedelta(seconds=32))
    assert fleet.states(rid) == ["active", "pending", "pending"]
    fleet.feed(ST[0], "PPPPPPFFFF", B)  # 40 % against 10 %
    fleet.feed(ST[1], "FFFFFFFFFF", A)  # not a canary, not counted
    assert fleet.tick(t0 + timedelta(seconds=33)) == [rid]
    s = fleet.status(rid)
    assert s["state"] == "rolling_back" and "beyond the margin" in s["reason"]
    # the numbers, against SQL over the same rows
    oracle = fleet.conn.execute(
        "SELECT count(*) FILTER (WHERE verdict = 'FAIL'), count(*) FROM inspections "
        "WHERE station = 'st-1' AND model_sha256 = %s", [B.model_sha256]).fetchone()  # fmt: skip
    assert (s["canary_fail"], s["canary_judged"]) == oracle == (4, 10)
    fleet.tick(t0 + timedelta(seconds=34))
    key, back = fleet.sent[-1]
    assert key == ST[0] and (back.key, back.sha256) == (A.key, A.archive_sha256)
    assert back.command_id != cmd.command_id
    fleet.answer(ST[0], back.command_id, ok=True)
    fleet.tick(t0 + timedelta(seconds=35))
    s = fleet.status(rid)
    assert s["state"] == "rolled_back" and not s["active"]
    assert fleet.states(rid) == ["rolled_back", "pending", "pending"]
    assert {k for k, _c in fleet.sent} == {ST[0]}  # the others never got a command
    assert fleet.actions(rid) == [
        ("rollout.start", None), ("deploy.sent", "st-1"), ("deploy.activated", "st-1"),
        ("canary.watching", None), ("canary.failed", None), ("rollout.regression", None),
        ("rollback.sent", "st-1"), ("rollback.done", "st-1"), ("rollout.rolled_back", None),
    ]  # fmt: skip
    assert fleet.status(rid)["audit"][0]["actor"] == "alice"
    n = len(fleet.sent)
    fleet.tick(t0 + timedelta(seconds=99))  # a finished rollout sends nothing more
    assert len(fleet.sent) == n == 3


def test_a_good_canary_goes_on_to_the_rest_after_the_window(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(window_s=30.0), "bob")
    fleet.tick()
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    fleet.feed(ST[0], "PPPPPPPPPF", B)  # the same 10 %
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "canary" and s["window_ends"] is not None  # the window is still open
    assert (s["canary_rate"], s["baseline_rate"]) == (0.1, 0.1)
    fleet.tick(datetime.fromisoformat(s["window_ends"]) + timedelta(seconds=1))
    assert fleet.states(rid) == ["active", "sent", "sent"]  # the rest, all at once
    fleet.answer(ST[1], fleet.sent[1][1].command_id, ok=True)
    fleet.answer(ST[2], fleet.sent[2][1].command_id, ok=False)  # one refuses: it keeps its model
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "incomplete" and s["counts"] == {"active": 2, "rejected": 1}
    assert s["stations"][2]["reason"] == "golden check failed"
    assert [a for a, _s in fleet.actions(rid)][-1] == "rollout.incomplete"


def test_a_canary_that_refuses_or_stays_silent_stops_the_rollout(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(canary_count=2), "carol")
    t0 = datetime.now(timezone.utc)
    fleet.tick(t0)
    assert [k for k, _c in fleet.sent] == ST[:2]
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=False)
    fleet.tick(t0)
    assert fleet.status(rid)["state"] == "rolling_back"
    fleet.tick(t0)  # st-1 refused (nothing changed there); st-2 may have it: rolled back
    key, back = fleet.sent[-1]
    assert key == ST[1] and back.sha256 == A.archive_sha256
    fleet.tick(t0 + timedelta(seconds=301))  # st-2 never answers the rollback either
    s = fleet.status(rid)
    assert s["state"] == "rollback_failed"
    assert [x["state"] for x in s["stations"]] == ["rejected", "rollback_failed", "pending"]
    # silence alone is a refusal too
    rid2 = start_rollout(fleet.conn, B, _plan(stations=(ST[2],)), "carol")
    fleet.tick(t0)
    fleet.tick(t0 + timedelta(seconds=301))
    assert fleet.status(rid2)["state"] == "rolling_back"
    assert "no answer 300 s" in fleet.status(rid2)["reason"]


def test_the_others_baseline_and_an_abort(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(baseline_mode="others", min_inspections=5), "dan")
    assert fleet.status(rid)["baseline_judged"] is None  # counted over the window, later
    fleet.tick()
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    fleet.tick()
    fleet.feed(ST[0], "PPPPP", B)
    fleet.feed(ST[1], "PPPPF", A)
    fleet.feed(ST[2], "PPPPP", A)
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "canary"  # better than the others; the window is still open
    assert (s["canary_fail"], s["canary_judged"]) == (0, 5)
    assert (s["baseline_fail"], s["baseline_judged"]) == (1, 10)  # only since the window began
    abort_rollout(fleet.conn, rid, "dan", "line stop")
    with pytest.raises(RolloutRefused, match="nothing to abort"):
        abort_rollout(fleet.conn, rid, "dan")
    fleet.tick()
    assert fleet.sent[-1][0] == ST[0] and fleet.sent[-1][1].sha256 == A.archive_sha256
    assert ("rollout.abort", None) in fleet.actions(rid)
    assert fleet.status(rid)["reason"] == "aborted by dan: line stop"


def test_what_cannot_start_is_refused_and_nothing_is_written(fleet: Fleet) -> None:
    def refused(match: str, bundle: BundleRef = B, **kw: Any) -> None:
        with pytest.raises(RolloutRefused, match=match):
            start_rollout(fleet.conn, bundle, _plan(**kw), "eve")

    refused("no judged inspection stored yet", stations=(*ST, ("site-a", "line-1", "st-9")))
    assert stations_of_group(fleet.conn, "site-a") == tuple(ST)
    assert stations_of_group(fleet.conn, "site-a/line-1") == tuple(ST)
    with pytest.raises(RolloutRefused, match="no station of site-z"):
        stations_of_group(fleet.conn, "site-z")
    fleet.feed(ST[2], "P", _ref("0.9"))  # a model the platform has no archive of
    refused("no archive to roll back to")
    refused("judged 10 parts .* fewer than --min-inspections 11", stations=ST[:2],
            min_inspections=11)  # fmt: skip
    with pytest.raises(RolloutRefused, match="baseline 'others' needs stations"):
        _plan(stations=ST[:1], baseline_mode="others")
    assert fleet.conn.execute("SELECT count(*) FROM rollouts").fetchone() == (0,)
    rid = start_rollout(fleet.conn, B, _plan(stations=ST[:2]), "eve")
    refused(f"st-2 is in rollout {rid}", stations=ST[1:2])


def test_two_watchers_never_step_one_rollout_at_once(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(), "frank")
    with psycopg.connect(fleet.url) as other:  # another watcher, in the middle of a step
        other.execute("SELECT 1 FROM rollouts WHERE rollout_id = %s FOR UPDATE", [rid])
        assert fleet.tick() == [] and fleet.sent == []
    fleet.tick()
    assert [k for k, _c in fleet.sent] == [ST[0]]


def test_the_cli_prints_what_rollout_status_returns(fleet: Fleet, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    rid = start_rollout(fleet.conn, B, _plan(), "gina")
    fleet.tick()
    env = {**os.environ, "COLUMNS": "300"}
    cli = [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "rollout"]
    done = subprocess.run([*cli, "status", "--db", fleet.url, "--json"], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == rollout_status(fleet.conn)
    text = subprocess.run([*cli, "status", rid, "--db", fleet.url], capture_output=True,
                          text=True, timeout=120, env=env).stdout  # fmt: skip
    assert rid in text and "deploy.sent" in text and "site-a/line-1/st-1" in text
    bad = subprocess.run([*cli, "abort", "r-nothing", "--db", fleet.url], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    assert bad.returncode == 1 and "no rollout r-nothing" in bad.stderr
