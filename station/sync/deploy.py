"""Model rollout from the platform: the ``deploy_model`` command.

A command names a bundle archive (``.tar`` / ``.tar.gz`` of a bundle
directory) in object storage and the sha256 of the archive's bytes. The
station downloads it, checks the hash, unpacks it safely, runs the bundle's
golden check, loads it, and only then swaps it in (between two frames, like
the API does). Every outcome writes an audit row and publishes an event; a
command that fails any check changes nothing. A command id seen before is
answered with its recorded outcome, not run again (QoS 1 may redeliver).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import shutil
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import ValidationError

from kanjian.inference.bundle import MANIFEST_NAME, MODEL_NAME, read_manifest, sha256_file
from kanjian.inference.golden import GoldenReport, check_bundle
from kanjian.inference.model import OnnxModel, load_model
from kanjian.station.records import utc_iso
from kanjian.station.store import open_db
from kanjian.station.sync.config import S3Config
from kanjian.station.sync.messages import DeployModelIn

log = logging.getLogger(__name__)

MODELS_DIR = "models"


class DeployRefused(Exception):
    """A check failed; the message says which, for the event and the audit row."""


@dataclass(frozen=True)
class DeployOutcome:
    """What became of one command.

    Attributes:
        command_id: the platform's id for the command.
        ok: the model was activated.
        reason: why it was refused ("" when ok).
        model: name, version, sha256 of the bundle's ONNX (when known).
        previous: the model that was active before (when activated).
        bundle_dir: where the bundle was unpacked (kept only when activated).
    """

    command_id: str
    ok: bool
    reason: str
    model: dict[str, str] | None = None
    previous: dict[str, str] | None = None
    bundle_dir: str | None = None

    def event_data(self) -> dict[str, Any]:
        d: dict[str, Any] = {"command_id": self.command_id, "source": "platform"}
        if self.ok:
            d.update(model=self.model, previous=self.previous)
        else:
            d.update(reason=self.reason, model=self.model)
        return d


def pack_bundle(bundle_dir: Path, archive: Path) -> str:
    """Write ``bundle_dir`` as a ``.tar.gz`` whose members sit at its root; return its sha256."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(bundle_dir)), recursive=False)
    return sha256_file(archive)


def safe_extract(data: bytes, dest: Path, max_bytes: int) -> Path:
    """Unpack a bundle archive into ``dest``; return the folder holding ``manifest.json``.

    Only regular files and folders with relative paths inside ``dest`` are
    accepted: links, devices, absolute paths and ``..`` are refused.
    """
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (with below)
    except tarfile.TarError as e:
        raise DeployRefused(f"not a tar archive: {e}") from e
    total = 0
    with tar:
        members = tar.getmembers()
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or ".." in p.parts:
                raise DeployRefused(f"archive member {m.name!r} points outside the bundle")
            if not (m.isfile() or m.isdir()):
                raise DeployRefused(f"archive member {m.name!r} is not a plain file or folder")
            total += m.size
            if total > max_bytes:
                raise DeployRefused(f"archive unpacks to more than {max_bytes} bytes")
        dest.mkdir(parents=True)
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            with src, target.open("wb") as f:
                shutil.copyfileobj(src, f)
    if (dest / MANIFEST_NAME).is_file():
        return dest
    subs = [d for d in dest.iterdir() if d.is_dir() and (d / MANIFEST_NAME).is_file()]
    if len(subs) != 1:
        raise DeployRefused(f"archive has no {MANIFEST_NAME} at its root or in one folder")
    return subs[0]


class ModelDeployer:
    """Runs ``deploy_model`` commands one at a time on its own thread.

    Args:
        db_path: the station's database (audit, model registry, commands seen).
        data_dir: bundles are kept under ``data_dir/models/``.
        s3: where bundles are fetched from.
        providers: execution providers to load the new model with.
        activate: swaps the loaded model in; returns the ref dict of the one it replaced.
        emit: publishes an event (``model_activated`` / ``model_rejected``).
        max_bytes: largest archive accepted.
    """

    def __init__(
        self,
        db_path: Path,
        data_dir: Path,
        s3: S3Config,
        providers: tuple[str, ...],
        activate: Callable[[OnnxModel], dict[str, str] | None],
        emit: Callable[[str, dict[str, Any]], None],
        max_bytes: int,
        intra_op_threads: int | None = None,
    ) -> None:
        self.db_path, self.data_dir, self.s3 = db_path, data_dir, s3
        self.providers = providers
        self.intra_op_threads = intra_op_threads  # as the station's own model: same threads
        self.activate, self.emit = activate, emit
        self.max_bytes = max_bytes
        self.outcomes: list[DeployOutcome] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sync-deploy", daemon=True)
        self._thread.start()

    def submit(self, payload: bytes) -> None:
        """Queue a command's raw payload (called from the MQTT thread; never blocks)."""
        self._queue.put(payload)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _answer_interrupted(self, db: Any) -> None:
        """Commands the station stopped in the middle of (a crash, a power cut) get their
        answer now: refused, "interrupted"; the platform sends a new command to retry.

        The MQTT client acknowledged them on receipt, so the broker will not deliver
        them again; without this the platform would wait for an outcome forever.
        """
        for p in (self.data_dir / MODELS_DIR).glob(".incoming-*"):
            shutil.rmtree(p, ignore_errors=True)  # half-unpacked archives of those
        rows = db.execute(
            "SELECT command_id FROM sync_commands WHERE outcome IS NULL AND command = 'deploy_model'"
        ).fetchall()
        for (cid,) in rows:
            reason = "interrupted: the station stopped during this deploy; send a new command"
            self._record(db, DeployOutcome(cid, False, reason), None, new_command=True)

    def _run(self) -> None:
        db = open_db(self.db_path)
        try:
            try:
                self._answer_interrupted(db)
            except Exception:  # the deployer still serves new commands
                log.exception("answering interrupted deploy commands failed")
            while (payload := self._queue.get()) is not None:
                try:
                    out = self.handle(db, payload)
                except Exception as e:  # a bug here must not kill the thread
                    log.exception("deploy command failed unexpectedly")
                    out = DeployOutcome("?", False, f"internal error: {type(e).__name__}: {e}")
                self.outcomes.append(out)
        finally:
            db.conn.close()

    def handle(self, db: Any, payload: bytes) -> DeployOutcome:
        """Run one command to its outcome (audit row and event included)."""
        try:
            cmd = DeployModelIn.model_validate_json(payload)
        except ValidationError as e:
            cid = _command_id_of(payload)
            reason = "invalid deploy_model command: " + "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            out = DeployOutcome(cid, False, reason)
            self._record(db, out, None, new_command=False)
            return out
        seen = db.execute(
            "SELECT outcome, detail_json FROM sync_commands WHERE command_id = ?", [cmd.command_id]
        ).fetchone()
        if seen is not None and seen[0] is not None:
            detail = json.loads(seen[1] or "{}")
            out = DeployOutcome(cmd.command_id, seen[0] == "activated", detail.get("reason", ""),
                                detail.get("model"), detail.get("previous"))  # fmt: skip
            self.emit("model_activated" if out.ok else "model_rejected",
                      {**out.event_data(), "repeated": True})  # fmt: skip
            return out
        with db.atomic():
            db.execute(
                "INSERT OR IGNORE INTO sync_commands (command_id, command, received_at) "
                "VALUES (?, 'deploy_model', ?)",
                [cmd.command_id, utc_iso()],
            )
        work = self.data_dir / MODELS_DIR / f".incoming-{cmd.command_id}"
        try:
            out = self._deploy(cmd, work)
        except DeployRefused as e:
            out = DeployOutcome(cmd.command_id, False, str(e))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not out.ok and out.bundle_dir:
            shutil.rmtree(out.bundle_dir, ignore_errors=True)
        self._record(db, out, cmd, new_command=True)
        return out

    def _deploy(self, cmd: DeployModelIn, work: Path) -> DeployOutcome:
        from kanjian.station.sync.objectstore import make_s3_client

        bucket = cmd.bucket or self.s3.bucket
        try:
            obj = make_s3_client(self.s3).get_object(Bucket=bucket, Key=cmd.key)
            size = int(obj.get("ContentLength") or 0)
            if size > self.max_bytes:
                raise DeployRefused(f"bundle is {size} bytes, more than {self.max_bytes}")
            data = obj["Body"].read(self.max_bytes + 1)
        except DeployRefused:
            raise
        except Exception as e:
            raise DeployRefused(f"cannot download s3://{bucket}/{cmd.key}: {e}") from e
        if len(data) > self.max_bytes:
            raise DeployRefused(f"bundle is more than {self.max_bytes} bytes")
        sha = hashlib.sha256(data).hexdigest()
        if sha != cmd.sha256:
            raise DeployRefused(f"sha256 of s3://{bucket}/{cmd.key} is {sha}, not {cmd.sha256}")
        bundle = safe_extract(data, work / "bundle", 4 * self.max_bytes)
        report = golden_check_isolated(bundle, self.providers)
        if not report.ok:
            raise DeployRefused("golden check failed: " + "; ".join(report.problems[:5]))
        manifest = read_manifest(bundle)
        final = self.data_dir / MODELS_DIR / f"{manifest.name}-{manifest.version}-{sha[:12]}"
        fresh = not final.exists()
        if fresh:
            bundle.rename(final)
        elif sha256_file(final / MODEL_NAME) != manifest.onnx_sha256:
            # the same archive was deployed before, and that copy (perhaps registered,
            # perhaps running) is not what was checked: never replace it under a user
            raise DeployRefused(f"{final} holds a different model.onnx than this bundle")
        # else: the same archive deployed before, byte for byte: keep that copy
        try:
            model = load_model(final, self.providers, self.intra_op_threads)
            # warm the session up before the swap so the first frame it judges is not
            # slow; only ONNX Runtime runs here (the Numba kernels stay on the loop's
            # thread: the workqueue layer aborts on concurrent launches)
            h, w = model.info.imgsz
            model.run(np.zeros((1, 3, h, w), np.float32))
        except Exception as e:
            if fresh:
                shutil.rmtree(final, ignore_errors=True)
            raise DeployRefused(f"bundle does not load: {type(e).__name__}: {e}") from e
        ref = {"name": model.info.name, "version": model.info.version, "sha256": model.info.sha256}
        previous = self.activate(model)
        if previous is None:  # it already judges: nothing swapped, nothing to record
            return DeployOutcome(cmd.command_id, True, "", ref, ref, None)
        return DeployOutcome(cmd.command_id, True, "", ref, previous, str(final))

    def _record(
        self, db: Any, out: DeployOutcome, cmd: DeployModelIn | None, new_command: bool
    ) -> None:
        detail = {
            "reason": out.reason,
            "model": out.model,
            "previous": out.previous,
            "key": cmd.key if cmd else None,
            "archive_sha256": cmd.sha256 if cmd else None,
            "bundle_dir": out.bundle_dir,
        }
        at = utc_iso()
        with db.atomic():
            if new_command:
                db.execute(
                    "UPDATE sync_commands SET outcome = ?, detail_json = ? WHERE command_id = ?",
                    ["activated" if out.ok else "refused", json.dumps(detail), out.command_id],
                )
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail_json) VALUES (?, ?, ?, ?, ?)",
                [
                    at,
                    f"platform:{out.command_id}",
                    "model.deploy" if out.ok else "model.deploy_refused",
                    (out.model or {}).get("sha256") or (cmd.sha256 if cmd else None),
                    json.dumps(detail, sort_keys=True),
                ],
            )
            if out.ok and out.model is not None and out.bundle_dir is not None:
                self._register(db, out, at)
        self.emit("model_activated" if out.ok else "model_rejected", out.event_data())
        if out.ok:
            log.info("deploy %s: activated %s", out.command_id, out.model)
        else:
            log.warning("deploy %s refused: %s", out.command_id, out.reason)

    def _register(self, db: Any, out: DeployOutcome, at: str) -> None:
        # the API's model registry: the bundle, and an activation on top of the stack
        assert out.model is not None and out.bundle_dir is not None
        manifest = read_manifest(Path(out.bundle_dir))
        size = sum(p.stat().st_size for p in Path(out.bundle_dir).rglob("*") if p.is_file())
        db.execute(
            "INSERT OR IGNORE INTO models (sha256, name, version, task, path, origin, "
            "size_bytes, added_at, added_by) VALUES (?, ?, ?, ?, ?, 'platform', ?, ?, ?)",
            [out.model["sha256"], manifest.name, manifest.version, manifest.task,
             out.bundle_dir, size, at, f"platform:{out.command_id}"],
        )  # fmt: skip
        db.execute(
            "INSERT INTO model_activations (sha256, action, at, actor) "
            "VALUES (?, 'activate', ?, ?)",
            [out.model["sha256"], at, f"platform:{out.command_id}"],
        )


def golden_check_isolated(
    bundle: Path, providers: tuple[str, ...], timeout_s: float = 600.0
) -> GoldenReport:
    """Run :func:`~kanjian.inference.golden.check_bundle` in a child process.

    Why not on a thread of the station: Numba's ``workqueue`` layer (the
    station's choice) aborts the whole process when two threads launch
    parallel kernels at once, and the inspection loop is running them. A child
    process also keeps a crafted ONNX file that crashes ONNX Runtime away from
    the running station.
    """
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-m", "kanjian.station.sync.deploy", str(bundle), *providers],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return GoldenReport(False, 0, [f"golden check took more than {timeout_s:.0f}s"])
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return GoldenReport(False, 0, [f"golden check crashed ({done.returncode}): {tail}"])
    r = json.loads(lines[-1])
    return GoldenReport(bool(r["ok"]), int(r["images"]), list(r["problems"]))


def _command_id_of(payload: bytes) -> str:
    try:
        v = json.loads(payload).get("command_id")
        return str(v)[:128] if v else "?"
    except (ValueError, AttributeError):
        return "?"


if __name__ == "__main__":  # the child of golden_check_isolated
    import sys as _sys

    _r = check_bundle(Path(_sys.argv[1]), tuple(_sys.argv[2:]) or ("cpu",))
    print(json.dumps({"ok": _r.ok, "images": _r.images, "problems": _r.problems}))
