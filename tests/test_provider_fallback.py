"""Execution providers fail loud (issue 17, point 5): a station whose station.yaml asks
first for CUDA or TensorRT, where they cannot run, refuses to start, naming the
provider, the cause and the fix; with ``model.allow_fallback: true`` it runs on the CPU
and says so in the log, ``/api/status``, the metrics, the screen's model badge and a
``provider_fallback`` platform event; a model activated at runtime that cannot get the
provider is refused (409) while the running one keeps judging.

Real peers: ``kanjian run`` / ``kanjian serve`` subprocesses, this machine's ONNX
Runtime (onnxruntime-gpu without a GPU or CUDA libraries), Mosquitto with an
independent paho subscriber, Debian's Chromium. ``CUDA_VISIBLE_DEVICES`` is emptied
so that CUDA cannot run even on a machine with a GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort
import pytest

from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from tests.peers import mosquitto as mosq
from tests.support import api as S
from tests.support import sync as sup
from tests.support.station_config import station_config, write_config
from tests.support.web import screen_station

ORT = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
CHAIN = {"cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # inherited by the kanjian subprocesses


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    b = mosq.Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def _expected_causes(which: str) -> list[str]:
    """What the refusal must name, found here independently: the provider missing from
    the build, or the loader's own message for its library, and no GPU."""
    name = ORT[which]
    if name not in ort.get_available_providers():
        return ["not in this ONNX Runtime build"]
    causes = []
    capi = Path(ort.__file__).parent / "capi"
    # in a fresh process, as the station's: this one may have loaded CUDA libraries
    # already (torch, imported by earlier tests), which changes the loader's first miss
    probe = (
        "import ctypes, sys\n"
        "try:\n"
        f"    ctypes.CDLL({str(capi / 'libonnxruntime_providers_shared.so')!r}, "
        "mode=ctypes.RTLD_GLOBAL)\n"
        f"    ctypes.CDLL({str(capi / f'libonnxruntime_providers_{which}.so')!r})\n"
        "except OSError as e:\n"
        "    sys.stdout.write(str(e))\n"
    )
    said = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    if said:
        causes.append(said)
    gpu = ("/dev/nvidia0", "/proc/driver/nvidia/version", "/etc/nv_tegra_release")
    if not any(Path(p).exists() for p in gpu):
        causes.append("no NVIDIA GPU is visible")
    return causes


def _config(tmp: Path, which: str, **sections: Any) -> Path:
    """The demo station asking for ``which`` first; its bundle copied under ``tmp`` (a
    TensorRT engine cache would be made beside it)."""
    bundle = tmp / "model"
    shutil.copytree(DEMO_MODEL, bundle)
    model = {"providers": CHAIN[which], **sections.pop("model", {})}
    cfg = station_config(
        tmp / "data", bundle=bundle, images=DEMO_IMAGES, model=model,
        api={"port": S.free_port()}, **sections,
    )  # fmt: skip
    return write_config(tmp / "station.yaml", cfg)


@pytest.mark.parametrize("which", ["cuda", "tensorrt"])
def test_run_and_serve_refuse_a_provider_that_cannot_run(which: str, tmp_path: Path) -> None:
    config = _config(tmp_path, which)
    for command in (["run", "-n", "3"], ["serve"]):
        r = S.kanjian(*command, "-c", str(config), timeout=180)
        assert r.returncode == 2, r.stdout + r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"error: execution provider {ORT[which]} (first of model.providers) cannot run "
            "model.onnx: "
        ), line
        for cause in _expected_causes(which):
            assert cause in line, (cause, line)
        assert ". Fix: " in line, line
        assert line.endswith(
            "; or set model.allow_fallback: true to run on CPUExecutionProvider instead"
        ), line
        # refused before the store opened: not one row, not even a database
        assert not (tmp_path / "data" / "kanjian.db").exists()


@pytest.mark.parametrize("which", ["cuda", "tensorrt"])
def test_run_with_allow_fallback_judges_on_the_cpu_and_says_so(which: str, tmp_path: Path) -> None:
    config = _config(tmp_path, which, model={"allow_fallback": True})
    r = S.kanjian("run", "-n", "4", "-c", str(config), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    said = f"on CPUExecutionProvider (FALLBACK from {ORT[which]}: model.allow_fallback is on)"
    assert said in r.stdout + r.stderr
    rows = S.sql(tmp_path / "data" / "kanjian.db", "SELECT count(*) FROM inspections")
    assert rows == [(4,)]


def test_serve_with_allow_fallback_says_so_everywhere(tmp_path: Path, broker: Any) -> None:
    bundle = tmp_path / "model"  # a TensorRT engine cache would be made beside it
    shutil.copytree(DEMO_MODEL, bundle)
    sections = {
        "model": {"path": str(bundle), "providers": CHAIN["tensorrt"], "allow_fallback": True},
        "camera": {"loop": False},  # 12 images: the station then idles, served
        "sync": {"enabled": True, "mqtt": {"port": broker.port}, "close_drain_s": 0.0},
        "station": {"id": "st-fb", "site": "site-fb", "line": "line-1"},
    }
    heard = sup.Recorder(broker.port)
    try:
        with screen_station(tmp_path, sections=sections) as scr:
            auth = {"Authorization": f"Bearer {scr.token}"}
            status = httpx.get(f"{scr.served.url}/api/status", headers=auth).json()
            m = status["model"]
            assert m["fell_back"] is True and m["provider"] == "CPUExecutionProvider"
            assert m["providers_requested"] == [
                "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
            ]  # fmt: skip
            for cause in _expected_causes("tensorrt"):
                assert cause in m["fallback_cause"]
            # the metric (Prometheus text)
            metrics = httpx.get(f"{scr.served.url}/metrics", headers=auth).text
            assert (
                'kanjian_provider_fallback{provider="CPUExecutionProvider",'
                'requested="TensorrtExecutionProvider"} 1.0'
            ) in metrics
            # the start-up lines
            printed = "".join(scr.served.lines)
            assert "on CPUExecutionProvider (FALLBACK from TensorrtExecutionProvider" in printed
            # the platform event: a row in the outbox, and on the broker, valid
            S.wait_for(
                lambda: any(e["event"] == "provider_fallback" for e in heard.events()),
                30,
                what="the provider_fallback event on the broker",
            )
            rows = scr.sql("SELECT payload_json FROM sync_events WHERE event = ?",
                           ("provider_fallback",))  # fmt: skip
            assert len(rows) == 1
            event = json.loads(rows[0][0])
            sup.schema_validator("event").validate(event)
            assert [e for e in heard.events() if e["event"] == "provider_fallback"] == [event]
            assert event["data"]["model"]["sha256"] == m["sha256"]
            assert event["data"]["requested"] == "TensorrtExecutionProvider"
            assert event["data"]["provider"] == "CPUExecutionProvider"
            assert event["data"]["cause"] == m["fallback_cause"]
            assert (event["site"], event["station"]) == ("site-fb", "st-fb")
            # the screen's model badge, in both languages
            scr.open(lang="zh")
            page = scr.page
            page.wait_for_selector("#model-fallback:not([hidden])")
            assert page.is_visible("#model-fallback")
            assert page.text_content("#model-fallback") == "已回退CPU"
            title = page.get_attribute("#model-fallback", "title") or ""
            assert title.startswith("TensorrtExecutionProvider → CPUExecutionProvider: ")
            assert "warn" in (page.get_attribute("#badge-model", "class") or "").split()
            page.click("#lang")
            page.wait_for_function(
                "() => document.getElementById('model-fallback').textContent === 'CPU fallback'"
            )
            box = page.locator("#model-fallback").bounding_box()
            assert box is not None and box["width"] > 20 and box["x"] + box["width"] <= 1280
    finally:
        heard.close()


def test_a_runtime_activation_without_the_provider_is_refused(
    tmp_path: Path, broker: Any, detect_model: Any
) -> None:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    heard = sup.Recorder(broker.port)
    station, state, _cfg = S.start_station(
        tmp_path, 6, bundles,
        model={"providers": CHAIN["cuda"], "allow_fallback": True},
        sync={"enabled": True, "mqtt": {"port": broker.port}, "close_drain_s": 0.0},
    )  # fmt: skip
    server = S.ServerThread(state)
    try:
        token = TokenStore(state.pool.get()).create("eng", Role.ENGINEER, "tests").secret
        eng = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )
        a, b = bundles.sha_a, bundles.sha_b
        assert eng.post("/api/models", content=S.pack(bundles.b)).status_code == 201
        # allowed: the new model runs on the CPU too, and the platform hears of it
        r = eng.post(f"/api/models/{b}/activate")
        assert r.status_code == 200, r.text
        m = eng.get("/api/status").json()["model"]
        assert (m["sha256"], m["fell_back"], m["provider"]) == (b, True, "CPUExecutionProvider")

        def fallbacks() -> list[str]:
            return [
                e["data"]["model"]["sha256"]
                for e in heard.events()
                if e["event"] == "provider_fallback"
            ]

        S.wait_for(lambda: fallbacks() == [a, b], 30, what="one provider_fallback per model")
        # the same station where the fallback is no longer allowed (what a station with
        # allow_fallback off and a provider that stops loading meets; such a station
        # cannot start on this machine): the activation is refused, nothing changes
        state.registry.allow_fallback = False
        r = eng.post(f"/api/models/{a}/activate")
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert detail.startswith(f"model {a[:12]}… not activated, the running model keeps judging")
        assert "execution provider CUDAExecutionProvider" in detail
        assert "model.allow_fallback: true" in detail
        assert station.inspector.model.info.sha256 == b
        assert eng.get("/api/status").json()["model"]["sha256"] == b
        rows = S.sql(
            station.store.db_path,
            "SELECT action, target FROM audit WHERE action = 'model.activate' ORDER BY id",
        )
        assert rows == [("model.activate", b)]
    finally:
        server.stop()
        station.close()
        state.pool.close_all()
        heard.close()
