"""Model bundles through the HTTP API: upload, activate, roll back, and every kind of
bad upload refused while the running model keeps running (real app, real station)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support import api as S
from tests.support.api_env import Env


def test_upload_activate_rollback(env: Env) -> None:
    eng = env.client("engineer")
    a, b = env.bundles.sha_a, env.bundles.sha_b
    r = eng.post(
        "/api/models",
        content=S.pack(env.bundles.b, "tar.gz"),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["model"]["sha256"] == b and not r.json()["model"]["active"]
    assert (env.data_dir / "models" / b / "model.onnx").is_file()
    again = eng.post("/api/models", content=S.pack(env.bundles.b))
    assert again.status_code == 200 and again.json()["created"] is False
    listed = eng.get("/api/models").json()
    assert listed["active_sha256"] == a and {m["sha256"] for m in listed["models"]} == {a, b}
    r = eng.post(f"/api/models/{b}/activate")
    assert r.status_code == 200 and r.json()["active"] and not r.json()["previous"]
    assert env.state.station.inspector.model.info.sha256 == b
    assert eng.get("/api/status").json()["model"]["version"] == "1.1"
    assert eng.post(f"/api/models/{b}/activate").status_code == 409
    prev = [m for m in eng.get("/api/models").json()["models"] if m["previous"]]
    assert [m["sha256"] for m in prev] == [a]
    r = eng.post("/api/models/rollback")
    assert r.status_code == 200 and r.json()["sha256"] == a
    assert env.state.station.inspector.model.info.sha256 == a
    r = eng.post("/api/models/rollback")
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]
    assert eng.post(f"/api/models/{'0' * 64}/activate").status_code == 404
    actions = env.sql(
        "SELECT action, target, actor FROM audit WHERE action LIKE 'model.%' "
        "AND action != 'model.upload_refused' ORDER BY id"
    )
    assert actions == [
        ("model.upload", b, "test-engineer"),
        ("model.activate", b, "test-engineer"),
        ("model.rollback", a, "test-engineer"),
    ]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _raw_post(env: Env, path: str, token: str, length: int, body: bytes) -> bytes:
    import socket

    port = int(env.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + body
        )
        out = b""
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            block = s.recv(65536)
            if not block:
                break
            out += block
        return out


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}


def _symlink_tar(bundle: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(bundle, arcname="bundle")
        link = tarfile.TarInfo("bundle/golden/evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


def test_bad_uploads_are_refused_and_the_running_model_stays(env: Env) -> None:
    eng = env.client("engineer")
    files = _bundle_files(env.bundles.b)
    onnx = bytearray(files["model.onnx"])
    onnx[len(onnx) // 2] ^= 0xFF
    tampered = {**files, "model.onnx": bytes(onnx)}
    import json

    golden = json.loads(files["golden/expected.json"])
    for img in golden["images"]:  # the recorded answers no longer match the weights
        for det in img["detections"]:
            det["confidence"] = round(min(1.0, det["confidence"] + 0.2), 4)
        img["detections"].append({"xyxy": [1, 1, 50, 50], "confidence": 0.9, "class_id": 0})
    wrong_golden = {**files, "golden/expected.json": json.dumps(golden).encode()}
    no_golden = {k: v for k, v in files.items() if not k.startswith("golden/")}
    bomb = _zip({**files, "golden/zeros.bin": bytes(70 * 2**20)})
    cases = [
        (_zip(tampered), 422, "sha256"),
        (_zip(wrong_golden), 422, "golden check failed"),
        (_zip(no_golden), 422, "golden set missing"),
        (_zip({**files, "../../escape.txt": b"x"}), 400, "'..'"),
        (_zip({**files, "/tmp/abs.txt": b"x"}), 400, "absolute"),
        (_symlink_tar(env.bundles.b), 400, "symlink"),
        (bomb, 413, "exceeds"),
        (b"this is not an archive at all", 415, "not a .zip"),
        (S.pack(env.bundles.b)[:5000], 400, "corrupt"),
        (b"", 400, "empty upload"),
        (_zip({"readme.txt": b"hi"}), 422, "manifest.json"),
    ]
    active = env.state.station.inspector.model.info.sha256
    n_models = env.sql("SELECT COUNT(*) FROM models")[0][0]
    for body, code, words in cases:
        r = eng.post("/api/models", content=body)
        assert r.status_code == code, (words, r.text)
        assert words in r.json()["detail"], (words, r.text)
        assert env.state.station.inspector.model.info.sha256 == active
    # a declared size over api.max_upload_mb (40 MiB) is refused before reading the body
    head = _raw_post(env, "/api/models", env.tokens["engineer"], 41 * 2**20, b"x" * 100)
    assert head.startswith(b"HTTP/1.1 413") and b"max_upload_mb" in head

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(42):
            yield bytes(2**20)

    try:
        r = eng.post("/api/models", content=chunks())
        assert r.status_code == 413 and "max_upload_mb" in r.text
    except httpx.WriteError:
        pass  # the server answered 413 and closed before the client finished sending
    assert env.sql("SELECT COUNT(*) FROM models")[0][0] == n_models
    incoming = env.data_dir / "models" / ".incoming"
    assert list(incoming.iterdir()) == []  # nothing left behind
    assert not (env.data_dir.parent / "escape.txt").exists()
    assert not Path("/tmp/abs.txt").exists()
    refused = env.sql("SELECT COUNT(*) FROM audit WHERE action = 'model.upload_refused'")[0][0]
    assert refused >= len(cases) - 1  # all but the empty body reached the registry
