"""The outbox and the receiver database on real SQLite files (no broker needed).

Marks, confirmations, re-send requests, retention, the receiver's ``through``
watermark, gaps and losses; messages built from real store rows validate
against the JSON Schemas in ``schemas/``.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kanjian.platform.receiver_db import ReceiverDB
from kanjian.station.state.archive import ArchiveRejected, extract_bundle
from kanjian.station.store import ResultStore
from kanjian.station.sync.messages import (
    ConfirmIn,
    DeployModelIn,
    confirm_message,
    deploy_message,
    event_message,
    image_key,
    inspection_message,
    resend_message,
)
from kanjian.station.sync.outbox import Outbox
from kanjian.station.sync.outbox_types import PendingWrites, to_ranges
from tests.support import sync as sup


def _filled(tmp_path: Path, n: int) -> tuple[ResultStore, list[str]]:
    store = ResultStore(tmp_path, save_verdicts=("FAIL",))
    made = []
    for i in range(n):
        insp = sup.synthetic(i)
        store.put(insp)
        made.append(str(insp.inspection_id))
    assert store.flush()
    return store, made


@given(st.lists(st.integers(1, 200), max_size=80))
def test_to_ranges_round_trip(seqs: list[int]) -> None:
    ranges = to_ranges(seqs)
    back = [s for a, b in ranges for s in range(a, b + 1)]
    assert back == sorted(set(seqs))
    # merged: no two ranges touch
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(ranges))


def test_outbox_marks_confirm_resend(tmp_path: Path) -> None:
    store, made = _filled(tmp_path, 50)
    ob = Outbox(store.db_path)
    fresh = ob.fetch_fresh(0, 100)
    assert [r.inspection.id for r in fresh] == made
    assert [r.seq for r in fresh] == list(range(1, 51))
    fail = fresh[0].inspection  # i = 0 is a FAIL with two boxes
    assert fail.verdict == "FAIL" and len(fail.detections) == 2
    assert fail.image_path is not None and fail.detections[0].class_name == "crazing"
    now = time.time()
    ob.apply(PendingWrites(published=list(range(1, 51)), retry_at=now + 100), 5.0, 60.0)
    assert ob.fetch_due(now, 50, 100) == []  # published, not due yet
    assert ob.fetch_due(now + 101, 50, 100)[0].seq == 1  # no PUBACK in time: due again
    ob.apply(PendingWrites(acked=list(range(1, 41))), 5.0, 60.0)
    b = ob.backlog_stats()
    assert (b.backlog, b.unacked, b.last_seq) == (50, 10, 50)
    # confirmation by watermark and by range
    confirmed, _ = ob.apply(PendingWrites(confirms=[([(30, 35)], 10)]), 5.0, 60.0)
    assert confirmed == 16
    assert ob.backlog_stats().backlog == 34
    # acked entries wait timeout * 2**attempts before a re-send, capped
    row = ob.conn.execute("SELECT next_attempt_at, attempts FROM outbox WHERE seq=20").fetchone()
    assert row[1] == 1 and now + 4 < row[0] < time.time() + 5.5
    assert ob.make_all_due() == 40 - 16  # acked, unconfirmed: the broker may have lost them
    assert [r.seq for r in ob.fetch_due(time.time(), 50, 100)][:3] == [11, 12, 13]
    # the platform lost 1..3 (e.g. database restored): re-send even what was confirmed
    _, again = ob.apply(PendingWrites(resends=[[(1, 3)]]), 5.0, 60.0)
    assert again == 3
    assert {r.seq for r in ob.fetch_due(time.time(), 50, 100)} >= {1, 2, 3}
    ob.close()
    store.close()


def test_retention_drops_counts_and_reports_ranges(tmp_path: Path) -> None:
    store, _ = _filled(tmp_path, 150)
    ob = Outbox(store.db_path)
    ob.apply(PendingWrites(confirms=[([(1, 20)], None)]), 5.0, 60.0)

    def report(r: Any) -> tuple[str, str, str, str]:
        return (f"e{r.total_messages}", "sync_dropped", json.dumps(r.message_ranges), "t")

    # a drop that cannot be reported is not made: drop, counters and event are one commit
    def broken(r: Any) -> tuple[str, str, str, str]:
        raise RuntimeError("no event")

    with pytest.raises(RuntimeError):
        ob.apply_retention(max_age_h=1.0, max_backlog=100, max_images=1000, report=broken)
    assert ob.backlog_stats().backlog == 130 and ob.get_state("dropped_messages") is None
    res = ob.apply_retention(max_age_h=1.0, max_backlog=100, max_images=1000, report=report)
    # 130 unconfirmed, 100 allowed: the oldest 30 unconfirmed go, confirmed ones stay
    assert res.messages == 30 and res.message_ranges == ((21, 50),)
    assert ob.backlog_stats().backlog == 100
    assert [r.seq for r in ob.fetch_fresh(0, 1)] == [51]
    # everything is older than a tiny max age
    ob.conn.execute("UPDATE outbox SET created_at = '2000-01-01T00:00:00.000000+00:00'")
    res = ob.apply_retention(max_age_h=1.0, max_backlog=1000, max_images=1000, report=report)
    assert res.messages == 100 and res.message_ranges == ((51, 150),)
    assert ob.backlog_stats().backlog == 0
    assert (res.total_messages, ob.get_state("dropped_messages")) == (130, "130")
    assert [json.loads(p) for _, p in ob.unsent_events(10)] == [[[21, 50]], [[51, 150]]]
    assert ob.apply_retention(1.0, 1000, 1000, report).messages == 0  # nothing: no event
    assert len(ob.unsent_events(10)) == 2
    ob.close()
    store.close()


def test_messages_validate_against_schemas(tmp_path: Path) -> None:
    store, _ = _filled(tmp_path, 8)
    ob = Outbox(store.db_path)
    v_insp = sup.schema_validator("inspection")
    for entry in ob.fetch_fresh(0, 10):
        rec = entry.inspection
        key = image_key("", "site-a", "st-1", rec.id, rec.captured_at, rec.verdict,
                        rec.image_path, ("FAIL", "REVIEW"), 0.0)  # fmt: skip
        assert (key is not None) == (rec.verdict == "FAIL")
        msg = inspection_message(entry, site="site-a", line="l1", station="st-1",
                                 stream=ob.stream_id, bucket="kanjian" if key else None, key=key)  # fmt: skip
        v_insp.validate(json.loads(msg))
    ob.close()
    store.close()
    sup.schema_validator("confirm").validate(json.loads(confirm_message("s", [(1, 4)], 4)))
    sup.schema_validator("resend").validate(json.loads(resend_message("s", [(5, 6)])))
    sup.schema_validator("deploy_model").validate(
        json.loads(deploy_message("c-1", "bundles/a.tar.gz", "0" * 64))
    )
    v_ev = sup.schema_validator("event")
    _, payload, _ = event_message("camera_lost", {"state": "reconnecting"}, site="a", line="b",
                                  station="c")  # fmt: skip
    v_ev.validate(json.loads(payload))
    # the schemas are not vacuous: a message missing its UUID is refused
    bad = json.loads(payload)
    del bad["event_id"]
    assert not v_ev.is_valid(bad)
    assert not v_ev.is_valid({**json.loads(payload), "data": {}})  # camera_lost needs state
    # and formats are checked (rfc3339-validator installed): a time that is not one is refused
    assert not v_ev.is_valid({**json.loads(payload), "at": "yesterday at noon"})


def test_incoming_messages_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="bad range"):
        ConfirmIn.model_validate_json(
            b'{"type":"confirm","version":1,"stream":"s","ranges":[[5,2]]}'
        )
    with pytest.raises(ValueError, match="sha256"):
        DeployModelIn.model_validate_json(
            deploy_message("c", "k", "0" * 64).replace(b"0" * 64, b"x")
        )


def test_pass_sample_is_deterministic_by_uuid() -> None:
    rng = random.Random(0)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
    picked = [
        image_key("p/", "s", "t", i, "2026-01-02T03:04:05+00:00", "PASS", "x.jpg", ("FAIL",), 0.1)
        for i in ids
    ]
    n = sum(k is not None for k in picked)
    assert 100 < n < 300  # about 10 %
    again = [
        image_key("p/", "s", "t", i, "2026-01-02T03:04:05+00:00", "PASS", "x.jpg", ("FAIL",), 0.1)
        for i in ids
    ]
    assert again == picked
    k = next(k for k in picked if k)
    assert k.startswith("p/s/t/2026-01-02/") and k.endswith(".jpg")
    # nothing to upload without a local image
    assert image_key("", "s", "t", ids[0], "2026-01-02", "FAIL", None, ("FAIL",), 1.0) is None


def _msg(stream: str, seq: int, verdict: str = "PASS") -> dict[str, object]:
    return {"type": "inspection", "version": 1, "inspection_id": str(uuid.uuid4()),
            "site": "s", "line": "l", "station": "st", "stream": stream, "seq": seq,
            "verdict": verdict, "captured_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip


def test_receiver_db_idempotent_through_gaps_lost(tmp_path: Path) -> None:
    db = ReceiverDB(str(tmp_path / "r.db"))
    msgs = [_msg("A", s, "FAIL" if s % 4 == 0 else "PASS") for s in range(1, 11)]
    res = db.store([m for m in msgs if m["seq"] not in (4, 7, 8)])
    assert res.new == 7 and res.through["A"] == 3
    assert db.gaps("A") == [(4, 4), (7, 8)]
    again = db.store(msgs[:5])  # re-sent: 1,2,3,5 are duplicates, 4 is new
    assert again.new == 1 and again.duplicates == 4 and again.through["A"] == 6
    # the station reported 7..8 dropped by retention: no longer a gap
    moved = db.record_event({"event_id": str(uuid.uuid4()), "event": "sync_dropped",
                             "data": {"stream": "A", "ranges": [[7, 8]]}})  # fmt: skip
    assert moved == ["A"]
    assert db.gaps("A") == []
    [rep] = db.report()
    assert (rep.inspections, rep.through, rep.max_seq, rep.lost, rep.duplicates) == (
        8,
        10,
        10,
        2,
        4,
    )
    assert rep.verdicts == {"PASS": 7, "FAIL": 1}  # seq 8 (a FAIL) was lost
    assert rep.yield_ == pytest.approx(7 / 8)
    db.close()
    con = sqlite3.connect(tmp_path / "r.db")
    assert con.execute(
        "SELECT COUNT(*), COUNT(DISTINCT inspection_id) FROM inspections"
    ).fetchone() == (8, 8)


def _tar(path: Path, members: dict[str, bytes], link: str | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("evil")
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
    return buf.getvalue()


def test_the_deploy_unpacker_refuses_escapes(tmp_path: Path) -> None:
    """Platform deploys unpack with the API's unpacker (station.state.archive)."""

    def archive(name: str, members: dict[str, bytes], link: str | None = None) -> Path:
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(_tar(tmp_path, members, link))
        return path

    ok = extract_bundle(archive("ok", {"b/manifest.json": b"{}", "b/model.onnx": b"x"}),
                        tmp_path / "ok", 10_000)  # fmt: skip
    assert ok == tmp_path / "ok" / "b" and (ok / "model.onnx").read_bytes() == b"x"
    for i, (members, link, why) in enumerate(
        [
            ({"../outside": b"x"}, None, "would leave the bundle folder"),
            ({"/etc/x": b"x"}, None, "absolute paths"),
            ({"manifest.json": b"{}"}, "/etc/passwd", "only plain files and folders"),
            ({"manifest.json": b"x" * 20_000}, None, "exceeds"),
            ({"readme": b"x"}, None, "no manifest.json"),
        ]
    ):
        with pytest.raises(ArchiveRejected, match=why):
            extract_bundle(archive(f"bad{i}", members, link), tmp_path / f"bad{i}", 10_000)
    (tmp_path / "x.tar").write_bytes(b"not an archive")
    with pytest.raises(ArchiveRejected, match=r"not a \.zip, \.tar\.gz or \.tar"):
        extract_bundle(tmp_path / "x.tar", tmp_path / "bad-x", 10_000)
    assert not (tmp_path.parent / "outside").exists()


def test_status_metrics_leave_out_what_never_happened() -> None:
    from kanjian.station.sync.status import SyncStatus

    never = SyncStatus(True, True, False, "b:1883", "s", 5, 5, 1.0, 0, None, None, None, 5)
    m = never.metrics()
    assert m["kanjian_sync_backlog"] == 5.0 and m["kanjian_sync_connected"] == 0.0
    assert not [k for k in m if "last_" in k]  # an age of 0 would look healthy
    once = never.__class__(**{**never.as_dict(), "last_confirm_at": "2026-11-27T10:00:00+00:00"})
    assert once.metrics()["kanjian_sync_last_confirm_timestamp_seconds"] == 1795773600.0


def test_messages_name_the_image_key_the_uploader_uses(tmp_path: Path) -> None:
    """The key in a (re-)sent message is the outbox's plan, not recomputed from today's config."""
    from kanjian.station.sync.config import SyncConfig
    from kanjian.station.sync.worker import Identity, SyncWorker

    store, _ = _filled(tmp_path, 30)  # FAIL frames are saved: they have images to upload
    ob = Outbox(store.db_path)
    fails = [
        r
        for r in ob.fetch_fresh(0, 30)
        if r.inspection.verdict == "FAIL" and r.inspection.image_path
    ]
    assert len(fails) >= 3
    off, planned = fails[0], fails[1:]
    ob.conn.execute("UPDATE outbox SET image_state = 'off' WHERE seq = ?", [off.seq])  # S3 was off

    def worker(prefix: str) -> SyncWorker:
        cfg = SyncConfig.model_validate(
            {"enabled": True, "s3": {"enabled": True, "prefix": prefix}}
        )
        return SyncWorker(store.db_path, tmp_path, cfg, Identity("s", "l", "st"))

    recs = {r.seq: r for r in ob.fetch_fresh(0, 30)}
    first = worker("a/")._image_keys(ob, [recs[r.seq] for r in fails])
    assert first[off.seq] is None  # made while object storage was off: never uploaded
    assert all(first[r.seq] == f"a/s/st/{r.inspection.captured_at[:10]}/{r.inspection.id}.jpg"
               for r in planned)  # fmt: skip
    stored = dict(
        ob.conn.execute("SELECT seq, image_key FROM outbox WHERE image_state = 'pending'")
    )
    assert stored == {r.seq: first[r.seq] for r in planned}  # the uploader's plan too
    # a re-send after the prefix changed still names the planned key
    recs = {r.seq: r for r in ob.fetch_fresh(0, 30)}
    again = worker("b/")._image_keys(ob, [recs[r.seq] for r in fails])
    assert again == first
    ob.close()
    store.close()


def test_a_deploy_interrupted_by_a_crash_is_answered_at_the_next_start(tmp_path: Path) -> None:
    """The station died mid-deploy: the command has no outcome and a half-unpacked archive
    lies in models/. At the next start the platform is told (refused, interrupted)."""
    from kanjian.inference.model import load_model
    from kanjian.station.config import DEMO_MODEL, default_config
    from kanjian.station.inspector import Inspector
    from kanjian.station.state.models import INCOMING_DIR, MODELS_DIR
    from kanjian.station.state.service import StationState
    from kanjian.station.sync.config import S3Config
    from kanjian.station.sync.deploy import ModelDeployer

    store, _ = _filled(tmp_path, 1)
    store.close()
    con = sqlite3.connect(tmp_path / "kanjian.db")
    con.execute("INSERT INTO sync_commands (command_id, command, received_at) "
                "VALUES ('c-7', 'deploy_model', '2026-11-27T00:00:00+00:00')")  # fmt: skip
    con.commit()
    con.close()
    half = tmp_path / MODELS_DIR / INCOMING_DIR / "deploy-c-7"
    half.mkdir(parents=True)
    (half / "bundle.archive").write_bytes(b"half")
    events: list[tuple[str, dict[str, Any]]] = []
    state = StationState(default_config(tmp_path), Inspector(load_model(DEMO_MODEL, ("cpu",))),
                         tmp_path / "kanjian.db")  # fmt: skip
    d = ModelDeployer(state, S3Config(), lambda e, data: events.append((e, data)), 1 << 20)
    d.stop()
    state.close()
    assert [(e, data["command_id"]) for e, data in events] == [("model_rejected", "c-7")]
    assert "interrupted" in events[0][1]["reason"]
    con = sqlite3.connect(tmp_path / "kanjian.db")
    assert con.execute("SELECT outcome FROM sync_commands").fetchall() == [("refused",)]
    assert (
        con.execute("SELECT COUNT(*) FROM audit WHERE action = 'model.deploy_refused'").fetchone()[
            0
        ]
        == 1
    )
    con.close()
    assert not half.exists()
