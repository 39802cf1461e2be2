"""Unpacking a model bundle archive (.zip, .tar.gz, .tar) safely; packing one.

The one unpacker for bundles from the API (uploads) and from the platform
(``deploy_model``). An archive is untrusted: every member must be a plain file or folder with a
relative path that stays inside the destination (no ``..``, no absolute or
drive paths, no symlinks, hard links or devices), there may be at most
``max_files`` members, and the unpacked bytes are counted as they are written
(headers can lie) so an archive bomb stops at ``max_bytes``.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from kanjian.inference.bundle import MANIFEST_NAME, sha256_file

_CHUNK = 1 << 20


#: why an archive was refused: ``malformed`` (unsafe or corrupt), ``too_big`` (a size
#: or member-count limit), ``wrong_type`` (not a .zip / .tar), ``invalid`` (no bundle)
RejectKind = Literal["malformed", "too_big", "wrong_type", "invalid"]


class ArchiveRejected(Exception):
    """The archive cannot be unpacked; the message names the problem for the user.

    Attributes:
        kind: which sort of problem (the HTTP layer maps it to a status).
    """

    def __init__(self, message: str, kind: RejectKind = "malformed") -> None:
        super().__init__(message)
        self.kind: RejectKind = kind


def archive_kind(path: Path) -> str:
    """``"zip"``, ``"tar"`` (plain or gzip) by magic bytes; raises :class:`ArchiveRejected`."""
    with path.open("rb") as f:
        head = f.read(262)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    raise ArchiveRejected(
        "the upload is not a .zip, .tar.gz or .tar archive of a bundle folder", "wrong_type"
    )


def _safe_relpath(name: str) -> PurePosixPath:
    if "\\" in name or "\0" in name:
        raise ArchiveRejected(f"archive member {name!r}: backslashes and NULs are not allowed")
    p = PurePosixPath(name)
    if p.is_absolute() or (p.parts and ":" in p.parts[0]):
        raise ArchiveRejected(f"archive member {name!r}: absolute paths are not allowed")
    if any(part == ".." for part in p.parts):
        raise ArchiveRejected(f"archive member {name!r}: '..' would leave the bundle folder")
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts:
        raise ArchiveRejected(f"archive member {name!r}: empty path")
    return PurePosixPath(*parts)


class _Budget:
    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes, self.max_files = max_bytes, max_files
        self.bytes = self.files = 0

    def member(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise ArchiveRejected(f"archive has more than {self.max_files} members", "too_big")

    def copy(self, src: IO[bytes], dst: Path, name: str) -> None:
        with dst.open("xb") as out:
            while block := src.read(_CHUNK):
                self.bytes += len(block)
                if self.bytes > self.max_bytes:
                    raise ArchiveRejected(
                        f"unpacked bundle exceeds {self.max_bytes / 2**20:.0f} MiB "
                        f"(while writing {name!r})",
                        "too_big",
                    )
                out.write(block)


def _target(dest: Path, rel: PurePosixPath) -> Path:
    out = dest.joinpath(*rel.parts)
    # belt and braces: the resolved path must still be under dest
    if not out.resolve().is_relative_to(dest.resolve()):
        raise ArchiveRejected(f"archive member {rel}: would be written outside the bundle folder")
    return out


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ArchiveRejected(f"corrupt zip archive: {e}") from e
    with zf:
        for info in zf.infolist():
            budget.member(info.filename)
            # Unix type bits of the member; 0 when the writer did not record any
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveRejected(
                    f"archive member {info.filename!r}: only plain files and folders are "
                    "allowed (no symlinks or devices)"
                )
            rel = _safe_relpath(info.filename)
            out = _target(dest, rel)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    budget.copy(src, out, info.filename)
            except FileExistsError as e:
                raise ArchiveRejected(f"archive member {info.filename!r} appears twice") from e
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise ArchiveRejected(f"corrupt zip member {info.filename!r}: {e}") from e


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveRejected(f"corrupt tar archive: {e}") from e
    with tf:
        try:
            for m in tf:
                budget.member(m.name)
                if not (m.isreg() or m.isdir()):
                    raise ArchiveRejected(
                        f"archive member {m.name!r}: only plain files and folders are "
                        "allowed (no symlinks, hard links or devices)"
                    )
                rel = _safe_relpath(m.name)
                out = _target(dest, rel)
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                if src is None:
                    raise ArchiveRejected(f"archive member {m.name!r}: unreadable")
                try:
                    budget.copy(src, out, m.name)
                except FileExistsError as e:
                    raise ArchiveRejected(f"archive member {m.name!r} appears twice") from e
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ArchiveRejected(f"corrupt tar archive: {e}") from e


def extract_bundle(archive: Path, dest: Path, max_bytes: int, max_files: int = 2000) -> Path:
    """Unpack ``archive`` into the empty folder ``dest``; return the bundle's root folder.

    The root is ``dest`` when ``manifest.json`` sits at the top of the archive,
    or its single top-level folder when the archive holds one folder.

    Raises:
        ArchiveRejected: naming the member or limit at fault.
    """
    dest.mkdir(parents=True, exist_ok=False)
    budget = _Budget(max_bytes, max_files)
    if archive_kind(archive) == "zip":
        _extract_zip(archive, dest, budget)
    else:
        _extract_tar(archive, dest, budget)
    if (dest / MANIFEST_NAME).is_file():
        return dest
    tops = list(dest.iterdir())
    if len(tops) == 1 and tops[0].is_dir() and (tops[0] / MANIFEST_NAME).is_file():
        return tops[0]
    raise ArchiveRejected(
        f"no {MANIFEST_NAME} at the top of the archive (or of its single folder): "
        "pack the bundle folder (model.onnx, manifest.json, golden/)",
        "invalid",
    )


@contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """A folder under ``parent`` that is removed on exit, whatever happens."""
    path = parent / name
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pack_bundle(bundle_dir: Path, archive: Path) -> str:
    """Write ``bundle_dir`` as a ``.tar.gz`` whose members sit at its root; return its sha256."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(bundle_dir)), recursive=False)
    return sha256_file(archive)
