"""Images to S3-compatible object storage (boto3), with the outbox's guarantees.

The uploader walks the outbox on its own thread and connection: it decides
once per entry whether its image goes up (:func:`~kanjian.station.sync.messages.image_key`),
then uploads pending images in seq order. An image is ``done`` only after the
server answered the PUT; while object storage is down the uploader backs off
and the images wait, on disk and in the outbox, for as long as retention allows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kanjian.station.sync.config import S3Config
from kanjian.station.sync.messages import image_key
from kanjian.station.sync.outbox import Outbox

log = logging.getLogger(__name__)


def make_s3_client(cfg: S3Config) -> Any:
    """A boto3 S3 client for ``cfg`` (path-style addressing; our own retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=(
            cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None
        ),
        verify=cfg.verify_tls,
        config=Config(
            connect_timeout=cfg.timeout_s,
            read_timeout=cfg.timeout_s,
            # the outbox retries; botocore's own retries would only hide the outage
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            # newer botocore adds CRC32 trailers some S3 servers refuse; send MD5 as before
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class ImageUploader:
    """Uploads the images the outbox names, on its own thread.

    Args:
        db_path: the store's database.
        data_dir: where the store saved images (``image_path`` is relative to it).
        cfg: the object storage.
        site, station: first levels of each object key.
        on_uploaded: called with the number of images done after each pass.
    """

    def __init__(
        self,
        db_path: Path,
        data_dir: Path,
        cfg: S3Config,
        site: str,
        station: str,
        on_uploaded: Callable[[int], None] | None = None,
        nice: int = 0,
    ) -> None:
        self.db_path = db_path
        self.data_dir = data_dir
        self.cfg = cfg
        self.site, self.station = site, station
        self.on_uploaded = on_uploaded
        self.nice = nice
        self.state = "ok"
        self.uploaded = 0
        self.missing = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-images", daemon=True)

    def start(self) -> ImageUploader:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _plan(self, ob: Outbox) -> int:
        todo = ob.images_to_examine(1000)
        if todo:
            verdicts = tuple(self.cfg.upload_verdicts)
            ob.set_image_plans(
                [
                    (
                        t.seq,
                        image_key(
                            self.cfg.prefix,
                            self.site,
                            self.station,
                            t.inspection_id,
                            t.captured_at,
                            t.verdict,
                            t.image_path,
                            verdicts,
                            self.cfg.pass_sample,
                        ),
                    )
                    for t in todo
                ]
            )
        return len(todo)

    def _upload_pending(self, ob: Outbox, client: Any) -> bool:
        """Upload what is pending; ``False`` if the server failed (back off)."""
        for t in ob.pending_images(100):
            if self._stop.is_set():
                return True
            assert t.image_key is not None and t.image_path is not None
            path = self.data_dir / t.image_path
            try:
                body = path.read_bytes()
            except OSError as e:
                # the file is gone (disk cleanup, manual delete): say so, do not block the rest
                log.error("image of %s unreadable (%s): not uploaded", t.inspection_id, e)
                ob.mark_image(t.seq, "missing")
                self.missing += 1
                continue
            try:
                client.put_object(
                    Bucket=self.cfg.bucket,
                    Key=t.image_key,
                    Body=body,
                    ContentType="image/jpeg",
                    Metadata={"inspection-id": t.inspection_id, "verdict": t.verdict},
                )
            except Exception as e:  # botocore raises many kinds; all mean "not stored"
                self.last_error = f"{type(e).__name__}: {e}"
                ob.mark_image(t.seq, "attempt")
                return False
            ob.mark_image(t.seq, "done")
            self.uploaded += 1
            if self.on_uploaded is not None:
                self.on_uploaded(1)
        return True

    def _run(self) -> None:
        from kanjian.station.runtime import lower_priority

        lower_priority(self.nice)
        ob = Outbox(self.db_path)
        client = None
        backoff = 0.5
        try:
            while not self._stop.is_set():
                try:
                    busy = self._plan(ob) > 0
                    if client is None:
                        client = make_s3_client(self.cfg)
                    ok = self._upload_pending(ob, client)
                except Exception as e:  # keep the thread alive; say why in status
                    log.exception("image uploader pass failed")
                    self.last_error = f"{type(e).__name__}: {e}"
                    ok = False
                if not ok:
                    if self.state != "failing":
                        log.warning("object storage unreachable (%s); retrying", self.last_error)
                    self.state = "failing"
                    self._wake.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if self.state == "failing":
                    log.info("object storage reachable again")
                self.state, backoff = "ok", 0.5
                if not busy and not ob.pending_images(1):
                    self._wake.wait(1.0)
                self._wake.clear()
        finally:
            ob.close()
