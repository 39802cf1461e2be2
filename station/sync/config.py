"""Configuration of the platform sync: MQTT broker, object storage, retention.

Embedded in :class:`kanjian.station.config.StationConfig` as ``sync:``. It
imports nothing but pydantic and the verdict names, so loading a config never
pulls paho or boto3 in.
Secrets are :class:`~pydantic.SecretStr` so ``kanjian config show`` masks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kanjian.inference.types import Verdict
from kanjian.station.records import verdict_names

_STRICT = ConfigDict(extra="forbid", frozen=True)

if TYPE_CHECKING:
    UploadVerdict = str
else:  # a MISSED inspection has no image to upload
    UploadVerdict = verdict_names(Verdict.MISSED)


class MqttSecretError(ValueError):
    """The broker password file cannot be read or is empty (the message names it)."""


class MqttConfig(BaseModel):
    """The MQTT broker the station publishes to (MQTT 5, QoS 1)."""

    model_config = _STRICT

    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    client_id: str | None = Field(
        None,
        max_length=128,
        description="MQTT client id; default kanjian-{site}-{line}-{station}. It must be "
        "stable: the broker keeps the station's session (confirmations, commands) under it",
    )
    username: str | None = Field(None, max_length=256, description="broker user name")
    password: SecretStr | None = Field(
        None, description="broker password (prefer password_file: it keeps it out of the config)"
    )
    password_file: Path | None = Field(
        None,
        description="file holding the broker password (its first line; e.g. the one "
        "`kanjian platform acl` wrote for this station); relative to the config file",
    )
    tls: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle to verify the broker (TLS)")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client key (mutual TLS)")
    tls_insecure: bool = Field(
        False, description="skip the broker host name check (test benches only)"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive, seconds")
    session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=4_294_967_295,
        description="how long the broker keeps the station's session while it is away, seconds",
    )
    reconnect_min_s: int = Field(1, ge=1, le=60, description="first reconnect delay, seconds")
    reconnect_max_s: int = Field(30, ge=1, le=3600, description="longest reconnect delay, s")
    max_inflight: int = Field(
        100,
        ge=1,
        le=65_535,
        description="QoS 1 messages on the wire awaiting PUBACK (capped by the broker's "
        "receive maximum)",
    )
    topic_prefix: str = Field(
        "kanjian/v1", pattern=r"^[^#+]+$", description="first levels of every topic"
    )

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give the broker password once: password or password_file, not both")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username (the broker user it belongs to)")
        return self

    def secret(self) -> str | None:
        """The broker password: ``password``, or the first line of ``password_file``.

        Raises:
            MqttSecretError: the password file cannot be read or is empty.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MqttSecretError(
                f"sync.mqtt.password_file {self.password_file}: cannot read it ({e}); "
                "point it at the file `kanjian platform acl` wrote for this station"
            ) from None
        first = text.splitlines()[0].strip() if text.strip() else ""
        if not first:
            raise MqttSecretError(f"sync.mqtt.password_file {self.password_file} is empty")
        return first


class S3Config(BaseModel):
    """S3-compatible object storage for images (and model bundles to deploy)."""

    model_config = _STRICT

    enabled: bool = Field(False, description="upload images to object storage")
    endpoint_url: str | None = Field(
        None, description="e.g. http://minio.plant:9000; default: AWS for the region"
    )
    region: str = Field("us-east-1", description="S3 region")
    bucket: str = Field("kanjian", min_length=3, max_length=63, description="bucket for images")
    prefix: str = Field("", max_length=256, description="key prefix, e.g. 'images/'")
    access_key_id: str | None = Field(None, description="access key; default: boto3's chain")
    secret_access_key: SecretStr | None = Field(None, description="secret key")
    verify_tls: bool = Field(True, description="verify the endpoint's certificate")
    timeout_s: float = Field(10.0, gt=0, le=600, description="connect/read timeout per call, s")
    upload_verdicts: list[UploadVerdict] = Field(
        default_factory=lambda: [Verdict.FAIL.value, Verdict.REVIEW.value],
        description="verdicts whose images are uploaded (the image must be saved locally: "
        "see store.save_images)",
    )
    pass_sample: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="fraction of PASS images uploaded besides, chosen by inspection UUID "
        "(needs PASS in store.save_images)",
    )


class RetentionConfig(BaseModel):
    """Bounds of the backlog: what stays unconfirmed past them is dropped and counted."""

    model_config = _STRICT

    max_age_h: float = Field(
        24.0 * 30, gt=0, le=24.0 * 3650, description="entries older than this are dropped, hours"
    )
    max_backlog: int = Field(
        2_000_000, ge=100, le=1_000_000_000, description="most unconfirmed messages kept"
    )
    max_images_pending: int = Field(
        200_000, ge=10, le=1_000_000_000, description="most images waiting for upload"
    )
    check_interval_s: float = Field(
        30.0, gt=0, le=86_400, description="how often the bounds are applied, seconds"
    )


class SyncConfig(BaseModel):
    """``sync:`` section of ``station.yaml``: the outbox drained to the cluster platform."""

    model_config = _STRICT

    enabled: bool = Field(False, description="run the sync worker with the station")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    s3: S3Config = Field(default_factory=S3Config)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    window: int = Field(
        1000,
        ge=1,
        # in-flight messages are keyed by MQTT packet id, which is 16-bit (1..65535)
        le=65_000,
        description="messages handed to the MQTT client and not yet acknowledged; bounds "
        "memory while the broker is slow (at most 65000: MQTT packet ids are 16-bit)",
    )
    read_batch: int = Field(200, ge=1, le=10_000, description="outbox rows read per query")
    max_rate: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description="most inspection messages sent per second, new and re-sent (0: no limit). "
        "Draining a long backlog at full speed takes CPU from the inspection loop",
    )
    confirm_timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="re-send an entry the platform has not confirmed this long after PUBACK",
    )
    confirm_timeout_max_s: float = Field(
        600.0, gt=0, le=86_400, description="the timeout doubles per attempt up to this"
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="raise the nice value of the sync threads by this much (Linux), so a "
        "backlog being caught up leaves the CPU to the inspection loop",
    )
    backlog_high: int = Field(
        10_000, ge=1, description="publish a sync_backlog_high event above this many entries"
    )
    shadow_report_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="while a shadow model runs, send its agreement with the active model "
        "(a shadow_agreement event) when it changed, at most this often, seconds (0: never)",
    )
    feedback: bool = Field(
        True,
        description="send operator feedback to the platform (a feedback event per answer, "
        "once api.feedback_undo_s has passed and it can no longer be undone)",
    )
    close_drain_s: float = Field(
        3.0, ge=0, le=600, description="on shutdown, wait this long for the backlog to drain"
    )
    deploy_enabled: bool = Field(True, description="accept deploy_model commands")
    deploy_max_mb: float = Field(
        500.0, gt=0, le=16_384, description="largest model bundle archive downloaded, MiB"
    )
