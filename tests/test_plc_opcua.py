"""The PLC handshake over OPC UA (asyncua client and subscriptions, sign&encrypt) and the
PLC's recipes, against a real station on 127.0.0.1; a pymodbus client plays the PLC where
a SCADA system watches beside it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.plc import (
    HR_ID,
    HR_RECIPE,
    HR_REFUSED,
    HR_SEQ,
    HR_STATUS,
    HR_TRIGGERS,
    HR_VERDICT,
    ST_READY,
    ST_VALID,
    VERDICT_CODES,
    ModbusPlc,
    db_rows,
    free_port,
    modbus_port,
    opcua_endpoint,
    plc_service,
    plc_station,
    report,
    running,
    u32,
)


async def _opcua_set_recipe(endpoint: str, recipe: int) -> Any:
    """Call Station.SetRecipe; returns None, or the status error the server answered."""
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        station = client.get_node(ua.NodeId("Station", ns))
        try:
            await station.call_method(
                ua.NodeId("Station.SetRecipe", ns), ua.Variant(recipe, ua.VariantType.UInt16)
            )
        except ua.UaStatusCodeError as e:  # type: ignore[attr-defined]
            return e
        return None


def test_recipe_writes_switch_the_model_and_unknown_ones_are_refused(
    detect_model: Any, tmp_path: Path
) -> None:
    from tests.support import api as S

    bundles = S.make_bundles(detect_model)  # two bundles, different weights
    mb, ua_port = free_port(), free_port()
    plc_cfg = {
        "modbus": {"port": mb},
        "opcua": {"enabled": True, "port": ua_port},
        "recipes": {1: str(bundles.a), 2: str(bundles.b)},
    }
    judged: list[tuple[int, str]] = []  # (RECIPE register, model_sha256 of the row)
    with running(plc_station(tmp_path, bundles.a, plc=plc_cfg)) as station:
        plc = ModbusPlc(modbus_port(station))
        assert plc.regs()[HR_RECIPE] == 1  # station.yaml's model is recipe 1's

        def inspect() -> None:
            plc.trigger()
            regs = plc.wait_valid()
            plc.ack()
            judged.append((regs[HR_RECIPE], u32(regs, HR_SEQ)))

        inspect()
        for recipe in (2, 1, 2):  # changeovers, as a PLC writes them between parts
            assert not plc.c.write_register(HR_RECIPE, recipe).isError()
            inspect()
        # a recipe with no model: an exception answer, the register and model stay
        r = plc.c.write_register(HR_RECIPE, 7)
        assert r.isError() and r.exception_code == 3  # ILLEGAL_DATA_VALUE
        inspect()
        bad = asyncio.run(_opcua_set_recipe(opcua_endpoint(station), 9))
        assert bad is not None and "BadOutOfRange" in str(bad)
        assert asyncio.run(_opcua_set_recipe(opcua_endpoint(station), 1)) is None
        inspect()
        plc.close()
    con = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    sha = dict(con.execute("SELECT trigger_id, model_sha256 FROM inspections").fetchall())
    audit = con.execute("SELECT actor, action FROM audit WHERE action = 'model.recipe'").fetchall()
    con.close()
    want = {1: bundles.sha_a, 2: bundles.sha_b}
    assert [r for r, _ in judged] == [1, 2, 1, 2, 2, 1]
    assert [sha[f"plc-{seq}"] for _, seq in judged] == [want[r] for r, _ in judged]
    assert audit == [("plc", "model.recipe")] * 4  # 1->2, 2->1, 1->2, 2->1


# -- OPC UA --------------------------------------------------------------------------------


class _Changes:
    """Subscription handler: every ResultSeq notification with its arrival time."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self.event = asyncio.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen.append((int(val), time.perf_counter()))
        self.event.set()


async def _opcua_plc(endpoint: str, n: int, window: int) -> tuple[list[dict[str, Any]], Any, Any]:
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")

        def node(name: str) -> Any:
            return client.get_node(ua.NodeId(f"Station.{name}", ns))

        station = client.get_node(ua.NodeId("Station", ns))
        changes = _Changes()
        sub = await client.create_subscription(10, changes)
        await sub.subscribe_data_change(node("ResultSeq"), queuesize=1000)
        fields = ["ResultSeq", "Verdict", "VerdictName", "InspectionUuid", "InspectionId"]
        fields += ["TopClass", "TopClassName", "Reason", "ResultValid"]
        sent_at: dict[int, float] = {}
        outstanding: list[int] = []
        got: list[dict[str, Any]] = []
        next_seen = 0
        seen_at: dict[int, float] = {}
        while len(got) < n:
            # one at a time for the first half, then up to ``window`` outstanding
            depth = 1 if len(sent_at) < n // 2 else window
            while len(outstanding) < depth and len(sent_at) < n:
                t = time.perf_counter()
                seq, accepted = await station.call_method(ua.NodeId("Station.Trigger", ns))
                assert accepted
                sent_at[seq] = t
                outstanding.append(seq)
            head = outstanding[0]
            while head not in seen_at:
                changes.event.clear()
                for s, at in changes.seen[next_seen:]:
                    seen_at.setdefault(s, at)
                next_seen = len(changes.seen)
                if head not in seen_at:
                    await asyncio.wait_for(changes.event.wait(), 30)
            values = await client.read_values([node(f) for f in fields])
            got.append(
                dict(zip(fields, values, strict=True)) | {"lat": seen_at[head] - sent_at[head]}
            )
            assert got[-1]["ResultSeq"] == head and got[-1]["ResultValid"]
            retired = await station.call_method(
                ua.NodeId("Station.Acknowledge", ns), ua.Variant(head, ua.VariantType.UInt32)
            )
            assert retired
            outstanding.pop(0)
        await asyncio.sleep(0.1)
        counts = await client.read_values([node("TriggerCount"), node("ResultCount")])
        await sub.delete()
        return got, [s for s, _ in changes.seen], counts


def test_opcua_500_triggers_with_a_subscription_seeing_every_result(
    detect_model: Any, tmp_path: Path
) -> None:
    n, port = 500, free_port()
    plc_cfg = {
        "result_buffer": 4,
        "modbus": {"enabled": False},
        "opcua": {"enabled": True, "port": port},
    }
    with running(plc_station(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        endpoint = opcua_endpoint(station)
        got, seen, counts = asyncio.run(_opcua_plc(endpoint, n, window=4))
    assert [g["ResultSeq"] for g in got] == list(range(1, n + 1))
    # the subscription saw every result, in order (a leading 0 is the initial value)
    assert [s for s in seen if s] == list(range(1, n + 1))
    assert counts == [n, n]
    rows = db_rows(tmp_path)
    assert [r[0] for r in rows] == [f"plc-{i}" for i in range(1, n + 1)]
    for g, row in zip(got, rows, strict=True):
        assert g["InspectionUuid"] == row[1].replace("-", "")
        assert g["InspectionId"] == g["InspectionUuid"][:8]
        assert g["VerdictName"] == row[2] and g["Verdict"] == VERDICT_CODES[row[2]]
        assert g["TopClassName"] == (row[4] or "")
    lat = [g["lat"] * 1e3 for g in got]
    report("opcua-sequential", lat[: n // 2], tmp_path)
    report("opcua-pipelined-4", lat[n // 2 :], tmp_path)


class _ResultEvents:
    """Subscription handler: every InspectionResultEventType event, in arrival order."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.event = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.seen.append(event)
        self.event.set()


def _modbus_plc_run(port: int, n: int, window: int) -> tuple[list[list[int]], list[int]]:
    """A PLC on Modbus: trigger whenever READY (up to ``window`` outstanding) and
    acknowledge each result as soon as RESULT_VALID, as fast as it can, ``n`` times.
    Returns the result registers read, and the registers at the end."""
    plc = ModbusPlc(port)
    results: list[list[int]] = []
    sent = 0
    deadline = time.monotonic() + 120
    try:
        while len(results) < n and time.monotonic() < deadline:
            regs = plc.regs()
            if regs[HR_STATUS] & ST_VALID:
                results.append(regs)
                plc.ack()
            elif regs[HR_STATUS] & ST_READY and sent < n and sent - len(results) < window:
                sent += 1
                plc.trigger()
        return results, plc.regs()
    finally:
        plc.close()


async def _events_while_modbus_plc_runs(
    endpoint: str, port: int, n: int
) -> tuple[list[Any], tuple[list[list[int]], list[int]]]:
    from asyncua import Client, ua

    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        etype = client.get_node(ua.NodeId("InspectionResultEventType", ns))
        handler = _ResultEvents()
        sub = await client.create_subscription(100, handler)
        # queuesize 0: the server's largest queue (asyncua: 10,000 events)
        await sub.subscribe_events(client.nodes.server, etype, queuesize=0)
        plc = await asyncio.to_thread(_modbus_plc_run, port, n, 4)
        while len(handler.seen) < n:
            handler.event.clear()
            await asyncio.wait_for(handler.event.wait(), 30)
        await asyncio.sleep(0.3)  # anything more (a duplicate) would show up now
        await sub.delete()
        return handler.seen, plc


def test_opcua_event_subscriber_sees_every_result_a_modbus_plc_acknowledges(
    detect_model: Any, tmp_path: Path
) -> None:
    """A Modbus PLC triggers and acknowledges 100 results as fast as it can (a result is
    presented for well under one OPC UA publishing interval); a SCADA client subscribed
    to the result events on OPC UA sees every one, in trigger order, each matching its
    row, and nothing twice."""
    n, port, ua_port = 100, free_port(), free_port()
    plc_cfg = {
        "result_buffer": 4,
        "modbus": {"port": port},
        "opcua": {"enabled": True, "port": ua_port},
    }
    with running(plc_station(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        endpoint = opcua_endpoint(station)
        seen, (results, final) = asyncio.run(_events_while_modbus_plc_runs(endpoint, port, n))
    assert [u32(r, HR_SEQ) for r in results] == list(range(1, n + 1))
    assert u32(final, HR_TRIGGERS) == n and u32(final, HR_REFUSED) == 0
    assert [e.ResultSeq for e in seen] == list(range(1, n + 1))
    assert all(e.Accepted for e in seen)
    rows = db_rows(tmp_path)
    assert [r[0] for r in rows] == [f"plc-{i}" for i in range(1, n + 1)]
    for e, regs, row in zip(seen, results, rows, strict=True):
        assert e.InspectionUuid == row[1].replace("-", "")
        assert e.InspectionId == e.InspectionUuid[:8] == f"{u32(regs, HR_ID):08x}"
        assert e.VerdictName == row[2] and e.Verdict == VERDICT_CODES[row[2]] == regs[HR_VERDICT]
        assert e.TopClassName == (row[4] or "") and e.NumDetections == row[6]
        assert e.SourceName == "Station" and e.Message.Text == f"trigger {e.ResultSeq}: {row[2]}"


async def _secure_session(
    endpoint: str, client_dir: Path | None, server_cert: Path, uri: str
) -> int:
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    client = Client(endpoint, timeout=5)
    client.application_uri = uri
    if client_dir is not None:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(client_dir / "cert.der"),
            private_key=str(client_dir / "key.pem"),
            server_certificate=str(server_cert),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    async with client:
        ns = await client.get_namespace_index("urn:kanjian:station")
        seq, accepted = await client.get_node(ua.NodeId("Station", ns)).call_method(
            ua.NodeId("Station.Trigger", ns)
        )
        assert accepted
        return int(seq)


def test_opcua_sign_and_encrypt_with_trusted_client_certificates(
    detect_model: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from kanjian.appliance_api.cli.plc import plc_app

    runner = CliRunner()
    for name, extra in (("server", []), ("client", ["--client"]), ("stranger", ["--client"])):
        uri = "urn:kanjian:station:server" if name == "server" else f"urn:kanjian:test:{name}"
        r = runner.invoke(plc_app, ["cert", str(tmp_path / name), "--uri", uri, *extra])
        assert r.exit_code == 0, r.output
    port = free_port()
    sec = {
        "mode": "sign_encrypt",
        "certificate": str(tmp_path / "server/cert.der"),
        "private_key": str(tmp_path / "server/key.pem"),
        "trusted_clients": [str(tmp_path / "client/cert.der")],
    }
    plc_cfg = {
        "modbus": {"enabled": False},
        "opcua": {"enabled": True, "port": port, "security": sec},
    }
    server_cert = tmp_path / "server/cert.der"
    with running(plc_station(tmp_path, detect_model.onnx, plc=plc_cfg)) as station:
        endpoint = opcua_endpoint(station)
        seq = asyncio.run(
            _secure_session(endpoint, tmp_path / "client", server_cert, "urn:kanjian:test:client")
        )
        assert seq == 1
        from asyncua.ua.uaerrors import BadCertificateUntrusted, UaError

        with pytest.raises(UaError, match="No matching endpoints"):  # no plain endpoint
            asyncio.run(_secure_session(endpoint, None, server_cert, "urn:kanjian:test:plain"))
        with pytest.raises(BadCertificateUntrusted):  # a valid certificate, but not trusted
            asyncio.run(
                _secure_session(
                    endpoint, tmp_path / "stranger", server_cert, "urn:kanjian:test:stranger"
                )
            )
        assert plc_service(station).handshake.snapshot().trigger_count == 1
    assert [r[0] for r in db_rows(tmp_path)] == ["plc-1"]
