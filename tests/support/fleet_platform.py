"""A running platform with a fleet's data, for the fleet page's tests (no tests here).

Real peers: PostgreSQL (``initdb``), Mosquitto, SeaweedFS S3 and the platform's own
receiver (:class:`kanjian.platform.receiver.Receiver`). The stations' traffic
(:mod:`tests.support.fleet_data`) goes through the broker: availability retained, then
inspections and events at QoS 1; the receiver stores it as it stores any station's.
The FAIL pictures are put into S3 under the station's key scheme. Tokens are made with
the platform's token store, and the page runs as ``kanjian platform serve`` (a
subprocess, S3 credentials from the environment as boto3 reads them).

``fleet_platform`` is session-scoped (tests/conftest.py imports it): the page tests and
the scope tests share one platform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from kanjian.platform.pg_writer import assign_site
from kanjian.platform.receiver import Receiver
from kanjian.platform.schema import migrate
from kanjian.platform.web.scope import PlatformRole, Scope
from kanjian.platform.web.tokens import PlatformTokens
from kanjian.station.sync.config import MqttConfig
from tests.peers import mosquitto as mosq
from tests.peers import postgres as pgpeer
from tests.peers import seaweed
from tests.support import fleet_data as FD
from tests.support.sync import schema_validator, wait_for

#: the tokens every fleet made here has: name -> (role, scope)
TOKENS: dict[str, tuple[PlatformRole, Scope]] = {
    "viewer-acme": (PlatformRole.VIEWER, Scope(firm="acme")),
    "viewer-borealis": (PlatformRole.VIEWER, Scope(firm="borealis")),
    "viewer-sites": (PlatformRole.VIEWER, Scope(sites=("sz-02", "nb-01"))),
    "engineer-acme": (PlatformRole.ENGINEER, Scope(firm="acme")),
    "admin": (PlatformRole.ADMIN, Scope()),
    "revoked": (PlatformRole.VIEWER, Scope(firm="acme")),
}


@dataclass
class FleetPlatform:
    """The peers, the data sent, the tokens (name -> secret) and the served page."""

    data: FD.FleetData
    pg: pgpeer.Postgres
    broker: mosq.Mosquitto
    s3: seaweed.SeaweedS3
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def sql(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on the platform database (the tests' oracle)."""
        with psycopg.connect(self.pg.url, options="-c timezone=UTC") as c:
            return list(c.execute(query, args))

    def get(self, path: str, token: str | None = "viewer-acme", **params: Any) -> httpx.Response:
        """``GET path`` with the named token's secret (None: no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=30)

    def json(self, path: str, token: str = "viewer-acme", **params: Any) -> Any:
        r = self.get(path, token, **params)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()


def _publish(data: FD.FleetData, port: int, what: list[tuple[str, bytes, bool]]) -> None:
    """Publish ``(topic, payload, retain)`` at QoS 1 and wait for every PUBACK."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-stations",
                    protocol=mqtt.MQTTv5)  # fmt: skip
    c.max_inflight_messages_set(500)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1, retain=r) for t, p, r in what]
        for i in infos:
            i.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()


def _topic(m: dict[str, Any], leaf: str) -> str:
    return f"{FD.PREFIX}/{m['site']}/{m['line']}/{m['station']}/{leaf}"


def send(fp: FleetPlatform) -> None:
    """The stations' traffic through the broker into PostgreSQL, by the receiver."""
    data = fp.data
    check = schema_validator("inspection")
    for m in data.messages[:: max(1, len(data.messages) // 50)]:
        check.validate(m)
    events = schema_validator("event")
    for e in data.events:
        events.validate(e)
    s3 = fp.s3.client()
    for key, body in data.images.items():
        s3.put_object(Bucket=FD.BUCKET, Key=key, Body=body, ContentType="image/jpeg")  # type: ignore[attr-defined]
    with psycopg.connect(fp.pg.url) as conn:
        migrate(conn)
        for firm, sites in FD.FIRMS.items():
            for site in sites:
                assign_site(conn, site, firm)
    rec = Receiver(MqttConfig(host="127.0.0.1", port=fp.broker.port), fp.pg.url,
                   client_id="fleet-receiver", prefix=FD.PREFIX).start()  # fmt: skip
    try:
        said = [s for s in data.stations if s.availability]
        # retained: delivered whenever the receiver's subscription lands, so once they are
        # stored the receiver is subscribed and nothing published after can miss it
        _publish(data, fp.broker.port, [
            (f"{FD.PREFIX}/{s.site}/{s.line}/{s.station}/availability",
             s.availability.encode(), True) for s in said if s.availability])  # fmt: skip
        wait_for(lambda: fp.sql("SELECT count(*) FROM stations WHERE availability IS NOT NULL")
                 [0][0] == len(said), 60, "the availability stored")  # fmt: skip
        _publish(data, fp.broker.port,
                 [(_topic(m, "inspections"), json.dumps(m).encode(), False)
                  for m in data.messages]
                 + [(_topic(e, "events"), json.dumps(e).encode(), False) for e in data.events])  # fmt: skip
        wait_for(lambda: fp.sql("SELECT (SELECT count(*) FROM inspections), "
                                "(SELECT count(*) FROM events)")[0]
                 == (len(data.messages), len(data.events)), 120, "every message stored")  # fmt: skip
    finally:
        rec.stop()
    with psycopg.connect(fp.pg.url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def make_tokens(fp: FleetPlatform) -> None:
    with psycopg.connect(fp.pg.url) as conn:
        store = PlatformTokens(conn)
        for name, (role, scope) in TOKENS.items():
            made = store.create(name, role, scope, "tests")
            fp.tokens[name] = made.secret
            if name == "revoked":
                store.revoke(made.info.id)


def serve(fp: FleetPlatform, workdir: Path) -> None:
    """``kanjian platform serve`` on a free port, and wait until it answers."""
    port = mosq.free_port()
    fp.url = f"http://127.0.0.1:{port}"
    fp.log = workdir / "serve.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": seaweed.ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": seaweed.SECRET_KEY, "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with fp.log.open("ab") as log:
        fp.proc = subprocess.Popen(
            [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "serve",
             "--db", fp.pg.url, "--port", str(port), "--s3-endpoint", fp.s3.endpoint,
             "--s3-bucket", FD.BUCKET], stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(fp.url + "/api/whoami", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if fp.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"platform serve did not start: {fp.log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running_fleet(
    workdir: Path, hours: int = 30, per_hour: int = 8, images_dir: Path | None = None
) -> Iterator[FleetPlatform]:
    """A platform holding :func:`tests.support.fleet_data.make_fleet`'s traffic, served."""
    now = datetime.now(timezone.utc)
    data = FD.make_fleet(now, hours, per_hour, images_dir=images_dir)
    pg = pgpeer.Postgres(workdir / "pg").start()
    broker = mosq.Mosquitto(workdir / "broker")
    s3 = seaweed.SeaweedS3(workdir / "s3", bucket=FD.BUCKET)
    fp = FleetPlatform(data, pg, broker, s3)
    try:
        broker.start()
        s3.start()
        send(fp)
        make_tokens(fp)
        serve(fp, workdir)
        yield fp
    finally:
        if fp.proc is not None and fp.proc.poll() is None:
            fp.proc.terminate()
            fp.proc.wait(30)
        s3.kill()
        broker.stop()
        pg.stop()


@pytest.fixture(scope="session")
def fleet_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetPlatform]:
    """One platform for the page and scope tests: 19 stations, 30 hours, ~8 parts an hour."""
    with running_fleet(tmp_path_factory.mktemp("fleet")) as fp:
        yield fp
