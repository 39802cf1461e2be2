"""The platform's catalogue of model bundle archives in object storage.

A ``deploy_model`` command names an archive (bucket, key, sha256 of its bytes);
the station answers with the sha256 of the archive's ONNX file (the model it then
runs, which every inspection message carries). The catalogue,
``platform_bundles`` (:mod:`kanjian.platform.schema_rollout`), links the two, so a
rollback can deploy again the archive of the model a station ran before.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanjian.inference.bundle import BundleError, read_manifest, sha256_file
from kanjian.station.state.archive import ArchiveRejected, extract_bundle, pack_bundle
from kanjian.station.sync.config import S3Config


class BundleProblem(ValueError):
    """A bundle folder or archive cannot be rolled out (the message says why)."""


@dataclass(frozen=True)
class BundleRef:
    """One archive in object storage and the model inside it.

    Attributes:
        archive_sha256: sha256 of the archive's bytes (the command's ``sha256``).
        bucket, key: where it lies.
        model_sha256: sha256 of its ``model.onnx`` (what the stations report).
        name, version: from its manifest.
    """

    archive_sha256: str
    bucket: str
    key: str
    model_sha256: str
    name: str
    version: str


def _model_of(bundle_dir: Path) -> tuple[str, str, str]:
    """``(model_sha256, name, version)`` of a bundle folder whose ONNX matches its manifest."""
    try:
        m = read_manifest(bundle_dir)
    except BundleError as e:
        raise BundleProblem(str(e)) from None
    onnx = bundle_dir / "model.onnx"
    if not onnx.is_file():
        raise BundleProblem(f"{bundle_dir}: no model.onnx")
    sha = sha256_file(onnx)
    if sha != m.onnx_sha256:
        raise BundleProblem(
            f"{bundle_dir}: model.onnx has sha256 {sha}, the manifest says {m.onnx_sha256}"
        )
    return sha, m.name, m.version


def upload_bundle(bundle_dir: Path, s3: S3Config, s3_client: Any = None) -> BundleRef:
    """Pack a bundle folder as ``.tar.gz`` and put it at
    ``bundles/<name>/<version>/<archive sha256[:16]>.tar.gz`` in ``s3.bucket``."""
    from kanjian.station.sync.objectstore import make_s3_client

    model_sha, name, version = _model_of(bundle_dir)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        sha = pack_bundle(bundle_dir, archive)
        key = f"bundles/{name}/{version}/{sha[:16]}.tar.gz"
        (s3_client or make_s3_client(s3)).upload_file(str(archive), s3.bucket, key)
    return BundleRef(sha, s3.bucket, key, model_sha, name, version)


def bundle_in_s3(key: str, s3: S3Config, max_bytes: int = 2 << 30) -> BundleRef:
    """Read an archive already in ``s3.bucket`` (as ``kanjian platform deploy`` or
    another tool put it there): its sha256, and its manifest and model from inside."""
    from kanjian.station.sync.objectstore import make_s3_client

    try:
        obj = make_s3_client(s3).get_object(Bucket=s3.bucket, Key=key)
        data: bytes = obj["Body"].read(max_bytes + 1)
    except Exception as e:
        raise BundleProblem(f"cannot read s3://{s3.bucket}/{key}: {e}") from None
    if len(data) > max_bytes:
        raise BundleProblem(f"s3://{s3.bucket}/{key} is more than {max_bytes} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.archive"
        archive.write_bytes(data)
        try:
            root = extract_bundle(archive, Path(tmp) / "unpacked", 4 * max_bytes)
        except ArchiveRejected as e:
            raise BundleProblem(f"s3://{s3.bucket}/{key}: {e}") from None
        model_sha, name, version = _model_of(root)
    return BundleRef(hashlib.sha256(data).hexdigest(), s3.bucket, key, model_sha, name, version)


def record_bundle(conn: Any, ref: BundleRef, by: str) -> None:
    """Add an archive to the catalogue (in the caller's transaction; known ones stay)."""
    conn.execute(
        "INSERT INTO platform_bundles (archive_sha256, bucket, key, model_sha256, name, "
        "version, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        [ref.archive_sha256, ref.bucket, ref.key, ref.model_sha256, ref.name, ref.version, by],
    )


def bundle_for_model(conn: Any, model_sha256: str) -> BundleRef | None:
    """The archive catalogued last for this model, if any."""
    row = conn.execute(
        "SELECT archive_sha256, bucket, key, model_sha256, name, version FROM platform_bundles "
        "WHERE model_sha256 = %s ORDER BY uploaded_at DESC LIMIT 1",
        [model_sha256],
    ).fetchone()
    return None if row is None else BundleRef(*row)


def bundle_by_archive(conn: Any, archive_sha256: str) -> BundleRef:
    """The catalogued archive with this sha256 (it must be there)."""
    row = conn.execute(
        "SELECT archive_sha256, bucket, key, model_sha256, name, version FROM platform_bundles "
        "WHERE archive_sha256 = %s",
        [archive_sha256],
    ).fetchone()
    if row is None:
        raise LookupError(f"no catalogued archive with sha256 {archive_sha256}")
    return BundleRef(*row)
