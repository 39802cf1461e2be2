"""The API test station: a real station that judged N_IMAGES NEU-DET images, its
app served by a real uvicorn, and a token per role (fixture ``env``, shared by
test_api.py and test_api_models.py through conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as S

N_IMAGES = 24


@dataclass
class Env:
    url: str
    state: Any
    db_path: Path
    data_dir: Path
    bundles: Any
    tokens: dict[str, str]  # role -> bearer token
    token_names: dict[str, str]
    config: dict[str, Any]  # the station.yaml it runs, rules made from the model's scores

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return S.sql(self.db_path, query, args)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, detect_model: Any) -> Iterator[Env]:
    from kanjian.appliance_api.http.auth import Role, TokenStore

    bundles = S.make_bundles(detect_model)
    tmp = tmp_path_factory.mktemp("api")
    station, state, config = S.start_station(
        tmp,
        N_IMAGES,
        bundles,
        # the role table presents dozens of forged tokens from 127.0.0.1 on purpose: no
        # throttle here (tests/test_web_edges.py tests it)
        api={"max_upload_mb": 40, "max_unpacked_mb": 60, "auth_failures_max": 1_000_000},
    )
    S.wait_for(lambda: not state.loop.alive(), 120, what="the loop to judge every image")
    assert station.store.flush()
    server = S.ServerThread(state)
    ts = TokenStore(state.pool.get())
    tokens, names = {}, {}
    for role in Role:
        new = ts.create(f"test-{role.value}", role, "tests")
        tokens[role.value], names[role.value] = new.secret, new.info.name
    try:
        yield Env(
            server.url, state, station.store.db_path, tmp / "data", bundles, tokens, names, config
        )
    finally:
        server.stop()
        station.close()
        state.pool.close_all()
