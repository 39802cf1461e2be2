"""Model rollout from the platform: the ``deploy_model`` command.

A command names a bundle archive (``.tar`` / ``.tar.gz`` of a bundle
directory) in object storage and the sha256 of the archive's bytes. The
station downloads it and checks the hash; the station's model registry
(:mod:`kanjian.station.state.models`, the same one the API uses) unpacks it
with the one byte-counting unpacker, runs the bundle's golden check, registers
it, loads it, and only then swaps it in (between two frames). Every outcome
writes an audit row and publishes an event; a command that fails any check
changes nothing. A command id seen before is answered with its recorded
outcome, not run again (QoS 1 may redeliver).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from pydantic import ValidationError

from kanjian.inference.model import OnnxModel
from kanjian.station.records import utc_iso
from kanjian.station.state.archive import ArchiveRejected
from kanjian.station.state.audit import Actor, write_audit
from kanjian.station.state.db import write_tx
from kanjian.station.state.models import INCOMING_DIR, MODELS_DIR, Activation, RegistryError
from kanjian.station.sync.config import S3Config
from kanjian.station.sync.messages import DeployModelIn

if TYPE_CHECKING:
    from kanjian.station.state.service import StationState

log = logging.getLogger(__name__)


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
        bundle_dir: where the registry keeps the bundle (when it was swapped in).
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


class ModelDeployer:
    """Runs ``deploy_model`` commands one at a time on its own thread.

    Args:
        state: the station's state: its registry unpacks, checks, registers and
            activates the bundle; its database keeps the commands seen and the audit.
        s3: where bundles are fetched from.
        emit: publishes an event (``model_activated`` / ``model_rejected``).
        max_bytes: largest archive accepted (its bundle may unpack to four times that).
        swap_lock, on_swapped: held around the swap / told the new model (the sync
            worker's model probe, which must not report this swap a second time).
    """

    def __init__(
        self,
        state: StationState,
        s3: S3Config,
        emit: Callable[[str, dict[str, Any]], None],
        max_bytes: int,
        swap_lock: threading.Lock | None = None,
        on_swapped: Callable[[OnnxModel], None] | None = None,
    ) -> None:
        self.state, self.s3, self.emit = state, s3, emit
        self.max_bytes = max_bytes
        self.swap_lock, self.on_swapped = swap_lock, on_swapped
        self.work_root = state.models.models_dir / INCOMING_DIR
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

    def _answer_interrupted(self, db: sqlite_utils.Database) -> None:
        """Commands the station stopped in the middle of (a crash, a power cut) get their
        answer now: refused, "interrupted"; the platform sends a new command to retry.

        The MQTT client acknowledged them on receipt, so the broker will not deliver
        them again; without this the platform would wait for an outcome forever.
        """
        for p in self.work_root.glob("deploy-*"):
            shutil.rmtree(p, ignore_errors=True)  # downloads of those
        rows = db.execute(
            "SELECT command_id FROM sync_commands WHERE outcome IS NULL AND command = 'deploy_model'"
        ).fetchall()
        for (cid,) in rows:
            reason = "interrupted: the station stopped during this deploy; send a new command"
            self._refused(db, DeployOutcome(cid, False, reason), None, new_command=True)

    def _run(self) -> None:
        db = self.state.pool.get()  # this thread's; the state closes it with the station
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

    def handle(self, db: sqlite_utils.Database, payload: bytes) -> DeployOutcome:
        """Run one command to its outcome (audit row and event included)."""
        try:
            cmd = DeployModelIn.model_validate_json(payload)
        except ValidationError as e:
            cid = _command_id_of(payload)
            reason = "invalid deploy_model command: " + "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            out = DeployOutcome(cid, False, reason)
            self._refused(db, out, None, new_command=False)
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
        with write_tx(db):
            db.execute(
                "INSERT OR IGNORE INTO sync_commands (command_id, command, received_at) "
                "VALUES (?, 'deploy_model', ?)",
                [cmd.command_id, utc_iso()],
            )
        work = self.work_root / f"deploy-{cmd.command_id}"
        try:
            out = self.install(cmd, self._download(cmd), work)
        except DeployRefused as e:
            out = DeployOutcome(cmd.command_id, False, str(e))
            self._refused(db, out, cmd, new_command=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def _download(self, cmd: DeployModelIn) -> bytes:
        from kanjian.station.sync.objectstore import make_s3_client

        bucket = cmd.bucket or self.s3.bucket
        try:
            obj = make_s3_client(self.s3).get_object(Bucket=bucket, Key=cmd.key)
            size = int(obj.get("ContentLength") or 0)
            if size > self.max_bytes:
                raise DeployRefused(f"bundle is {size} bytes, more than {self.max_bytes}")
            data: bytes = obj["Body"].read(self.max_bytes + 1)
        except DeployRefused:
            raise
        except Exception as e:
            raise DeployRefused(f"cannot download s3://{bucket}/{cmd.key}: {e}") from e
        if len(data) > self.max_bytes:
            raise DeployRefused(f"bundle is more than {self.max_bytes} bytes")
        sha = hashlib.sha256(data).hexdigest()
        if sha != cmd.sha256:
            raise DeployRefused(f"sha256 of s3://{bucket}/{cmd.key} is {sha}, not {cmd.sha256}")
        return data

    def install(self, cmd: DeployModelIn, data: bytes, work: Path) -> DeployOutcome:
        """Hand a downloaded archive to the registry and activate it; the outcome's rows
        are written in the activation's transaction and its event is published.

        Raises:
            DeployRefused: the archive, its bundle or its model failed a check.
        """
        work.mkdir(parents=True, exist_ok=True)
        archive = work / "bundle.archive"
        archive.write_bytes(data)
        actor = Actor(f"platform:{cmd.command_id}")
        models = self.state.models
        try:
            entry, _new = models.ingest(
                archive, actor, origin="platform", max_unpacked_bytes=4 * self.max_bytes,
                audit=False,  # the outcome's row below is this command's audit row
            )  # fmt: skip
        except (ArchiveRejected, RegistryError) as e:
            raise DeployRefused(str(e)) from e
        ref = {"name": entry.name, "version": entry.version, "sha256": entry.sha256}
        done: list[DeployOutcome] = []

        def record(db: sqlite_utils.Database, act: Activation) -> None:
            if act.previous is None:  # it already judges: nothing swapped, nothing pushed
                out = DeployOutcome(cmd.command_id, True, "", ref, ref, None)
            else:
                prev = {"name": act.previous.name, "version": act.previous.version,
                        "sha256": act.previous.sha256}  # fmt: skip
                out = DeployOutcome(cmd.command_id, True, "", ref, prev,
                                    str(models.path_of(entry)))  # fmt: skip
            self._write(db, out, cmd, new_command=True)
            done.append(out)

        try:
            models.activate(entry.sha256, actor, if_active="accept", record=record,
                            swap_lock=self.swap_lock, on_swapped=self.on_swapped)  # fmt: skip
        except RegistryError as e:
            raise DeployRefused(f"bundle does not load: {e}") from e
        self._announce(done[0])
        return done[0]

    def _refused(
        self, db: sqlite_utils.Database, out: DeployOutcome, cmd: DeployModelIn | None,
        new_command: bool,
    ) -> None:  # fmt: skip
        with write_tx(db):
            self._write(db, out, cmd, new_command)
        self._announce(out)

    @staticmethod
    def _write(
        db: sqlite_utils.Database, out: DeployOutcome, cmd: DeployModelIn | None,
        new_command: bool,
    ) -> None:  # fmt: skip
        """The command's outcome and its audit row (inside the caller's transaction)."""
        detail = {
            "reason": out.reason,
            "model": out.model,
            "previous": out.previous,
            "key": cmd.key if cmd else None,
            "archive_sha256": cmd.sha256 if cmd else None,
            "bundle_dir": out.bundle_dir,
        }
        if new_command:
            db.execute(
                "UPDATE sync_commands SET outcome = ?, detail_json = ? WHERE command_id = ?",
                ["activated" if out.ok else "refused", json.dumps(detail), out.command_id],
            )
        write_audit(
            db,
            Actor(f"platform:{out.command_id}"),
            "model.deploy" if out.ok else "model.deploy_refused",
            (out.model or {}).get("sha256") or (cmd.sha256 if cmd else None),
            detail,
        )

    def _announce(self, out: DeployOutcome) -> None:
        self.emit("model_activated" if out.ok else "model_rejected", out.event_data())
        if out.ok:
            log.info("deploy %s: activated %s", out.command_id, out.model)
        else:
            log.warning("deploy %s refused: %s", out.command_id, out.reason)


def _command_id_of(payload: bytes) -> str:
    try:
        v = json.loads(payload).get("command_id")
        return str(v)[:128] if v else "?"
    except (ValueError, AttributeError):
        return "?"


__all__ = ["MODELS_DIR", "DeployOutcome", "DeployRefused", "ModelDeployer"]
