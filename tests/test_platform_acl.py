"""Broker credentials and ACL from ``kanjian platform acl``, on a real Mosquitto.

The files are written by the CLI and loaded by Mosquitto 2.0 itself; the checks are
made both with the station's own MQTT client (paho, through
:func:`kanjian.station.sync.mqtt_client.make_client` and ``sync.mqtt.password_file``)
and with another code base: Mosquitto's own ``mosquitto_pub`` / ``mosquitto_sub``
(Debian mosquitto-clients, libmosquitto) and ``mosquitto_passwd`` for the hashes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kanjian.platform.broker_acl import check_password, hash_password, write_acl
from kanjian.station.sync.config import MqttConfig
from kanjian.station.sync.mqtt_client import make_client
from tests.peers import mosquitto as mosq
from tests.support.sync import wait_for

ST1, ST2 = ("site-a", "line-1", "st-1"), ("site-b", "line-9", "st-2")
P = "kanjian/v1"
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


def _tool(name: str) -> str:
    found = f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.fail(f"{name} not installed: apt-get install mosquitto-clients")
    return found


def test_hashes_are_mosquittos_own_format(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("")
    subprocess.run([_tool("mosquitto_passwd"), "-b", str(pw), "alice", "s3cret pass"],
                   check=True)  # fmt: skip
    user, hashed = pw.read_text().strip().split(":", 1)
    assert user == "alice" and check_password("s3cret pass", hashed)
    assert not check_password("s3cret pas", hashed)
    # the same salt gives the same line as Mosquitto's own tool
    import base64

    salt = base64.b64decode(hashed.split("$")[3])
    assert hash_password("s3cret pass", salt) == hashed


def test_passwords_are_kept_and_stations_added(tmp_path: Path) -> None:
    first = write_acl(tmp_path, (ST1,))
    assert set(first.new_users) == {"kanjian-receiver", "kanjian-deployer", "site-a/line-1/st-1"}
    pw1 = first.credentials["site-a/line-1/st-1"].read_text()
    assert oct(first.credentials["site-a/line-1/st-1"].stat().st_mode & 0o777) == "0o600"
    second = write_acl(tmp_path, (ST1, ST2))
    assert second.new_users == ("site-b/line-9/st-2",)
    assert second.credentials["site-a/line-1/st-1"].read_text() == pw1
    lines = dict(x.split(":", 1) for x in second.passwd.read_text().splitlines())
    assert set(lines) == set(second.credentials)
    for user, path in second.credentials.items():
        assert check_password(path.read_text().strip(), lines[user])
    rotated = write_acl(tmp_path, (ST1, ST2), rotate=True)
    assert set(rotated.new_users) == set(rotated.credentials)
    assert rotated.credentials["site-a/line-1/st-1"].read_text() != pw1
    with pytest.raises(ValueError, match="wildcards"):
        write_acl(tmp_path, (ST1,), prefix="kanjian/+")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    work = tmp_path_factory.mktemp("acl")
    (work / "stations.txt").write_text("# the fleet\nsite-a/line-1/st-1\n\nsite-b/line-9/st-2\n")
    done = subprocess.run(
        [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform", "acl",
         "--stations", str(work / "stations.txt"), "--out", str(work / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = work / "out"
    # the broker takes the lines the command wrote for it (after the peer's defaults)
    b = mosq.Mosquitto(work / "broker", extra=tuple((out / "mosquitto.conf").read_text()
                                                    .splitlines())).start()  # fmt: skip
    yield b, out / "credentials"
    b.stop()


class Client:
    """A station-side paho client made by the station's own code, recording outcomes."""

    def __init__(self, port: int, user: str | None, password_file: Path | None) -> None:
        cfg = MqttConfig(port=port, username=user, password_file=password_file)
        self.c = make_client(cfg, f"test-{user}-{time.monotonic_ns()}")
        self.connack: list[int] = []
        self.puback: dict[int, int] = {}
        self.suback: list[list[int]] = []
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(rc.value)
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self.puback.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda _c, _u, _m, rcs, _p: self.suback.append([r.value for r in rcs])
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()
        wait_for(lambda: bool(self.connack), 30, "CONNACK")

    def publish(self, topic: str, payload: bytes) -> int:
        """The PUBACK's reason code."""
        mid = self.c.publish(topic, payload, qos=1).mid
        wait_for(lambda: mid in self.puback, 30, f"PUBACK for {topic}")
        return self.puback[mid]

    def subscribe(self, topic: str) -> list[int]:
        n = len(self.suback)
        self.c.subscribe(topic, qos=1)
        wait_for(lambda: len(self.suback) > n, 30, f"SUBACK for {topic}")
        return self.suback[n]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _cli_pub(port: int, user: str, password: str, topic: str, msg: str, v: str = "mqttv5") -> str:
    done = subprocess.run(
        [_tool("mosquitto_pub"), "-V", v, "-p", str(port), "-u", user, "-P", password, "-q", "1",
         "-t", topic, "-m", msg, "-d"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.stdout + done.stderr + f"\nexit {done.returncode}"


def test_a_station_publishes_only_under_its_own_prefix(broker: tuple[Any, Path]) -> None:
    b, creds = broker
    st1_pw = creds / "site-a" / "line-1" / "st-1.password"
    st2_pw = creds / "site-b" / "line-9" / "st-2.password"
    rec_pw = (creds / "kanjian-receiver.password").read_text().strip()
    # the receivers' view, through Mosquitto's own client: everything under the prefix
    sub = subprocess.Popen(  # (stdbuf: line by line into the pipe, not at exit)
        ["stdbuf", "-oL", _tool("mosquitto_sub"), "-V", "mqttv5", "-p", str(b.port), "-u", "kanjian-receiver",
         "-P", rec_pw, "-q", "1", "-t", f"{P}/#", "-v", "-d"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(sub.stdout.readline, "")),  # type: ignore[union-attr]
                     daemon=True).start()  # fmt: skip
    st1 = Client(b.port, "site-a/line-1/st-1", st1_pw)
    st2 = Client(b.port, "site-b/line-9/st-2", st2_pw)
    try:
        wait_for(lambda: any("received SUBACK" in x for x in seen), 30, "the receiver subscribed")
        assert st1.connack == [0] and st2.connack == [0]
        own, other = f"{P}/site-a/line-1/st-1", f"{P}/site-b/line-9/st-2"
        assert st1.publish(f"{own}/inspections", b"own-1") == 0
        # under another station's prefix: refused with MQTT 5's "not authorized"
        assert st1.publish(f"{other}/inspections", b"forged-1") == NOT_AUTHORIZED
        assert st1.publish(f"{other}/events", b"forged-2") == NOT_AUTHORIZED
        assert st1.publish(f"{P}/site-a/line-1/st-11/inspections", b"forged-3") == NOT_AUTHORIZED
        st1_secret = st1_pw.read_text().strip()
        said = _cli_pub(
            b.port, "site-a/line-1/st-1", st1_secret, f"{other}/inspections", "forged-4"
        )
        assert "received PUBACK (Mid: 1, RC:135)" in said, said
        # MQTT 3.1.1 has no reason codes: the broker acknowledges and drops it
        said = _cli_pub(b.port, "site-a/line-1/st-1", st1_secret, f"{other}/inspections",
                        "forged-5", v="mqttv311")  # fmt: skip
        assert "received PUBACK (Mid: 1, RC:0)" in said, said
        said = _cli_pub(b.port, "site-a/line-1/st-1", st1_secret, f"{own}/events", "own-2")
        assert "RC:0" in said and "exit 0" in said, said
        # a station reads only its own commands and confirmations: Mosquitto 2.0.11 grants
        # any subscription (SUBACK QoS 1) and checks the ACL on each message it would deliver
        for topic in (f"{other}/cmd/#", f"{P}/#", f"{own}/cmd/#", f"{own}/confirm"):
            assert st1.subscribe(topic) == [1]
        assert st2.subscribe(f"{other}/cmd/#") == [1]
        # the deployer may send deploy_model and nothing else; the receivers confirm
        dep = (creds / "kanjian-deployer.password").read_text().strip()
        said = _cli_pub(b.port, "kanjian-deployer", dep, f"{own}/cmd/deploy_model", "cmd-1")
        assert "RC:0" in said, said
        said = _cli_pub(b.port, "kanjian-deployer", dep, f"{own}/inspections", "forged-6")
        assert "RC:135" in said, said
        assert "RC:0" in _cli_pub(b.port, "kanjian-receiver", rec_pw, f"{own}/confirm", "conf-1")
        assert "RC:0" in _cli_pub(b.port, "kanjian-deployer", dep, f"{other}/cmd/deploy_model",
                                  "cmd-2")  # fmt: skip
        assert st2.publish(f"{other}/inspections", b"own-3") == 0
        assert st1.publish(f"{own}/inspections", b"sentinel") == 0
        wait_for(lambda: any("sentinel" in x for x in seen), 30, "the receiver got the sentinel")
        wait_for(lambda: len(st1.got) >= 2 and st2.got, 30, "the stations' commands")
        # (each once per matching subscription); not st-2's command, nor any inspection
        assert {p for _t, p in st1.got} == {b"cmd-1", b"conf-1"}
        assert {p for _t, p in st2.got} == {b"cmd-2"}
        got = [x.strip() for x in seen if x.startswith(P)]
        assert not [x for x in got if "forged" in x], got
        for msg in ("own-1", "own-2", "own-3", "cmd-1", "conf-1", "sentinel"):
            assert any(x.endswith(" " + msg) for x in got), (msg, got)
    finally:
        st1.close()
        st2.close()
        sub.terminate()
        sub.wait(10)


def test_wrong_or_no_credentials_are_refused(broker: tuple[Any, Path], tmp_path: Path) -> None:
    b, creds = broker
    said = _cli_pub(b.port, "site-a/line-1/st-1", "not-the-password", f"{P}/x", "m")
    assert "CONNACK (135)" in said and "exit 0" not in said, said
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    assert Client(b.port, "site-a/line-1/st-1", wrong).connack == [NOT_AUTHORIZED]
    # a station's own password is not another station's
    own = creds / "site-a" / "line-1" / "st-1.password"
    assert Client(b.port, "site-b/line-9/st-2", own).connack == [NOT_AUTHORIZED]
    assert Client(b.port, None, None).connack == [NOT_AUTHORIZED]  # anonymous


def test_password_file_in_the_station_config(tmp_path: Path) -> None:
    from kanjian.station.config import load_config

    with pytest.raises(ValidationError, match="password or password_file, not both"):
        MqttConfig(username="u", password="p", password_file=tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="password_file needs username"):
        MqttConfig(password_file=tmp_path / "x")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        MqttConfig(username="u", password_file=empty).secret()
    with pytest.raises(ValueError, match="cannot read it"):
        MqttConfig(username="u", password_file=tmp_path / "missing").secret()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "st.password").write_text("pw-1\nignored\n")
    (tmp_path / "station.yaml").write_text(
        "sync:\n  mqtt:\n    username: site-a/line-1/st-1\n    password_file: secrets/st.password\n"
    )
    cfg = load_config(tmp_path / "station.yaml")
    assert cfg.sync.mqtt.password_file == tmp_path / "secrets" / "st.password"
    assert cfg.sync.mqtt.secret() == "pw-1"
    assert MqttConfig(username="u", password="inline").secret() == "inline"  # type: ignore[arg-type]


def test_a_station_with_an_unreadable_password_file_refuses_to_start(tmp_path: Path) -> None:
    from tests.support.station_config import station_config, write_config

    demo = Path(__file__).resolve().parents[1] / "station" / "demo"
    cfg = station_config(tmp_path / "data", bundle=demo / "model", images=demo / "images",
                         sync={"enabled": True, "mqtt": {"port": 1, "username": "a/b/c",
                                                         "password_file": "nothere.password"}})  # fmt: skip
    write_config(tmp_path / "station.yaml", cfg)
    done = subprocess.run(
        [sys.executable, "-m", "kanjian.appliance_api.cli.main", "run", "-c",
         str(tmp_path / "station.yaml")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"sync.mqtt.password_file {tmp_path / 'nothere.password'}: cannot read it" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_receiver_stores_only_what_a_station_says_of_itself(
    broker: tuple[Any, Path], tmp_path: Path
) -> None:
    """The broker vouches for the topic; a message naming another station is refused."""
    import json
    import sqlite3
    import uuid

    from kanjian.platform.receiver import Receiver

    b, creds = broker
    rec = Receiver(
        MqttConfig(port=b.port, username="kanjian-receiver",
                   password_file=creds / "kanjian-receiver.password"),
        str(tmp_path / "platform.db"), client_id="acl-receiver",
    ).start()  # fmt: skip
    st1 = Client(b.port, "site-a/line-1/st-1", creds / "site-a" / "line-1" / "st-1.password")
    try:
        wait_for(rec.connected.is_set, 30, "the receiver connected")
        time.sleep(0.5)  # (its SUBACK)

        def msg(site: str, line: str, station: str, seq: int) -> bytes:
            return json.dumps({"type": "inspection", "version": 1,
                               "inspection_id": str(uuid.uuid4()), "site": site, "line": line,
                               "station": station, "stream": "s1", "seq": seq,
                               "verdict": "PASS"}).encode()  # fmt: skip

        own = f"{P}/site-a/line-1/st-1/inspections"
        assert st1.publish(own, msg(*ST2, 1)) == 0  # the broker lets it through: its own topic
        assert st1.publish(own, msg(*ST1, 2)) == 0
        wait_for(lambda: rec.stats.messages >= 2, 30, "both at the receiver")
        wait_for(lambda: rec.stats.stored == 1, 30, "the true one stored")
        assert rec.stats.invalid == 1
    finally:
        st1.close()
        rec.stop()
    con = sqlite3.connect(tmp_path / "platform.db")
    assert con.execute("SELECT site, line, station, seq FROM inspections").fetchall() == [(*ST1, 2)]
    con.close()
