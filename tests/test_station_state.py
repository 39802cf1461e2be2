"""The station's one owner of models, rules and audit (``kanjian.station.state``).

- one archive unpacker, counting bytes as it writes them, for API uploads and
  platform deploys alike;
- the rules in force are one frozen object, swapped whole;
- thresholds and a model activated through the API judge under ``kanjian run``
  exactly as under ``kanjian serve``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import api as S

# -- the one unpacker ------------------------------------------------------------------


def _lying_tar(path: Path, real: int, claimed: int) -> Path:
    """A .tar.gz with ``manifest.json`` and one ``model.onnx`` of ``real`` zero bytes
    whose ustar header claims ``claimed`` bytes (a pax record carries the real size,
    as tar does for members past the ustar field's range)."""
    manifest = tarfile.TarInfo("manifest.json")
    manifest.size = 2
    info = tarfile.TarInfo("model.onnx")
    info.size = claimed
    info.pax_headers = {"size": str(real)}
    raw = manifest.tobuf(tarfile.USTAR_FORMAT) + b"{}".ljust(512, b"\0")
    raw += info.tobuf(tarfile.PAX_FORMAT)  # the pax header, then the lying ustar one
    ustar = tarfile.TarInfo.frombuf(raw[-512:], "utf-8", "surrogateescape")
    assert (ustar.name, ustar.size) == ("model.onnx", claimed)  # the header does lie
    raw += b"\0" * (real + -real % 512) + b"\0" * 1024  # the data, then the end
    path.write_bytes(gzip.compress(raw))
    return path


def test_a_tar_whose_header_lies_about_its_size_is_stopped_while_written(
    tmp_path: Path,
) -> None:
    from kanjian.station.state.archive import ArchiveRejected, extract_bundle

    limit = 1 << 20
    archive = _lying_tar(tmp_path / "lies.tar.gz", real=3 * limit, claimed=1024)
    with tarfile.open(archive) as tf:  # a well-formed archive, to tar
        assert [(m.name, m.size) for m in tf.getmembers()] == [
            ("manifest.json", 2), ("model.onnx", 3 * limit)
        ]  # fmt: skip
    dest = tmp_path / "out"
    with pytest.raises(ArchiveRejected, match=r"while writing 'model\.onnx'") as e:
        extract_bundle(archive, dest, limit)
    assert e.value.kind == "too_big"
    # counted as written: never more than the limit reached the disk
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= limit


def _state(data_dir: Path) -> Any:
    """A StationState on the demo model (loaded, not run: no kernels in this process)."""
    from kanjian.inference.model import load_model
    from kanjian.station.config import DEMO_MODEL, default_config
    from kanjian.station.inspector import Inspector
    from kanjian.station.state.service import StationState
    from kanjian.station.store import DB_NAME

    cfg = default_config(data_dir)
    return StationState(cfg, Inspector(load_model(DEMO_MODEL, ("cpu",))), data_dir / DB_NAME)


def test_the_deploy_path_unpacks_with_the_same_byte_counting_unpacker(tmp_path: Path) -> None:
    from kanjian.station.sync.config import S3Config
    from kanjian.station.sync.deploy import DeployRefused, ModelDeployer
    from kanjian.station.sync.messages import DeployModelIn

    state = _state(tmp_path)
    state.startup()
    events: list[tuple[str, dict[str, Any]]] = []
    max_archive = 256 << 10  # the bundle may unpack to four times this: 1 MiB
    d = ModelDeployer(state, S3Config(), lambda e, data: events.append((e, data)), max_archive)
    try:
        data = _lying_tar(tmp_path / "lies.tar.gz", real=3 << 20, claimed=1024).read_bytes()
        assert len(data) < max_archive  # the download itself is within bounds
        cmd = DeployModelIn(type="deploy_model", version=1, command_id="c-lies",
                            key="k", sha256="0" * 64)  # fmt: skip
        before = state.inspector.model.info.sha256
        with pytest.raises(DeployRefused, match=r"exceeds 1 MiB \(while writing 'model\.onnx'\)"):
            d.install(cmd, data, tmp_path / "data" / "work")
    finally:
        d.stop()
    assert state.inspector.model.info.sha256 == before
    assert [e.sha256 for e in state.models.entries()] == [before]  # nothing registered
    assert not list((state.models.models_dir / ".incoming").iterdir())  # nothing left
    state.close()


# -- one frozen rule set, swapped whole --------------------------------------------------


def test_a_rules_change_is_one_swap_no_reader_sees_half_of_it(tmp_path: Path) -> None:
    from kanjian.inference.verdict import ClassRule, VerdictRules
    from kanjian.station.ruleset import RuleSet
    from kanjian.station.state.audit import Actor

    state = _state(tmp_path)
    state.startup()
    ins = state.inspector

    def rs(k: int) -> RuleSet:  # every field says k: a mix of two would show
        t = k / 100
        rule = ClassRule(fail_confidence=t, review_confidence=t)
        return RuleSet(VerdictRules(default=rule), conf=t, iou=t, max_det=k)

    def consistent(r: RuleSet) -> bool:
        if r.rules is None:
            return r.conf is None and r.iou is None and r.max_det is None
        t = r.rules.default.fail_confidence
        return r.conf == t == r.iou == r.rules.default.review_confidence and r.max_det == round(
            t * 100
        )

    stop = threading.Event()
    seen: Counter[str] = Counter()
    bad: list[RuleSet] = []

    def reader() -> None:
        while not stop.is_set():
            r = ins.ruleset
            seen[r.origin] += 1
            if not consistent(r):
                bad.append(r)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    t = threading.Thread(target=reader)
    t.start()
    try:
        actor = Actor("test")
        for k in range(1, 41):  # through the keeper: stored, audited, then swapped
            assert state.rules.set(rs(k), actor).origin == "api"
        for k in range(1, 5001):  # and the bare swap, as fast as it goes
            ins.set_ruleset(rs(k % 90 + 1))
        state.rules.reset(actor)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert not bad, bad[:3]
    assert seen["api"] > 0 and ins.ruleset.origin == "station.yaml"
    con = sqlite3.connect(tmp_path / "kanjian.db")
    n_set = con.execute("SELECT COUNT(*) FROM audit WHERE action = 'thresholds.set'").fetchone()
    assert n_set == (40,) and con.execute("SELECT * FROM settings").fetchall() == []
    con.close()
    state.close()


# -- run and serve judge alike -----------------------------------------------------------

N_FRAMES = 12


def _tops(config: Path, bundle: Path, images: list[Path]) -> dict[str, float]:
    """Each image's strongest detection confidence (0: none) with ``bundle``, measured
    by ``kanjian inspect`` (another process: no kernels run in the test's)."""
    out = subprocess.run(
        [str(S.KANJIAN), "inspect", "-c", str(config), "--model", str(bundle), "--json",
         *map(str, images)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    tops = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            tops[Path(r["image"]).name] = max((d["confidence"] for d in r["detections"]), default=0)
    assert len(tops) == len(images)
    return tops


def _verdicts(tops: dict[str, float], review: float, fail: float) -> dict[str, str]:
    """What the default rule gives (no classes, ROI or areas in these rules)."""
    return {
        name: "FAIL" if s >= fail else "REVIEW" if s >= review else "PASS"
        for name, s in tops.items()
    }


def _pick_thresholds(
    tops_b: dict[str, float], tops_a: dict[str, float], yaml: dict[str, float]
) -> tuple[float, float]:
    """Review and fail confidences halfway between measured scores (far from all of
    them), giving PASS, REVIEW and FAIL with bundle b, and verdicts that neither
    station.yaml's rules (``yaml``: its default rule) nor bundle a would give."""
    others = [
        _verdicts(tops_b, yaml["review_confidence"], yaml["fail_confidence"]),
        _verdicts(tops_a, yaml["review_confidence"], yaml["fail_confidence"]),
    ]
    levels = sorted(set(tops_b.values()))
    cuts = [(x + y) / 2 for x, y in itertools.pairwise(levels) if y - x >= 0.004]
    for i, review in enumerate(cuts):
        for fail in cuts[i + 1 :]:
            want = _verdicts(tops_b, review, fail)
            if set(want.values()) == {"PASS", "REVIEW", "FAIL"} and all(
                want != o for o in [*others, _verdicts(tops_a, review, fail)]
            ):
                return round(review, 4), round(fail, 4)
    raise AssertionError(f"the measured scores allow no telling thresholds: {tops_b}")


def _judged(db: Path, after_seq: int) -> tuple[dict[str, str], set[str], int]:
    """Verdict per source file name, the models that judged, and the last seq."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT seq, uri, verdict, model_sha256 FROM inspections WHERE seq > ? ORDER BY seq",
            [after_seq],
        ).fetchall()
    finally:
        con.close()
    verdicts = {Path(uri).name: v for _seq, uri, v, _m in rows}
    assert len(verdicts) == len(rows)  # each file once
    return verdicts, {m for *_, m in rows}, max((r[0] for r in rows), default=after_seq)


def test_api_thresholds_and_model_judge_alike_under_run_and_serve(
    tmp_path: Path, detect_model: Any
) -> None:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    port = S.free_port()
    station, state, cfg = S.start_station(tmp_path, N_FRAMES, bundles, api={"port": port})
    config = tmp_path / "station.yaml"
    db = station.store.db_path
    server = None
    try:
        S.wait_for(lambda: not state.loop.alive(), 120, what="the first pass over the images")
        assert station.store.flush()
        images = sorted((tmp_path / "images").iterdir())
        tops_b = _tops(config, bundles.b, images)
        yaml_rule = cfg["rules"]["default"]
        review, fail = _pick_thresholds(tops_b, _tops(config, bundles.a, images), yaml_rule)
        want = _verdicts(tops_b, review, fail)
        server = S.ServerThread(state)
        eng = TokenStore(state.pool.get()).create("test-engineer", Role.ENGINEER, "tests")
        headers = {"Authorization": f"Bearer {eng.secret}"}
        import httpx

        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as c:
            rules = {"default": {"fail_confidence": fail, "review_confidence": review}}
            r = c.put("/api/thresholds", json={"conf": S.DECODE_CONF, "rules": rules})
            assert r.status_code == 200 and r.json()["source"] == "api", r.text
            r = c.post("/api/models", content=S.pack(bundles.b, "tar"))
            assert r.status_code == 201, r.text
            r = c.post(f"/api/models/{bundles.sha_b}/activate")
            assert r.status_code == 200, r.text
        _, _, seq = _judged(db, 0)
    finally:
        if server is not None:
            server.stop()
        station.close()
        state.pool.close_all()

    # kanjian run: the same config, data folder and images
    out = subprocess.run(
        [str(S.KANJIAN), "run", "-c", str(config), "--frames", str(N_FRAMES)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    by_run, models_run, seq = _judged(db, seq)

    # kanjian serve: the same again
    served = S.start_serve(config, port, tmp_path)
    try:
        S.wait_for(lambda: len(_judged(db, seq)[0]) == N_FRAMES, 120, what="serve's pass")
    finally:
        log = served.stop()
    assert served.proc.returncode == 0, log
    by_serve, models_serve, _ = _judged(db, seq)

    assert by_run == by_serve == want  # file by file
    assert models_run == models_serve == {bundles.sha_b}
    mix = Counter(want.values())
    assert set(mix) == {"PASS", "REVIEW", "FAIL"}, mix
