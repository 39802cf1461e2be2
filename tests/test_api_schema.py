"""``schemathesis run`` against the app's own OpenAPI schema: no input gives a 5xx.

Runs on a real server (uvicorn thread) over a real station whose loop has
judged its images, with an admin token so every operation is reached past the
role check. The two endless streams (events, MJPEG) are left out: they never
finish a response; tests/test_api.py reads them. So is the health probe, whose 503 is
its answer (this station's finite camera has ended: not live, not ready), not a
server error; tests/test_health.py holds it to that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import api as S  # the servers and bundles tests share


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Iterator[Any]:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("schema")
    # the fuzzer logs in with made-up tokens (POST /api/session): unthrottled, or its
    # address would be refused 429 for the rest of the run
    api = {"max_upload_mb": 5, "auth_failures_max": 1_000_000}
    station, state, _ = S.start_station(tmp, 8, bundles, api=api)
    S.wait_for(lambda: not state.loop.alive(), 120, what="the loop to finish")
    server = S.ServerThread(state)
    token = TokenStore(state.pool.get()).create("fuzzer", Role.ADMIN, "tests").secret
    try:
        yield server, token
    finally:
        server.stop()
        station.close()
        state.pool.close_all()


def test_schemathesis_run_finds_no_server_errors(api_server: Any, tmp_path: Path) -> None:
    server, token = api_server
    st = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run(
        [
            str(st),
            "run",
            server.url + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "-H",
            f"Authorization: Bearer {token}",
            "--exclude-path-regex",
            r"^/api/(events|live\.mjpeg|health)$",
            "--max-examples",
            "20",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "60",
            # our -H token must not be replaced by generated (invalid) bearer values
            "--generation-with-security-parameters",
            "false",
            "--seed",
            "4",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # it keeps a .schemathesis/ folder in the working directory
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    print(r.stdout)
    assert "only 401/403" not in r.stdout  # the token worked: operations were reached
