"""The web edges (issue 12): Host names, failed logins, the first start's token, the
screen's session cookie, and upload limits; on a real station served by a real uvicorn.

Client addresses other than 127.0.0.1 are made with ``X-Forwarded-For``, which uvicorn
honours from 127.0.0.1 (a reverse proxy on the station itself), exactly as it would
for clients behind such a proxy; each test uses addresses of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as S
from tests.support.station_config import station_config, write_config

GUARD_LOG = "kanjian.appliance_api.http.guard"
SESSION_S = 30  # the test station's session lifetime
WINDOW_S = 20  # its failed-login window and block
UPLOAD_MB = 1


@dataclass
class Edge:
    url: str
    state: Any
    db_path: Path
    tokens: dict[str, str]
    bundles: Any

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return S.sql(self.db_path, query, args)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Iterator[Edge]:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("edges")
    api = {
        "allowed_hosts": ["station-7.example"],
        "auth_failures_max": 10,
        "auth_window_s": WINDOW_S,
        "auth_log_every_s": 3600,
        "session_hours": SESSION_S / 3600,
        "max_upload_mb": UPLOAD_MB,
        "max_unpacked_mb": 2,
    }
    station, state, _ = S.start_station(tmp, 4, bundles, api=api)
    S.wait_for(lambda: not state.loop.alive(), 120, what="the loop to judge every image")
    server = S.ServerThread(state)
    ts = TokenStore(state.pool.get())
    tokens = {r.value: ts.create(f"edge-{r.value}", r, "tests").secret for r in Role}
    try:
        yield Edge(server.url, state, station.store.db_path, tokens, bundles)
    finally:
        server.stop()
        station.close()
        state.pool.close_all()


def _bearer(token: str, addr: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    if addr:
        h["X-Forwarded-For"] = addr
    return h


# -- Host ------------------------------------------------------------------------------


def test_a_foreign_host_gets_400_and_known_names_pass(edge: Edge) -> None:
    port = edge.url.rsplit(":", 1)[1]
    with edge.client() as c:
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}"):
            r = c.get("/healthz", headers={"Host": host})
            assert r.status_code == 400, host
            assert "api.allowed_hosts" in r.json()["detail"]
            assert "\n" not in r.json()["detail"]
            assert r.headers["x-content-type-options"] == "nosniff"
        # a rebinding page would reach the API only through a foreign name: refused too
        r = c.get("/api/status", headers={**_bearer(edge.tokens["admin"]), "Host": "evil.example"})
        assert r.status_code == 400
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "LOCALHOST.",
            "station-7.example",  # api.allowed_hosts
            f"Station-7.Example:{port}",
            socket.gethostname(),
        ):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_star_and_host_names() -> None:
    from kanjian.appliance_api.http.guard import allowed_hosts, normalize_host
    from kanjian.station.api_config import ApiConfig

    assert allowed_hosts(ApiConfig(allowed_hosts=["*"])) is None
    hosts = allowed_hosts(ApiConfig(host="10.1.2.3", allowed_hosts=["Panel.Lan."]))
    assert hosts is not None and {"10.1.2.3", "panel.lan", "localhost", "::1"} <= hosts
    assert normalize_host("[FE80::1]:8080") == "fe80::1"
    assert normalize_host("fe80::1") == "fe80::1"
    assert normalize_host("Host.Example.:80") == "host.example"
    with pytest.raises(ValueError, match="allowed host"):
        ApiConfig(allowed_hosts=["http://x/"])


# -- failed authentication -------------------------------------------------------------


def test_failed_logins_are_throttled_per_address_and_logged_sparingly(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    bad = "kj_00000000_" + "x" * 43
    attacker, neighbour = "10.0.0.66", "10.0.0.67"
    started = time.monotonic()
    codes, retry = [], []
    with edge.client() as c:
        for i in range(40):
            if i % 2:
                r = c.get("/api/status", headers=_bearer(bad, attacker))
            else:
                r = c.post(
                    "/api/session", json={"token": bad}, headers={"X-Forwarded-For": attacker}
                )
            codes.append(r.status_code)
            if r.status_code == 429:
                retry.append(int(r.headers["retry-after"]))
        elapsed = time.monotonic() - started
        assert codes[:10] == [401] * 10, codes  # the 10th failure starts the block
        assert codes[10] == 429, codes
        assert all(1 <= s <= WINDOW_S for s in retry)
        # while throttled even the right token is refused from there ...
        r = c.get("/api/status", headers=_bearer(edge.tokens["operator"], attacker))
        assert r.status_code == 429 and "Retry-After" in r.headers
        # ... but not from another address, nor from this machine
        assert c.get("/api/status", headers=_bearer(edge.tokens["operator"], neighbour)).is_success
        assert c.get("/api/status", headers=_bearer(edge.tokens["operator"])).is_success
        # after the cool-down the right token works from the attacker's address again
        S.wait_for(
            lambda: (
                c.get("/api/status", headers=_bearer(edge.tokens["operator"], attacker)).is_success
            ),
            WINDOW_S + 120,
            every=1,
            what="the throttle to cool down",
        )
    lines = [
        r.getMessage() for r in caplog.records if r.name == GUARD_LOG and attacker in r.getMessage()
    ]
    assert 1 <= len(lines) <= 2 + elapsed / 3600, lines  # api.auth_log_every_s: 3600
    assert all(bad[12:] not in line for line in lines)  # never the credential itself
    assert not [r for r in caplog.records if r.name == GUARD_LOG and neighbour in r.getMessage()]


def test_the_guard_counts_what_it_does_not_log(caplog: pytest.LogCaptureFixture) -> None:
    from kanjian.appliance_api.http.guard import AuthGuard

    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    now = [0.0]
    guard = AuthGuard(max_failures=10, window_s=60, log_every_s=30, clock=lambda: now[0])
    refused = 0
    for _ in range(40):
        if guard.retry_after("10.9.9.9") is None:
            guard.failed("10.9.9.9", "GET /api/status")
        else:
            refused += 1
        now[0] += 0.01
    assert refused == 30
    assert guard.retry_after("10.9.9.9") == 60
    assert guard.retry_after("10.9.9.8") is None  # another address
    now[0] += 31
    guard.retry_after("10.9.9.9")  # still blocked (30 s of 60 left): logs the tally
    msgs = [r.getMessage() for r in caplog.records if r.name == GUARD_LOG]
    assert len(msgs) == 2, msgs
    assert "1 bad credential" in msgs[0]
    assert "9 bad credential(s), 32 refused 429" in msgs[1]
    now[0] += 60
    assert guard.retry_after("10.9.9.9") is None  # cooled down


# -- sessions --------------------------------------------------------------------------


def _login(c: httpx.Client, token: str, **headers: str) -> SimpleCookie:
    r = c.post("/api/session", json={"token": token}, headers=headers)
    assert r.status_code == 204, r.text
    jar: SimpleCookie = SimpleCookie()
    jar.load(r.headers["set-cookie"])
    return jar


def _sid_get(edge: Edge, sid: str, addr: str, path: str = "/api/status") -> int:
    # the cookie sent by hand: the server, not the client's jar, must enforce expiry;
    # from an address of the test's own, so its refusals never throttle another test
    with edge.client(Cookie=f"kanjian_session={sid}", **{"X-Forwarded-For": addr}) as c:
        return c.get(path).status_code


def test_the_cookie_is_a_server_side_session_never_the_token(edge: Edge) -> None:
    import hashlib

    addr = "10.0.1.1"
    token = edge.tokens["admin"]
    with edge.client() as c:
        jar = _login(c, token)
        m = jar["kanjian_session"]
        raw = c.cookies.get("kanjian_session")
        assert raw and raw == m.value and token not in m.value and m.value not in token
        assert m["httponly"] and m["samesite"].lower() == "strict" and not m["secure"]
        assert m["max-age"] == str(SESSION_S)
        assert c.get("/api/whoami").json()["role"] == "admin"
        stored = edge.sql(
            "SELECT id_sha256, role, revoked_at FROM api_sessions WHERE id_sha256 = ?",
            (hashlib.sha256(m.value.encode()).hexdigest(),),
        )
        assert stored and stored[0][1:] == ("admin", None)
        assert not edge.sql("SELECT 1 FROM api_sessions WHERE id_sha256 = ?", (m.value,))
        # logging in again replaces the session; logging out revokes it on the station
        again = _login(c, token)["kanjian_session"].value
        assert _sid_get(edge, m.value, addr) == 401 and _sid_get(edge, again, addr) == 200
        assert c.delete("/api/session").status_code == 204
        assert _sid_get(edge, again, addr) == 401
    # served over TLS (here: a TLS proxy on the station says so) the cookie is Secure
    with edge.client() as c:
        assert _login(c, token, **{"X-Forwarded-Proto": "https"})["kanjian_session"]["secure"]


def test_revoking_a_token_ends_its_sessions(edge: Edge) -> None:
    admin = edge.client(**_bearer(edge.tokens["admin"]))
    made = {}
    for name in ("panel-api", "panel-cli"):
        r = admin.post("/api/tokens", json={"name": name, "role": "operator"})
        made[name] = r.json()
    sids = {}
    for name, t in made.items():
        with edge.client() as c1, edge.client() as c2:
            sids[name] = [_login(c, t["token"])["kanjian_session"].value for c in (c1, c2)]
        assert all(_sid_get(edge, s, "10.0.1.2") == 200 for s in sids[name])
    assert admin.delete(f"/api/tokens/{made['panel-api']['id']}").status_code == 200
    data_dir = edge.db_path.parent
    out = subprocess.run(
        [str(S.KANJIAN), "token", "revoke", made["panel-cli"]["id"], "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in made:
        assert [_sid_get(edge, s, "10.0.1.2") for s in sids[name]] == [401, 401], name
        rows = edge.sql(
            "SELECT COUNT(*), COUNT(revoked_at) FROM api_sessions WHERE token_id = ?",
            (made[name]["id"],),
        )
        assert rows == [(2, 2)]
    admin.close()


def test_a_session_expires(edge: Edge) -> None:
    with edge.client() as c:
        sid = _login(c, edge.tokens["operator"])["kanjian_session"].value
    addr = "10.0.1.3"
    assert _sid_get(edge, sid, addr) == 200
    S.wait_for(lambda: _sid_get(edge, sid, addr) == 401, SESSION_S + 120, every=1, what="expiry")
    assert _sid_get(edge, sid, addr, "/api/whoami") == 200  # whoami answers, unauthenticated
    with edge.client(Cookie=f"kanjian_session={sid}", **{"X-Forwarded-For": addr}) as c:
        assert c.get("/api/whoami").json()["authenticated"] is False


# -- uploads ---------------------------------------------------------------------------


def _incoming_bytes(edge: Edge) -> int:
    from kanjian.station.state.models import INCOMING_DIR

    folder = edge.state.registry.models_dir / INCOMING_DIR
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / f).stat().st_size
    return total


def test_an_upload_stops_writing_at_the_limit(edge: Edge) -> None:
    limit = UPLOAD_MB * 2**20
    seen = [0]
    chunk = b"z" * 2**16

    def body() -> Iterator[bytes]:  # chunked (no Content-Length): counted as it arrives
        for _ in range(32 * 2**20 // len(chunk)):
            seen[0] = max(seen[0], _incoming_bytes(edge))
            yield chunk

    with edge.client(**_bearer(edge.tokens["engineer"])) as c:
        try:
            r = c.post("/api/models", content=body())
            assert r.status_code == 413 and "api.max_upload_mb" in r.json()["detail"], r.text
        except httpx.TransportError:
            pass  # the server answered 413 and closed while the client still sent
        assert seen[0] <= limit
        r = c.post("/api/models", content=b"z" * (limit + 1))  # declared: refused at once
        assert r.status_code == 413 and "api.max_upload_mb" in r.json()["detail"]
    S.wait_for(lambda: _incoming_bytes(edge) == 0, 60, what="the upload's temp file to go")


def test_an_archive_bomb_stops_unpacking_at_the_limit(edge: Edge, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bundle/manifest.json", "{}")
        with zf.open("bundle/model.onnx", "w") as f:
            for _ in range(64):
                f.write(b"\0" * 2**20)  # 64 MiB of zeros, ~64 KiB packed
    data = bomb.read_bytes()
    assert len(data) < UPLOAD_MB * 2**20
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _incoming_bytes(edge))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with edge.client(**_bearer(edge.tokens["engineer"])) as c:
            r = c.post("/api/models", content=data, headers={"Content-Type": "application/zip"})
    finally:
        done.set()
        watcher.join(10)
    assert r.status_code == 413, r.text
    assert peak[0] <= 2 * 2**20 + len(data) + 2**20  # max_unpacked_mb, the archive, one buffer
    S.wait_for(lambda: _incoming_bytes(edge) == 0, 60, what="the scratch folder to go")


# -- the first start -------------------------------------------------------------------


def test_first_start_puts_the_token_in_a_0600_file_when_stdout_is_a_pipe(
    edge: Edge, tmp_path: Path
) -> None:
    images = S.copy_images(tmp_path / "images", 4)
    port = S.free_port()
    config = write_config(
        tmp_path / "station.yaml",
        station_config(
            tmp_path / "data",
            bundle=edge.bundles.a,
            images=images,
            rules=edge.bundles.rules_for(images),
            api={"port": port},
        ),
    )
    s = S.start_serve(config, port, tmp_path)
    try:
        link_file = tmp_path / "data" / "first-start-link.txt"
        out = "".join(s.lines)
        assert str(link_file.resolve()) in out
        assert "kj_" not in out and "#token=" not in out
        assert stat.S_IMODE(link_file.stat().st_mode) == 0o600
        assert (
            s.token and link_file.read_text().strip() == f"http://127.0.0.1:{port}/#token={s.token}"
        )
        with httpx.Client(base_url=s.url, headers=_bearer(s.token), timeout=60) as c:
            assert c.get("/api/whoami").json()["role"] == "operator"
    finally:
        out = s.stop()
    assert "kj_" not in out
